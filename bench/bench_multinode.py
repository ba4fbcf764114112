"""Two processes on one node vs two "nodes" of one process each over loopback (gloo, CPU).

* ``node``: one launcher, ``--nproc_per_node 2`` (`LaunchSpec(nproc_per_node=2)`).
* ``2nodes``: two launcher processes, ``--nnodes 2 --node_rank 0/1 --nproc_per_node 1
  --master_addr 127.0.0.1``, as main.py runs on two machines; here both on this machine.

Each rank runs the engine's `Trainer` (DDP, gradient all-reduce) on the toy config's tiny
dual-stream model with synthetic clips in memory (bench_ddp's workload): training samples/s over
both ranks. Then the evaluation gather: each rank builds a prediction shard of ``--boxes`` boxes x
``--classes`` classes (default 50k x 60 float32 = 12 MB of scores per rank, a real AVA val set's
size) and `predictor.gather_to_main` moves it to rank 0 over torch.distributed in 4 MB rounds;
timed (median of ``--gathers``), with rank 0's `merge_shards` separately.

    python bench/bench_multinode.py [--steps 10] [--batch 4] [--boxes 50000] [--runs 2] [--append]

Every configuration runs ``--runs`` times, interleaved (node, 2nodes, node, 2nodes, ...); all runs
are reported, not the best.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _synthetic_shard(rank: int, world: int, boxes: int, classes: int):
    import numpy as np

    from stad.engine.predictor import Predictions, Shard

    per_clip = 5  # boxes per keyframe
    clips = boxes // per_clip
    indices = np.arange(rank, clips * world, world, dtype=np.int64)  # DistributedSampler order, no padding
    rng = np.random.default_rng(rank)
    sample = np.repeat(indices, per_clip)
    preds = Predictions(sample, tuple(f"video{int(i) // 900:04d}" for i in sample.tolist()),
                        900 + sample % 900, rng.random((len(sample), 4), dtype=np.float32),
                        rng.random((len(sample), classes), dtype=np.float32),
                        np.repeat(np.arange(len(indices), dtype=np.int64), per_clip))
    return Shard(preds, indices, None), clips * world


def _worker(ctx, steps: int, batch: int, boxes: int, classes: int, gathers: int, out_file: str) -> None:
    import statistics

    import torch

    from bench_ddp import _worker as train_worker
    from stad.engine.predictor import gather_to_main, merge_shards

    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp) / "train.txt"
        train_worker(ctx, steps, batch, str(train_file))  # writes on rank 0 only
        train = train_file.read_text().split() if ctx.rank == 0 else None
    shard, dataset_size = _synthetic_shard(ctx.rank, ctx.world_size, boxes, classes)
    times, merges, stats = [], [], None
    for _ in range(gathers):
        torch.distributed.barrier()
        start = time.perf_counter()
        shards, stats = gather_to_main(ctx, shard)
        seconds = torch.tensor([time.perf_counter() - start])
        torch.distributed.all_reduce(seconds, op=torch.distributed.ReduceOp.MAX)  # until the last rank is done
        times.append(seconds.item())
        if ctx.rank == 0:
            start = time.perf_counter()
            merged = merge_shards(shards, dataset_size, classes)
            merges.append(time.perf_counter() - start)
            assert len(merged) == dataset_size * 5, len(merged)
    if ctx.rank == 0:
        elapsed, cpu = map(float, train)
        Path(out_file).write_text(json.dumps({
            "samples_per_s": ctx.world_size * batch * steps / elapsed, "cpu_s_per_step": cpu / steps,
            "gather_s": statistics.median(times), "gather_mb": stats.bytes / 1e6, "gather_rounds": stats.rounds,
            "merge_s": statistics.median(merges)}))


def _node_main(args: argparse.Namespace) -> int:
    """One "node" of the 2nodes configuration (a separate process started by `measure`)."""
    from stad.engine.launch import LaunchSpec, launch

    spec = LaunchSpec(nproc_per_node=1, nnodes=2, node_rank=args.node_rank, master_addr="127.0.0.1",
                      master_port=args.port, threads_per_worker=1, timeout_s=300)
    return launch(_worker, spec, (args.steps, args.batch, args.boxes, args.classes, args.gathers, args.out))


def measure(kind: str, args: argparse.Namespace) -> dict:
    from stad.engine.launch import LaunchSpec, launch

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "result.json")
        work = (args.steps, args.batch, args.boxes, args.classes, args.gathers, out)
        if kind == "node":
            spec = LaunchSpec(nproc_per_node=2, master_port=_free_port(), threads_per_worker=1, timeout_s=300)
            if launch(_worker, spec, work) != 0:
                raise RuntimeError("the 2-process run failed")
        else:
            port = _free_port()
            common = [sys.executable, __file__, "--port", str(port), "--out", out, "--steps", str(args.steps),
                      "--batch", str(args.batch), "--boxes", str(args.boxes), "--classes", str(args.classes),
                      "--gathers", str(args.gathers)]
            procs = [subprocess.Popen(common + ["--node-rank", str(r)], cwd=tmp, stdin=subprocess.DEVNULL)
                     for r in (0, 1)]
            if any(p.wait(timeout=600) != 0 for p in procs):
                raise RuntimeError("the 2-node run failed")
        return json.loads(Path(out).read_text())


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (after 2 warm-up steps)")
    parser.add_argument("--batch", type=int, default=4, help="clips per process per step")
    parser.add_argument("--boxes", type=int, default=50000, help="prediction rows per rank in the gather")
    parser.add_argument("--classes", type=int, default=60)
    parser.add_argument("--gathers", type=int, default=3, help="timed gathers per run (median reported)")
    parser.add_argument("--runs", type=int, default=2, help="interleaved runs per configuration, all reported")
    parser.add_argument("--append", action="store_true", help="append the figures to bench/RESULTS.md")
    parser.add_argument("--node-rank", type=int, default=None, help=argparse.SUPPRESS)  # internal: one "node"
    parser.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    if args.node_rank is not None:
        return _node_main(args)
    date = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    load_before = _load()
    results: dict[str, list[dict]] = {"node": [], "2nodes": []}
    for run in range(args.runs):
        for kind in results:
            results[kind].append(measure(kind, args))
            print(kind, run + 1, results[kind][-1], flush=True)
    load_after = _load()
    names = {"node": "1 node x 2 processes", "2nodes": "2 nodes x 1 process (loopback)"}
    rows = []
    for kind, runs in results.items():
        for i, r in enumerate(runs, 1):
            rows.append(f"| {names[kind]} | {i} | {r['samples_per_s']:.2f} | {r['cpu_s_per_step']:.3f} | "
                        f"{r['gather_mb']:.1f} | {r['gather_rounds']} | {r['gather_s'] * 1e3:.0f} | "
                        f"{r['gather_mb'] / r['gather_s']:.0f} | {r['merge_s'] * 1e3:.0f} |")
    table = "\n".join(["| configuration | run | train samples/s (wall) | CPU s/step/process | gathered MB | rounds "
                       "| gather ms | gather MB/s | merge ms (rank 0) |", "|---|---|---|---|---|---|---|---|---|",
                       *rows])
    print(table)
    if args.append:
        cmd = "python bench/bench_multinode.py " + " ".join(sys.argv[1:])
        section = (f"\n## bench_multinode: 2 processes on one node vs 2 nodes of 1 process (loopback)\n\n"
                   f"- command: `{cmd}`\n- machine: {_cpu_model()}, {os.cpu_count()} cores, no GPU; gloo, "
                   f"1 thread per process; shared with other jobs\n- date: {date}\n"
                   f"- load average (1/5/15 min): {load_before} before, {load_after} after\n"
                   f"- training: bench_ddp's workload (tiny VITSF + ACAR model, synthetic 16x128x160 clips, 3 boxes "
                   f"each, {args.batch} clips per process per step, {args.steps} timed steps after 2 warm-up steps)\n"
                   f"- gather: {args.boxes} boxes x {args.classes} classes per rank through "
                   f"`predictor.gather_to_main` (4 MB rounds), median of {args.gathers}, time until the last rank "
                   f"is done; merge = rank 0's `merge_shards` of the gathered shards\n"
                   f"- {args.runs} interleaved runs per configuration, each reported\n\n{table}\n")
        with (ROOT / "bench" / "RESULTS.md").open("a", encoding="utf-8") as handle:
            handle.write(section)
        print("appended to bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
