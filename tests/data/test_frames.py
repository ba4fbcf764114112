"""Frame extraction CLI (ffmpeg from imageio-ffmpeg) and video == frames for the same clip."""
import shutil

import numpy as np
import pytest
import torch

from stad.data import frames as fx
from stad.data.dataset import ClipDataset
from stad.data.formats import acar_pkl
from stad.data.toy import generate
from stad.data.transforms import default_transform
from stad.data.video import FrameFolderSource, FrameReadError, VideoFileSource


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    generate(out, seed=0, size="tiny", workers=1, progress=False)
    return out


def test_extract_layout_marker_and_resume(toy, tmp_path):
    out = tmp_path / "frames"
    done = fx.extract_all(toy / "videos", out, fx.ExtractOptions(fps=30), workers=2, progress=False)
    assert sorted(done) == ["toy_train_000", "toy_train_001", "toy_val_000", "toy_val_001"]
    assert set(done.values()) == {90}
    names = sorted(p.name for p in (out / "toy_val_000").glob("*.jpg"))
    assert names[0] == "toy_val_000_000001.jpg" and names[-1] == "toy_val_000_000090.jpg"
    assert not list(out.glob(".*partial"))
    assert fx.extract_all(toy / "videos", out, fx.ExtractOptions(fps=30), progress=False) == {}  # resumed: all done
    (out / "toy_val_000" / fx.MARKER).unlink()  # an interrupted video is redone
    assert fx.extract_all(toy / "videos", out, fx.ExtractOptions(fps=30), progress=False) == {"toy_val_000": 90}
    half = fx.extract_all(toy / "videos", tmp_path / "half", fx.ExtractOptions(fps=15, height=120), progress=False)
    assert set(half.values()) == {45}
    assert FrameFolderSource(tmp_path / "half").frame_size("toy_val_000", "toy_val_000_%06d.jpg", 1) == (120, 160)


def test_failed_video_is_named_and_others_finish(toy, tmp_path):
    videos = tmp_path / "videos"
    (videos / "sport").mkdir(parents=True)
    shutil.copy(toy / "videos" / "toy_val_000.mp4", videos / "sport" / "clip_a.mp4")
    (videos / "broken_clip.mp4").write_bytes(b"definitely not a video")
    with pytest.raises(fx.FrameExtractionError, match=r"1 of 2 videos failed:\nvideo 'broken_clip'"):
        fx.extract_all(videos, tmp_path / "out", progress=False)
    assert len(list((tmp_path / "out" / "sport" / "clip_a").glob("clip_a_*.jpg"))) == 90  # nested id, basename files
    assert fx.main([str(videos), str(tmp_path / "out")]) == 1
    assert fx.main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 1


@pytest.fixture(scope="module")
def one_video(toy, tmp_path_factory):
    """toy_val_001 alone, extracted as PNG and as JPEG."""
    root = tmp_path_factory.mktemp("one")
    (root / "videos").mkdir()
    shutil.copy(toy / "videos" / "toy_val_001.mp4", root / "videos")
    fx.extract_all(root / "videos", root / "png", fx.ExtractOptions(ext="png"), progress=False)
    fx.extract_all(root / "videos", root / "jpg", fx.ExtractOptions(), progress=False)
    return root


def test_png_frames_equal_pyav_decoding_exactly(one_video):
    """Same decoder (libavcodec) and colour conversion: lossless PNG frames == PyAV frames, bit for bit."""
    video, folder = VideoFileSource(one_video / "videos"), FrameFolderSource(one_video / "png")
    idx = [1, 2, 31, 61, 90]
    assert np.array_equal(video.read("toy_val_001", "", idx), folder.read("toy_val_001", "toy_val_001_%06d.png", idx))
    assert video.num_frames("toy_val_001") == 90 and video.frame_size("toy_val_001") == (240, 320)
    with pytest.raises(FrameReadError, match="no video file for 'nope'"):
        video.read("nope", "", [1])
    with pytest.raises(FrameReadError, match=r"frames \[91\] not found"):
        video.read("toy_val_001", "", [89, 90, 91])


def test_dataset_clip_from_video_equals_clip_from_frames(toy, one_video, tmp_path):
    """The ClipDataset gives the same clip for the same keyframe from the mp4 and from extracted frames:
    exactly with PNG frames; within JPEG error (mean < 2.5 grey levels) with JPEG frames (-q:v 2)."""
    kfs, labelmap = acar_pkl.read_acar_pkl(toy / "annotations" / "val.pkl")
    kfs = [kf for kf in kfs if kf.video == "toy_val_001"]
    ann = tmp_path / "val_jpg.pkl"
    acar_pkl.write_acar_pkl(ann, kfs, labelmap)
    png_ann = tmp_path / "val_png.pkl"
    acar_pkl.write_acar_pkl(png_ann, [type(kf)(kf.video, kf.timestamp, kf.boxes, kf.labels, kf.mid_frame, kf.start_frame,
                                               kf.n_frames, kf.format_str.replace(".jpg", ".png"), kf.frame_rate)
                                      for kf in kfs], labelmap)
    kwargs = dict(clip_len=8, frame_stride=4, transform=default_transform(120))
    from_video = ClipDataset(ann, video_root=one_video / "videos", **kwargs)
    from_png = ClipDataset(png_ann, frames_root=one_video / "png", **kwargs)
    from_jpg = ClipDataset(ann, frames_root=one_video / "jpg", fast_decode=False, **kwargs)
    assert len(from_video) == 2
    for i in range(len(from_video)):
        v = from_video[i]
        assert torch.equal(v.clip, from_png[i].clip) and torch.equal(v.boxes, from_png[i].boxes)
        err = (v.clip - from_jpg[i].clip).abs().mean() * 0.225 * 255
        assert err < 2.5, err


def test_simplejpeg_decode_is_bit_identical_to_opencv(toy):
    """The fast JPEG decoder (simplejpeg) gives OpenCV's pixels exactly, at full and reduced size."""
    import cv2

    from stad.data import video as vid

    if vid.simplejpeg is None:
        pytest.skip("simplejpeg not installed (OpenCV decodes)")
    paths = sorted((toy / "frames" / "toy_val_001").glob("*.jpg"))[::15]
    for path in paths:
        data = path.read_bytes()
        for reduction, flag in ((1, cv2.IMREAD_COLOR), (2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4),
                                (8, cv2.IMREAD_REDUCED_COLOR_8)):
            fast = vid.decode_jpeg_bytes(data, reduction)
            assert np.array_equal(fast, cv2.imdecode(np.frombuffer(data, np.uint8), flag)), (path.name, reduction)
            assert np.array_equal(fast, vid.decode_jpeg_bytes(data, reduction, use_simplejpeg=False))
    png = cv2.imencode(".png", np.full((6, 8, 3), 7, np.uint8))[1].tobytes()
    assert vid.decode_jpeg_bytes(png).shape == (6, 8, 3)  # non-JPEG: OpenCV
    with pytest.raises(FrameReadError, match="x.jpg: cannot decode"):
        vid.decode_jpeg_bytes(b"\xff\xd8\xff garbage", 1, "x.jpg")


def test_video_reader_reuses_open_decoder_without_changing_frames(one_video):
    """Forward continuation, frames reused from the previous clip and seeks give the frames a full
    sequential decode gives, in any request order."""
    reader = VideoFileSource(one_video / "videos")
    reference = VideoFileSource(one_video / "videos", cache_videos=1)  # the whole video decoded once
    rng = np.random.default_rng(0)
    requests = [[1, 3, 5], [5, 7, 9], [40, 42], [41, 43], [60, 75, 90], [90], [2, 4], [88, 89, 90], [10, 11]]
    requests += [sorted(rng.integers(1, 91, 4).tolist()) for _ in range(12)]
    for frames in requests:
        got = reader.read_frames("toy_val_001", "", frames, resize=(160, 120))
        want = reference.read("toy_val_001", "", frames, resize=(160, 120))
        assert np.array_equal(np.stack(got), want), frames
    assert len(reader._decoders) == 1
    reader.close()
    assert not reader._decoders and np.array_equal(reader.read("toy_val_001", "", [30]), reference.read("toy_val_001", "", [30]))


def test_video_dataset_in_workers_after_main_process_reads(toy):
    """Workers forked while the main process holds open decoders (with FFmpeg threads) must not hang."""
    from torch.utils.data import DataLoader

    from stad.data.collate import collate_clips

    ds = ClipDataset(toy / "annotations" / "val.pkl", video_root=toy / "videos", clip_len=4, frame_stride=2,
                     transform=default_transform(64))
    first = ds[0].clip
    assert ds.source._decoders  # an open decoder in the main process
    batches = list(DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_clips, timeout=120))
    assert sum(len(b) for b in batches) == len(ds)
    assert torch.equal(batches[0].clips[0], first)


def test_sources_are_safe_to_share_between_threads(one_video, tmp_path):
    """Threads reading one source concurrently (a per-thread decode buffer, one decoder user at a
    time) get exactly the frames a single reader gets."""
    from concurrent.futures import ThreadPoolExecutor

    for source, fmt in ((VideoFileSource(one_video / "videos"), ""),
                        (FrameFolderSource(one_video / "jpg"), "toy_val_001_%06d.jpg")):
        requests = [[n, n + 2, n + 4] for n in range(1, 80, 7)]
        expected = [np.stack(source.read_frames("toy_val_001", fmt, r, resize=(100, 75))) for r in requests]
        with ThreadPoolExecutor(3) as pool:
            got = list(pool.map(lambda r: np.stack(source.read_frames("toy_val_001", fmt, r, resize=(100, 75))),
                                requests * 3))
        assert all(np.array_equal(g, e) for g, e in zip(got, expected * 3))
