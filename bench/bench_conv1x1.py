"""Convolution kernels of the ACAR head on the CPU, to re-measure on a new host.

    python bench/bench_conv1x1.py [--rounds 5] [--threads 1]

1x1: plain `F.conv2d` (what `stad.models.heads.kernels.conv1x1` runs) vs `dilation=2`, which cannot
change a 1x1 convolution but steers PyTorch's CPU dispatch to oneDNN (the head used to pass it; dropped
in issue 17: a win on the AMD host, neutral or a loss on the Intel one). 3x3: oneDNN's direct
convolution vs Winograd F(2x2, 3x3) (`stad.models.heads.kernels.conv3x3`, q/k/v fused where the head
fuses them), forward and forward + backward. Results: bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stad.models.heads.kernels import conv3x3  # noqa: E402

SHAPES = [(2304, 1024, 8, 16, 16), (1024, 512, 8, 16, 16), (512, 512, 40, 7, 7)]  # C_in, C_out, N, H, W
SHAPES_3X3 = [  # label, C, N, H, W, padding, how many convs share the input
    ("conv2 (valid, 16x16)", 512, 40, 16, 16, 0, 1),
    ("HR2O q/k/v (7x7, pad 1)", 512, 40, 7, 7, 1, 3),
    ("HR2O output conv (7x7, pad 1)", 512, 40, 7, 7, 1, 1),
]


def best_time(fn, rounds: int) -> float:
    fn()  # warm-up (kernel selection, allocation)
    times = []
    for _ in range(rounds):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return min(times)


def bench_1x1(rounds: int) -> None:
    for c_in, c_out, n, h, w in SHAPES:
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(n, c_in, h, w).contiguous(memory_format=layout)
            weight = torch.randn(c_out, c_in, 1, 1)
            plain, dilated = (best_time(lambda: F.conv2d(x, weight, dilation=d), rounds) for d in (1, 2))
            print(f"1x1 {c_in} -> {c_out}, {n} x {h} x {w} {'NHWC' if layout == torch.channels_last else 'NCHW'}: "
                  f"plain {plain * 1e3:.1f} ms, dilation 2 {dilated * 1e3:.1f} ms ({plain / dilated:.2f}x)")


def bench_3x3(rounds: int) -> None:
    for label, c, n, h, w, pad, count in SHAPES_3X3:
        x = torch.randn(n, c, h, w).contiguous(memory_format=torch.channels_last)
        weights = [torch.randn(c, c, 3, 3) / (3 * c ** 0.5) for _ in range(count)]
        with torch.no_grad():
            direct = best_time(lambda: [F.conv2d(x, wt, padding=pad) for wt in weights], rounds)
            wino = best_time(lambda: conv3x3(x, weights, pad), rounds)
        xg, wg = x.clone().requires_grad_(True), [wt.clone().requires_grad_(True) for wt in weights]
        direct_bw = best_time(lambda: sum(F.conv2d(xg, wt, padding=pad).sum() for wt in wg).backward(), rounds)
        wino_bw = best_time(lambda: sum(o.sum() for o in conv3x3(xg, wg, pad)).backward(), rounds)
        print(f"3x3 {label} x{count}, {c} ch, {n} maps: forward direct {direct * 1e3:.1f} ms, Winograd "
              f"{wino * 1e3:.1f} ms ({direct / wino:.2f}x); forward + backward {direct_bw * 1e3:.1f} / "
              f"{wino_bw * 1e3:.1f} ms ({direct_bw / wino_bw:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", choices=["1x1", "3x3"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.only != "3x3":
        bench_1x1(args.rounds)
    if args.only != "1x1":
        bench_3x3(args.rounds)


if __name__ == "__main__":
    main()
