"""Small typed records passed between stages (numpy only: no torch import here).

Boxes are normalised ``[x1, y1, x2, y2]`` in [0, 1]; a keyframe is keyed by ``(video_id, t)``.
Class ids outside the model are dataset ids; `LabelMap` owns the id <-> index mapping.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

KeyframeKey = tuple[str, int]


def _as_float_array(values: object, width: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float32)
    if array.size == 0:
        return np.zeros((0, width), dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"{name} must have shape [N, {width}], got {array.shape}")
    return array


@dataclass(frozen=True)
class Boxes:
    """N person boxes in normalised xyxy with optional per-box scores and person ids.

    Attributes:
        xyxy: float32 ``[N, 4]`` normalised ``[x1, y1, x2, y2]``.
        scores: float32 ``[N]`` detector scores (1.0 for ground truth) .
        ids: int64 ``[N]`` person / entity ids (-1 when unknown).
    """

    xyxy: np.ndarray
    scores: np.ndarray | None = None
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        xyxy = _as_float_array(self.xyxy, 4, "Boxes.xyxy")
        n = len(xyxy)
        scores = np.ones(n, np.float32) if self.scores is None else np.asarray(self.scores, np.float32).reshape(-1)
        ids = np.full(n, -1, np.int64) if self.ids is None else np.asarray(self.ids, np.int64).reshape(-1)
        if len(scores) != n or len(ids) != n:
            raise ValueError(f"Boxes: {n} boxes but {len(scores)} scores and {len(ids)} ids")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "ids", ids)

    @classmethod
    def empty(cls) -> "Boxes":
        return cls(np.zeros((0, 4), np.float32))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: object) -> "Boxes":
        index = np.arange(len(self))[index] if isinstance(index, slice) else np.atleast_1d(np.asarray(index))
        return Boxes(self.xyxy[index], self.scores[index], self.ids[index])

    def area(self) -> np.ndarray:
        """Area of each box ``[N]`` (normalised units)."""
        return (self.xyxy[:, 2] - self.xyxy[:, 0]).clip(0) * (self.xyxy[:, 3] - self.xyxy[:, 1]).clip(0)

    def clip(self) -> "Boxes":
        """A copy with coordinates clipped to [0, 1]."""
        return Boxes(self.xyxy.clip(0.0, 1.0), self.scores, self.ids)

    def to_pixels(self, width: int, height: int) -> np.ndarray:
        """Pixel xyxy ``[N, 4]`` float32 for a frame of ``width`` x ``height``."""
        return self.xyxy * np.array([width, height, width, height], np.float32)

    def equals(self, other: "Boxes") -> bool:
        """Exact equality of coordinates, scores and ids (``==`` on arrays is ambiguous)."""
        return (isinstance(other, Boxes) and np.array_equal(self.xyxy, other.xyxy)
                and np.array_equal(self.scores, other.scores) and np.array_equal(self.ids, other.ids))

    def is_valid(self) -> np.ndarray:
        """Mask ``[N]`` of boxes inside [0, 1] with x1 <= x2 and y1 <= y2."""
        b = self.xyxy
        inside = ((b >= 0.0) & (b <= 1.0)).all(axis=1)
        return inside & (b[:, 0] <= b[:, 2]) & (b[:, 1] <= b[:, 3])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``[N, M]`` between xyxy boxes ``a`` ``[N, 4]`` and ``b`` ``[M, 4]``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(0).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass(frozen=True)
class Keyframe:
    """One annotated (or proposed) keyframe: boxes plus per-box multi-label class indices.

    ``labels[i]`` holds the 0-based contiguous class *indices* of box i (empty: no action).
    Frame numbers follow the dataset's file numbering (``format_str % n``).
    """

    video: str
    timestamp: int
    boxes: Boxes
    labels: tuple[tuple[int, ...], ...] = ()
    mid_frame: int = 0
    start_frame: int = 0
    n_frames: int = 0
    format_str: str = "image_%06d.jpg"
    frame_rate: float = 30.0

    def __post_init__(self) -> None:
        labels = self.labels or tuple(() for _ in range(len(self.boxes)))
        labels = tuple(tuple(int(c) for c in per_box) for per_box in labels)
        if len(labels) != len(self.boxes):
            raise ValueError(f"Keyframe {self.key}: {len(self.boxes)} boxes but {len(labels)} label lists")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "timestamp", int(self.timestamp))

    @property
    def key(self) -> KeyframeKey:
        return (self.video, int(self.timestamp))

    def equals(self, other: "Keyframe") -> bool:
        """Exact equality of every field (boxes compared with `Boxes.equals`)."""
        same = ("video", "timestamp", "labels", "mid_frame", "start_frame", "n_frames", "format_str", "frame_rate")
        return (isinstance(other, Keyframe) and all(getattr(self, f) == getattr(other, f) for f in same)
                and self.boxes.equals(other.boxes))

    def multi_hot(self, num_classes: int) -> np.ndarray:
        """Targets ``[N, num_classes]`` float32 built from ``labels``."""
        target = np.zeros((len(self.boxes), num_classes), np.float32)
        for i, per_box in enumerate(self.labels):
            target[i, list(per_box)] = 1.0
        return target


@dataclass(frozen=True)
class LabelMap:
    """Ordered classes: index i (model output i) <-> dataset id ``ids[i]`` with ``names[i]``."""

    ids: tuple[int, ...]
    names: tuple[str, ...]
    label_types: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.names):
            raise ValueError("LabelMap: ids and names differ in length")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"LabelMap: duplicate ids in {self.ids}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def id_to_index(self) -> dict[int, int]:
        return {class_id: i for i, class_id in enumerate(self.ids)}

    def index_of(self, class_ids: Iterable[int]) -> list[int]:
        """0-based indices of dataset ``class_ids``; raises KeyError naming an unknown id."""
        table = self.id_to_index
        out = []
        for class_id in class_ids:
            if int(class_id) not in table:
                raise KeyError(f"class id {class_id} is not in the label map (ids {min(self.ids)}..{max(self.ids)})")
            out.append(table[int(class_id)])
        return out

    def subset(self, class_ids: Sequence[int]) -> "LabelMap":
        keep = set(int(c) for c in class_ids)
        rows = [(i, n, t) for i, n, t in zip(self.ids, self.names, self.label_types or [""] * len(self)) if i in keep]
        return LabelMap(tuple(r[0] for r in rows), tuple(r[1] for r in rows),
                        tuple(r[2] for r in rows) if self.label_types else ())
