"""ClipDataset / collate_clips on the tiny toy set: shapes, clamping, zero boxes, scores, video path."""
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stad.data.collate import ClipBatch, collate_clips
from stad.data.dataset import ClipDataset, ClipSample
from stad.data.formats import acar_pkl
from stad.data.toy import generate
from stad.data.transforms import default_transform
from stad.data.video import clip_indices
from stad.structures import Boxes, Keyframe


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    generate(out, seed=0, size="tiny", workers=1, progress=False)
    return out


def test_clip_indices_centre_and_clamp():
    assert clip_indices(61, 32, 2).tolist() == list(range(29, 92, 2))  # mid-32 .. mid+30
    assert clip_indices(3, 4, 2, num_frames=5).tolist() == [1, 1, 3, 5]
    assert clip_indices(89, 4, 3, num_frames=90).tolist() == [83, 86, 89, 90]


def test_sample_fields(toy):
    ds = ClipDataset(toy / "annotations" / "train.pkl", frames_root=toy / "frames", clip_len=8, frame_stride=2,
                     transform=default_transform(96))
    keyframes, labelmap = acar_pkl.read_acar_pkl(toy / "annotations" / "train.pkl")
    assert len(ds) == len(keyframes) and ds.labelmap == labelmap and ds.num_classes == 11
    s = ds[0]
    assert isinstance(s, ClipSample)
    kf = keyframes[0]
    assert s.clip.shape == (3, 8, 96, 128) and s.clip.dtype == torch.float32
    assert s.key == kf.key and s.orig_size == (240, 320)
    assert s.boxes.shape == (len(kf.boxes), 4) and s.targets.shape == (len(kf.boxes), 11)
    np.testing.assert_allclose(s.boxes.numpy(), kf.boxes.xyxy, atol=1e-6)  # scale only: unchanged
    assert torch.equal(s.targets, torch.from_numpy(kf.multi_hot(11)))
    assert torch.equal(s.box_scores, torch.ones(len(kf.boxes)))
    assert s.person_ids.dtype == torch.int64 and s.person_ids.tolist() == kf.boxes.ids.tolist()
    px = s.boxes_pixels()
    assert px[:, 2].max() <= 128 and px[:, 3].max() <= 96
    # keyframe t=1 -> frame 31; clip 8 x 2 = frames 23..37
    assert ds.frame_numbers(0).tolist() == list(range(23, 38, 2))


def test_clip_clamped_at_video_start(toy):
    ds = ClipDataset(toy / "annotations" / "val.pkl", frames_root=toy / "frames", clip_len=20, frame_stride=4)
    frames = ds.frame_numbers(0)  # mid 31: 31 - 40, -5, -1 clamp to 1
    assert frames[:4].tolist() == [1, 1, 1, 3] and frames[-1] == 31 + 36
    clip = ds[0].clip
    assert torch.equal(clip[:, 0], clip[:, 1])  # repeated first frame


def test_zero_box_keyframe_and_scores(tmp_path, toy):
    keyframes, labelmap = acar_pkl.read_acar_pkl(toy / "annotations" / "train.pkl")
    kf = keyframes[0]
    empty = Keyframe(kf.video, kf.timestamp, Boxes.empty(), (), kf.mid_frame, kf.start_frame, kf.n_frames,
                     kf.format_str, kf.frame_rate)
    scored = Keyframe(kf.video, kf.timestamp + 1, Boxes(kf.boxes.xyxy, np.linspace(0.3, 0.95, len(kf.boxes))),
                      tuple(() for _ in kf.boxes.xyxy), kf.mid_frame + 30, kf.start_frame, kf.n_frames, kf.format_str)
    path = tmp_path / "props.pkl"
    acar_pkl.write_acar_pkl(path, [empty, scored], labelmap)
    ds = ClipDataset(path, frames_root=toy / "frames", clip_len=4, frame_stride=2, transform=default_transform(64))
    a, b = ds[0], ds[1]
    assert a.boxes.shape == (0, 4) and a.targets.shape == (0, 11) and a.box_scores.shape == (0,)
    np.testing.assert_allclose(b.box_scores.numpy(), np.linspace(0.3, 0.95, len(kf.boxes)), rtol=1e-6)
    assert b.targets.sum() == 0
    batch = collate_clips([a, b])
    assert batch.clips.shape == (2, 3, 4, 64, 85) and batch.num_boxes == [0, len(kf.boxes)]
    assert batch.flat_targets().shape == (len(kf.boxes), 11)
    filtered = ClipDataset(path, frames_root=toy / "frames", clip_len=4, min_score=0.9)
    assert len(filtered[1].boxes) == 1 and filtered[0].boxes.shape == (0, 4)
    none_left = ClipDataset(path, frames_root=toy / "frames", clip_len=4, min_score=0.99)
    assert len(none_left[1].boxes) == 1  # the best box always survives


def test_video_and_frames_give_the_same_clip(toy):
    """The toy's JPEGs are written from the rendered frames and the mp4 is an H.264 encoding of the
    same frames, so the clips match up to compression: mean |diff| < 4 grey levels."""
    kwargs = dict(clip_len=8, frame_stride=3, transform=default_transform(120))
    from_frames = ClipDataset(toy / "annotations" / "val.pkl", frames_root=toy / "frames", fast_decode=False, **kwargs)
    from_video = ClipDataset(toy / "annotations" / "val.pkl", video_root=toy / "videos", **kwargs)
    for i in range(len(from_frames)):
        a, b = from_frames[i], from_video[i]
        assert a.clip.shape == b.clip.shape and torch.equal(a.boxes, b.boxes)
        diff = (a.clip - b.clip).abs() * 0.225 * 255
        assert diff.mean() < 4.0, diff.mean()
    other = from_frames.frame_numbers(1)
    assert not torch.equal(from_frames[0].clip, from_video[1].clip) or other[0] == from_frames.frame_numbers(0)[0]


def test_dataloader_workers_and_batch_to(toy):
    ds = ClipDataset(toy / "annotations" / "train.pkl", frames_root=toy / "frames", clip_len=4, frame_stride=2,
                     transform=default_transform(64, train=True, crop=56))
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_clips)
    batches = list(loader)
    assert sum(len(b) for b in batches) == len(ds)
    batch = batches[0]
    assert isinstance(batch, ClipBatch) and batch.clips.shape == (2, 3, 4, 56, 56)
    moved = batch.to("cpu", non_blocking=True)
    assert moved is not batch and isinstance(moved, ClipBatch) and torch.equal(moved.clips, batch.clips)
    assert all((b >= 0).all() and (b <= 1).all() for b in batch.boxes)
    if torch.cuda.is_available():
        assert batch.pin_memory().clips.is_pinned()


def test_collate_pads_different_sizes():
    def sample(h, w):
        return ClipSample(torch.ones(3, 2, h, w), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.zeros(1, 3),
                          torch.ones(1), ("v", 1), torch.tensor([-1]), (h, w), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    batch = collate_clips([sample(4, 8), sample(4, 6)])
    assert batch.clips.shape == (2, 3, 2, 4, 8)
    assert batch.clips[1, :, :, :, 6:].abs().sum() == 0
    torch.testing.assert_close(batch.boxes[1], torch.tensor([[0.0, 0.0, 0.75, 1.0]]))
    with pytest.raises(ValueError, match="empty batch"):
        collate_clips([])


def test_bad_labels_rejected(tmp_path, toy):
    obj = pickle.loads((toy / "annotations" / "train.pkl").read_bytes())
    obj[0][1]["labels"][0]["label"] = [11]
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(obj))
    with pytest.raises(ValueError, match=r"element 1: field 'labels\[0\].label': indices \[11\] outside \[0, 11\)"):
        ClipDataset(tmp_path / "bad.pkl", frames_root=toy / "frames")


def test_decoded_frame_cache_gives_identical_clips(toy):
    kwargs = dict(clip_len=8, frame_stride=2, transform=default_transform(112))
    plain = ClipDataset(toy / "annotations" / "train.pkl", frames_root=toy / "frames", **kwargs)
    cached = ClipDataset(toy / "annotations" / "train.pkl", frames_root=toy / "frames", cache_mb=1, **kwargs)
    first = cached[0].clip
    assert len(cached.source._cache) == 8 and 0 < cached.source._cache_bytes <= 2**20
    assert torch.equal(first, cached[0].clip) and torch.equal(first, plain[0].clip)
    for i in range(len(cached)):
        cached[i]
    assert cached.source._cache_bytes <= 2**20  # LRU keeps the budget


def _baseline_clip(ds: ClipDataset, index: int, short_side: int) -> torch.Tensor:
    """The reference loader of bench/bench_loader.py: cv2.imread, BGR->RGB, bilinear resize, float,
    normalise, frame by frame -> float [3, T, H, W]."""
    import cv2

    kf = ds.keyframes[index]
    frames = []
    for n in ds.frame_numbers(index):
        img = cv2.cvtColor(cv2.imread(str(ds.source.path(kf.video, kf.format_str, n))), cv2.COLOR_BGR2RGB)
        h, w = img.shape[:2]
        size = (int(short_side * w / h), short_side) if w >= h else (short_side, int(short_side * h / w))
        img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
        frames.append(torch.from_numpy((img - 0.45) / 0.225).permute(2, 0, 1))
    return torch.stack(frames, dim=1)


def test_negative_frame_cache_is_rejected(toy):
    with pytest.raises(ValueError, match="cache_mb must be >= 0"):
        ClipDataset(toy / "annotations" / "train.pkl", frames_root=toy / "frames", cache_mb=-1)


def test_fast_path_equals_imread_baseline(toy):
    """Documented tolerance: identical pixels when the JPEG must be decoded in full (short side 160 of
    240); at short side 112 the 1/2-size DCT decode (then bilinear 160->149) differs by < 2.5 grey
    levels on average from full decode + bilinear 320->149."""
    ann, frames = toy / "annotations" / "train.pkl", toy / "frames"
    exact = ClipDataset(ann, frames_root=frames, clip_len=6, frame_stride=3, transform=default_transform(160))
    reduced = ClipDataset(ann, frames_root=frames, clip_len=6, frame_stride=3, transform=default_transform(112))
    for i in range(0, len(exact), 2):
        torch.testing.assert_close(collate_clips([exact[i]]).clips[0], _baseline_clip(exact, i, 160), rtol=0, atol=1e-5)
        fast, base = collate_clips([reduced[i]]).clips[0], _baseline_clip(reduced, i, 112)
        assert fast.shape == base.shape == (3, 6, 112, 149)
        assert (fast - base).abs().mean() * 0.225 * 255 < 2.5


def test_batch_pickles_box_lists_compactly_and_workers_share_pixels(toy):
    import pickle

    ds = ClipDataset(toy / "annotations" / "train.pkl", frames_root=toy / "frames", clip_len=4, frame_stride=2,
                     transform=default_transform(64))
    empty = ClipSample(ds[0].pixels, torch.zeros(0, 4), torch.zeros(0, 11), torch.zeros(0), ("v", 9),
                       torch.zeros(0, dtype=torch.int64), (240, 320), torch.zeros(0, 4), ds[0].norm)
    batch = collate_clips([ds[0], empty, ds[1]])
    again = pickle.loads(pickle.dumps(batch))
    assert again.num_boxes == batch.num_boxes and again.keys == batch.keys and again.orig_sizes == batch.orig_sizes
    for name in ("boxes", "targets", "box_scores", "person_ids", "orig_boxes"):
        for a, b in zip(getattr(batch, name), getattr(again, name)):
            assert a.dtype == b.dtype and torch.equal(a, b), name
    assert torch.equal(again.clips, batch.clips)
    from_workers = list(DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_clips, timeout=120))
    in_process = list(DataLoader(ds, batch_size=3, collate_fn=collate_clips))
    assert from_workers[0].pixels.is_shared() and from_workers[0].pixels.dtype == torch.uint8
    for a, b in zip(from_workers, in_process):
        assert torch.equal(a.clips, b.clips) and all(torch.equal(x, y) for x, y in zip(a.targets, b.targets))
