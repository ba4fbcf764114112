"""`python -m stad.stream` end to end on a synthetic 320x240 stream: keyframes/s, per-stage latency, memory growth.

    .venv/bin/python bench/bench_stream.py [--append bench/RESULTS.md] [--repeats 2]

The stream is toy-actor frames (`stad.data.toy`, 10 s rendered once at 25 fps and looped: persons the
detector finds, so every keyframe runs the action model) written as raw bgr24 frames to the stdin of
``python -m stad.stream --source - --size 320x240 --fps 25`` (a separate process, all its threads;
CSV rows, JSON summary; the annotated MP4 in the throughput and memory runs). Model flags ``--flags``
(default: one thread, OpenVINO for the detector and the action model: on a loaded 2-core host two-thread
eager torch collapses, bench_export in RESULTS.md); a 2 s warm-up run first makes the cached exports.

1. **throughput**: 60 s of stream, ``--realtime off`` (the writer is never paced: the model sets the
   pace), the toy model of ``make demo`` (``runs/demo/acar/checkpoints/last.pth``; make it with
   ``make demo`` or ``python -m stad.demo_pipeline``) and the shipped toy detector: keyframes per wall
   second sustained (from the stream's first progress sample, 5 s in, to the end: start-up and first-call
   compilation excluded) and over the whole run, per-stage mean / p95 latency, real-time factor (stream
   seconds per wall second);
2. **live**: 20 s of stream written at 25 fps, ``--realtime on``: keyframes scored / dropped;
3. **memory**: 10 minutes of stream content (15000 frames at 25 fps) run faster than real time
   (``--realtime off``: as fast as the model goes), RSS sampled by the stream about every 5 s: growth from
   the first sample after 60 s of stream to the end, and the peak;
4. **R50 + HR2O**: the published ACAR-Net config ``configs/ava/SLOWFAST_R50_ACAR_HR2O.yaml`` built with
   random weights (58.9 M parameters; clips of 32 frames 2 apart, short side 256 px), 3 keyframes,
   batch size 1, eager action model: per-keyframe latency per stage.

Each is run ``--repeats`` times; the machine's load average is recorded before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TOY_MODEL = REPO / "runs" / "demo" / "acar" / "checkpoints" / "last.pth"
DETECTOR = REPO / "checkpoints" / "toy_person_yolov8n.pt"
R50_CONFIG = REPO / "configs" / "ava" / "SLOWFAST_R50_ACAR_HR2O.yaml"
FPS, WIDTH, HEIGHT = 25, 320, 240


def toy_frames(seconds: int = 10) -> np.ndarray:
    """BGR ``[seconds * 25, 240, 320, 3]`` toy-actor frames (one scripted video of stad.data.toy)."""
    from stad.data.toy.render import background, render_frame
    from stad.data.toy.script import plan_split

    script = plan_split("bench_stream", 1, 0, 0)[0]
    world = background(script)
    return np.stack([render_frame(script, world, i / FPS) for i in range(seconds * FPS)])


def _feed(stdin, frames: np.ndarray, count: int, paced: bool) -> None:
    """Write ``count`` frames (``frames`` looped) to the pipe (``paced``: 25 per wall second), then close it."""
    start = 0.0
    try:
        for i in range(count):
            if paced and i:
                time.sleep(max(0.0, start + i / FPS - time.perf_counter()))
            stdin.write(frames[i % len(frames)].tobytes())
            if i == 0:  # the first write returns once the stream reads (a frame is larger than the pipe)
                start = time.perf_counter()
        stdin.close()
    except BrokenPipeError:
        pass


def run_stream(frames: np.ndarray, count: int, out: Path, model: list[str], extra: list[str] = (),
               live: bool = False) -> dict:
    """One ``stad.stream`` run on ``count`` piped frames (``live``: written at 25 fps, ``--realtime on``;
    else as fast as the stream reads them, ``--realtime off``); its JSON summary."""
    out.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "stad.stream", "--source", "-", "--size", f"{WIDTH}x{HEIGHT}", "--fps", str(FPS),
            *model, "--detector", str(DETECTOR), "--csv", str(out / "rows.csv"), "--summary", str(out / "summary.json"),
            "--log-every", "5", "--realtime", "on" if live else "off", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1"}
    with (out / "log.txt").open("wb") as log:
        process = subprocess.Popen(args, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
        writer = threading.Thread(target=_feed, args=(process.stdin, frames, count, live))
        writer.start()
        code = process.wait()
        writer.join()
    if code != 0:
        raise SystemExit(f"stad.stream failed (exit {code}); see {out / 'log.txt'}")
    return json.loads((out / "summary.json").read_text())


def r50_checkpoint(folder: Path) -> Path:
    """The published R50 + HR2O config built with random weights (seed 0), saved with its config."""
    import torch

    from stad.config import config_to_dict, load_config
    from stad.engine import builders
    from stad.engine.checkpoint import save_checkpoint

    config = load_config(R50_CONFIG)
    torch.manual_seed(0)
    return save_checkpoint(folder / "r50_hr2o_random.pth", epoch=0, model=builders.build_model(config),
                           config=config_to_dict(config))


def stage_text(summary: dict, stages: tuple[str, ...] = ("decode", "detect", "clip", "action", "draw")) -> str:
    """``decode 0.4 / 2.3, detect ...``: mean / p95 ms per call of each stage."""
    return ", ".join(f"{s} {summary['stages'][s]['mean_ms']:.1f} / {summary['stages'][s]['p95_ms']:.1f}"
                     for s in stages)


def memory_growth(summary: dict, warmup_s: float = 60.0) -> tuple[float, float, float]:
    """(RSS at the first sample after ``warmup_s`` of stream, growth from it to the end, peak), MB."""
    rows = summary["samples"]["rows"]  # [wall_s, stream_s, keyframes_done, rss_mb]
    base = next((row[3] for row in rows if row[1] >= warmup_s), rows[-1][3])
    return base, rows[-1][3] - base, max(row[3] for row in rows)


def sustained(summary: dict) -> float:
    """Keyframes per wall second from the first sample (after ``--log-every`` s: start-up, first-call
    compilation and warm-up behind) to the end; the whole run's rate if there is no earlier sample."""
    rows = summary["samples"]["rows"]
    first, last = rows[0], rows[-1]
    if len(rows) < 2 or last[0] <= first[0]:
        return summary["keyframes_per_second"]
    return (last[2] - first[2]) / (last[0] - first[0])


def throughput_lines(args: argparse.Namespace, frames: np.ndarray, toy: list[str]) -> list[str]:
    """``--seconds`` of stream, never paced, annotated MP4 written: keyframes/s and stage latency per run."""
    lines = []
    for r in range(args.repeats):
        s = run_stream(frames, args.seconds * FPS, args.out / f"throughput{r}", toy,
                       ["--out", str(args.out / f"throughput{r}" / "a.mp4")])
        lines.append(f"- throughput, run {r + 1}: **{sustained(s):.2f} keyframes/s sustained** (after the first "
                     f"sample at {s['samples']['rows'][0][0]:.0f} s; {s['keyframes_per_second']:.2f} over the whole run: "
                     f"{s['keyframes_done']} keyframes, {s['frames']} frames in {s['wall_seconds']:.1f} s, "
                     f"real-time factor {s['realtime_factor']:.2f}x, {s['keyframes_dropped']} dropped); "
                     f"mean / p95 ms per call: {stage_text(s)}")
        print(lines[-1], flush=True)
    return lines


def live_lines(args: argparse.Namespace, frames: np.ndarray, toy: list[str]) -> list[str]:
    """``--live-seconds`` of stream written at 25 fps, ``--realtime on``: keyframes scored / dropped per run."""
    lines = []
    for r in range(args.repeats):
        s = run_stream(frames, args.live_seconds * FPS, args.out / f"live{r}", toy, live=True)
        lines.append(f"- live (frames written at 25 fps, `--realtime on`), run {r + 1}: {s['frames']} frames in "
                     f"{s['wall_seconds']:.1f} s, real-time factor {s['realtime_factor']:.2f}x, keyframes "
                     f"{s['keyframes_done']} scored / **{s['keyframes_dropped']} dropped**; mean / p95 ms per call: "
                     f"{stage_text(s)}")
        print(lines[-1], flush=True)
    return lines


def memory_lines(args: argparse.Namespace, frames: np.ndarray, toy: list[str]) -> list[str]:
    """``--minutes`` of stream content, never paced, MP4 written: RSS growth after the first minute per run."""
    lines = []
    for r in range(args.repeats):
        count = int(args.minutes * 60 * FPS)
        s = run_stream(frames, count, args.out / f"memory{r}", toy, ["--out", str(args.out / f"memory{r}" / "a.mp4")])
        base, growth, peak = memory_growth(s)
        lines.append(f"- memory, run {r + 1}: {s['frames']} frames = {s['stream_seconds'] / 60:.1f} min of stream in "
                     f"{s['wall_seconds']:.0f} s ({s['realtime_factor']:.1f}x real time), {s['keyframes_done']} "
                     f"keyframes: RSS {base:.0f} MB after 60 s of stream, **growth {growth:+.1f} MB** to the end, "
                     f"peak {peak:.0f} MB; ring peak {s['ring_peak_frames']}/{s['ring_capacity_frames']} frames")
        print(lines[-1], flush=True)
    return lines


def r50_lines(args: argparse.Namespace, frames: np.ndarray) -> list[str]:
    """The R50 + HR2O-sized model (random weights), ``--r50-seconds`` keyframes: seconds per keyframe per stage."""
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = ["--weights", str(r50_checkpoint(Path(tmp))), *args.r50_flags.split(), "--batch-size", "1"]
        for r in range(args.repeats):
            s = run_stream(frames, args.r50_seconds * FPS, args.out / f"r50_{r}", weights)
            per = {k: s["stages"][k]["total_s"] / max(1, s["keyframes_done"]) * 1e3 for k in ("detect", "clip", "action")}
            lines.append(f"- R50 + HR2O (random weights, 32 x 256 px clips, `{args.r50_flags}`), run {r + 1}: "
                         f"{s['keyframes_done']} keyframes, **{sum(per.values()) / 1e3:.2f} s per keyframe** (detect "
                         f"{per['detect']:.0f} ms, clip {per['clip']:.0f} ms, action {per['action']:.0f} ms; "
                         f"{s['keyframes_per_second']:.3f} keyframes/s end to end)")
            print(lines[-1], flush=True)
    return lines


def _version(package: str) -> str:
    """The installed version of ``package`` (or "absent")."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


def machine() -> str:
    """CPU model (/proc/cpuinfo), core count, Python version."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=60, help="stream seconds of the throughput runs")
    parser.add_argument("--minutes", type=float, default=10.0, help="stream minutes of the memory runs")
    parser.add_argument("--live-seconds", type=int, default=20, help="stream seconds of the paced live runs")
    parser.add_argument("--r50-seconds", type=int, default=3, help="stream seconds (= keyframes) of the R50 runs")
    parser.add_argument("--flags", default="--threads 1 --runtime openvino --action-runtime openvino",
                        help="model flags of the toy runs (default: one thread, OpenVINO for both networks)")
    parser.add_argument("--r50-flags", default="--threads 1 --runtime openvino --action-runtime torch",
                        help="model flags of the R50 runs (eager action model)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_stream")
    parser.add_argument("--append", type=Path, help="append the section to this markdown file")
    args = parser.parse_args(argv)
    if not TOY_MODEL.is_file():
        raise SystemExit(f"{TOY_MODEL} is missing: run `make demo` (or python -m stad.demo_pipeline) first")
    load_before, started = os.getloadavg(), datetime.now(timezone.utc)
    frames = toy_frames()
    toy = ["--weights", str(TOY_MODEL), *args.flags.split()]
    run_stream(frames, 2 * FPS, args.out / "warmup", toy)  # exports made and cached beside the weights
    lines = (throughput_lines(args, frames, toy) + live_lines(args, frames, toy) + memory_lines(args, frames, toy)
             + r50_lines(args, frames))
    load_after = os.getloadavg()
    head = [f"## bench_stream: `python -m stad.stream` on a synthetic 320x240 stream ({started:%Y-%m-%d %H:%M} UTC)", "",
            f"- command: `.venv/bin/python bench/bench_stream.py --repeats {args.repeats}` (toy flags `{args.flags}`)",
            f"- software: torch {_version('torch')}, openvino {_version('openvino')}, ultralytics {_version('ultralytics')}",
            f"- machine: {machine()}; load average {load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f} "
            f"before, {load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f} after (shared host)",
            "- stream: toy-actor frames, raw bgr24 on stdin at 25 fps, `--realtime off` (never paced: every keyframe "
            "scored as fast as it can be; the memory runs are 10 min of stream content run faster than real time), "
            "toy model of `make demo` + shipped toy detector; CSV rows and annotated MP4 written (throughput, memory)"]
    section = head + lines + [""]
    print("\n".join(section))
    if args.append:
        with args.append.open("a", encoding="utf-8") as handle:
            handle.write("\n" + "\n".join(section))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
