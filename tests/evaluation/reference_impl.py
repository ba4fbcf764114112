"""A slow, obviously-sequential re-statement of the official AVA evaluation algorithm.

Written from the algorithm's description (ActivityNet ``get_ava_performance.py`` / ACAR-Net
``calc_mAP.py``): a ``heapq`` per keyframe with strict ``>`` replacement, stable descending sort,
per-image per-class greedy matching against the first-max-IoU GT box, VOC AP. Used by the property
tests as the oracle for random inputs; too slow for real files.
"""
from __future__ import annotations

import csv
import heapq
from collections import defaultdict

import numpy as np


def _key(video: str, timestamp: str) -> tuple[str, int]:
    return video, int(float(timestamp))


def read_rows(path, whitelist, capacity):
    heaps = defaultdict(list)
    all_keys = []
    with open(path, newline="") as handle:
        for row in csv.reader(handle):
            if not row:
                continue
            key = _key(row[0], row[1])
            if key not in all_keys:
                all_keys.append(key)
            if len(row) == 2:
                continue
            x1, y1, x2, y2 = (float(v) for v in row[2:6])
            action = int(row[6])
            if action not in whitelist:
                continue
            score = float(row[7]) if len(row) == 8 else 1.0
            item = (score, action, y1, x1, y2, x2)
            heap = heaps[key]
            if capacity < 1 or len(heap) < capacity:
                heapq.heappush(heap, item)
            elif score > heap[0][0]:
                heapq.heapreplace(heap, item)
    return {k: sorted(h, key=lambda it: -it[0]) for k, h in heaps.items()}, set(all_keys)


def iou(d, g):
    _, _, dy1, dx1, dy2, dx2 = d
    _, _, gy1, gx1, gy2, gx2 = g
    height = max(0.0, min(dy2, gy2) - max(dy1, gy1))
    width = max(0.0, min(dx2, gx2) - max(dx1, gx1))
    inter = height * width
    union = (dy2 - dy1) * (dx2 - dx1) + (gy2 - gy1) * (gx2 - gx1) - inter
    return inter / union


def voc_ap(scores, labels, num_gt):
    order = np.argsort(np.asarray(scores, dtype=float))[::-1]
    tp = np.asarray(labels, dtype=bool).astype(int)[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    precision = list(ctp.astype(float) / (ctp + cfp))
    recall = list(ctp.astype(float) / num_gt)
    if not precision:
        return 0.0
    recall = [0.0] + recall + [1.0]
    precision = [0.0] + precision + [0.0]
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    recall, precision = np.asarray(recall), np.asarray(precision)
    idx = np.where(recall[1:] != recall[:-1])[0] + 1
    return np.sum((recall[idx] - recall[idx - 1]) * precision[idx])


def evaluate(class_ids, gt_path, det_path, excluded=(), capacity=50, ignore_keys_without_gt=False):
    """Per-class AP dict and mAP, the official way."""
    whitelist = set(class_ids)
    excluded = set(excluded)
    gt, gt_keys = read_rows(gt_path, whitelist, 0)
    dets, _ = read_rows(det_path, whitelist, capacity)
    num_classes = max(class_ids)
    num_gt = np.zeros(num_classes, int)
    for key, items in gt.items():
        if key in excluded:
            continue
        for item in items:
            num_gt[item[1] - 1] += 1
    per_class_scores = defaultdict(list)
    per_class_labels = defaultdict(list)
    for key, items in dets.items():
        if key in excluded or (ignore_keys_without_gt and key not in gt_keys):
            continue
        truth = gt.get(key, []) if key not in excluded else []
        items = [it for it in items if it[2] < it[4] and it[3] < it[5]]
        for c in range(1, num_classes + 1):
            boxes = [it for it in items if it[1] == c]
            truths = [g for g in truth if g[1] == c]
            taken = [False] * len(truths)
            for d in boxes:
                label = False
                if truths:
                    overlaps = [iou(d, g) for g in truths]
                    best = int(np.argmax(overlaps))
                    if overlaps[best] >= 0.5 and not taken[best]:
                        taken[best] = True
                        label = True
                per_class_scores[c].append(d[0])
                per_class_labels[c].append(label)
    ap = np.full(num_classes, np.nan)
    for c in range(1, num_classes + 1):
        if num_gt[c - 1]:
            ap[c - 1] = voc_ap(per_class_scores[c], per_class_labels[c], num_gt[c - 1])
    per_class = {c: float(ap[c - 1]) for c in class_ids}
    mean = float(np.nanmean(ap)) if num_gt.any() else float("nan")
    return per_class, mean
