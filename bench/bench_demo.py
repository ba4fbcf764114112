"""`make demo` end to end: wall time and the three toy-val targets of issue #8, in one run.

    .venv/bin/python bench/bench_demo.py [--out runs/bench_demo] [--append bench/RESULTS.md]

Runs ``python -m stad.demo_pipeline --out OUT --regenerate`` (the toy data is generated again, so
the time is a fresh machine's, apart from the detector's cached ONNX export), then reads the
pipeline's own ``OUT/report.json``: mAP with GT and with detector boxes at capacity 50, the ACAR
head's lead over the linear probe on the interaction classes, and each stage's time. Run it on an
idle machine: the stages use both cores.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIME_LIMIT_S = 600


def run_demo(out: Path) -> float:
    """Wall seconds of a fresh demo run into ``out`` (its console output goes to ``out.log``)."""
    log = out.with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as handle:
        code = subprocess.run([sys.executable, "-m", "stad.demo_pipeline", "--out", str(out), "--regenerate"],
                              cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"the demo failed (exit code {code}); see {log}")
    return seconds


def section(report: dict, seconds: float, command: str) -> list[str]:
    """The RESULTS.md section: command, machine, date, time, targets, stage times."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"## bench_demo ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
             f"- command: `{command}`",
             f"- machine: {os.cpu_count()}-core CPU, no GPU; load average {load:.1f} at the end",
             f"- **{seconds:.0f} s ({seconds / 60:.1f} min)** end to end (target <= {TIME_LIMIT_S // 60} min)"]
    for target in report["targets"]:
        value = target["value"]
        shown = f"{value:.1f} {target['unit']}" if target.get("unit") else f"{value:.3f}"
        lines.append(f"- {target['target']}: **{shown}** ({'met' if target['met'] else 'NOT met'})")
    inter = report["interaction"]
    lines.append(f"- interaction classes ({', '.join(inter['classes'])}): ACAR {inter['acar_gt']:.1f}, "
                 f"linear probe {inter['linear_gt']:.1f}")
    lines.append("- stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report["timings"].items()))
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_demo", help="the demo's output folder")
    parser.add_argument("--append", type=Path, help="append the section to this markdown file")
    args = parser.parse_args(argv)
    seconds = run_demo(args.out.resolve())
    report = json.loads((args.out / "report.json").read_text())
    command = "python bench/bench_demo.py" + (f" --out {args.out}" if args.out != parser.get_default("out") else "")
    lines = section(report, seconds, command)
    print("\n".join(lines))
    if args.append:
        with args.append.open("a", encoding="utf-8") as handle:
            handle.write("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
