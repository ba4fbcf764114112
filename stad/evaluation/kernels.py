"""Compiled kernels that replay the official AVA evaluator's per-row logic exactly.

The official ``read_csv`` keeps, per keyframe, a ``heapq`` min-heap of
``(score, action_id, y1, x1, y2, x2)`` tuples, replaces the minimum only on a strictly greater
score, then stable-sorts the heap *array* by descending score. Which rows survive, and the order
of tied scores, both depend on that exact heap array, so it is replayed here operation for
operation (CPython's ``heappush``/``heapreplace`` algorithm) instead of being approximated.
The greedy TP/FP matching and the IoU arithmetic follow ``per_image_evaluation`` the same way.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _tuple_less(i, j, score, action, y1, x1, y2, x2):
    """Python's ``(score, action, y1, x1, y2, x2)`` tuple ``<`` for rows i and j."""
    if score[i] != score[j]:
        return score[i] < score[j]
    if action[i] != action[j]:
        return action[i] < action[j]
    if y1[i] != y1[j]:
        return y1[i] < y1[j]
    if x1[i] != x1[j]:
        return x1[i] < x1[j]
    if y2[i] != y2[j]:
        return y2[i] < y2[j]
    return x2[i] < x2[j]


@njit(cache=True)
def _sift_down(heap, start, pos, rank):
    item = heap[pos]
    while pos > start:
        parent_pos = (pos - 1) >> 1
        parent = heap[parent_pos]
        if rank[item] < rank[parent]:
            heap[pos] = parent
            pos = parent_pos
            continue
        break
    heap[pos] = item


@njit(cache=True)
def _sift_up(heap, size, pos, rank):
    start = pos
    item = heap[pos]
    child = 2 * pos + 1
    while child < size:
        right = child + 1
        if right < size and not rank[heap[child]] < rank[heap[right]]:
            child = right
        heap[pos] = heap[child]
        pos = child
        child = 2 * pos + 1
    heap[pos] = item
    _sift_down(heap, start, pos, rank)


@njit(cache=True)
def _stable_sort_desc(heap, size, score_rank, out):
    """``sorted(heap, key=-score)`` (stable) written to ``out[:size]``.

    Insertion sort fed from the heap's *end*: a min-heap array read backwards is nearly in
    descending order, so few elements move. An element read later has a smaller heap position,
    so it goes before equal scores already placed, which keeps Python's stable order.
    """
    for n in range(size):
        item = heap[size - 1 - n]
        j = n
        while j > 0 and score_rank[out[j - 1]] <= score_rank[item]:
            out[j] = out[j - 1]
            j -= 1
        out[j] = item


@njit(cache=True)
def _select_one_key(rows, capacity, tuple_rank, score_rank, heap):
    """Replay the capacity heap over ``rows`` (file order); returns the heap size."""
    size = 0
    for r in rows:
        if capacity < 1 or size < capacity:
            heap[size] = r
            _sift_down(heap, 0, size, tuple_rank)
            size += 1
        elif score_rank[r] > score_rank[heap[0]]:
            heap[0] = r
            _sift_up(heap, size, 0, tuple_rank)
    return size


@njit(cache=True)
def _merge_sort_rows(rows, score, action, y1, x1, y2, x2):
    """Stable merge sort of ``rows`` by the tuple order (bottom-up, no recursion)."""
    a = rows.copy()
    b = np.empty_like(a)
    n = len(a)
    width = 1
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if _tuple_less(a[j], a[i], score, action, y1, x1, y2, x2):
                    b[k] = a[j]
                    j += 1
                else:
                    b[k] = a[i]
                    i += 1
                k += 1
            while i < mid:
                b[k] = a[i]
                i += 1
                k += 1
            while j < hi:
                b[k] = a[j]
                j += 1
                k += 1
        a, b = b, a
        width *= 2
    return a


@njit(cache=True)
def _local_tuple_rank(rows, score, action, y1, x1, y2, x2):
    """Rank of each of ``rows``' ``(score, action, y1, x1, y2, x2)`` tuples among them (equal
    tuples share a rank): comparing ranks is comparing the Python tuples the official heap holds."""
    s, a, ya, xa, yb, xb = score[rows], action[rows], y1[rows], x1[rows], y2[rows], x2[rows]
    ordered = _merge_sort_rows(np.arange(len(rows)), s, a, ya, xa, yb, xb)
    rank = np.empty(len(rows), np.int32)
    current = 0
    for p in range(len(ordered)):
        if p > 0 and _tuple_less(ordered[p - 1], ordered[p], s, a, ya, xa, yb, xb):
            current += 1
        rank[ordered[p]] = current
    return rank


@njit(cache=True)
def _first_duplicate_group(desc, local_score, local_class, n_classes):
    """Start (in descending-score order) of the first equal-score group holding two rows of one
    class, or ``len(desc)``. Above it, a class never has two rows with the same score, so the
    official hand-on order of each class is simply descending score."""
    seen = np.full(n_classes + 2, -1, np.int64)
    start = 0
    for j in range(len(desc)):
        if j > 0 and local_score[desc[j]] != local_score[desc[j - 1]]:
            start = j
        c = local_class[desc[j]]
        if seen[c] == start:
            return start
        seen[c] = start
    return len(desc)


@njit(cache=True)
def _top_desc(local_score, m):
    """Local indices of every row scoring at least the ``m``-th largest score, by descending score
    (order inside equal scores arbitrary): a complete prefix of the descending order, holding the
    whole equal-score group of any cut at ``size <= m``. Sorting ~m rows instead of all of them
    is what makes the per-key cost small."""
    n = len(local_score)
    if m >= n:
        return np.argsort(-local_score)
    threshold = np.partition(local_score, n - m)[n - m]
    count = 0
    for i in range(n):
        if local_score[i] >= threshold:
            count += 1
    candidates = np.empty(count, np.int64)
    j = 0
    for i in range(n):
        if local_score[i] >= threshold:
            candidates[j] = i
            j += 1
    return candidates[np.argsort(-local_score[candidates])]


@njit(cache=True)
def _cut_group(desc, local_score, size):
    """``(start, end)`` in ``desc`` of the equal-score group holding the last kept position."""
    cut = local_score[desc[size - 1]]
    start = size - 1
    while start > 0 and local_score[desc[start - 1]] == cut:
        start -= 1
    end = size
    while end < len(desc) and local_score[desc[end]] == cut:
        end += 1
    return start, end


@njit(cache=True)
def _replay_cut(rows, local_score, group, capacity, in_heap, score, action, y1, x1, y2, x2):
    """Which rows of the cut's score group (``group``: local indices) the official heap keeps.

    The heap's final content is every row scoring above the cut score plus some rows scoring
    exactly the cut: rows below it are always evicted first (they are the heap minimum), so only
    their *number* matters, and a cut-score row is evicted only by a higher score once no lower
    row is left, the smallest ``(action, y1, x1, y2, x2)`` tuple first. Counting replaces the heap.
    Marks ``in_heap[g]`` for the kept group rows.
    """
    cut = local_score[group[0]]
    for g in group:
        in_heap[g] = False
    size = 0
    below = 0
    for i in range(len(rows)):  # file order
        s = local_score[i]
        if size < capacity:
            size += 1
            if s < cut:
                below += 1
            elif s == cut:
                in_heap[i] = True
        elif s > cut:
            if below > 0:
                below -= 1
            else:
                smallest = -1
                for g in group:
                    if in_heap[g] and (smallest < 0 or _tuple_less(rows[g], rows[smallest], score, action,
                                                                   y1, x1, y2, x2)):
                        smallest = g
                in_heap[smallest] = False
        elif s == cut and below > 0:
            below -= 1
            in_heap[i] = True


@njit(cache=True)
def _has_class_twice(members, mask, local_class, seen, stamp):
    """True if two of the masked ``members`` share a class (``seen`` holds stamps, not flags)."""
    for g in members:
        if mask[g]:
            if seen[local_class[g]] == stamp:
                return True
            seen[local_class[g]] = stamp
    return False


@njit(cache=True)
def _order_without_heap(rows, desc, local_score, local_class, size, tie_free, in_heap, seen, stamp, ordered,
                        score, action, y1, x1, y2, x2):
    """Hand-on order of the kept rows written to ``ordered[:size]`` when it can be derived from
    scores alone; False when the official heap must be replayed.

    Inside one class the hand-on order only matters among equal scores, so any kept set without two
    rows of one class at one score can be listed in descending score. Above the cut's score group
    every row is kept (``tie_free`` says whether such duplicates exist there); within the group,
    `_replay_cut` tells which rows survive.
    """
    n = len(desc)
    if size == n or local_score[desc[size - 1]] != local_score[desc[size]]:  # clean cut (see `_top_desc`)
        if size > tie_free:
            return False
        ordered[:size] = desc[:size]
        return True
    start, end = _cut_group(desc, local_score, size)
    if tie_free < start:
        return False
    group = desc[start:end]
    _replay_cut(rows, local_score, group, size, in_heap, score, action, y1, x1, y2, x2)
    if tie_free == start and _has_class_twice(group, in_heap, local_class, seen, stamp):
        return False
    ordered[:start] = desc[:start]
    p = start
    for g in group:
        if in_heap[g]:
            ordered[p] = g
            p += 1
    return True


@njit(cache=True, parallel=True)
def select_rows(key_offsets, rows_by_key, capacities, score, action, y1, x1, y2, x2, valid, out_offsets,
                target, n_gt_rows, n_classes, want_selected=True):
    """Rows kept per key for several capacities, in the order the official evaluator hands them
    on, and which of them are true positives.

    Fast path (`_order_without_heap`): when no class has two kept rows of one score, the hand-on
    order of each class is descending score, so only *which* rows survive matters, and that
    follows from counting. Otherwise the official heap is replayed on the key's rows, ranked once
    (lazily, only for keys that need it) into small local arrays shared by all capacities.

    Args:
        key_offsets: int64 ``[K+1]``; key k owns ``rows_by_key[key_offsets[k]:key_offsets[k+1]]``.
        rows_by_key: int64 ``[N]`` row indices grouped by key, file order inside a key.
        capacities: int64 ``[C]`` rows kept per key (< 1: all).
        score, action, y1, x1, y2, x2: the rows' fields (float64 / int64 ``[N]``).
        valid: bool ``[N]``, box has area (the official evaluator drops degenerate boxes after
            the capacity cut).
        out_offsets: int64 ``[C, K+1]``; capacity i's rows of key k start at ``out_offsets[i, k]``.
        target: int64 ``[N]`` GT row each detection would claim (`match_targets`), -1 for none.
        n_gt_rows: number of GT rows (size of the claim flags).
        n_classes: largest class id (rows are already filtered to the label map; < 32768).
        want_selected: also return the kept row indices (else ``selected`` is empty).
    Returns:
        ``(selected int64 [M], is_tp bool [M], kept_class int16 [M], kept_score float64 [M])`` with
        ``M = out_offsets[-1, -1]``; ``kept_class`` is the class index (id - 1), -1 for a dropped
        degenerate box. Greedy matching: the first detection (in hand-on order) to reach a GT row
        is its true positive.
    """
    total = out_offsets[-1, -1]
    selected = np.empty(total if want_selected else 0, np.int64)
    is_tp = np.zeros(total, np.bool_)
    kept_class = np.empty(total, np.int16)
    kept_score = np.empty(total, np.float64)
    claimed = np.zeros(n_gt_rows, np.bool_)
    largest = 0 if capacities.min() < 1 else capacities.max()
    for k in prange(len(key_offsets) - 1):
        rows = rows_by_key[key_offsets[k]:key_offsets[k + 1]]
        n = len(rows)
        local_score = score[rows]
        local_class = np.clip(action[rows], 0, n_classes + 1)
        local_tuple = np.empty(0, np.int32)
        desc = _top_desc(local_score, largest if 0 < largest < n else n)
        tie_free = _first_duplicate_group(desc, local_score, local_class, n_classes)
        heap = np.empty(n, np.int64)
        ordered = np.empty(n, np.int64)
        in_heap = np.zeros(n, np.bool_)
        seen = np.full(n_classes + 2, -1, np.int64)
        for i in range(len(capacities)):
            capacity = capacities[i]
            size = n if capacity < 1 or capacity >= n else capacity
            if size and not _order_without_heap(rows, desc, local_score, local_class, size, tie_free, in_heap,
                                                seen, i, ordered, score, action, y1, x1, y2, x2):
                if len(local_tuple) != n:
                    local_tuple = _local_tuple_rank(rows, score, action, y1, x1, y2, x2)
                size = _select_one_key(np.arange(n), capacity, local_tuple, local_score, heap)
                _stable_sort_desc(heap, size, local_score, ordered)
            _hand_on(rows, ordered, size, out_offsets[i, k], action, score, valid, target, claimed,
                     selected, is_tp, kept_class, kept_score)
    return selected, is_tp, kept_class, kept_score


@njit(cache=True)
def _hand_on(rows, ordered, size, base, action, score, valid, target, claimed, selected, is_tp, kept_class,
             kept_score):
    """Write one key's kept rows at ``base`` and claim GT rows greedily in hand-on order."""
    for p in range(size):
        r = rows[ordered[p]]
        if len(selected):
            selected[base + p] = r
        kept_class[base + p] = action[r] - 1 if valid[r] else -1
        kept_score[base + p] = score[r]
        g = target[r]
        if g >= 0 and not claimed[g]:
            claimed[g] = True
            is_tp[base + p] = True
    for p in range(size):
        g = target[rows[ordered[p]]]
        if g >= 0:
            claimed[g] = False


@njit(cache=True, inline="always")
def _iou(a, b, y1, x1, y2, x2, gy1, gx1, gy2, gx2):
    """np_box_ops.iou for one detection a and one ground-truth box b, same float operations."""
    height = max(0.0, min(y2[a], gy2[b]) - max(y1[a], gy1[b]))
    width = max(0.0, min(x2[a], gx2[b]) - max(x1[a], gx1[b]))
    intersect = height * width
    area_a = (y2[a] - y1[a]) * (x2[a] - x1[a])
    area_b = (gy2[b] - gy1[b]) * (gx2[b] - gx1[b])
    union = area_a + area_b - intersect
    if union == 0.0:
        return np.nan
    return intersect / union


@njit(cache=True, parallel=True)
def match_targets(det_offsets, det_rows, det_to_gt_key, gt_offsets, gt_rows, action, y1, x1, y2, x2,
                  gt_action, gy1, gx1, gy2, gx2, iou_threshold):
    """For each detection row: the GT row it would claim (argmax IoU within its class), or -1.

    ``np.argmax`` picks the first maximum (a NaN counts as the maximum); the claim needs
    ``IoU >= iou_threshold``. Independent of capacity, so computed once.
    """
    target = np.full(len(action), -1, np.int64)
    for k in prange(len(det_offsets) - 1):
        g = det_to_gt_key[k]
        if g < 0:
            continue
        gts = gt_rows[gt_offsets[g]:gt_offsets[g + 1]]
        for r in det_rows[det_offsets[k]:det_offsets[k + 1]]:
            best = -1
            best_iou = -1.0
            for j in gts:
                if gt_action[j] != action[r]:
                    continue
                value = _iou(r, j, y1, x1, y2, x2, gy1, gx1, gy2, gx2)
                if best >= 0 and np.isnan(best_iou):
                    break
                if best < 0 or np.isnan(value) or value > best_iou:
                    best = j
                    best_iou = value
            if best >= 0 and best_iou >= iou_threshold:
                target[r] = best
    return target


@njit(cache=True)
def key_codes(video_code, timestamp):
    """Number the ``(video, timestamp)`` keys of rows by first appearance.

    Returns ``(codes int64 [N], first int64 [K])``: each row's key number and each key's first row.
    Rows of one key usually follow each other, so a row is first compared with its predecessor and
    the hash table is consulted only when the key changes.
    """
    n = len(video_code)
    codes = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    table = dict()
    table[(np.int64(-1), np.int64(0))] = np.int64(-1)
    n_keys = 0
    for i in range(n):
        if i > 0 and video_code[i] == video_code[i - 1] and timestamp[i] == timestamp[i - 1]:
            codes[i] = codes[i - 1]
            continue
        key = (np.int64(video_code[i]), np.int64(timestamp[i]))
        code = table.get(key, np.int64(-1))
        if code < 0:
            code = n_keys
            table[key] = code
            first[n_keys] = i
            n_keys += 1
        codes[i] = code
    return codes, first[:n_keys].copy()


@njit(cache=True)
def stable_group(codes, n_groups):
    """Counting sort: ``(offsets [G+1], order [N])`` grouping indices by ``codes``, stable."""
    counts = np.zeros(n_groups + 1, np.int64)
    for c in codes:
        counts[c + 1] += 1
    offsets = np.cumsum(counts)
    cursor = offsets[:-1].copy()
    order = np.empty(len(codes), np.int64)
    for i in range(len(codes)):
        c = codes[i]
        order[cursor[c]] = i
        cursor[c] += 1
    return offsets, order


@njit(cache=True, nogil=True)
def gather_by_class(kept_class, kept_score, is_tp, n_classes):
    """Kept rows regrouped class by class (stable: hand-on order inside a class); class -1 dropped.

    Returns ``(bounds [n_classes+1], scores [M], is_tp [M])``: class index c owns
    ``bounds[c]:bounds[c+1]``, exactly the rows the official evaluator concatenates for it.
    """
    counts = np.zeros(n_classes + 1, np.int64)
    for c in kept_class:
        if c >= 0:
            counts[c + 1] += 1
    bounds = np.cumsum(counts)
    cursor = bounds[:-1].copy()
    out_score = np.empty(bounds[-1], np.float64)
    out_tp = np.empty(bounds[-1], np.bool_)
    for p in range(len(kept_class)):
        c = kept_class[p]
        if c >= 0:
            out_score[cursor[c]] = kept_score[p]
            out_tp[cursor[c]] = is_tp[p]
            cursor[c] += 1
    return bounds, out_score, out_tp


@njit(cache=True, nogil=True)
def ap_terms(is_tp, ascending, num_gt):
    """The summands of the official VOC AP, ``(recall[i] - recall[i-1]) * precision[i]`` at every
    recall change, for detections ranked by ``ascending[::-1]`` (``np.argsort(scores)`` reversed).

    Same float operations as ``metrics.compute_precision_recall`` and
    ``compute_average_precision`` (int cumsums converted to float, then divided; running maximum
    from the right). The caller sums them with ``np.sum``, as the official code does, so that the
    pairwise summation order is numpy's own.
    """
    n = len(ascending)
    precision = np.empty(n + 2, np.float64)
    recall = np.empty(n + 2, np.float64)
    precision[0], recall[0] = 0.0, 0.0
    precision[n + 1], recall[n + 1] = 0.0, 1.0
    cum_tp = 0
    for p in range(n):
        if is_tp[ascending[n - 1 - p]]:
            cum_tp += 1
        precision[p + 1] = float(cum_tp) / float(p + 1)
        recall[p + 1] = float(cum_tp) / float(num_gt)
    for p in range(n, -1, -1):
        precision[p] = max(precision[p], precision[p + 1])
    count = 0
    for p in range(1, n + 2):
        if recall[p] != recall[p - 1]:
            count += 1
    terms = np.empty(count, np.float64)
    j = 0
    for p in range(1, n + 2):
        if recall[p] != recall[p - 1]:
            terms[j] = (recall[p] - recall[p - 1]) * precision[p]
            j += 1
    return terms
