"""The one place the engine calls the frame-mAP evaluator (stad.evaluation, torch-free)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from stad.config import EvalMapConfig


@dataclass(frozen=True)
class EvalSummary:
    mAP: float  # at the best capacity
    capacity: int
    by_capacity: dict[int, float]


def evaluate_csv(eval_cfg: EvalMapConfig, capacities: Sequence[int], detections: str | Path,
                 out_dir: str | Path, logger: logging.Logger | None = None) -> EvalSummary:
    """Score ``detections`` against the config's GT at each capacity; write table/JSON/plot to ``out_dir``."""
    from stad.evaluation import evaluate
    from stad.evaluation.report import write_report

    result = evaluate(eval_cfg.labelmap, eval_cfg.groundtruth, str(detections), exclusions=eval_cfg.exclusions,
                      capacities=tuple(capacities), ignore_keys_without_gt=eval_cfg.ignore_keys_without_gt)
    write_report(result, out_dir)
    by_capacity = {int(c): float(r.mAP) for c, r in result.results.items()}
    best = result.best
    summary = EvalSummary(float(best.mAP), int(best.capacity), by_capacity)
    if logger is not None:
        logger.info("frame-mAP@0.5 %.4f at capacity %d (report in %s)", summary.mAP, summary.capacity, out_dir)
    return summary
