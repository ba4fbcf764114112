"""AVA frame-mAP@0.5 with capacity, numerically identical to the official evaluator.

Reference semantics: ACAR-Net's ``calc_mAP.py`` (the ActivityNet ``get_ava_performance.py``
algorithm with excluded timestamps): per (video, timestamp) key, at most ``capacity``
highest-scoring detection rows survive (``heapq`` semantics, ties included), detections on keys
without ground truth are false positives (``ignore_keys_without_gt=True`` gives ActivityNet's
behaviour: they are dropped), classes outside the label map are dropped before they take a slot.
Every step is vectorised or compiled; the per-class AP uses the same numpy calls in the same order
as the official ``metrics.py`` so results agree to the last bit with the same numpy build.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from stad.data.formats.labelmap import read_labelmap
from stad.evaluation import kernels
from stad.evaluation.csv_io import BoxRows, read_box_csv, read_exclusions
from stad.structures import LabelMap

LOG = logging.getLogger(__name__)
OFFICIAL_CAPACITY = 50
IOU_THRESHOLD = 0.5
CAPACITY_CHUNK = 50  # capacities replayed per pass over the rows (bounds the memory of kept rows)


@dataclass(frozen=True)
class CapacityResult:
    """mAP and per-class AP (keyed by dataset class id; NaN = class has no GT) at one capacity."""

    capacity: int
    mAP: float
    per_class: dict[int, float]
    num_detections: int


@dataclass(frozen=True)
class EvaluationResult:
    """Results for every evaluated capacity plus input diagnostics."""

    labelmap: LabelMap
    results: dict[int, CapacityResult]
    diagnostics: dict[str, object] = field(default_factory=dict)

    @property
    def best(self) -> CapacityResult:
        """Highest mAP (the smallest capacity wins a tie). Tuned on the evaluated set itself."""
        return max(self.results.values(), key=lambda r: (r.mAP, -r.capacity))

    @property
    def official(self) -> CapacityResult | None:
        return self.results.get(OFFICIAL_CAPACITY)

    def to_dict(self) -> dict:
        def clean(value: float) -> float | None:
            return None if np.isnan(value) else float(value)
        return {
            "classes": [{"id": i, "name": n} for i, n in zip(self.labelmap.ids, self.labelmap.names)],
            "capacities": {str(c): {"mAP": clean(r.mAP), "num_detections": r.num_detections,
                                    "per_class": {str(k): clean(v) for k, v in r.per_class.items()}}
                           for c, r in sorted(self.results.items())},
            "best_capacity": self.best.capacity,
            "best_mAP": clean(self.best.mAP),
            "best_is_tuned_on_evaluated_set": True,
            "diagnostics": self.diagnostics,
        }


@dataclass(frozen=True)
class _Grouped:
    """Rows grouped by keyframe key (keys in first-appearance order, rows in file order)."""

    keys: list[tuple[str, int]]
    offsets: np.ndarray
    rows: np.ndarray


def _group_by_key(rows: BoxRows) -> _Grouped:
    """Group rows by ``(video, timestamp)``, keys numbered by first appearance (as dict order)."""
    codes, first = kernels.key_codes(rows.video_code, rows.timestamp)
    offsets, order = kernels.stable_group(codes, len(first))
    keys = list(zip(rows.video_names[rows.video_code[first]].tolist(), rows.timestamp[first].tolist()))
    return _Grouped(keys, offsets, order)


def _output_offsets(group: _Grouped, capacities: Sequence[int]) -> np.ndarray:
    """``[C, K+1]`` start of each key's kept rows, capacity after capacity, in one flat array."""
    counts = np.diff(group.offsets)
    offsets = np.zeros((len(capacities), len(counts) + 1), np.int64)
    base = 0
    for i, capacity in enumerate(capacities):
        kept = np.minimum(counts, capacity) if capacity >= 1 else counts
        offsets[i, 0] = base
        np.cumsum(kept, out=offsets[i, 1:])
        offsets[i, 1:] += base
        base = offsets[i, -1]
    return offsets


def _select(group: _Grouped, rows: BoxRows, valid: np.ndarray, capacities: Sequence[int], n_classes: int,
            target: np.ndarray | None = None, n_gt_rows: int = 0,
            want_selected: bool = True) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """``((selected, is_tp, kept_class, kept_score), offsets)`` for each capacity; see `kernels.select_rows`."""
    offsets = _output_offsets(group, capacities)
    if target is None:
        target = np.full(len(rows), -1, np.int64)
    kept = kernels.select_rows(group.offsets, group.rows, np.asarray(capacities, np.int64), rows.score,
                               rows.action_id, rows.y1, rows.x1, rows.y2, rows.x2, valid, offsets, target, n_gt_rows,
                               n_classes, want_selected)
    return kept, offsets


def average_precision(scores: np.ndarray, is_tp: np.ndarray, num_gt: int) -> float:
    """VOC AP exactly as the official ``metrics.compute_precision_recall`` + ``compute_average_precision``.

    The ranking is numpy's own ``np.argsort(scores)[::-1]`` (its tie order decides the last digits)
    and the final sum numpy's ``np.sum``; the steps between are a compiled loop with the same float
    operations (`kernels.ap_terms`).
    """
    if num_gt == 0:
        return float("nan")
    if not len(scores):
        return 0.0
    return float(np.sum(kernels.ap_terms(is_tp, np.argsort(scores), num_gt)))


class _Prepared:
    """Everything that does not depend on capacity: parsed rows, key tables, GT matching."""

    def __init__(self, labelmap: LabelMap, gt: BoxRows, det: BoxRows, excluded: set[tuple[str, int]],
                 ignore_keys_without_gt: bool) -> None:
        self.labelmap = labelmap
        self.diagnostics: dict[str, object] = {}
        gt_all_keys = self._all_keys(gt) if ignore_keys_without_gt else set()
        gt = gt.take(self._in_labelmap(gt.action_id))
        det_known = self._in_labelmap(det.action_id)
        self.diagnostics["detections_outside_labelmap"] = self._count_unknown(det.action_id[~det_known])
        det = det.take(det_known)
        self.gt, self.det = gt, det

        gt_group = _group_by_key(gt)
        gt_keep = np.array([k not in excluded for k in gt_group.keys], bool)
        (gt_order, *_), gt_offsets = _select(gt_group, gt, np.ones(len(gt), bool), [0], max(labelmap.ids))
        gt_offsets = gt_offsets[0]
        self.num_gt = self._count_gt(gt, gt_order, gt_offsets, gt_keep)
        gt_index = {k: i for i, k in enumerate(gt_group.keys) if gt_keep[i]}

        det_group = _group_by_key(det)
        keep = np.array([k not in excluded and (not ignore_keys_without_gt or k in gt_all_keys)
                         for k in det_group.keys], bool)
        self.det_group = self._keep_keys(det_group, keep)
        self.diagnostics.update(self._key_diagnostics(det_group.keys, keep, gt_group.keys, excluded))
        det_to_gt = np.array([gt_index.get(k, -1) for k in self.det_group.keys], np.int64)
        self.target = kernels.match_targets(
            self.det_group.offsets, self.det_group.rows, det_to_gt, gt_offsets, gt_order,
            det.action_id, det.y1, det.x1, det.y2, det.x2,
            gt.action_id, gt.y1, gt.x1, gt.y2, gt.x2, IOU_THRESHOLD)
        self.valid = (det.y1 < det.y2) & (det.x1 < det.x2)
        self.n_gt_rows = len(gt)

    @staticmethod
    def _all_keys(rows: BoxRows) -> set[tuple[str, int]]:
        keys = set(zip(rows.video_names[rows.video_code].tolist(), rows.timestamp.tolist())) if len(rows) else set()
        return keys | set(rows.empty_keys)

    def _in_labelmap(self, action_id: np.ndarray) -> np.ndarray:
        """Mask of rows whose class id is in the label map (a lookup table, not a sort)."""
        table = np.zeros(max(self.labelmap.ids) + 2, bool)
        table[list(self.labelmap.ids)] = True
        return table.take(action_id, mode="clip")

    @staticmethod
    def _count_unknown(unknown: np.ndarray) -> dict[str, int]:
        ids, counts = np.unique(unknown, return_counts=True)
        return {str(i): int(c) for i, c in zip(ids, counts)}

    def _count_gt(self, gt: BoxRows, order: np.ndarray, offsets: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """GT instances per class index (size = max label id, as the official evaluator sizes it)."""
        per_key = np.repeat(keep, np.diff(offsets))
        actions = gt.action_id[order[per_key]]
        return np.bincount(actions - 1, minlength=max(self.labelmap.ids))[: max(self.labelmap.ids)]

    @staticmethod
    def _keep_keys(group: _Grouped, keep: np.ndarray) -> _Grouped:
        counts = np.diff(group.offsets)[keep]
        offsets = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        rows = group.rows[np.repeat(keep, np.diff(group.offsets))]
        return _Grouped([k for k, kept in zip(group.keys, keep) if kept], offsets, rows)

    @staticmethod
    def _key_diagnostics(det_keys, keep, gt_keys, excluded) -> dict[str, object]:
        gt_set = set(gt_keys)
        unmatched = [k for k in det_keys if k not in gt_set and k not in excluded]
        return {
            "detection_keys": len(det_keys),
            "detection_keys_evaluated": int(keep.sum()),
            "detection_keys_without_gt": len(unmatched),
            "examples_detection_keys_without_gt": [f"{v},{t:04d}" for v, t in unmatched[:5]],
            "examples_gt_keys": [f"{v},{t:04d}" for v, t in list(gt_keys)[:5]],
            "gt_keys": len(gt_keys),
        }

    def evaluate(self, capacities: Sequence[int]) -> list[CapacityResult]:
        """Results for ``capacities``, in that order."""
        (_, is_tp, kept_class, kept_score), offsets = _select(self.det_group, self.det, self.valid, capacities,
                                                              max(self.labelmap.ids),
                                                              self.target, self.n_gt_rows, want_selected=False)
        def score(i: int) -> CapacityResult:
            part = slice(offsets[i, 0], offsets[i, -1])
            return self._score(capacities[i], kept_class[part], kept_score[part], is_tp[part])

        # the scoring steps (compiled gathers, numpy sorts) release the GIL: capacities run side by side
        with ThreadPoolExecutor(min(len(capacities), os.cpu_count() or 1)) as pool:
            return list(pool.map(score, range(len(capacities))))

    def _score(self, capacity: int, kept_class: np.ndarray, kept_score: np.ndarray,
               is_tp: np.ndarray) -> CapacityResult:
        bounds, scores, is_tp = kernels.gather_by_class(kept_class, kept_score, is_tp, len(self.num_gt))
        ap = np.full(len(self.num_gt), np.nan)
        for c in np.flatnonzero(self.num_gt):
            lo, hi = bounds[c], bounds[c + 1]
            ap[c] = average_precision(scores[lo:hi], is_tp[lo:hi], int(self.num_gt[c]))
        mean_ap = float(np.nanmean(ap)) if np.any(self.num_gt) else float("nan")
        per_class = {class_id: float(ap[class_id - 1]) for class_id in self.labelmap.ids}
        return CapacityResult(capacity, mean_ap, per_class, int(bounds[-1]))


def _as_labelmap(labelmap: LabelMap | str | Path, class_subset: Iterable[int] | None) -> LabelMap:
    labels = labelmap if isinstance(labelmap, LabelMap) else read_labelmap(labelmap)
    if min(labels.ids) < 1:
        raise ValueError(f"label map ids must be >= 1 (the AVA evaluator is 1-indexed), got {min(labels.ids)}")
    if class_subset is not None:
        subset = [int(c) for c in class_subset]
        missing = sorted(set(subset) - set(labels.ids))
        if missing:
            raise ValueError(f"class subset ids {missing} are not in the label map")
        labels = labels.subset(subset)
    return labels


def evaluate(labelmap: LabelMap | str | Path, groundtruth: str | Path, detections: str | Path,
             exclusions: str | Path | None = None, capacities: Sequence[int] = (OFFICIAL_CAPACITY,),
             ignore_keys_without_gt: bool = False, class_subset: Iterable[int] | None = None,
             progress: bool = False) -> EvaluationResult:
    """Frame-mAP@0.5 for each capacity in ``capacities`` (< 1 means unlimited).

    Args:
        labelmap: label map (pbtxt path or `LabelMap`); its ids are the evaluated classes.
        groundtruth: AVA GT CSV (7 or 8 columns; 2-column rows mark keys without boxes).
        detections: AVA prediction CSV (8 columns with score, or 7 with score 1.0).
        exclusions: optional ``video,timestamp`` CSV removed from both sides.
        ignore_keys_without_gt: ActivityNet behaviour (drop detections on keys absent from the GT
            file) instead of ACAR-Net's (count them as false positives).
        class_subset: optional ids to evaluate (a subset of the label map).
    """
    start = time.perf_counter()
    labels = _as_labelmap(labelmap, class_subset)
    gt = read_box_csv(groundtruth, allowed_columns=(2, 7, 8))
    det = read_box_csv(detections, allowed_columns=(7, 8))
    prepared = _Prepared(labels, gt, det, read_exclusions(exclusions), ignore_keys_without_gt)
    LOG.info("parsed and matched %d GT / %d detection rows in %.2fs", len(gt), len(det), time.perf_counter() - start)
    results = {}
    capacities = list(dict.fromkeys(int(c) for c in capacities))
    chunks = [capacities[i:i + CAPACITY_CHUNK] for i in range(0, len(capacities), CAPACITY_CHUNK)]
    if progress and len(chunks) > 1:
        from tqdm import tqdm
        chunks = tqdm(chunks, desc=f"capacities ({CAPACITY_CHUNK} per step)", unit="step")
    for chunk in chunks:
        results.update((r.capacity, r) for r in prepared.evaluate(chunk))
    diagnostics = dict(prepared.diagnostics, seconds=round(time.perf_counter() - start, 3),
                       ignore_keys_without_gt=ignore_keys_without_gt)
    return EvaluationResult(labels, results, diagnostics)
