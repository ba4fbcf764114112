"""Human-readable outputs of an `EvaluationResult`: table text, JSON and a PNG figure."""
from __future__ import annotations

import json
import math
from pathlib import Path

from stad.evaluation.ava_map import OFFICIAL_CAPACITY, EvaluationResult
from stad.io_utils import atomic_open, atomic_write_text

MISMATCH_FRACTION = 0.5


def _fmt(value: float) -> str:
    return "   n/a" if math.isnan(value) else f"{100 * value:6.2f}"


def _capacity_name(capacity: int) -> str:
    return "all" if capacity < 1 else str(capacity)


def key_mismatch_warning(result: EvaluationResult) -> str | None:
    """A warning when most detection keys match no GT key (the usual cause of mAP = 0)."""
    diag = result.diagnostics
    total = int(diag.get("detection_keys", 0))
    missing = int(diag.get("detection_keys_without_gt", 0))
    if total == 0:
        return "WARNING: the detections file has no rows for the label map's classes."
    if missing / total <= MISMATCH_FRACTION:
        return None
    return (f"WARNING: {missing} of {total} detection keyframes match no ground-truth keyframe, so the mAP "
            f"below is meaningless. Check the video-id and timestamp formats of both files.\n"
            f"  detection keys, e.g.: {', '.join(diag.get('examples_detection_keys_without_gt', []))}\n"
            f"  ground-truth keys, e.g.: {', '.join(diag.get('examples_gt_keys', []))}")


def format_table(result: EvaluationResult, per_class: bool = True) -> str:
    """Per-class AP (official capacity and best capacity) and the mAP for every capacity."""
    best = result.best
    shown = [c for c in (OFFICIAL_CAPACITY, best.capacity) if c in result.results]
    shown = list(dict.fromkeys(shown)) or [best.capacity]
    lines = []
    warning = key_mismatch_warning(result)
    if warning:
        lines += [warning, ""]
    if per_class:
        header = "  id  name" + " " * 30 + "".join(f"  cap={_capacity_name(c):>4}" for c in shown)
        lines += [header, "-" * len(header)]
        for class_id, name in zip(result.labelmap.ids, result.labelmap.names):
            cells = "".join(f"  {_fmt(result.results[c].per_class[class_id]):>8}" for c in shown)
            lines.append(f"{class_id:4d}  {name[:32]:<32}{cells}")
        lines.append("")
    lines.append("capacity   mAP(%)   detections kept")
    for capacity, res in sorted(result.results.items(), key=lambda kv: (kv[0] < 1, kv[0])):
        mark = "  <- official" if capacity == OFFICIAL_CAPACITY else ""
        mark += "  <- best" if capacity == best.capacity and len(result.results) > 1 else ""
        lines.append(f"{_capacity_name(capacity):>8}   {_fmt(res.mAP)}   {res.num_detections:>15}{mark}")
    if OFFICIAL_CAPACITY in result.results:
        lines.append(f"\nmAP at the official capacity {OFFICIAL_CAPACITY}: {_fmt(result.official.mAP).strip()}")
    if len(result.results) > 1:
        lines.append(f"best capacity: {_capacity_name(best.capacity)} with mAP {_fmt(best.mAP).strip()} "
                     "(tuned on the evaluated set itself: report the official capacity for comparisons)")
    return "\n".join(lines)


def write_json(result: EvaluationResult, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(result.to_dict(), indent=1, sort_keys=False) + "\n")


def write_plot(result: EvaluationResult, path: str | Path) -> None:
    """mAP-vs-capacity curve (left) and per-class AP bars at the official and best capacity (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    caps = sorted(c for c in result.results if c >= 1)
    fig, (ax_curve, ax_bars) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [1, 2]})
    ax_curve.plot(caps, [100 * result.results[c].mAP for c in caps], marker="o", ms=3)
    ax_curve.set_xlabel("capacity (rows kept per keyframe)")
    ax_curve.set_ylabel("frame mAP@0.5 (%)")
    ax_curve.set_title("mAP vs capacity (best is tuned on this set)")
    ax_curve.grid(alpha=0.3)
    shown = list(dict.fromkeys(c for c in (OFFICIAL_CAPACITY, result.best.capacity) if c in result.results))
    width = 0.8 / max(len(shown), 1)
    positions = range(len(result.labelmap))
    for i, capacity in enumerate(shown):
        values = [100 * (0 if math.isnan(v) else v) for v in result.results[capacity].per_class.values()]
        ax_bars.bar([p + i * width for p in positions], values, width, label=f"capacity {_capacity_name(capacity)}")
    ax_bars.set_xticks([p + width * (len(shown) - 1) / 2 for p in positions])
    ax_bars.set_xticklabels(result.labelmap.names, rotation=90, fontsize=6)
    ax_bars.set_ylabel("AP (%)")
    ax_bars.legend()
    fig.tight_layout()
    suffix = Path(path).suffix.lstrip(".") or "png"
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format=suffix, dpi=110)
    plt.close(fig)


def write_report(result: EvaluationResult, out_dir: str | Path, stem: str = "eval") -> dict[str, Path]:
    """Write ``{stem}_table.txt``, ``{stem}.json`` and ``{stem}.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    paths = {"table": out_dir / f"{stem}_table.txt", "json": out_dir / f"{stem}.json", "plot": out_dir / f"{stem}.png"}
    atomic_write_text(paths["table"], format_table(result) + "\n")
    write_json(result, paths["json"])
    write_plot(result, paths["plot"])
    return paths
