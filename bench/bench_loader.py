"""Clip loading throughput: ClipDataset (+ DataLoader workers) vs a cv2.imread-per-frame baseline.

    .venv/bin/python bench/bench_loader.py [--clips 64] [--short-side 112] [--clip-len 16] [--stride 2]

Both produce the same tensors: ``[3, T, H, W]`` float RGB, short side scaled, normalised with
mean 0.45 / std 0.225, boxes unchanged (evaluation transform). The baseline reads every frame with
``cv2.imread``, converts, resizes, casts to float and normalises frame by frame (the ACAR/PIL
style), in the main process. The fast path decodes each distinct frame once from its bytes
(at 1/2, 1/4, 1/8 size when the target allows), resizes uint8, normalises once per clip in torch,
and runs in DataLoader workers. Prints clips/s side by side and the max/mean output difference.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stad.data.collate import collate_clips  # noqa: E402
from stad.data.dataset import ClipDataset  # noqa: E402
from stad.data.toy import generate  # noqa: E402
from stad.data.transforms import default_transform  # noqa: E402

MEAN, STD = 0.45, 0.225


class BaselineDataset(torch.utils.data.Dataset):
    """One cv2.imread per frame, per-frame resize / float / normalise, stacked at the end."""

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


def _rate(loader: DataLoader) -> tuple[float, float]:
    """(wall clips/s, main-process CPU ms per clip) for one pass over ``loader``."""
    wall, cpu, seen = time.perf_counter(), time.process_time(), 0
    for batch in loader:
        clips = batch if isinstance(batch, torch.Tensor) else batch.clips  # float, normalised: same output
        seen += clips.shape[0]
    return seen / (time.perf_counter() - wall), (time.process_time() - cpu) / seen * 1e3


def _loader(dataset, order, workers: int, fast: bool, persistent: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=4, sampler=order, num_workers=workers,
                      collate_fn=collate_clips if fast else None, pin_memory=torch.cuda.is_available() and fast,
                      persistent_workers=persistent and workers > 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=160, help="clips per measurement (keyframes repeat)")
    parser.add_argument("--short-side", type=int, nargs="+", default=[112, 160])
    parser.add_argument("--clip-len", type=int, default=16)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--data", default=str(ROOT / "bench" / "out" / "toy_small"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = Path(args.data)
    if not (data / "annotations" / "train.pkl").exists():
        generate(data, seed=0, size="small", workers=2, write_video=False, progress=False)
    ann, frames = data / "annotations" / "train.pkl", data / "frames"
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}, 1 torch thread, "
          f"clip {args.clip_len} frames x stride {args.stride}, {args.clips} clips, batch 4, 320x240 JPEG frames")
    for short in args.short_side:
        fast = ClipDataset(ann, frames_root=frames, clip_len=args.clip_len, frame_stride=args.stride,
                           transform=default_transform(short))
        cached = ClipDataset(ann, frames_root=frames, clip_len=args.clip_len, frame_stride=args.stride,
                             transform=default_transform(short), cache_mb=512)
        base = BaselineDataset(fast, frames, short)
        order = [i % len(fast) for i in range(args.clips)]
        diffs = [(fast[i].clip - base[i]).abs() * STD * 255 for i in range(4)]
        rates = {
            "baseline, main process": _rate(_loader(base, order, 0, False)),
            "baseline, 2 workers": _rate(_loader(base, order, 2, False)),
            "ClipDataset, main process": _rate(_loader(fast, order, 0, True)),
            "ClipDataset, 2 workers": _rate(_loader(fast, order, 2, True)),
        }
        _rate(_loader(cached, order, 0, True))  # first epoch fills the decoded-frame cache
        rates["ClipDataset, main process, cache (epoch 2)"] = _rate(_loader(cached, order, 0, True))
        warm = _loader(cached, order, 2, True, persistent=True)
        _rate(warm)  # each worker fills its own cache
        rates["ClipDataset, 2 workers, cache (epoch 2)"] = _rate(warm)
        ref = rates["baseline, main process"][0]
        print(f"\nshort side {short} (JPEG decode at 1/{cached.transform.sample(240, 320).geometry.decode_reduction()}), "
              f"output vs baseline: max |diff| {max(d.max().item() for d in diffs):.1f}, "
              f"mean {np.mean([d.mean().item() for d in diffs]):.2f} grey levels")
        for name, (rate, cpu) in rates.items():
            cpu_text = f"{cpu:6.2f} ms CPU/clip" if "main process" in name else "(CPU in workers)"
            print(f"  {name:42s} {rate:7.1f} clips/s  x{rate / ref:4.2f}  {cpu_text}")


if __name__ == "__main__":
    main()
