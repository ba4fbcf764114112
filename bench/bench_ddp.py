"""Data-parallel training throughput: samples/s with 1 vs N processes (gloo, one thread each).

Each process runs the engine's `Trainer` (DDP, box-normalised loss, all-reduce of gradients) on the
toy config's tiny dual-stream model with a fixed per-process batch of synthetic clips held in
memory, so the figure measures compute + gradient communication, not JPEG decoding (that is
bench_loader's job). Weak scaling: N processes see N times the samples per step.

    python bench/bench_ddp.py [--procs 1 2] [--steps 12] [--batch 4] [--repeats 2] [--append]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "configs" / "toy" / "vitsf_acar_train.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batches(batch: int, clip_len: int, size: tuple[int, int], num_classes: int, count: int, seed: int) -> list:
    import torch

    from stad.data.collate import ClipBatch

    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        boxes = [torch.tensor([[0.1, 0.2, 0.4, 0.9], [0.5, 0.1, 0.8, 0.95], [0.3, 0.3, 0.6, 0.7]]) for _ in range(batch)]
        targets = [(torch.rand(3, num_classes, generator=gen) > 0.7).float() for _ in range(batch)]
        out.append(ClipBatch(pixels=torch.randn(batch, 3, clip_len, *size, generator=gen), boxes=boxes,
                             targets=targets, box_scores=[torch.ones(3)] * batch, keys=[("v", 1)] * batch,
                             person_ids=[torch.zeros(3, dtype=torch.long)] * batch, orig_boxes=boxes,
                             orig_sizes=[(240, 320)] * batch))
    return out


def _worker(ctx, steps: int, batch: int, out_file: str) -> None:
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from stad.config import load_config
    from stad.engine import builders, checkpoint
    from stad.engine.optim import WarmupLRSchedule, build_optimizer
    from stad.engine.trainer import Trainer

    config = load_config(CONFIG)
    checkpoint.seed_everything(config.manual_seed)
    model = builders.build_model(config)
    with warnings.catch_warnings():  # broadcast_buffers deprecation (torch 2.14)
        warnings.simplefilter("ignore", FutureWarning)
        model = DistributedDataParallel(model, broadcast_buffers=False)
    criterion, _ = builders.build_criterion(config)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], config.train.optimizer, 1e-3)
    schedule = WarmupLRSchedule(optimizer, config.train.scheduler, 1, steps + 2)
    trainer = Trainer(ctx, model, criterion, optimizer, schedule, torch.amp.GradScaler("cpu", enabled=False))
    clip_len, _ = builders.temporal_sampling(config.train.augmentation)
    data = _batches(batch, clip_len, (128, 160), config.num_classes, steps + 2, seed=ctx.rank)
    model.train()
    for i in range(2):  # warm-up (allocator, gloo buffers)
        trainer.step([data[i]], i)
    torch.distributed.barrier()
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(2, steps + 2):
        trainer.step([data[i]], i)
    cpu = torch.tensor([time.process_time() - cpu_start])  # this process's CPU seconds (all its threads)
    torch.distributed.barrier()
    elapsed = time.perf_counter() - start
    torch.distributed.all_reduce(cpu, op=torch.distributed.ReduceOp.MAX)
    if ctx.rank == 0:
        Path(out_file).write_text(f"{elapsed} {cpu.item()}")


def measure(procs: int, steps: int, batch: int) -> tuple[float, float]:
    """(samples/s over all processes, CPU seconds per step of the busiest process)."""
    from stad.engine.launch import LaunchSpec, launch

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "elapsed.txt"
        spec = LaunchSpec(nproc_per_node=procs, master_port=_free_port(), threads_per_worker=1)
        if launch(_worker, spec, (steps, batch, str(out))) != 0:
            raise RuntimeError(f"benchmark with {procs} processes failed")
        elapsed, cpu = map(float, out.read_text().split())
    return procs * batch * steps / elapsed, cpu / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4, help="clips per process per step")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repetitions; the best is kept")
    parser.add_argument("--append", action="store_true", help="append the figures to bench/RESULTS.md")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    rates: dict[int, float] = {}
    cpu: dict[int, float] = {}
    for _ in range(args.repeats):  # interleaved, best of: other jobs on a shared machine only slow runs down
        for n in args.procs:
            rate, cpu_step = measure(n, args.steps, args.batch)
            rates[n], cpu[n] = max(rates.get(n, 0.0), rate), min(cpu.get(n, float("inf")), cpu_step)
    base = args.procs[0]
    lines = [f"| {n} | {args.batch} | {rates[n]:.2f} | {rates[n] / rates[base]:.2f}x | {cpu[n]:.3f} | "
             f"{n * cpu[base] / (base * cpu[n]):.2f}x |" for n in args.procs]
    table = "\n".join(["| processes | clips/process/step | samples/s (wall) | speed-up (wall) | CPU s/step/process "
                       "| speed-up from CPU time |", "|---|---|---|---|---|---|", *lines])
    print(table)
    if args.append:
        cmd = "python bench/bench_ddp.py " + " ".join(sys.argv[1:])
        section = (f"\n## bench_ddp: data-parallel training throughput (engine)\n\n"
                   f"- command: `{cmd}`\n- machine: {os.cpu_count()}-core CPU ({platform.processor() or 'x86_64'}), "
                   f"no GPU; gloo backend, 1 thread per process; shared with other jobs\n"
                   f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
                   f"- workload: toy config's tiny VITSF + ACAR model (configs/toy/vitsf_acar_train.yaml), "
                   f"synthetic 16x128x160 clips with 3 boxes each, {args.steps} timed steps after 2 warm-up steps, best of {args.repeats} interleaved runs. "
                   f"Wall figures suffer from the other jobs on this shared 2-core machine; the CPU-time "
                   f"column (process CPU seconds per step, busiest rank) gives the speed-up the same "
                   f"work would reach on otherwise idle cores (N x CPU/step of 1 process / CPU/step of each)\n\n"
                   f"{table}\n")
        results = ROOT / "bench" / "RESULTS.md"
        with results.open("a", encoding="utf-8") as handle:
            handle.write(section)
        print(f"appended to {results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
