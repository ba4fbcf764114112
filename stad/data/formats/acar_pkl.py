"""ACAR-Net annotation pickle ``[elements, idx_to_class]`` (FORMATS.md §2): read, write, validate.

Each element is one keyframe (``video, time, start_frame, n_frames, mid_frame, format_str,
frame_rate, labels``); each ``labels`` entry is one person box (``bounding_box`` normalised xyxy,
``label`` 0-based class indices, ``person_id`` one int per label). Two optional per-box keys that
ACAR ignores are written when they carry information: ``score`` (detector score, proposals) and,
for boxes without labels, ``person_id`` holds one id so the round trip keeps it.
"""
from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from stad.data.formats.errors import FormatError
from stad.io_utils import atomic_pickle
from stad.structures import Boxes, Keyframe, LabelMap

ELEMENT_KEYS = {"video": str, "time": int, "start_frame": int, "n_frames": int, "mid_frame": int,
                "format_str": str, "frame_rate": float, "labels": list}
BOX_KEYS = ("bounding_box", "label", "person_id")


class AcarSchemaError(FormatError):
    """The pickle does not follow the ACAR layout; names the element index and key."""

    def __init__(self, path: object, index: int | None, key: str | None, message: str) -> None:
        super().__init__(path, index, key, message, unit="element")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_number(value: object, integer: bool) -> bool:
    if _is_int(value):
        return True
    if integer:
        return False
    return isinstance(value, (float, np.floating)) and math.isfinite(float(value))


def _is_integer_text(value: object) -> bool:
    """A keyframe time written as text, e.g. ``"0902"``: ACAR-Net only ever applies ``str(time)``."""
    return isinstance(value, str) and value.strip().isdigit()


def validate_acar(obj: object, num_classes: int | None = None, source: str = "<object>") -> None:
    """Raise `AcarSchemaError` at the first schema violation.

    Checks: 2-sequence; idx_to_class entries with an int ``'id'``; every element's keys and types;
    ``n_frames >= 1`` and ``mid_frame`` inside the window; boxes of 4 finite numbers; labels are
    ints in ``[0, num_classes)`` (num_classes defaults to ``len(idx_to_class)``).
    """
    if not isinstance(obj, (list, tuple)) or len(obj) != 2:
        raise AcarSchemaError(source, None, None, "expected a 2-sequence [elements, idx_to_class]")
    elements, classes = obj
    if not isinstance(classes, (list, tuple)):
        raise AcarSchemaError(source, None, "idx_to_class", f"expected a list, got {type(classes).__name__}")
    for i, entry in enumerate(classes):
        if not isinstance(entry, dict) or not _is_int(entry.get("id")):
            raise AcarSchemaError(source, None, f"idx_to_class[{i}]", f"expected a dict with an int 'id', got {entry!r}")
    num_classes = len(classes) if num_classes is None else num_classes
    if not isinstance(elements, (list, tuple)):
        raise AcarSchemaError(source, None, "elements", f"expected a list, got {type(elements).__name__}")
    for index, element in enumerate(elements):
        _validate_element(element, index, num_classes, source)


def _validate_element(element: object, index: int, num_classes: int, source: str) -> None:
    if not isinstance(element, dict):
        raise AcarSchemaError(source, index, None, f"expected a dict, got {type(element).__name__}")
    for key, kind in ELEMENT_KEYS.items():
        if key not in element:
            raise AcarSchemaError(source, index, key, "missing key")
        value = element[key]
        ok = isinstance(value, str) if kind is str else isinstance(value, (list, tuple)) if kind is list \
            else _check_number(value, integer=kind is int) or (key == "time" and _is_integer_text(value))
        if not ok:
            expected = "an int or a string of digits (ACAR writes str(time))" if key == "time" else kind.__name__
            raise AcarSchemaError(source, index, key, f"expected {expected}, got {value!r}")
    if element["n_frames"] < 1 or element["start_frame"] < 0:
        raise AcarSchemaError(source, index, "n_frames", f"window start={element['start_frame']} "
                              f"n_frames={element['n_frames']} is empty or negative")
    if not element["start_frame"] <= element["mid_frame"] < element["start_frame"] + element["n_frames"]:
        raise AcarSchemaError(source, index, "mid_frame", f"{element['mid_frame']} lies outside the window "
                              f"[{element['start_frame']}, {element['start_frame'] + element['n_frames']})")
    try:
        element["format_str"] % 1
    except (TypeError, ValueError):
        raise AcarSchemaError(source, index, "format_str", f"{element['format_str']!r} is not a printf pattern "
                              "with one integer field") from None
    for j, box in enumerate(element["labels"]):
        _validate_box(box, index, j, num_classes, source)


def _validate_box(box: object, index: int, j: int, num_classes: int, source: str) -> None:
    where = f"labels[{j}]"
    if not isinstance(box, dict):
        raise AcarSchemaError(source, index, where, f"expected a dict, got {type(box).__name__}")
    for key in BOX_KEYS:
        if key not in box:
            raise AcarSchemaError(source, index, f"{where}.{key}", "missing key")
    coords = box["bounding_box"]
    if not isinstance(coords, (list, tuple, np.ndarray)) or len(coords) != 4 \
            or not all(_check_number(c, integer=False) for c in coords):
        raise AcarSchemaError(source, index, f"{where}.bounding_box", f"expected 4 finite numbers, got {coords!r}")
    labels = box["label"]
    if not isinstance(labels, (list, tuple)) or not all(_is_int(c) for c in labels):
        raise AcarSchemaError(source, index, f"{where}.label", f"expected a list of ints (use [] for none), got {labels!r}")
    bad = [c for c in labels if not 0 <= c < num_classes]
    if bad:
        raise AcarSchemaError(source, index, f"{where}.label", f"indices {bad} outside [0, {num_classes}) "
                              "(labels are 0-based indices into idx_to_class, not dataset ids)")
    pids = box["person_id"]
    if not isinstance(pids, (list, tuple)) or not all(_is_int(p) for p in pids):
        raise AcarSchemaError(source, index, f"{where}.person_id", f"expected a list of ints, got {pids!r}")
    if "score" in box and not _check_number(box["score"], integer=False):
        raise AcarSchemaError(source, index, f"{where}.score", f"expected a number, got {box['score']!r}")


def labelmap_from_classes(classes: Sequence[dict]) -> LabelMap:
    """`LabelMap` from ACAR's ``idx_to_class`` (``name`` defaults to the id as text)."""
    types = tuple(str(c.get("label_type", "")) for c in classes)
    return LabelMap(tuple(int(c["id"]) for c in classes), tuple(str(c.get("name", c["id"])) for c in classes),
                    types if any(types) else ())


def classes_from_labelmap(labelmap: LabelMap) -> list[dict]:
    """ACAR ``idx_to_class``: ``[{'id': ..., 'name': ...(, 'label_type': ...)}]``."""
    out = []
    for i, (class_id, name) in enumerate(zip(labelmap.ids, labelmap.names)):
        entry = {"id": int(class_id), "name": name}
        if labelmap.label_types:
            entry["label_type"] = labelmap.label_types[i]
        out.append(entry)
    return out


def element_to_keyframe(element: dict) -> Keyframe:
    """One validated element -> `Keyframe` (scores default to 1.0; person id = first of the list)."""
    boxes = element["labels"]  # (time may be an int or a string of digits: validate_acar accepts both)
    xyxy = np.array([b["bounding_box"] for b in boxes], np.float32).reshape(-1, 4)
    scores = np.array([float(b.get("score", 1.0)) for b in boxes], np.float32)
    ids = np.array([int(b["person_id"][0]) if len(b["person_id"]) else -1 for b in boxes], np.int64)
    labels = tuple(tuple(int(c) for c in b["label"]) for b in boxes)
    return Keyframe(element["video"], int(element["time"]), Boxes(xyxy, scores, ids), labels,
                    mid_frame=int(element["mid_frame"]), start_frame=int(element["start_frame"]),
                    n_frames=int(element["n_frames"]), format_str=element["format_str"],
                    frame_rate=float(element["frame_rate"]))


def keyframe_to_element(keyframe: Keyframe, with_scores: bool | None = None) -> dict:
    """`Keyframe` -> ACAR element. ``with_scores`` None: write ``score`` only if any score != 1."""
    kf = keyframe
    if with_scores is None:
        with_scores = bool(len(kf.boxes)) and bool((kf.boxes.scores != 1.0).any())
    labels = []
    for box, score, pid, classes in zip(kf.boxes.xyxy, kf.boxes.scores, kf.boxes.ids, kf.labels):
        entry = {"bounding_box": [float(v) for v in box], "label": [int(c) for c in classes],
                 "person_id": [int(pid)] * max(1, len(classes))}
        if with_scores:
            entry["score"] = float(score)
        labels.append(entry)
    return {"video": kf.video, "time": int(kf.timestamp), "start_frame": int(kf.start_frame),
            "n_frames": int(kf.n_frames), "mid_frame": int(kf.mid_frame), "format_str": kf.format_str,
            "frame_rate": float(kf.frame_rate), "labels": labels}


def load_acar_object(path: str | Path) -> object:
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    except (pickle.UnpicklingError, EOFError) as error:
        raise FormatError(path, None, None, f"not a readable pickle ({error})") from None


def read_acar_pkl(path: str | Path, num_classes: int | None = None) -> tuple[list[Keyframe], LabelMap]:
    """Validate and read an ACAR pickle -> ``(keyframes, labelmap)`` (file order kept)."""
    obj = load_acar_object(path)
    validate_acar(obj, num_classes, str(path))
    elements, classes = obj
    return [element_to_keyframe(e) for e in elements], labelmap_from_classes(classes)


def write_acar_pkl(path: str | Path, keyframes: Iterable[Keyframe], labelmap: LabelMap,
                   with_scores: bool | None = None) -> int:
    """Validate and write ``[elements, idx_to_class]`` atomically; returns the number of elements."""
    obj = [[keyframe_to_element(kf, with_scores) for kf in keyframes], classes_from_labelmap(labelmap)]
    validate_acar(obj, source=str(path))
    atomic_pickle(path, obj)
    return len(obj[0])
