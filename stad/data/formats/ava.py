"""AVA CSV files (FORMATS.md §1): ground truth, predictions, excluded timestamps, person proposals.

Readers return `stad.structures` records; bad rows raise `FormatError` naming file, line and field.
Timestamps are read with ``int()`` (``902`` and ``0902`` both work) and written ``%04d``.
"""
from __future__ import annotations

import csv
import logging
import pickle
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from stad.data.formats.conventions import FrameConvention
from stad.data.formats.errors import FormatError
from stad.io_utils import atomic_open, atomic_pickle
from stad.structures import Boxes, Keyframe, KeyframeKey, LabelMap

log = logging.getLogger(__name__)

GT_FIELDS = ("video_id", "timestamp", "x1", "y1", "x2", "y2", "action_id", "person_id")
PRED_FIELDS = GT_FIELDS[:7] + ("score",)


class GTRow(NamedTuple):
    video: str
    timestamp: int
    box: tuple[float, float, float, float]
    action_id: int
    person_id: int


class PredictionRow(NamedTuple):
    video: str
    timestamp: int
    box: tuple[float, float, float, float]
    action_id: int
    score: float


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line_number, fields)`` of non-blank CSV rows."""
    with open(path, newline="", encoding="utf-8") as handle:
        for line_no, fields in enumerate(csv.reader(handle), start=1):
            if fields and any(f.strip() for f in fields):
                yield line_no, [f.strip() for f in fields]


def _parse(path: Path, line: int, name: str, text: str, kind: type) -> object:
    """``kind(text)``; integers may be written ``902``, ``0902`` or ``902.0`` (not ``902.5``)."""
    try:
        if kind is int:
            value = float(text)
            if value != int(value):
                raise ValueError
            return int(value)
        value = kind(text)
        if kind is float and not np.isfinite(value):
            raise ValueError
        return value
    except ValueError:
        raise FormatError(path, line, name, f"{text!r} is not a valid {kind.__name__}") from None


def _parse_box(path: Path, line: int, fields: Sequence[str]) -> tuple[float, float, float, float]:
    return tuple(_parse(path, line, n, fields[i], float) for i, n in zip(range(2, 6), GT_FIELDS[2:6]))  # type: ignore


def _gt_records(path: Path) -> Iterator[tuple[int, list[str], GTRow]]:
    for line, fields in _rows(path):
        if len(fields) not in (7, 8):
            raise FormatError(path, line, None, f"expected 8 columns {GT_FIELDS}, got {len(fields)}")
        pid = _parse(path, line, "person_id", fields[7], int) if len(fields) == 8 and fields[7] else -1
        yield line, fields, GTRow(fields[0], _parse(path, line, "timestamp", fields[1], int),
                                  _parse_box(path, line, fields), _parse(path, line, "action_id", fields[6], int), pid)


def iter_gt_rows(path: str | Path) -> Iterator[GTRow]:
    """Rows of an 8-column AVA ground-truth CSV (7 columns: person_id -1)."""
    for _, _, row in _gt_records(Path(path)):
        yield row


def read_gt_csv(path: str | Path, labelmap: LabelMap, convention: FrameConvention | None = None,
                unknown_ids: str = "error", num_frames: dict[str, int] | None = None) -> list[Keyframe]:
    """Group GT rows into keyframes with one multi-label box per ``(video, t, box string)``.

    Args:
        labelmap: maps action ids to 0-based indices.
        convention: fills ``mid_frame``/``start_frame``/``n_frames``/``format_str``/``frame_rate``.
        unknown_ids: ``"error"`` (raise) or ``"drop"`` (skip rows whose id is not in the label map,
            e.g. AVA's 20 non-evaluated classes; the count is logged).
        num_frames: frames per video, to clamp windows at the end.
    Returns keyframes sorted by key; boxes keep file order of first appearance.
    """
    if unknown_ids not in ("error", "drop"):
        raise ValueError(f"unknown_ids must be 'error' or 'drop', got {unknown_ids!r}")
    path = Path(path)
    table = labelmap.id_to_index
    groups: dict[KeyframeKey, dict[tuple, tuple[int, list[int]]]] = defaultdict(dict)
    dropped = 0
    for line, fields, row in _gt_records(path):
        if row.action_id not in table:
            if unknown_ids == "error":
                raise FormatError(path, line, "action_id", f"id {row.action_id} is not in the label map "
                                  f"(ids {min(labelmap.ids)}..{max(labelmap.ids)}); pass unknown_ids='drop' to skip")
            dropped += 1
            continue
        box_key = tuple(fields[2:6])  # group on the box *string*, as SlowFast and mmaction2 do
        person, labels = groups[(row.video, row.timestamp)].setdefault(box_key, (row.person_id, []))
        if table[row.action_id] not in labels:
            labels.append(table[row.action_id])
    if dropped:
        log.warning("%s: dropped %d rows whose action id is not in the label map", path, dropped)
    return [_make_keyframe(key, boxes, convention, num_frames) for key, boxes in sorted(groups.items())]


def _make_keyframe(key: KeyframeKey, boxes: dict, convention: FrameConvention | None,
                   num_frames: dict[str, int] | None) -> Keyframe:
    xyxy = np.array([[float(v) for v in b] for b in boxes], np.float32).reshape(-1, 4)
    ids = np.array([p for p, _ in boxes.values()], np.int64)
    labels = tuple(tuple(sorted(ls)) for _, ls in boxes.values())
    return keyframe_for(key, Boxes(xyxy, None, ids), labels, convention, num_frames)


def keyframe_for(key: KeyframeKey, boxes: Boxes, labels: Sequence[Sequence[int]],
                 convention: FrameConvention | None, num_frames: dict[str, int] | None = None) -> Keyframe:
    """A `Keyframe` at ``key`` whose frame fields follow ``convention`` (zeros if None)."""
    video, t = key
    if convention is None:
        return Keyframe(video, t, boxes, tuple(tuple(x) for x in labels))
    start, n = convention.window(t, (num_frames or {}).get(video))
    return Keyframe(video, t, boxes, tuple(tuple(x) for x in labels), mid_frame=convention.mid_frame(t),
                    start_frame=start, n_frames=n, format_str=convention.format_for(video),
                    frame_rate=convention.fps)


def _fmt(value: float, decimals: int | None) -> str:
    """``decimals`` digits, or (None) the shortest text that reads back as the same float32, >= 3 digits."""
    if decimals is None:
        return np.format_float_positional(np.float32(value), unique=True, min_digits=3, trim="k")
    return f"{value:.{decimals}f}"


def format_gt_rows(keyframes: Iterable[Keyframe], labelmap: LabelMap, decimals: int | None = None) -> list[str]:
    """CSV lines (no newline) ``video,%04d,x1,y1,x2,y2,action_id,person_id``, one per (box, action).

    ``decimals=None`` writes each coordinate losslessly (shortest float32 text, at least 3 decimals);
    ``decimals=3`` mimics the official files.

    Boxes without labels cannot be expressed in an AVA GT CSV and produce no row.
    """
    lines = []
    for kf in keyframes:
        for box, pid, labels in zip(kf.boxes.xyxy, kf.boxes.ids, kf.labels):
            coords = ",".join(_fmt(float(v), decimals) for v in box)
            for index in labels:
                lines.append(f"{kf.video},{kf.timestamp:04d},{coords},{labelmap.ids[index]},{int(pid)}")
    return lines


def write_gt_csv(path: str | Path, keyframes: Iterable[Keyframe], labelmap: LabelMap,
                 decimals: int | None = None) -> int:
    """Write an AVA GT CSV atomically; returns the number of rows."""
    lines = format_gt_rows(keyframes, labelmap, decimals)
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return len(lines)


def format_prediction_rows(video: str, timestamp: int, boxes: np.ndarray, scores: np.ndarray,
                           labelmap: LabelMap, top_k: int | None = None) -> list[str]:
    """Lines ``video,%04d,x1,y1,x2,y2,action_id,score`` for boxes ``[N,4]`` and scores ``[N,K]``.

    ``top_k`` keeps only the k best-scoring rows of this keyframe (the scorer keeps 50 anyway).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return []
    scores = np.asarray(scores, np.float64).reshape(len(boxes), -1)
    if scores.shape[1] != len(labelmap):
        raise ValueError(f"scores have {scores.shape[1]} classes but the label map has {len(labelmap)}")
    box_idx, cls_idx = np.meshgrid(np.arange(len(boxes)), np.arange(scores.shape[1]), indexing="ij")
    box_idx, cls_idx, flat = box_idx.ravel(), cls_idx.ravel(), scores.ravel()
    if top_k is not None and len(flat) > top_k:
        keep = np.sort(np.argsort(-flat, kind="stable")[:top_k])
        box_idx, cls_idx, flat = box_idx[keep], cls_idx[keep], flat[keep]
    out = []
    for b, c, s in zip(box_idx, cls_idx, flat):
        coords = ",".join(_fmt(float(v), 3) for v in boxes[b])
        out.append(f"{video},{int(timestamp):04d},{coords},{labelmap.ids[c]},{s:.4f}")
    return out


def write_predictions_csv(path: str | Path, predictions: Iterable[tuple[str, int, np.ndarray, np.ndarray]],
                          labelmap: LabelMap, top_k: int | None = None) -> int:
    """Write an 8-column prediction CSV from ``(video, t, boxes [N,4], scores [N,K])``; returns rows."""
    lines: list[str] = []
    for video, t, boxes, scores in predictions:
        lines.extend(format_prediction_rows(video, t, boxes, scores, labelmap, top_k))
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return len(lines)


def read_predictions_csv(path: str | Path) -> list[PredictionRow]:
    """Rows of a 7/8-column prediction CSV (7 columns: score 1.0)."""
    path = Path(path)
    rows = []
    for line, fields in _rows(path):
        if len(fields) not in (7, 8):
            raise FormatError(path, line, None, f"expected 8 columns {PRED_FIELDS}, got {len(fields)}")
        score = _parse(path, line, "score", fields[7], float) if len(fields) == 8 else 1.0
        rows.append(PredictionRow(fields[0], _parse(path, line, "timestamp", fields[1], int),
                                  _parse_box(path, line, fields), _parse(path, line, "action_id", fields[6], int),
                                  score))
    return rows


def read_excluded(path: str | Path) -> set[KeyframeKey]:
    """Keys of an excluded-timestamps CSV (exactly 2 columns ``video,timestamp``)."""
    path = Path(path)
    keys = set()
    for line, fields in _rows(path):
        if len(fields) != 2:
            raise FormatError(path, line, None, f"expected 2 columns (video_id,timestamp), got {len(fields)}")
        keys.add((fields[0], _parse(path, line, "timestamp", fields[1], int)))
    return keys


def write_excluded(path: str | Path, keys: Iterable[KeyframeKey]) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write("".join(f"{v},{int(t):04d}\n" for v, t in sorted(set(keys))))


def read_proposal_csv(path: str | Path) -> dict[KeyframeKey, Boxes]:
    """LFB/SlowFast proposal CSV (column 6 action id / empty / -1, column 7 score), boxes deduplicated."""
    path = Path(path)
    found: dict[KeyframeKey, dict[tuple, float]] = defaultdict(dict)
    for line, fields in _rows(path):
        if len(fields) != 8:
            raise FormatError(path, line, None, f"expected 8 columns, got {len(fields)}")
        key = (fields[0], _parse(path, line, "timestamp", fields[1], int))
        _parse_box(path, line, fields)
        found[key].setdefault(tuple(fields[2:6]), _parse(path, line, "score", fields[7], float))
    return {key: Boxes(np.array([[float(v) for v in b] for b in boxes], np.float32),
                       np.array(list(boxes.values()), np.float32)) for key, boxes in sorted(found.items())}


def read_person_boxes_csv(path: str | Path, video: str | None = None) -> dict[KeyframeKey, Boxes]:
    """Person boxes per keyframe from an AVA-style CSV of ground-truth rows, proposal rows or both.

    GT rows ``video,t,x1,y1,x2,y2,action_id[,person_id]`` give score 1 and the person id (-1 when
    absent); proposal rows (``action_id`` empty or -1) give column 7 as the score (1 when absent) and
    id -1. One box per distinct box string at a keyframe (its first row decides), in file order.
    ``video``: only that video's rows are parsed (the others only need the right column count).
    Returns ``{(video, t): Boxes}`` sorted by key; a bad row raises `FormatError` (file, line, field).
    """
    path = Path(path)
    found: dict[KeyframeKey, dict[tuple, tuple[tuple, float, int]]] = defaultdict(dict)
    for line, fields in _rows(path):
        if len(fields) not in (7, 8):
            raise FormatError(path, line, None, f"expected 7 or 8 columns {GT_FIELDS}, got {len(fields)}")
        if video is not None and fields[0] != video:
            continue
        key = (fields[0], _parse(path, line, "timestamp", fields[1], int))
        box = _parse_box(path, line, fields)
        last = fields[7] if len(fields) == 8 else ""
        if fields[6] in ("", "-1"):  # a proposal: the last column is its score
            score, person = (_parse(path, line, "score", last, float) if last else 1.0), -1
        else:
            _parse(path, line, "action_id", fields[6], int)
            score, person = 1.0, (_parse(path, line, "person_id", last, int) if last else -1)
        found[key].setdefault(tuple(fields[2:6]), (box, float(score), int(person)))
    out = {}
    for key, by_box in sorted(found.items()):
        boxes, scores, ids = zip(*by_box.values())
        out[key] = Boxes(np.array(boxes, np.float32), np.array(scores, np.float32), np.array(ids, np.int64))
    return out


def parse_key(text: str, source: str = "<dict>") -> KeyframeKey:
    """``"video,0902"`` -> ``("video", 902)`` (video ids may contain commas only before the last one)."""
    video, sep, t = text.rpartition(",")
    if not sep or not video:
        raise FormatError(source, None, "key", f"{text!r} is not 'video,timestamp'")
    try:
        return video, int(t)
    except ValueError:
        raise FormatError(source, None, "key", f"{text!r}: timestamp {t!r} is not an integer") from None


def read_dense_proposals(path: str | Path) -> dict[KeyframeKey, Boxes]:
    """mmaction2 dense-proposal pickle ``{"video,%04d": (N,5) or (N,4)}`` -> Boxes with scores."""
    path = Path(path)
    with open(path, "rb") as handle:
        data = pickle.load(handle)
    if not isinstance(data, dict):
        raise FormatError(path, None, None, f"expected a dict 'video,timestamp' -> array, got {type(data).__name__}")
    out = {}
    for text, array in data.items():
        key = parse_key(str(text), str(path))
        array = np.asarray(array, np.float32)
        if array.size == 0:
            out[key] = Boxes.empty()
            continue
        if array.ndim != 2 or array.shape[1] not in (4, 5):
            raise FormatError(path, None, f"{text}", f"expected shape (N,5) or (N,4), got {array.shape}")
        out[key] = Boxes(array[:, :4], array[:, 4] if array.shape[1] == 5 else None)
    return dict(sorted(out.items()))


def write_dense_proposals(path: str | Path, proposals: dict[KeyframeKey, Boxes]) -> None:
    """Write ``{"video,%04d": float32 (N,5) [x1,y1,x2,y2,score]}`` atomically."""
    data = {f"{v},{int(t):04d}": np.concatenate([b.xyxy, b.scores[:, None]], axis=1).astype(np.float32)
            for (v, t), b in sorted(proposals.items())}
    atomic_pickle(path, data)
