"""Clip loading throughput: ClipDataset (+ DataLoader workers) vs a cv2.imread-per-frame baseline.

    .venv/bin/python bench/bench_loader.py [--clips 160] [--rounds 3] [--short-side 112 160] [--clip-len 16] [--stride 2]

Both produce the same tensors: ``[B, 3, T, H, W]`` float RGB, short side scaled (bilinear), normalised
with mean 0.45 / std 0.225, boxes unchanged (evaluation transform). The baseline reads every frame
with ``cv2.imread``, converts BGR->RGB, resizes, casts to float and normalises frame by frame (the
ACAR / PIL style) and batches with torch's default collate. ``ClipDataset`` decodes each distinct
frame once (simplejpeg; at 1/2, 1/4, 1/8 size by DCT scaling when the target allows), resizes and
crops uint8 frames, writes them as RGB planes into a uint8 clip, and the batch is normalised once
when ``batch.clips`` is read - counted here, in the consumer's process. The consumer reads every
batch once (a sum), as training would, for every path.

Cold = first pass, nothing decoded kept (the JPEG files are in the OS page cache for every path).
ClipDataset rows: ``inline`` decodes a clip's frames one after the other (``decode_threads=0``), ``N decode
threads`` on a per-process thread pool (``decode_threads=None`` = auto = min(4, CPUs); inline inside
DataLoader workers); ``+ prefetch`` iterates that loader in a background thread (`stad.data.threads.
prefetch`), 2 batches ahead of the consumer. These rows do not reuse frames shared by consecutive clips (as in shuffled
training); the ``sequential reuse`` row keeps each video's previous clip, as a sequential evaluation
pass does by default (it pays when the clip spans more frames than the keyframe interval: try
``--clip-len 32``).
Cache = second epoch with ``cache_mb`` (decoded + resized frames kept per process). Paths are
measured in interleaved rounds (each round runs every path once) and the median is reported, with
the CPU time of all processes (main + DataLoader workers) per clip, so the ratio can be judged on a
loaded machine. Also the same clips decoded from the mp4 files (PyAV), in sequential order (keyframes
of a video in time order: the open decoder continues forward) and shuffled (a seek per clip).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stad.data.collate import collate_clips  # noqa: E402
from stad.data.dataset import ClipDataset, ClipSample  # noqa: E402
from stad.data.toy import generate  # noqa: E402
from stad.data.transforms import default_transform, render_frames  # noqa: E402
from stad.data.transforms import Normalization  # noqa: E402
from stad.data.threads import prefetch, resolve_decode_threads  # noqa: E402
from stad.data.video import decode_jpeg_bytes, read_file, resize_frame  # noqa: E402

MEAN, STD = 0.45, 0.225
BATCH = 4


class BaselineDataset(torch.utils.data.Dataset):
    """One cv2.imread per frame, per-frame BGR->RGB / resize / float / normalise, stacked at the end."""

    def __init__(self, fast: ClipDataset, frames_root: Path, short_side: int) -> None:
        self.fast, self.root, self.short_side = fast, frames_root, short_side

    def __len__(self) -> int:
        return len(self.fast)

    def __getitem__(self, index: int) -> torch.Tensor:
        kf = self.fast.keyframes[index]
        frames = []
        for n in self.fast.frame_numbers(index):
            img = cv2.imread(str(self.root / kf.video / (kf.format_str % int(n))))
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            h, w = img.shape[:2]
            size = (int(self.short_side * w / h), self.short_side) if w >= h else (self.short_side, int(self.short_side * h / w))
            img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
            frames.append(torch.from_numpy((img - MEAN) / STD).permute(2, 0, 1))
        return torch.stack(frames, dim=1)  # [3, T, H, W]


def cpu_seconds() -> float:
    """CPU time of this process + its reaped children + its live children (DataLoader workers)."""
    t = os.times()
    live = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            c = child.cpu_times()
            live += c.user + c.system
        except psutil.NoSuchProcess:
            pass
    return t.user + t.system + t.children_user + t.children_system + live


def consume(loader: DataLoader) -> int:
    """Iterate once, reading every output tensor once (normalisation happens here for ClipDataset)."""
    seen = 0
    for batch in loader:
        clips = batch if isinstance(batch, torch.Tensor) else batch.clips
        clips.sum()
        seen += clips.shape[0]
    return seen


def measure(make_loader: Callable[[], DataLoader], warm: bool = False) -> tuple[float, float]:
    """(clips/s, CPU ms per clip over all processes) of one pass on a fresh loader (loader start-up
    included); ``warm``: one untimed pass first on the same loader (persistent workers, cache)."""
    loader = make_loader()
    if warm:
        consume(loader)
    cpu, wall = cpu_seconds(), time.perf_counter()
    seen = consume(loader)
    wall = time.perf_counter() - wall
    del loader  # joins persistent workers, so their CPU time is counted (non-persistent: at the pass end)
    return seen / wall, (cpu_seconds() - cpu) / seen * 1e3


def loader(dataset, order, workers: int, fast: bool, persistent: bool = False,
           background: bool = False) -> Callable[[], DataLoader]:
    """``background``: the (main-process) loader runs in a `prefetch` thread, 2 batches ahead."""
    def make() -> DataLoader:
        made = DataLoader(dataset, batch_size=BATCH, sampler=order, num_workers=workers,
                          collate_fn=collate_clips if fast else None,
                          pin_memory=torch.cuda.is_available(), persistent_workers=persistent and workers > 0)
        return _Prefetched(made) if background else made
    return make


class _Prefetched:
    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __iter__(self):
        return prefetch(self.loader, depth=2)


class Stages:
    """CPU time (this thread) per named stage."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.last = time.thread_time()

    def __call__(self, name: str) -> None:
        now = time.thread_time()
        self.totals[name] = self.totals.get(name, 0.0) + now - self.last
        self.last = now


def stage_profile(fast: ClipDataset, short: int, clips: int) -> tuple[dict[str, float], dict[str, float]]:
    """CPU ms per clip of each stage, baseline and ClipDataset (main process, same steps as the
    loaders, timed one by one)."""
    base = Stages()
    order = [i % len(fast) for i in range(clips)]
    for start in range(0, clips, BATCH):
        out = []
        base("other")
        for index in order[start:start + BATCH]:
            kf = fast.keyframes[index]
            frames = []
            for n in fast.frame_numbers(index):
                img = cv2.imread(str(fast.source.path(kf.video, kf.format_str, n)))
                base("read + decode (cv2.imread)")
                img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
                base("BGR->RGB")
                h, w = img.shape[:2]
                img = cv2.resize(img, (int(short * w / h), short) if w >= h else (short, int(short * h / w)),
                                 interpolation=cv2.INTER_LINEAR)
                base("resize")
                frames.append(torch.from_numpy((img.astype(np.float32) / 255.0 - MEAN) / STD).permute(2, 0, 1))
                base("float + normalise")
            out.append(torch.stack(frames, dim=1))
            base("stack + collate")
        torch.utils.data.default_collate(out).sum()
        base("stack + collate")
    ours, scratch = Stages(), bytearray()
    for start in range(0, clips, BATCH):
        samples = []
        ours("other")
        for index in order[start:start + BATCH]:
            kf = fast.keyframes[index]
            numbers = fast.frame_numbers(index)
            recipe = fast.transform.sample(*fast.source.frame_size(kf.video, kf.format_str, int(numbers[0])))
            reduction = recipe.geometry.decode_reduction()
            ours("other")
            decoded = {}
            for n in dict.fromkeys(int(n) for n in numbers):
                data = read_file(str(fast.source.path(kf.video, kf.format_str, n)))
                ours("read file")
                img = decode_jpeg_bytes(data, reduction, scratch=scratch)
                ours("decode (simplejpeg, DCT-reduced)")
                decoded[n] = resize_frame(img, recipe.geometry.resize)
                if decoded[n] is img:
                    decoded[n] = img.copy()
                ours("resize")
            pixels = torch.from_numpy(render_frames([decoded[int(n)] for n in numbers], recipe.geometry))
            ours("crop/flip + BGR->RGB planes")
            samples.append(ClipSample(pixels, torch.zeros(0, 4), torch.zeros(0, 1), torch.zeros(0), kf.key,
                                      torch.zeros(0, dtype=torch.int64), (240, 320), torch.zeros(0, 4),
                                      recipe.normalization))
            ours("other")
        batch = collate_clips(samples)
        ours("stack + collate")
        batch.clips.sum()
        ours("float + normalise")
    return ({k: v / clips * 1e3 for k, v in base.totals.items()}, {k: v / clips * 1e3 for k, v in ours.totals.items()})


def compare(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    diff = (a - b).abs() * STD * 255
    return float(diff.max()), float(diff.mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=160, help="clips per measurement (keyframes repeat)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--short-side", type=int, nargs="+", default=[112, 160])
    parser.add_argument("--clip-len", type=int, default=16)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--no-video", action="store_true", help="skip the PyAV (mp4) rows")
    parser.add_argument("--stages", action="store_true", help="also time each stage (main process)")
    parser.add_argument("--data", default=str(ROOT / "bench" / "out" / "toy_small_video"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    Normalization().apply(torch.zeros(3, 1, 1, 1, dtype=torch.uint8))  # one-time numba import/JIT, not timed
    data = Path(args.data)
    if not (data / "annotations" / "train.pkl").exists() or not (data / "videos").is_dir():
        generate(data, seed=0, size="small", workers=2, write_video=True, progress=False)
    ann, frames, videos = data / "annotations" / "train.pkl", data / "frames", data / "videos"
    print(f"# {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, load avg "
          f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())}, 1 torch/OpenCV thread per process, clip "
          f"{args.clip_len} frames x stride {args.stride}, {args.clips} clips per pass, batch {BATCH}, "
          f"{args.rounds} interleaved rounds (median), 320x240 JPEG q92 frames / H.264 mp4")
    for short in args.short_side:
        kwargs = dict(clip_len=args.clip_len, frame_stride=args.stride, transform=default_transform(short))
        fast = ClipDataset(ann, frames_root=frames, decode_threads=0, **kwargs)
        threaded = ClipDataset(ann, frames_root=frames, decode_threads=None, **kwargs)
        reusing = ClipDataset(ann, frames_root=frames, decode_threads=None, **kwargs)
        for ds in (fast, threaded):
            ds.source.RECENT_VIDEOS = 0  # no reuse of the previous clip's frames (shuffled-training cost)
        full = ClipDataset(ann, frames_root=frames, fast_decode=False, **kwargs)
        cached = ClipDataset(ann, frames_root=frames, cache_mb=512, **kwargs)
        auto = resolve_decode_threads(None)
        base = BaselineDataset(fast, frames, short)
        sequential = [i % len(fast) for i in range(args.clips)]
        shuffled = np.random.default_rng(0).permutation(sequential).tolist()
        paths = {
            "baseline, main process": loader(base, sequential, 0, False),
            "baseline, 2 workers": loader(base, sequential, 2, False),
            "ClipDataset, main process, inline": loader(fast, sequential, 0, True),
            f"ClipDataset, main process, {auto} decode threads": loader(threaded, sequential, 0, True),
            f"ClipDataset, main, {auto} decode threads + prefetch": loader(threaded, sequential, 0, True, background=True),
            "ClipDataset, 2 workers (inline in each)": loader(threaded, sequential, 2, True),
            f"ClipDataset, main, {auto} threads, sequential reuse": loader(reusing, sequential, 0, True),
        }
        if not args.no_video:
            video = ClipDataset(ann, video_root=videos, **kwargs)
            paths["ClipDataset from mp4, main, sequential"] = loader(video, sequential, 0, True)
            paths["ClipDataset from mp4, main, shuffled"] = loader(video, shuffled, 0, True)
        warm_paths = {"cache, main process (epoch 2)": loader(cached, sequential, 0, True),
                      "cache, 2 persistent workers (epoch 2)": loader(cached, sequential, 2, True, persistent=True)}
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in [*paths, *warm_paths]}
        load_before = os.getloadavg()[0]
        for _ in range(args.rounds):
            for name, make in paths.items():
                results[name].append(measure(make))
            for name, make in warm_paths.items():
                cached.source._cache.clear()
                cached.source._cache_bytes = 0
                results[name].append(measure(make, warm=True))
        load_after = os.getloadavg()[0]
        checks = [("decode at 1/%d (default)" % fast.transform.sample(240, 320).geometry.decode_reduction(), fast),
                  (f"same, {auto} decode threads", threaded), ("full-size decode (fast_decode=False)", full)]
        if not args.no_video:
            checks.append(("from mp4 (H.264 crf 17 vs JPEG q92)", video))
        print(f"\nshort side {short}: load avg {load_before:.1f} -> {load_after:.1f}; output vs baseline (grey levels):")
        for label, ds in checks:
            diffs = [compare(collate_clips([ds[i]]).clips[0], base[i]) for i in range(0, len(fast), 3)]
            print(f"  {label:40s} max |diff| {max(d[0] for d in diffs):6.2f}   mean {np.mean([d[1] for d in diffs]):.3f}")
        same = all(torch.equal(fast[i].pixels, threaded[i].pixels) and torch.equal(fast[i].pixels, reusing[i].pixels)
                   for i in range(len(fast)))
        print(f"  {auto} decode threads and sequential reuse vs inline: {'identical' if same else 'DIFFERENT'} uint8 clips")
        ref = statistics.median(r[0] for r in results["baseline, main process"])
        print(f"  {'path':52s} {'clips/s':>8s} {'x':>6s} {'CPU ms/clip':>12s}   (rounds: clips/s)")
        for name, runs in results.items():
            rate, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            print(f"  {name:52s} {rate:8.1f} {rate / ref:6.2f} {cpu:12.2f}   ({', '.join(f'{r[0]:.0f}' for r in runs)})")
        if args.stages:
            base_ms, ours_ms = stage_profile(fast, short, args.clips)
            print(f"  CPU ms per clip by stage (main process; the consumer's read of the batch counted in 'stack + collate'):")
            for label, stages in (("baseline", base_ms), ("ClipDataset", ours_ms)):
                print(f"    {label:12s} total {sum(stages.values()):5.2f}: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in stages.items() if k != "other")
                      + f", other {stages.get('other', 0):.2f}")


if __name__ == "__main__":
    main()
