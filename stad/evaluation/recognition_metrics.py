"""Clip-level recognition metrics (numpy only) and the confusion-matrix picture (OpenCV).

Single-label (scores ``[N, K]``, labels ``[N]`` in ``[0, K)``):

* top-k accuracy: a video counts when its label is among its k highest scores (ties: lower index first,
  as ``np.argsort(-scores, kind="stable")``);
* per-class accuracy: recall of each class, NaN for a class without videos; mean-class accuracy: the mean
  over the classes that have videos (MMAction2's ``mean_class_accuracy``);
* F1-mean (macro): per class ``2 TP / (2 TP + FP + FN)`` averaged over the classes that occur as a label
  or a prediction (scikit-learn's ``f1_score(average="macro")``, zero division counted as 0);
* confusion: ``C[true, predicted]`` counts.

Multi-label (labels multi-hot ``[N, K]``): mAP, the mean over classes with at least one positive of the
average precision ``sum_n (R_n - R_{n-1}) P_n`` over the videos in descending score order
(scikit-learn's ``average_precision_score``; tied scores are taken together).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Class indices per row, best first ``[N, K]`` (stable: ties keep the lower index first)."""
    return np.argsort(-np.asarray(scores, np.float64), axis=1, kind="stable")


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among their ``k`` best scores (k capped at K)."""
    ranks = _ranks(scores)[:, :k]
    return float(np.mean(np.any(ranks == np.asarray(labels)[:, None], axis=1))) if len(labels) else float("nan")


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 ``[K, K]``: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    return matrix


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """float64 ``[K]``: each class's recall (diagonal / row sum), NaN for a class without videos."""
    totals = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(confusion) / np.maximum(totals, 1), np.nan)


def f1_macro(confusion: np.ndarray) -> float:
    """Mean F1 over the classes that occur as a label or a prediction (F1 = 2TP / (2TP + FP + FN))."""
    tp = np.diag(confusion).astype(np.float64)
    fp, fn = confusion.sum(axis=0) - tp, confusion.sum(axis=1) - tp
    present = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0
    if not present.any():
        return float("nan")
    return float(np.mean(2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])))


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of one class: ``sum (R_n - R_{n-1}) P_n`` over distinct score thresholds, descending; NaN
    without positives."""
    scores, positives = np.asarray(scores, np.float64), np.asarray(positives, bool)
    total = positives.sum()
    if total == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    scores, positives = scores[order], positives[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # the last row of each tied block
    hits = np.cumsum(positives)[last]
    precision, recall = hits / (last + 1), hits / total
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """(mAP over classes with positives, per-class AP ``[K]`` with NaN for classes without)."""
    aps = np.array([average_precision(scores[:, k], labels[:, k]) for k in range(scores.shape[1])])
    return (float(np.nanmean(aps)) if np.isfinite(aps).any() else float("nan")), aps


def single_label_metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    """top1, top5, mean_class_accuracy, f1_macro, per_class_accuracy (list, None = no videos), confusion
    (list of lists) for scores ``[N, K]`` and labels ``[N]``."""
    scores, labels = np.asarray(scores), np.asarray(labels, np.int64)
    k = scores.shape[1]
    confusion = confusion_matrix(labels, _ranks(scores)[:, 0], k)
    per_class = per_class_accuracy(confusion)
    return {"num_videos": int(len(labels)), "top1": top_k_accuracy(scores, labels, 1),
            "top5": top_k_accuracy(scores, labels, min(5, k)),
            "mean_class_accuracy": float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan"),
            "f1_macro": f1_macro(confusion),
            "per_class_accuracy": [None if np.isnan(v) else float(v) for v in per_class],
            "confusion": confusion.tolist()}


def multi_label_metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    """mAP and per-class AP (None = no positives) for scores and multi-hot labels ``[N, K]``."""
    mean, aps = mean_average_precision(np.asarray(scores), np.asarray(labels) > 0.5)
    return {"num_videos": int(len(labels)), "mAP": mean, "per_class_ap": [None if np.isnan(v) else float(v) for v in aps]}


def confusion_png(confusion: np.ndarray, names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Draw ``C[true, predicted]`` row-normalised (white 0 .. dark blue 1, counts written in the cells) with
    class names on both axes; written atomically with OpenCV."""
    import cv2

    from stad.io_utils import atomic_write_bytes

    k = len(confusion)
    cell, margin, top = 40, 12 + 8 * max((len(n) for n in names), default=1), 40
    size = (top + margin + k * cell + 10, margin + k * cell + 10)  # (height, width)
    img = np.full((*size, 3), 255, np.uint8)
    rows = np.asarray(confusion, np.float64)
    share = rows / np.maximum(rows.sum(axis=1, keepdims=True), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i in range(k):
        for j in range(k):
            x, y = margin + j * cell, top + margin + i * cell
            shade = (255 - 200 * share[i, j], 255 - 150 * share[i, j], 255 - 80 * share[i, j])
            cv2.rectangle(img, (x, y), (x + cell - 1, y + cell - 1), tuple(int(c) for c in shade), -1)
            colour = (255, 255, 255) if share[i, j] > 0.5 else (0, 0, 0)
            cv2.putText(img, str(int(rows[i, j])), (x + 4, y + cell // 2 + 5), font, 0.4, colour, 1, cv2.LINE_AA)
        cv2.putText(img, names[i][:14], (4, top + margin + i * cell + cell // 2 + 4), font, 0.35, (0, 0, 0), 1,
                    cv2.LINE_AA)
        cv2.putText(img, names[i][:5], (margin + i * cell + 2, top + margin - 6), font, 0.3, (0, 0, 0), 1,
                    cv2.LINE_AA)
    cv2.putText(img, (title + "  (rows: true, columns: predicted)")[:90], (4, 20), font, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    ok, data = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, data.tobytes())
    return Path(path)
