"""ACAR-Net's multi-view evaluation: a list of kwargs in a val spatial step makes test-time views;
each box's logits are averaged over the views that keep it, then the activation is applied."""
import pickle

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from stad.config import AugmentationConfig, ConfigError, TransformSpec
from stad.data import transforms as T
from stad.data.collate import ClipBatch, MultiViewBatch, collate_clips
from stad.data.dataset import ClipDataset, MultiViewSample, kept_in_view
from stad.data.formats.acar_pkl import write_acar_pkl
from stad.engine import builders
from stad.engine.predictor import merge_shards, multiview_logits, predict_shard
from stad.structures import Boxes, Keyframe, LabelMap

K = 3
NORM = [("ToTensor", {"norm_value": 255.0}), ("Normalize", {"mean": [0.45] * 3, "std": [0.225] * 3})]
SPEC = [("Scale", [{"resize": 32}, {"resize": 48}]), ("RandomHorizontalFlip", [{"p": 0}, {"p": 1}])] + NORM


def test_views_follow_acar_order():
    views = T.acar_views(SPEC)
    got = [(v.sample(60, 80).geometry.out, v.sample(60, 80).geometry.flip) for v in views]
    # the first step varies fastest (ACAR-Net main.py)
    assert got == [((42, 32), False), ((64, 48), False), ((42, 32), True), ((64, 48), True)]
    assert len(T.acar_views([("Scale", {"resize": 32})] + NORM)) == 1
    three = T.acar_views([("Scale", [{"resize": 32}, {"resize": 40}, {"resize": 48}]),
                          ("CenterCrop", [{"size": 24}, {"size": 16}])])
    assert [v.sample(48, 48).geometry.out for v in three] == [(24, 24), (24, 24), (24, 24), (16, 16), (16, 16), (16, 16)]
    assert [v.sample(48, 48).geometry.resize for v in three][:3] == [(32, 32), (40, 40), (48, 48)]


def test_flip_with_p_one_mirrors_at_eval_and_lists_are_rejected_in_training():
    assert isinstance(T.from_acar_spec([("RandomHorizontalFlip", {"p": 1})], train=False).steps[0], T.HorizontalFlip)
    assert T.from_acar_spec([("RandomHorizontalFlip", {"p": 0.5})], train=False).steps == ()
    with pytest.raises(ValueError, match="only supports in val"):
        T.acar_views(SPEC, train=True)
    aug = AugmentationConfig(spatial=tuple(TransformSpec(n, k) for n, k in SPEC))
    with pytest.raises(ConfigError, match=r"train\.augmentation\.spatial\[0\] \(Scale\).*only supports in val"):
        builders.build_views(aug, train=True)
    with pytest.raises(ConfigError):
        builders.build_transform(aug, train=True)
    assert len(builders.build_views(aug, train=False)) == 4
    assert builders.build_transform(aug, train=False).sample(60, 80).geometry.out == (42, 32)  # the first view


def test_kept_in_view_is_acars_neck_rule():
    crop = T.Compose((T.ShortSideScale(40), T.CenterCrop(20))).sample(40, 80).geometry  # x in [0.375, 0.625]
    boxes = np.array([[0.0, 0.0, 0.3, 1.0],  # outside the crop
                      [0.3, 0.0, 0.4, 1.0],  # a quarter inside
                      [0.4, 0.2, 0.6, 0.8],  # inside
                      [0.5, 0.5, 0.5, 0.9]], np.float32)  # zero area: never kept (0 > 0 is false)
    assert kept_in_view(boxes, crop).tolist() == [False, True, True, False]
    assert kept_in_view(boxes, crop, threshold=0.3).tolist() == [False, False, True, False]
    full = T.Compose((T.ShortSideScale(40),)).sample(40, 80).geometry
    assert kept_in_view(boxes, full).tolist() == [True, True, True, False]


def make_frames(root, sizes=((60, 80), (80, 60), (48, 96)), n_frames=12, seed=0):
    """Smooth random frames (JPEG, ACAR's layout ``<video>/image_%06d.jpg``) and a GT pickle: one
    keyframe per video of a different aspect ratio, 2, 0 and 3 boxes."""
    rng = np.random.default_rng(seed)
    keyframes = []
    box_sets = [[[0.1, 0.1, 0.5, 0.9], [0.45, 0.2, 0.95, 0.8]], [], [[0.05, 0.1, 0.3, 0.9], [0.3, 0.3, 0.7, 0.95],
                                                                         [0.6, 0.05, 0.98, 0.7]]]
    for v, ((h, w), boxes) in enumerate(zip(sizes, box_sets)):
        video = f"vid{v}"
        (root / video).mkdir(parents=True)
        for n in range(1, n_frames + 1):
            small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
            frame = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(root / video / f"image_{n:06d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
        xyxy = np.array(boxes, np.float32).reshape(-1, 4)
        labels = tuple((i % K,) for i in range(len(xyxy)))
        keyframes.append(Keyframe(video, 902, Boxes(xyxy, np.ones(len(xyxy), np.float32),
                                                     np.arange(len(xyxy), dtype=np.int64)), labels,
                                  mid_frame=n_frames // 2 + 1, start_frame=1, n_frames=n_frames,
                                  format_str="image_%06d.jpg", frame_rate=30.0))
    write_acar_pkl(root / "gt.pkl", keyframes, LabelMap(tuple(range(1, K + 1)), ("a", "b", "c")))
    return root / "gt.pkl"


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("mv")
    return root, make_frames(root)


def _dataset(frames, spec=SPEC, **kw):
    root, pkl = frames
    return ClipDataset(pkl, frames_root=root, clip_len=4, frame_stride=2, views=T.acar_views(spec), num_classes=K, **kw)


def test_dataset_gives_every_view_from_one_decode(frames):
    ds = _dataset(frames)
    sample = ds[2]
    assert isinstance(sample, MultiViewSample) and len(sample.views) == 4 and sample.key == ("vid2", 902)
    assert [tuple(v.pixels.shape[-2:]) for v in sample.views] == [(32, 64), (48, 96), (32, 64), (48, 96)]
    for view, single in zip(sample.views, T.acar_views(SPEC)):
        alone = ClipDataset(frames[1], frames_root=frames[0], clip_len=4, frame_stride=2, transform=single,
                            num_classes=K, fast_decode=False)[2]
        assert torch.equal(view.pixels, alone.pixels)  # same as a one-view dataset
        torch.testing.assert_close(view.boxes, alone.boxes)
        assert torch.equal(view.orig_boxes, alone.orig_boxes)
    assert all(k.tolist() == [True] * 3 for k in sample.keep)
    assert ds[1].views[0].boxes.shape == (0, 4) and all(k.shape == (0,) for k in ds[1].keep)
    one = ClipDataset(frames[1], frames_root=frames[0], clip_len=4, frame_stride=2,
                      views=T.acar_views([("Scale", {"resize": 32})] + NORM), num_classes=K)
    assert one.views is None and not isinstance(one[0], MultiViewSample)  # one view: plain samples
    assert not isinstance(ds.with_transform(T.acar_views(SPEC)[1])[0], MultiViewSample)


def test_collate_pads_each_view_and_batches_pickle(frames):
    ds = _dataset(frames)
    batch = collate_clips([ds[i] for i in range(3)])
    assert isinstance(batch, MultiViewBatch) and len(batch) == 3 and len(batch.views) == 4
    assert batch.keys == [("vid0", 902), ("vid1", 902), ("vid2", 902)] and batch.num_boxes == [2, 0, 3]
    assert batch.views[0].pixels.shape[-2:] == (42, 64) and batch.views[1].pixels.shape[-2:] == (64, 96)
    assert batch.views[0].valid_fractions is not None
    again = pickle.loads(pickle.dumps(batch))
    assert all(torch.equal(a.clips, b.clips) for a, b in zip(again.views, batch.views))
    assert again.to("cpu").keep[3][2].tolist() == [True] * 3


class _Model(torch.nn.Module):
    """logits = per-box (x1 + 2 y2) * mean of the clip's valid pixels + class index; records calls."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, clips, boxes, sizes=None):
        self.calls.append((tuple(clips.shape), [len(b) for b in boxes], sizes))
        rows = []
        for i, b in enumerate(boxes):
            rows.append((b[:, :1] + 2 * b[:, 3:]) * clips[i].mean() + torch.arange(K))
        return torch.cat(rows) if rows else torch.zeros(0, K)


def test_multiview_logits_average_over_keeping_views():
    views, keep = [], []
    for v in range(3):
        boxes = [torch.full((2, 4), 0.1 * (v + 1)), torch.zeros(0, 4), torch.full((1, 4), 0.5)]
        views.append(ClipBatch(torch.full((3, 3, 1, 4, 4), float(v + 1)), boxes, [torch.zeros(len(b), K) for b in boxes],
                               [torch.ones(len(b)) for b in boxes], [("a", 1), ("b", 1), ("c", 1)],
                               [torch.zeros(len(b), dtype=torch.long) for b in boxes], boxes, [(4, 4)] * 3))
    keep = ([np.array([True, True]), np.zeros(0, bool), np.array([False])],
            [np.array([True, False]), np.zeros(0, bool), np.array([False])],
            [np.array([True, False]), np.zeros(0, bool), np.array([False])])
    model = _Model()
    logits, kept = multiview_logits(model, MultiViewBatch(tuple(views), keep))
    assert [k.tolist() for k in kept] == [[True, True], [], [False]]  # the 3rd clip's box: no view kept it
    per_view = [(0.3 * (v + 1)) * (v + 1) + torch.arange(K) for v in range(3)]  # x1 + 2 y2 = 3 * 0.1 (v + 1)
    torch.testing.assert_close(logits[0], sum(per_view) / 3)
    torch.testing.assert_close(logits[1], per_view[0])
    assert [c[1] for c in model.calls] == [[2, 0, 0], [1, 0, 0], [1, 0, 0]]


@pytest.mark.parametrize("world", [1, 2])
def test_predictions_neither_lost_nor_duplicated_under_distributed_sampler(frames, world):
    ds = _dataset(frames, spec=[("Scale", [{"resize": 32}, {"resize": 48}]), ("CenterCrop", {"size": 32})] + NORM)
    shards = []
    for rank in range(world):
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=False, drop_last=False)
        loader = DataLoader(ds, batch_size=2, sampler=sampler, collate_fn=builders.collate)
        shards.append(predict_shard(_Model(), loader, list(sampler), torch.sigmoid, torch.device("cpu"), K,
                                    criterion=torch.nn.BCEWithLogitsLoss()))
    merged = merge_shards(shards, len(ds), K)
    # vid0: 2 boxes (x 0.1-0.5 and 0.45-0.95 of an 80-wide frame; the centre crop of the 32-short-side view
    # keeps x 0.5 +- 0.375 * 32 / 42.67 ...): every box is visible in some view and written once
    assert merged.videos == ("vid0", "vid0", "vid2", "vid2", "vid2")
    np.testing.assert_allclose(merged.boxes, np.concatenate([ds.keyframes[0].boxes.xyxy, ds.keyframes[2].boxes.xyxy]))
    assert merged.scores.shape == (5, K) and np.isfinite(merged.scores).all()


def test_box_outside_every_view_is_dropped_and_loss_uses_kept_boxes(frames):
    # 24-pixel centre crops of vid2 (48 x 96) scaled to 32 / 40 keep x in [0.31, 0.69] / [0.35, 0.65]:
    # its first box (x 0.05-0.3) is outside both views, so it gets no prediction (as in ACAR-Net)
    ds = _dataset(frames, spec=[("Scale", [{"resize": 32}, {"resize": 40}]), ("CenterCrop", {"size": 24})] + NORM)
    sample = ds[2]
    assert [k.tolist() for k in sample.keep] == [[False, True, True], [False, True, True]]
    loader = DataLoader(ds, batch_size=3, collate_fn=builders.collate)
    shard = predict_shard(_Model(), loader, [0, 1, 2], torch.sigmoid, torch.device("cpu"), K,
                          criterion=torch.nn.BCEWithLogitsLoss())
    p = shard.predictions
    assert p.videos.count("vid2") == 2 and len(shard.loss_sums) == 3
    np.testing.assert_allclose(p.boxes[-2:], ds.keyframes[2].boxes.xyxy[1:])


def test_val_dataset_from_a_config_with_a_list_of_kwargs(frames):
    from pathlib import Path

    from stad.config import load_config

    root, pkl = frames
    spatial = "[{type: Scale, kwargs: [{resize: 32}, {resize: 48}]}, {type: ToTensor, kwargs: {norm_value: 255.}}]"
    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "toy" / "vitsf_acar_train.yaml",
                         [f"val.root_path={root}", f"val.annotation_path={pkl}", f"val.augmentation.spatial={spatial}",
                          "model.head.kwargs.num_classes=3"])
    ds = builders.build_dataset(config, config.val, train=False)
    assert len(ds) == 3 and isinstance(ds[0], MultiViewSample) and len(ds[0].views) == 2
    with pytest.raises(ConfigError, match="only supports in val"):
        builders.build_dataset(config, config.val, train=True)


def test_kept_boxes_and_their_place_match_acar_net():
    """Golden from oracle_scripts/dump_acar_views.py: ACAR-Net's get_aug_info + get_bbox_after_aug for
    scale / centre / corner crops / flips on three aspect ratios, thresholds 0 and 0.3."""
    from tests.models.models_testutils import MANIFEST_DIR

    gold = torch.load(MANIFEST_DIR / "golden" / "acar_view_boxes.pt", weights_only=False)
    boxes = np.array(gold["boxes"], np.float32)
    for r in gold["results"]:
        (w, h), spec = r["frame_wh"], [(n, k) for n, k in r["view"]]
        geometry = T.from_acar_spec(spec, train=False).sample(h, w).geometry
        assert geometry.out == tuple(r["out_wh"]), r["view"]
        kept = kept_in_view(boxes, geometry, r["threshold"])
        assert kept.tolist() == r["kept"], (r["frame_wh"], r["view"], r["threshold"])
        np.testing.assert_allclose(geometry.map_boxes(boxes)[kept], np.array(r["boxes"])[kept], atol=1e-6)
