"""The demo report: mAPs with GT and detector boxes, ACAR vs linear head per class group, timings.

The interaction classes (talk-to, hand-over, push, follow) are the relation-reasoning test: the
report states the ACAR head's mean AP on them, the linear head's (a probe on the ACAR model's frozen
backbone; also a linear-head model trained end to end when the pipeline ran it) and the difference.

    python -m stad.report_demo --out runs/demo

Reads what ``python -m stad.demo_pipeline`` left in ``OUT`` (``pipeline.json``, the evaluator's
JSON per run in ``eval/``, the detector evaluation) and writes ``report.json``, ``report.md`` and
``report.png``. Targets are checked at the official capacity (50 rows per keyframe); the best
capacity of the sweep is reported too, but it is tuned on the evaluated set itself.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from stad.cli import run_cli
from stad.io_utils import atomic_write_text

OFFICIAL = "50"
RUN_LABELS = {"acar_gt": "ACAR head, GT boxes", "acar_det": "ACAR head, detector boxes",
              "linear_gt": "linear probe (frozen ACAR backbone), GT boxes",
              "linear_e2e_gt": "linear head trained end to end, GT boxes"}
LINEAR_RUNS = (("linear_gt", "linear probe"), ("linear_e2e_gt", "linear head trained end to end"))
TARGETS = (("acar_gt", "mAP with GT boxes", 0.80), ("acar_det", "mAP with detector boxes", 0.70))
INTERACTION_GAIN_TARGET = 10.0  # AP points, ACAR over linear on the interaction classes


def class_groups(classes: Sequence[dict], label_types: dict[int, str] | None = None) -> dict[int, str]:
    """Class id -> group: the toy set's pose / motion / interaction, else the label type."""
    from stad.data.toy.actions import INTERACTION_CLASSES, MOTION_CLASSES, POSE_CLASSES

    groups = {}
    for c in classes:
        name = c["name"]
        if name in POSE_CLASSES:
            groups[c["id"]] = "pose"
        elif name in MOTION_CLASSES:
            groups[c["id"]] = "motion"
        elif name in INTERACTION_CLASSES:
            groups[c["id"]] = "interaction"
        else:
            groups[c["id"]] = (label_types or {}).get(c["id"], "other").lower()
    return groups


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None


def summarise(evals: dict[str, dict]) -> dict[str, Any]:
    """mAPs, per-class AP and group means (official capacity) of each run's evaluator JSON."""
    first = next(iter(evals.values()))
    classes = first["classes"]
    groups = class_groups(classes)
    maps, per_class = {}, []
    for run, data in evals.items():
        caps = data["capacities"]
        maps[run] = {"official": caps[OFFICIAL]["mAP"], "unlimited": caps.get("0", {}).get("mAP"),
                     "best": {"capacity": data["best_capacity"], "mAP": data["best_mAP"]},
                     "sweep": {c: v["mAP"] for c, v in caps.items()}}
    for c in classes:
        row = {"id": c["id"], "name": c["name"], "group": groups[c["id"]]}
        for run, data in evals.items():
            row[run] = data["capacities"][OFFICIAL]["per_class"].get(str(c["id"]))
        per_class.append(row)
    group_means = {g: {run: _mean([r[run] for r in per_class if r["group"] == g]) for run in evals}
                   for g in dict.fromkeys(groups.values())}
    return {"mAP": maps, "per_class": per_class, "groups": group_means}


def interaction_comparison(summary: dict[str, Any]) -> dict[str, Any] | None:
    """Interaction-class mean AP (%) of the ACAR head and each linear head, and the differences."""
    inter = summary["groups"].get("interaction", {})
    if inter.get("acar_gt") is None:
        return None
    out: dict[str, Any] = {"classes": [r["name"] for r in summary["per_class"] if r["group"] == "interaction"],
                           "acar_gt": round(100.0 * inter["acar_gt"], 2)}
    for run, _ in LINEAR_RUNS:
        if inter.get(run) is not None:
            out[run] = round(100.0 * inter[run], 2)
            out[f"acar_minus_{run}"] = round(out["acar_gt"] - out[run], 2)
    return out


def check_targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    targets = []
    for run, label, threshold in TARGETS:
        value = summary["mAP"].get(run, {}).get("official")
        targets.append({"target": f"{label} >= {threshold:.2f}", "value": value,
                        "met": None if value is None else value >= threshold})
    comparison = interaction_comparison(summary) or {}
    for run, label in LINEAR_RUNS:
        gain = comparison.get(f"acar_minus_{run}")
        if gain is not None:
            target = f"ACAR - {label} on interaction classes >= {INTERACTION_GAIN_TARGET:.0f} AP points"
            targets.append({"target": target, "value": gain, "unit": "points", "met": gain >= INTERACTION_GAIN_TARGET})
    return targets


def format_interaction(comparison: dict[str, Any] | None) -> list[str]:
    """Markdown lines: the interaction-class AP of both heads and the difference."""
    if not comparison:
        return []
    lines = ["", f"Interaction classes ({', '.join(comparison['classes'])}), mean AP with GT boxes:", "",
             f"- ACAR head: {comparison['acar_gt']:.1f}"]
    for run, label in LINEAR_RUNS:
        if run in comparison:
            lines.append(f"- {label}: {comparison[run]:.1f} (ACAR ahead by {comparison[f'acar_minus_{run}']:+.1f} "
                         f"AP points; target >= {INTERACTION_GAIN_TARGET:.0f})")
    return lines


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def format_markdown(report: dict[str, Any]) -> str:
    runs = list(report["mAP"])
    lines = ["# Demo report (toy actors, val split)", "",
             "frame-mAP@0.5 (%), official capacity 50; best = capacity tuned on this set (optimistic).", "",
             "| run | mAP | best capacity | mAP at best |", "|---|---:|---:|---:|"]
    for run in runs:
        m = report["mAP"][run]
        lines.append(f"| {RUN_LABELS.get(run, run)} | {_pct(m['official'])} | {m['best']['capacity'] or 'all'} "
                     f"| {_pct(m['best']['mAP'])} |")
    lines += ["", "| id | class | group | " + " | ".join(RUN_LABELS.get(r, r) for r in runs) + " |",
              "|---:|---|---|" + "---:|" * len(runs)]
    for row in report["per_class"]:
        lines.append(f"| {row['id']} | {row['name']} | {row['group']} | "
                     + " | ".join(_pct(row[r]) for r in runs) + " |")
    for group, by_run in report["groups"].items():
        lines.append(f"| | **{group} (mean)** | | " + " | ".join(f"**{_pct(by_run[r])}**" for r in runs) + " |")
    lines += format_interaction(report.get("interaction"))
    lines += ["", "Targets:", ""]
    for t in report["targets"]:
        mark = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        value = "-" if t["value"] is None else (f"{t['value']:.1f}" if t.get("unit") == "points" else f"{t['value']:.3f}")
        lines.append(f"- {t['target']}: {value} ({mark})")
    det = report.get("detector")
    if det:
        lines += ["", f"Person detector on val keyframes: {json.dumps(det)}"]
    if report.get("skipped"):
        lines += ["", "Skipped stages: " + "; ".join(f"{k} ({v})" for k, v in report["skipped"].items())]
    if report.get("timings"):
        lines += ["", "Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report["timings"].items())]
    return "\n".join(lines) + "\n"


def write_plot(report: dict[str, Any], path: Path) -> None:
    """Per-class AP bars for every run (left) and mAP vs capacity (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = list(report["mAP"])
    rows = report["per_class"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [2.2, 1]})
    x = np.arange(len(rows))
    width = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        values = [100 * (r[run] if r[run] is not None else float("nan")) for r in rows]
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, values, width, label=RUN_LABELS.get(run, run))
    ax.set_xticks(x, [f"{r['name']}\n({r['group'][:5]})" for r in rows], fontsize=7)
    ax.set_ylabel("AP@0.5 (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Per-class AP, official capacity 50")
    ax.legend(fontsize=8)
    for run in runs:
        sweep = sorted((int(c), 100 * v) for c, v in report["mAP"][run]["sweep"].items() if int(c) > 0 and v is not None)
        if sweep:
            ax2.plot(*zip(*sweep), label=RUN_LABELS.get(run, run))
    ax2.set_xlabel("capacity (rows kept per keyframe)")
    ax2.set_ylabel("mAP (%)")
    ax2.set_title("Capacity sweep")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def build_report(out: Path) -> dict[str, Any]:
    meta = json.loads((out / "pipeline.json").read_text())
    evals = {run: json.loads(Path(p).read_text()) for run, p in meta["maps"].items()}
    order = [r for r in RUN_LABELS if r in evals] + [r for r in evals if r not in RUN_LABELS]
    report = summarise({r: evals[r] for r in order})
    report["interaction"] = interaction_comparison(report)
    report["targets"] = check_targets(report)
    measured = [t["met"] for t in report["targets"] if t["met"] is not None]
    report["targets_met"] = bool(measured) and all(measured) and len(measured) == len(report["targets"])
    det_json = out / "eval" / "detector.json"
    if det_json.is_file():
        report["detector"] = _detector_summary(json.loads(det_json.read_text()))
    report.update(timings=meta["timings"], skipped=meta["skipped"], commands=meta["commands"], fast=meta["fast"],
                  video=meta["video"], detector_weights=meta["detector"])
    return report


def _detector_summary(data: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of ``detect.evaluate --json`` (whatever subset it provides)."""
    keep = {}
    for key, value in data.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            keep[key] = round(value, 4) if isinstance(value, float) else value
    return keep


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stad.report_demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the demo pipeline's output folder")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not (out / "pipeline.json").is_file():
        print(f"error: {out / 'pipeline.json'} not found: run python -m stad.demo_pipeline first", file=sys.stderr)
        return 2
    report = build_report(out)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.md", format_markdown(report))
    write_plot(report, out / "report.png")
    print(f"wrote {out / 'report.md'}, {out / 'report.json'}, {out / 'report.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
