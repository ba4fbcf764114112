"""decode_threads: a clip's frames decoded on a per-process thread pool give the inline tensors;
bad values are errors; the pool stops on close and is rebuilt (never inherited) in forked workers;
a sequential pass reuses the frames consecutive clips share."""
import gc
import multiprocessing
import os
import threading

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stad.config import ConfigError, load_config
from stad.data.collate import collate_clips
from stad.data.dataset import ClipDataset
from stad.data.formats import acar_pkl
from stad.data.threads import THREAD_NAME_PREFIX, ClipThreadPool, resolve_decode_threads
from stad.data.toy import generate
from stad.data.transforms import default_transform
from stad.data.video import FrameFolderSource, FrameReadError, VideoFileSource
from stad.structures import Boxes, Keyframe


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    generate(out, seed=0, size="tiny", workers=1, progress=False)
    return out


def _pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME_PREFIX)]


def _samples(ds: ClipDataset, seed: int = 0) -> list:
    torch.manual_seed(seed)  # the same random crops / flips for every dataset compared
    return [ds[i] for i in range(len(ds))]


def _assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.key == y.key and x.pixels.dtype == y.pixels.dtype == torch.uint8
        assert torch.equal(x.pixels, y.pixels) and torch.equal(x.boxes, y.boxes), x.key


@pytest.mark.parametrize("short_side,train", [(112, False), (160, False), (96, True)])
def test_threaded_frames_equal_inline(toy, short_side, train):
    """Full-size and 1/2-DCT decodes, crops, flips and clamped clips (a repeated first frame)."""
    kwargs = dict(clip_len=20, frame_stride=4, transform=default_transform(short_side, train=train, crop=96 if train else None))
    ann, frames = toy / "annotations" / "val.pkl", toy / "frames"
    inline = ClipDataset(ann, frames_root=frames, decode_threads=0, **kwargs)
    threaded = ClipDataset(ann, frames_root=frames, decode_threads=3, **kwargs)
    try:
        assert inline.source.pool.threads == 1 and threaded.source.pool.threads == 3
        assert inline.frame_numbers(0)[:3].tolist() == [1, 1, 1]  # clamped at the video start
        _assert_same(_samples(inline), _samples(threaded))
        assert _pool_threads()  # the threaded dataset really used its pool
    finally:
        threaded.close()


def test_batch_fetch_on_threads_equals_one_by_one(toy):
    """__getitems__ (DataLoader's batch fetch) builds clips on the threads; random crops/flips are
    drawn in index order first, so the samples equal __getitem__ one by one - for a batch of one
    too (its frames then spread over the threads)."""
    kwargs = dict(clip_len=6, frame_stride=4, transform=default_transform(112, train=True, crop=96))
    ann, frames = toy / "annotations" / "train.pkl", toy / "frames"
    inline = ClipDataset(ann, frames_root=frames, decode_threads=1, **kwargs)
    threaded = ClipDataset(ann, frames_root=frames, decode_threads=2, **kwargs)
    order = [3, 0, 2, 1, 3, 2, 0]  # 4 keyframes in the tiny set
    torch.manual_seed(1)
    expected = [inline[i] for i in order]
    torch.manual_seed(1)
    got = threaded.__getitems__(order[:4]) + threaded.__getitems__(order[4:6]) + threaded.__getitems__(order[6:])
    _assert_same(expected, got)
    assert len({tuple(s.pixels.shape) for s in got}) == 1 and not all(torch.equal(got[0].boxes, s.boxes) for s in got)
    torch.manual_seed(1)
    _assert_same(expected, inline.__getitems__(order))
    threaded.close()


def test_threaded_video_equal_inline(toy):
    kwargs = dict(clip_len=6, frame_stride=3, transform=default_transform(64))
    ann, videos = toy / "annotations" / "val.pkl", toy / "videos"
    inline = ClipDataset(ann, video_root=videos, decode_threads=1, **kwargs)
    threaded = ClipDataset(ann, video_root=videos, decode_threads=2, **kwargs)
    cached = ClipDataset(ann, video_root=videos, decode_threads=2, cache_videos=1, **kwargs)
    try:
        reference = _samples(inline)
        _assert_same(reference, _samples(threaded))
        _assert_same(reference, _samples(cached))  # whole-video decode converts on the pool too
    finally:
        for ds in (inline, threaded, cached):
            ds.close()
    assert not _pool_threads()


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_bad_decode_threads_rejected(toy, bad):
    with pytest.raises(ValueError, match="decode_threads must be None"):
        ClipDataset(toy / "annotations" / "val.pkl", frames_root=toy / "frames", decode_threads=bad)
    with pytest.raises(ValueError, match="decode_threads must be None"):
        VideoFileSource(toy / "videos", decode_threads=bad)


def test_auto_and_inline_thread_counts():
    cpus = len(os.sched_getaffinity(0))
    assert resolve_decode_threads(None) == min(4, cpus)
    assert resolve_decode_threads(0) == resolve_decode_threads(1) == 1
    assert resolve_decode_threads(6) == 6
    pool = ClipThreadPool(1)
    assert pool.map(lambda x: x * 2, [1, 2, 3]) == [2, 4, 6] and not pool.started  # inline: no thread


def test_pool_map_keeps_order_and_reraises_after_all_shares():
    pool = ClipThreadPool(3)
    try:
        assert pool.map(lambda x: x * x, list(range(10))) == [x * x for x in range(10)]
        assert pool.map(str, []) == [] and pool.map(str, [7]) == ["7"]
        done = []

        def work(x):
            if x == 4:
                raise KeyError(x)
            done.append(x)
            return x

        with pytest.raises(KeyError):
            pool.map(work, list(range(9)))  # shares [0, 3, 6], [1, 4, 7], [2, 5, 8]
        finished = sorted(done)
        assert finished == [0, 1, 2, 3, 5, 6, 8]  # the other shares ran to their end before the raise
        assert pool.map(abs, [-1, -2, -3]) == [1, 2, 3] and sorted(done) == finished  # nothing left running
    finally:
        pool.shutdown()
    assert not pool.started and not _pool_threads()


def test_zero_boxes_and_missing_frames_with_threads(tmp_path, toy):
    keyframes, labelmap = acar_pkl.read_acar_pkl(toy / "annotations" / "val.pkl")
    kf = keyframes[0]
    empty = Keyframe(kf.video, kf.timestamp, Boxes.empty(), (), kf.mid_frame, kf.start_frame, kf.n_frames,
                     kf.format_str, kf.frame_rate)
    path = tmp_path / "empty.pkl"
    acar_pkl.write_acar_pkl(path, [empty], labelmap)
    ds = ClipDataset(path, frames_root=toy / "frames", clip_len=4, frame_stride=2, transform=default_transform(64),
                     decode_threads=2)
    sample = ds[0]
    assert sample.boxes.shape == (0, 4) and sample.targets.shape == (0, 11) and sample.pixels.shape[:2] == (3, 4)
    batch = collate_clips([sample, sample])
    assert batch.num_boxes == [0, 0] and batch.clips.shape[0] == 2
    (toy / "frames" / kf.video / (kf.format_str % (kf.mid_frame + 2))).rename(tmp_path / "moved.jpg")
    try:
        with pytest.raises(FrameReadError, match=rf"{kf.format_str % (kf.mid_frame + 2)}: frame .* is missing"):
            ds.source.read_frames(kf.video, kf.format_str, [kf.mid_frame - 2, kf.mid_frame, kf.mid_frame + 2, 1])
    finally:
        (tmp_path / "moved.jpg").rename(toy / "frames" / kf.video / (kf.format_str % (kf.mid_frame + 2)))
    ds.close()
    assert not _pool_threads()


def test_pool_threads_stop_on_close_and_on_collection(toy):
    ds = ClipDataset(toy / "annotations" / "val.pkl", frames_root=toy / "frames", clip_len=4, frame_stride=2,
                     transform=default_transform(64), decode_threads=3)
    batches = list(DataLoader(ds, batch_size=2, collate_fn=collate_clips))
    assert 1 <= len(_pool_threads()) <= 2  # 3 threads: the caller + up to 2 pool threads (started on demand)
    ds.close()
    assert not _pool_threads()
    again = list(DataLoader(ds, batch_size=2, collate_fn=collate_clips))  # restarts on the next read
    assert torch.equal(again[0].clips, batches[0].clips) and _pool_threads()
    del ds, again
    gc.collect()
    for thread in _pool_threads():
        thread.join(timeout=10)
    assert not _pool_threads()


def test_forked_workers_build_their_own_pool(toy):
    """A pool running in the parent before the fork must not be used (deadlock) in the workers."""
    kwargs = dict(clip_len=4, frame_stride=2, transform=default_transform(64))
    ann, frames = toy / "annotations" / "val.pkl", toy / "frames"
    parent = ClipDataset(ann, frames_root=frames, decode_threads=2, **kwargs)
    in_process = list(DataLoader(parent, batch_size=2, collate_fn=collate_clips))
    assert parent.source.pool.started
    context = multiprocessing.get_context("fork")
    from_workers = list(DataLoader(parent, batch_size=2, num_workers=2, collate_fn=collate_clips, timeout=120,
                                   multiprocessing_context=context))
    assert [b.keys for b in from_workers] == [b.keys for b in in_process]
    assert all(torch.equal(a.clips, b.clips) for a, b in zip(from_workers, in_process))
    parent.close()


def _map_in_child(pool: ClipThreadPool, queue) -> None:
    queue.put((pool.started, pool.map(lambda x: x + 1, [1, 2, 3, 4])))


def test_pool_is_rebuilt_after_fork_and_not_pickled():
    import pickle

    pool = ClipThreadPool(2)
    pool.map(abs, [-1, -2])
    assert pool.started
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_map_in_child, args=(pool, queue))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == (False, [2, 3, 4, 5])  # not started in the child before its first map
    copy = pickle.loads(pickle.dumps(pool))
    assert copy.threads == 2 and not copy.started
    pool.shutdown()


def test_auto_threads_are_inline_in_workers(toy):
    ds = ClipDataset(toy / "annotations" / "val.pkl", frames_root=toy / "frames", clip_len=2, frame_stride=2,
                     transform=default_transform(32))
    assert ds.source.decode_threads is None
    seen = list(DataLoader(_Probe(ds), batch_size=None, num_workers=1, timeout=60))
    assert seen == [1]  # auto -> inline inside a DataLoader worker
    assert ds.source.decode_threads is None  # the main process's setting is unchanged


class _Probe(torch.utils.data.Dataset):
    def __init__(self, ds: ClipDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> int:
        self.ds[0]
        return self.ds.source.pool.threads


def test_sequential_pass_reuses_shared_frames(toy, monkeypatch):
    """Consecutive keyframes of a video whose clips overlap decode only the frames not seen in the
    previous clip; the clips are those of a fresh reader."""
    kwargs = dict(clip_len=8, frame_stride=6, transform=default_transform(64))  # 43-frame span, keyframes 30 apart
    ann, frames = toy / "annotations" / "val.pkl", toy / "frames"
    ds = ClipDataset(ann, frames_root=frames, decode_threads=2, **kwargs)
    loads = []
    original = FrameFolderSource._load

    def counting(self, video, format_str, frame, reduction, resize):
        loads.append((video, frame))
        return original(self, video, format_str, frame, reduction, resize)

    monkeypatch.setattr(FrameFolderSource, "_load", counting)
    first, second = 0, next(i for i in range(1, len(ds)) if ds.keyframes[i].video == ds.keyframes[0].video)
    shared = set(ds.frame_numbers(first).tolist()) & set(ds.frame_numbers(second).tolist())
    assert shared
    ds[first]
    loads.clear()
    clip = ds[second].pixels
    assert {f for _, f in loads} == set(ds.frame_numbers(second).tolist()) - shared
    fresh = ClipDataset(ann, frames_root=frames, decode_threads=0, **kwargs)
    assert torch.equal(clip, fresh[second].pixels)
    # a DataLoader batch of overlapping clips is built in order (frames on the threads): full reuse
    ds.source.close()
    loads.clear()
    batch = ds.__getitems__([first, second])
    assert len(loads) == len(set(ds.frame_numbers(first).tolist()) | set(ds.frame_numbers(second).tolist()))
    assert torch.equal(batch[1].pixels, clip)
    ds.close()


MINIMAL_YAML = """
evaluate: True
model:
  backbone: {arch: slowfast50}
  head: {type: linear, kwargs: {num_classes: 3}}
val: {root_path: frames, annotation_path: val.pkl}
train: {root_path: frames, annotation_path: train.pkl}
"""


def test_decode_threads_config_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL_YAML)
    cfg = load_config(path)
    assert cfg.train.decode_threads is None and cfg.val.decode_threads is None  # auto
    cfg = load_config(path, ["train.decode_threads=0", "val.decode_threads=3"])
    assert cfg.train.decode_threads == 0 and cfg.val.decode_threads == 3
    assert load_config(path, ["train.decode_threads=auto"]).train.decode_threads is None  # "auto" spelt out
    with pytest.raises(ConfigError, match=r"train: decode_threads: must be auto/null \(min\(4"):
        load_config(path, ["train.decode_threads=-1"])
    with pytest.raises(ConfigError, match=r"val.decode_threads: expected int, got str 'many'"):
        load_config(path, ["val.decode_threads=many"])
    with pytest.raises(ConfigError, match=r"did you mean 'val\.decode_threads'"):
        load_config(path, ["val.decode_thread=2"])


def test_build_dataset_passes_decode_threads(tmp_path, toy):
    from stad.engine.builders import build_dataset

    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL_YAML)
    cfg = load_config(path, [f"val.root_path={toy / 'frames'}", f"val.annotation_path={toy / 'annotations' / 'val.pkl'}",
                             "val.decode_threads=2", "model.head.kwargs.num_classes=11"])
    ds = build_dataset(cfg, cfg.val, train=False)
    assert ds.source.decode_threads == 2 and ds.source.pool.threads == 2
    ds.close()


def test_prefetch_yields_in_order_reraises_and_stops_early(toy):
    from stad.data.threads import PREFETCH_THREAD_NAME, prefetch

    def alive() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == PREFETCH_THREAD_NAME]

    assert list(prefetch(range(7), depth=2)) == list(range(7))

    def failing():
        yield 1
        raise OSError("frame 9 missing")

    seen = []
    with pytest.raises(OSError, match="frame 9 missing"):
        for x in prefetch(failing()):
            seen.append(x)
    assert seen == [1] and not alive()
    produced = []

    def endless():
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    for x in prefetch(endless(), depth=3):
        if x == 2:
            break
    assert not alive() and len(produced) <= 2 + 1 + 3 + 1  # stopped within the queue depth
    with pytest.raises(ValueError, match="depth must be >= 1"):
        next(prefetch([1], depth=0))
    ds = ClipDataset(toy / "annotations" / "val.pkl", frames_root=toy / "frames", clip_len=4, frame_stride=2,
                     transform=default_transform(64), decode_threads=2)
    loader = DataLoader(ds, batch_size=2, collate_fn=collate_clips)
    background = [b.clips for b in prefetch(loader)]
    foreground = [b.clips for b in loader]
    assert len(background) == len(foreground) and all(torch.equal(a, b) for a, b in zip(background, foreground))
    ds.close()
