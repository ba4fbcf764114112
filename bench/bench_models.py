"""Model benchmarks (CPU; CUDA too when available): backbone forward time per clip + peak memory,
and the batched ACAR head vs ACAR-Net's per-clip loop.

    .venv/bin/python bench/bench_models.py                 # everything, appends to bench/RESULTS.md
    .venv/bin/python bench/bench_models.py --only head     # just the head comparison (--repeats N)
    .venv/bin/python bench/bench_models.py --only tiny     # toy-demo model training step
    .venv/bin/python bench/bench_models.py --no-append     # print only

Each backbone runs in its own subprocess so that its peak RSS (ru_maxrss) is its own.
Reference sizes: SlowFast 32 x 256^2 input (fast 32 frames, slow 8 with alpha 4),
ViT 16 x 224^2; head: 8 clips x 5 boxes on slow 2048x8x16x16 + fast 256x32x16x16 features.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKBONES = {  # name: (clip shape [B, 3, T, H, W], model kwargs)
    "slowfast_tiny": ((1, 3, 16, 160, 160), {}),
    "vit_tiny": ((1, 3, 16, 160, 160), {}),
    "slowfast_r50": ((1, 3, 32, 256, 256), {}),
    "slowfast_r101": ((1, 3, 32, 256, 256), {}),
    "vit_base": ((1, 3, 16, 224, 224), {}),
}


def _cpu_name() -> str:
    """CPU model from /proc/cpuinfo (Linux), else the platform's processor or machine name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_backbone(name: str, iters: int, threads: int) -> dict:
    import torch

    from stad.models import create_model

    torch.set_num_threads(threads)
    shape, kwargs = BACKBONES[name]
    model = create_model(name, **kwargs).eval()
    clip = torch.randn(shape)
    base_rss = _peak_rss_mb()
    times = []
    with torch.inference_mode():
        for _ in range(iters):
            start = time.perf_counter()
            outputs = model(clip)
            times.append(time.perf_counter() - start)
    result = {"name": name, "input": list(shape), "outputs": [list(o.shape) for o in outputs],
              "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
              "cpu_s_per_clip": min(times) / shape[0], "cpu_s_first": times[0],
              "peak_rss_mb": _peak_rss_mb(), "rss_increase_mb": _peak_rss_mb() - base_rss}
    if torch.cuda.is_available():
        model, clip = model.cuda(), clip.cuda()
        torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            model(clip)
            torch.cuda.synchronize()
            start = time.perf_counter()
            model(clip)
            torch.cuda.synchronize()
        result.update(cuda_s_per_clip=(time.perf_counter() - start) / shape[0],
                      cuda_peak_mb=torch.cuda.max_memory_allocated() / 2**20)
    return result


HEAD_CONFIGS = [  # (label, ACARHead kwargs, training step?)
    ("R50 config (HR2O depth 2, 3x3)", dict(depth=2), False),
    ("R101 config (HR2O depth 1, 1x1 mlp)", dict(depth=1, mlp_1x1=True), False),
    ("R50 config, forward+backward (training)", dict(depth=2), True),
]


def _head_inputs():
    """Fused 2304x16x16 map of 8 clips (slow 2048x8x16x16 + fast 256x32x16x16) and 5 boxes per clip."""
    import torch

    from stad.models.fusion import TemporalPoolFusion
    from stad.models.neck import RoINeck

    gen = torch.Generator().manual_seed(0)
    fused = TemporalPoolFusion()([torch.randn(8, 2048, 8, 16, 16, generator=gen),
                                  torch.randn(8, 256, 32, 16, 16, generator=gen)])
    boxes = [torch.cat([torch.rand(5, 2, generator=gen) * 0.5, torch.rand(5, 2, generator=gen) * 0.4 + 0.55], 1)
             for _ in range(8)]
    return fused, RoINeck().eval()(boxes)


def _outputs_and_grads(fn, head, features, train: bool) -> list:
    """[output] (+ input and parameter gradients of sum(output^2) when training)."""
    head.zero_grad(set_to_none=True)
    features.grad = None
    out = fn()
    if not train:
        return [out]
    out.square().sum().backward()
    return [out.detach(), features.grad.clone()] + [p.grad.clone() for p in head.parameters()]


def _max_diffs(fns: dict, head, features, train: bool) -> dict[str, float]:
    """Max |batched - loop| of the logits; when training also the max gradient difference (relative to
    the tensor's largest gradient, worst tensor) of batched vs loop and, for scale, of loop* vs loop."""
    results = {k: _outputs_and_grads(fn, head, features, train) for k, fn in fns.items()}
    loop = results["loop"]
    diffs = {"max_abs_diff": (results["batched"][0] - loop[0]).abs().max().item()}
    for key in ("batched", "loop_fast"):
        diffs[f"grad_rel_diff_{key}"] = max(((a - b).abs().max() / b.abs().max()).item()
                                            for a, b in zip(results[key][1:], loop[1:])) if train else float("nan")
    return diffs


def _timed_rounds(fns: dict, head, features, train: bool, rounds: int) -> tuple[dict, dict]:
    """Wall and thread CPU seconds of each path, ``rounds`` times, interleaved (all paths see the same
    load) in alternating order (forward, then reversed: none always runs right after the same one)."""
    import torch

    wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    for round_ in range(rounds):
        for key in (list(fns) if round_ % 2 == 0 else list(fns)[::-1]):
            head.zero_grad(set_to_none=True)
            features.grad = None
            start, start_cpu = time.perf_counter(), time.thread_time()
            out = fns[key]()
            if train:
                out.square().sum().backward()
            wall[key].append(time.perf_counter() - start)
            cpu[key].append(time.thread_time() - start_cpu)
            del out
    return wall, cpu


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def run_head(threads: int, repeats: int = 4) -> list[dict]:
    """Batched ACAR head vs ACAR-Net's per-clip loop (and the loop given the same kernels),
    ``repeats`` interleaved rounds in alternating order (training: half as many, at least 3); best and
    median of wall and thread CPU time, and the median of the per-round CPU-time ratios."""
    import torch

    from stad.models.heads import ACARHead, acar_per_clip_reference

    torch.set_num_threads(threads)
    fused, rois = _head_inputs()
    rows = []
    for label, kwargs, train in HEAD_CONFIGS:
        head = ACARHead(2304, 60, **kwargs).train(train)
        head.hr2o.apply(lambda m: m.eval() if isinstance(m, torch.nn.Dropout) else None)  # same math both ways
        features = fused.clone().requires_grad_(train)
        fns = {"batched": lambda: head(features, rois),
               "loop": lambda: acar_per_clip_reference(head, features, rois),
               "loop_fast": lambda: acar_per_clip_reference(head, features, rois, fast_kernels=True)}
        with torch.set_grad_enabled(train), torch.inference_mode(not train):
            diffs = _max_diffs(fns, head, features, train)
            wall, cpu = _timed_rounds(fns, head, features, train, max(3, repeats // 2) if train else repeats)
        best, best_cpu = {k: min(v) for k, v in wall.items()}, {k: min(v) for k, v in cpu.items()}
        ratios = [loop / batched for loop, batched in zip(cpu["loop"], cpu["batched"])]
        rows.append({"config": label, "batched_s": best["batched"], "loop_s": best["loop"],
                     "speedup": best["loop"] / best["batched"], "batched_cpu_s": best_cpu["batched"],
                     "loop_cpu_s": best_cpu["loop"], "speedup_cpu": best_cpu["loop"] / best_cpu["batched"],
                     "loop_fast_cpu_s": best_cpu["loop_fast"],
                     "speedup_cpu_fast": best_cpu["loop_fast"] / best_cpu["batched"],
                     "median_batched_cpu_s": _median(cpu["batched"]), "median_loop_cpu_s": _median(cpu["loop"]),
                     "median_speedup_cpu": _median(ratios), **diffs,
                     "all_batched_cpu_s": cpu["batched"], "all_loop_cpu_s": cpu["loop"]})
    return rows


def run_tiny_detector(threads: int, repeats: int = 3) -> list[dict]:
    """Training step cost of the toy-demo model: forward + backward, batch 4, 2 boxes per clip."""
    import torch

    from stad.models import create_model
    from stad.models.losses import SigmoidBCELoss

    torch.set_num_threads(threads)
    rows = []
    for frames, size in ((8, 112), (16, 160)):
        model = create_model("acar_vitsf_tiny", num_classes=5, jitter_scale=0.05).train()
        clips = torch.randn(4, 3, frames, size, size)
        boxes = [torch.tensor([[0.1, 0.1, 0.5, 0.9], [0.4, 0.2, 0.9, 0.8]])] * 4
        targets = torch.zeros(8, 5)
        targets[:, 1] = 1
        wall, cpu = [], []
        for _ in range(repeats):
            model.zero_grad(set_to_none=True)
            start, start_cpu = time.perf_counter(), time.thread_time()
            SigmoidBCELoss()(model(clips, boxes), targets).backward()
            wall.append(time.perf_counter() - start)
            cpu.append(time.thread_time() - start_cpu)
        rows.append({"input": [4, 3, frames, size, size], "wall_s": min(wall), "cpu_s": min(cpu),
                     "params_M": sum(p.numel() for p in model.parameters()) / 1e6})
    return rows


def format_section(backbones: list[dict], heads: list[dict], threads: int, iters: int,
                   tiny: list[dict] | None = None) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n## bench_models (stad/models) — {now}\n",
             f"Command: `.venv/bin/python bench/bench_models.py{' ' if sys.argv[1:] else ''}{' '.join(sys.argv[1:])}` — machine: {os.cpu_count()}-core CPU "
             f"({_cpu_name()}), shared with other jobs; torch threads = {threads}; "
             f"no GPU here (the script adds CUDA columns when one is present).\n"]
    if backbones:
        lines += [f"Backbone forward, batch 1, best of {iters} (inference mode); peak RSS of the process "
                  "(≈0.7 GB is torch itself) and its growth during the forward passes:\n",
                  "| backbone | input [B,3,T,H,W] | outputs | params (M) | CPU s/clip | peak RSS (MB) | RSS added by forward (MB) |",
                  "|---|---|---|---|---|---|---|"]
        for r in backbones:
            lines.append(f"| {r['name']} | {r['input']} | {r['outputs']} | {r['params_M']:.1f} | "
                         f"{r['cpu_s_per_clip']:.2f} | {r['peak_rss_mb']:.0f} | {r['rss_increase_mb']:.0f} |")
    if heads:
        load = heads[0].get("load_average")
        lines += ["\nACAR head (inference forward unless noted), 8 clips x 5 boxes, fused 2304x16x16 map (slow 2048x8x16x16 + "
                  f"fast 256x32x16x16), {heads[0].get('repeats', 4)} rounds (training: half as many, at least 3), "
                  "the paths interleaved in alternating order; best wall and thread CPU time (the latter is robust to "
                  "other jobs on the machine), and the median of the per-round CPU-time ratios loop / batched"
                  + (f"; load average (1 min) {load[0]:.1f} at start, {load[1]:.1f} at end" if load else "") + ".",
                  "*loop* = ACAR-Net's per-clip head code on the same weights; *loop\\** = the same loop given the batched "
                  "head's kernels (channels-last tensors, 3x3 convs through Winograd F(2x2,3x3)), i.e. what batching, the "
                  "conv1 split and the pooled last conv gain on their own. Diffs: max |batched - loop| of the logits and, when "
                  "training, the worst gradient difference relative to that tensor's largest gradient, batched vs loop "
                  "and loop\\* vs loop (the latter shows the size of the difference rounding alone makes at the "
                  "max-pool and ReLU switches):\n",
                  "| head config | batched wall (s) | loop wall (s) | speed-up wall | batched CPU (s) | loop CPU (s) "
                  "| speed-up CPU | median speed-up CPU | loop\\* CPU (s) | speed-up CPU vs loop\\* | max abs diff "
                  "| grad rel diff | grad rel diff loop\\* |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in heads:
            grads = ["-" if g != g else f"{g:.1e}" for g in (r["grad_rel_diff_batched"], r["grad_rel_diff_loop_fast"])]
            lines.append(f"| {r['config']} | {r['batched_s']:.3f} | {r['loop_s']:.3f} | {r['speedup']:.2f}x | "
                         f"{r['batched_cpu_s']:.3f} | {r['loop_cpu_s']:.3f} | **{r['speedup_cpu']:.2f}x** | "
                         f"**{r['median_speedup_cpu']:.2f}x** | "
                         f"{r['loop_fast_cpu_s']:.3f} | {r['speedup_cpu_fast']:.2f}x | {r['max_abs_diff']:.1e} | "
                         f"{grads[0]} | {grads[1]} |")
    if tiny:
        lines += ["\nToy-demo model `acar_vitsf_tiny` (vit_tiny + slowfast_tiny + ACAR head, "
                  f"{tiny[0]['params_M']:.2f} M params), one training step (forward + backward), best of 3:\n",
                  "| clips [B,3,T,H,W] | wall (s) | thread CPU (s) |", "|---|---|---|"]
        for r in tiny:
            lines.append(f"| {r['input']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["backbones", "head", "tiny"], default=None)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=4,
                        help="interleaved rounds of the head benchmark (training: half, at least 3)")
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one backbone, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_backbone(args.one, args.iters, args.threads)))
        return
    backbones, heads, tiny = [], [], []
    if args.only in (None, "backbones"):
        for name in BACKBONES:
            out = subprocess.run([sys.executable, __file__, "--one", name, "--iters", str(args.iters),
                                  "--threads", str(args.threads)], capture_output=True, text=True, check=True)
            backbones.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(backbones[-1], flush=True)
    if args.only in (None, "head"):
        load_start = os.getloadavg()[0]
        heads = run_head(args.threads, args.repeats)
        for row in heads:
            row.update(load_average=(load_start, os.getloadavg()[0]), repeats=args.repeats)
        for row in heads:
            print(row, flush=True)
    if args.only in (None, "tiny"):
        tiny = run_tiny_detector(args.threads)
        for row in tiny:
            print(row, flush=True)
    section = format_section(backbones, heads, args.threads, args.iters, tiny)
    print(section)
    if not args.no_append:
        with open(ROOT / "bench" / "RESULTS.md", "a") as f:
            f.write(section)


if __name__ == "__main__":
    main()
