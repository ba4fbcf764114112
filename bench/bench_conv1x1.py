"""1x1 convolution on the CPU: plain `F.conv2d` vs `dilation=2` (what `stad.models.heads.acar.conv1x1` passes).

    python bench/bench_conv1x1.py [--rounds 5] [--threads 1]

`dilation=2` cannot change a 1x1 convolution's result but steers PyTorch's CPU dispatch to oneDNN;
whether that is faster depends on the CPU, so measure on the host (results: bench/RESULTS.md).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

SHAPES = [(2304, 1024, 8, 16, 16), (1024, 512, 8, 16, 16), (512, 512, 40, 7, 7)]  # C_in, C_out, N, H, W


def best_time(x: torch.Tensor, weight: torch.Tensor, dilation: int, rounds: int) -> float:
    F.conv2d(x, weight, dilation=dilation)  # warm-up (kernel selection, allocation)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        F.conv2d(x, weight, dilation=dilation)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for c_in, c_out, n, h, w in SHAPES:
        x = torch.randn(n, c_in, h, w).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(c_out, c_in, 1, 1)
        plain, dilated = (best_time(x, weight, d, args.rounds) for d in (1, 2))
        print(f"{c_in} -> {c_out}, {n} x {h} x {w}: plain {plain * 1e3:.1f} ms, dilation 2 {dilated * 1e3:.1f} ms "
              f"({plain / dilated:.2f}x)")


if __name__ == "__main__":
    main()
