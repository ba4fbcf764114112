"""Person ids across keyframes for detector boxes: greedy IoU matching (no appearance model).

Keyframes are about a second apart, so a fast walker's box can move by most of its width; boxes
are therefore matched on IoU of boxes enlarged by ``expand`` (a cheap motion allowance), best
pairs first. A track not matched for ``max_age`` keyframes is dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stad.structures import Boxes, box_iou


def _expand(xyxy: np.ndarray, factor: float) -> np.ndarray:
    centre = (xyxy[:, :2] + xyxy[:, 2:]) / 2
    half = (xyxy[:, 2:] - xyxy[:, :2]) / 2 * factor
    return np.concatenate([centre - half, centre + half], axis=1)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs ``(row, col)`` taken in order of decreasing IoU, each row/col once, IoU >= threshold."""
    pairs: list[tuple[int, int]] = []
    if iou.size == 0:
        return pairs
    used_r, used_c = set(), set()
    order = np.argsort(-iou, axis=None, kind="stable")
    for flat in order:
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < threshold:
            break
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    return pairs


@dataclass
class IouTracker:
    """Assigns person ids (1, 2, ...) to the boxes of successive keyframes.

    Args:
        iou_threshold: minimum IoU (of expanded boxes) to continue a track.
        expand: box enlargement factor before matching (motion allowance).
        max_age: keyframes a track survives without a match.
    """

    iou_threshold: float = 0.2
    expand: float = 1.5
    max_age: int = 2
    _boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32), repr=False)
    _ids: list[int] = field(default_factory=list, repr=False)
    _ages: list[int] = field(default_factory=list, repr=False)
    _next_id: int = 1

    def update(self, boxes: Boxes) -> Boxes:
        """``boxes`` with ``ids`` set to track ids (a new object; the input is not modified)."""
        iou = box_iou(_expand(self._boxes, self.expand), _expand(boxes.xyxy, self.expand))
        assigned = np.full(len(boxes), -1, np.int64)
        matched_tracks = set()
        for track, box in greedy_match(iou, self.iou_threshold):
            assigned[box] = self._ids[track]
            matched_tracks.add(track)
        for box in np.flatnonzero(assigned < 0):
            assigned[box] = self._next_id
            self._next_id += 1
        survivors = [t for t in range(len(self._ids)) if t not in matched_tracks and self._ages[t] + 1 <= self.max_age]
        self._boxes = np.concatenate([boxes.xyxy, self._boxes[survivors]]).astype(np.float32)
        self._ids = assigned.tolist() + [self._ids[t] for t in survivors]
        self._ages = [0] * len(boxes) + [self._ages[t] + 1 for t in survivors]
        return Boxes(boxes.xyxy, boxes.scores, assigned)
