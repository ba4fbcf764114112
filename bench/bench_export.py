"""The exported action model (ONNX Runtime, OpenVINO) vs PyTorch eager, same inputs, same outputs.

    .venv/bin/python bench/bench_export.py [--weights runs/demo/acar/checkpoints/last.pth] [--boxes 3 8]
        [--threads 2 1] [--rounds 15] [--append bench/RESULTS.md]

The toy demo's model (`toy_acar_vitsf_tiny`: vit_tiny + slowfast_tiny + ACAR head with HR2O depth 2,
relative position and its gate), the weights of ``--weights`` when the file is there (``make demo``'s),
else the preset's initialisation. One keyframe per call: clip [1, 3, 8, 120, 160] (the preset's
160x120 resize) and N person boxes, what `stad.engine.inference.Predictor` gives the model per clip.

PyTorch eager is ``model(clip, [boxes])`` under ``torch.inference_mode()`` with ``--threads`` torch
threads; ONNX Runtime and OpenVINO run the file ``stad.engine.action_runtimes`` exports (the one
``python -m stad.export`` writes) with the same number of threads. Every runtime's logits are
compared with eager's (max |difference|). Each runtime runs in a process of its own (another
runtime's idle worker threads in the same process would spin on the cores torch's OpenMP threads
wait for), ``--cycles`` processes per runtime in alternating order (torch, onnx, openvino, then
openvino, onnx, torch) so background load hits all alike; per runtime the median and the best call
over all its processes are reported, and the process CPU time per call (all threads). The headline speed-up is eager's median over the
exported runtime's median.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from stad.engine.action_runtimes import load_network  # noqa: E402
from stad.models.presets import get_preset  # noqa: E402

DEFAULT_WEIGHTS = ROOT / "runs" / "demo" / "acar" / "checkpoints" / "last.pth"


def machine() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        return (f"{info.get('Model name', platform.processor())}, {info.get('CPU(s)', os.cpu_count())} CPUs "
                f"({info.get('Core(s) per socket', '?')} cores x {info.get('Thread(s) per core', '?')} threads), "
                f"{info.get('Hypervisor vendor', 'no')} hypervisor")
    except (OSError, subprocess.CalledProcessError):
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def load_model(weights: Path) -> tuple[torch.nn.Module, str]:
    preset = get_preset("toy_acar_vitsf_tiny")
    model = preset.build_model()
    if weights.is_file():
        from stad.engine.builders import load_weights
        from stad.engine.checkpoint import read_checkpoint

        load_weights(model, read_checkpoint(weights), strict=True)
        return model.eval(), f"weights {weights.relative_to(ROOT) if weights.is_relative_to(ROOT) else weights}"
    torch.manual_seed(0)
    return model.eval(), "the preset's initialisation (no --weights file)"


def boxes_for(count: int) -> np.ndarray:
    x1 = np.linspace(0.05, 0.7, count, dtype=np.float32)
    return np.stack([x1, np.full(count, 0.1, np.float32), x1 + 0.25, np.full(count, 0.95, np.float32)], axis=1)


def worker(args) -> int:
    """One runtime in this process only (no other runtime's threads around): timings as JSON, logits to .npy."""
    import json

    torch.set_num_threads(args.threads[0])
    model, _ = load_model(args.weights)
    clip = torch.randn(1, 3, 8, 120, 160, generator=torch.Generator().manual_seed(0)).numpy()
    boxes = boxes_for(args.boxes[0])
    net = load_network(args.worker, model, clip.shape, args.cache, args.threads[0], "bench")
    with torch.inference_mode():
        out = net(clip, boxes)
        net(clip, boxes)
        wall, cpu = [], []
        for _ in range(args.rounds):
            c0, t0 = time.process_time(), time.perf_counter()
            net(clip, boxes)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    np.save(args.cache / f"logits-{args.worker}-{args.threads[0]}-{args.boxes[0]}.npy", out)
    print(json.dumps({"wall": wall, "cpu": cpu}))
    return 0


def bench(args, cache: Path, threads: int, count: int) -> dict:
    """Each runtime in its own process, ``args.cycles`` times in alternating order; per runtime the
    median and best over all its calls."""
    import json

    names = ["torch", "onnx", "openvino"]
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for cycle in range(args.cycles):
        for name in (names if cycle % 2 == 0 else names[::-1]):
            command = [sys.executable, __file__, "--worker", name, "--cache", str(cache), "--weights", str(args.weights),
                       "--threads", str(threads), "--boxes", str(count), "--rounds", str(args.rounds)]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            record = json.loads(result.stdout.strip().splitlines()[-1])
            wall[name] += record["wall"]
            cpu[name] += record["cpu"]
    logits = {name: np.load(cache / f"logits-{name}-{threads}-{count}.npy") for name in names}
    return {name: {"median": statistics.median(wall[name]), "best": min(wall[name]),
                   "cpu": statistics.median(cpu[name]),
                   "diff": float(np.abs(logits[name] - logits["torch"]).max())} for name in names}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--boxes", type=int, nargs="+", default=[3, 8])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--rounds", type=int, default=10, help="timed calls per process (after two warm-up calls)")
    parser.add_argument("--cycles", type=int, default=2, help="processes per runtime, in alternating order")
    parser.add_argument("--append", type=Path, help="append the Markdown section to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    model, source = load_model(args.weights)
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_export-") as cache:
        clip_shape = (1, 3, 8, 120, 160)
        for name in ("onnx", "openvino"):  # export once, before any timing
            load_network(name, model, clip_shape, cache, 1, "bench")
        for threads in args.threads:
            for count in args.boxes:
                result = bench(args, Path(cache), threads, count)
                rows.append((threads, count, result))
                print(threads, count, {k: {m: round(v, 6) for m, v in r.items()} for k, r in result.items()},
                      flush=True)
    load_after = os.getloadavg()
    command = "bench/bench_export.py" + (f" {' '.join(argv)}" if argv else " " + " ".join(sys.argv[1:])).rstrip()
    lines = [f"## bench_export (exported action model vs PyTorch eager) — {started:%Y-%m-%d %H:%M} UTC", "",
             f"Command: `.venv/bin/python {command.strip()}` — machine: {machine()} (`lscpu`); "
             f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min; the machine is shared); "
             f"torch {torch.__version__}. Model: the toy demo's `toy_acar_vitsf_tiny`, {source}; one clip "
             f"[1, 3, 8, 120, 160] per call; each runtime in its own process ({args.cycles} processes per runtime in "
             f"alternating order, {args.rounds} timed calls each after two warm-up calls).", "",
             "| threads | boxes | runtime | median ms | best ms | CPU ms/call | speed-up vs eager (median) | "
             "max abs logit diff |", "|---|---|---|---|---|---|---|---|"]
    for threads, count, result in rows:
        eager = result["torch"]["median"]
        for name, r in result.items():
            label = "PyTorch eager" if name == "torch" else {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}[name]
            diff = "-" if name == "torch" else f"{r['diff']:.1e}"
            lines.append(f"| {threads} | {count} | {label} | {r['median'] * 1000:.1f} | {r['best'] * 1000:.1f} | "
                         f"{r['cpu'] * 1000:.1f} | {eager / r['median']:.2f}x | {diff} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        with open(args.append, "a") as handle:
            handle.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
