"""Chaotic World ``AR_ava_format`` (FORMATS.md §3): the 1 fps CSVs, label ids and fixes.

``chaos_{train,test}_1fps.csv`` rows: ``video, frame, x1, y1, x2, y2, label(0..49), person_id, ...,
start_frame, end_frame, time, ?, ?`` (>= 13 columns; trailing fields indexed from the end; an optional
header line is detected). Frames are ``<vid>/<vid>_%06d.png`` at 25 fps, 1-based.

Fixes over the adaptation's ``cw_pkl.py``: rows are grouped by ``(video, int(time))`` with one
multi-label box per distinct box (not one sample per row), and ``start_frame`` is clamped to >= 1.
Label ids: files hold 0..49; the ACAR pickle keeps them as indices and its ``idx_to_class`` says
``id = index + 1``; AVA-style GT CSVs (``make_csv.py``) and the label map use ids 1..50.
``n_frames = end_frame - start_frame`` (end exclusive; whether the official end is inclusive is
unconfirmed, see FORMATS.md).
"""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from stad.data.formats.conventions import CHAOTIC_WORLD
from stad.data.formats.errors import FormatError
from stad.io_utils import atomic_open
from stad.structures import Boxes, Keyframe, LabelMap

CW_CLASSES = (
    "aiming weapon", "arguing", "arresting", "burning/setting fire", "carrying", "carrying casualty",
    "chanting/cheering", "chasing", "clapping", "creating barricade", "dancing", "destroying",
    "extinguishing fire", "fighting", "guarding", "hitting an object/smashing", "holding a burning stick",
    "holding flag", "holding hands", "holding signage", "holding weapon", "hugging", "injured", "kneeling",
    "painting", "pinning", "playing instrument", "praying", "pulling barricade", "punching", "pushing",
    "raising fist", "raising hands", "recording", "reporting live", "retreating", "running/escaping",
    "shooting/firing", "shouting", "singing", "speaking on stage", "speaking/talking", "spraying",
    "stealing/looting", "throwing object", "walking", "watching", "waving flag", "waving flarestick",
    "waving hands",
)
MIN_COLUMNS = 13


def cw_labelmap() -> LabelMap:
    """50 classes, index i <-> id i+1 (the adaptation tags all PERSON_MOVEMENT)."""
    return LabelMap(tuple(range(1, 51)), CW_CLASSES, ("PERSON_MOVEMENT",) * 50)


def _number(path: Path, line: int, name: str, text: str, integer: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FormatError(path, line, name, f"{text!r} is not a number") from None
    if integer and value != int(value):
        raise FormatError(path, line, name, f"{text!r} is not an integer")
    return value


def _looks_like_header(fields: list[str]) -> bool:
    try:
        float(fields[1])
        return False
    except (ValueError, IndexError):
        return True


def read_cw_csv(path: str | Path) -> list[Keyframe]:
    """Group a ``chaos_*_1fps.csv`` into keyframes (labels are 0-based indices, ids = index + 1)."""
    path = Path(path)
    groups: dict[tuple[str, int], dict] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [(i, [f.strip() for f in r]) for i, r in enumerate(csv.reader(handle), start=1) if r]
    if rows and _looks_like_header(rows[0][1]):
        rows = rows[1:]
    for line, f in rows:
        if len(f) < MIN_COLUMNS:
            raise FormatError(path, line, None, f"expected >= {MIN_COLUMNS} columns, got {len(f)}")
        frame = int(_number(path, line, "frame", f[1], True))
        box = tuple(_number(path, line, n, f[i], False) for i, n in zip(range(2, 6), ("x1", "y1", "x2", "y2")))
        label = int(_number(path, line, "label", f[6], True))
        if not 0 <= label < 50:
            raise FormatError(path, line, "label", f"{label} outside 0..49 (the 1fps CSV is 0-based)")
        person = int(_number(path, line, "person_id", f[7], True))
        start = int(_number(path, line, "start_frame", f[-5], True))
        end = int(_number(path, line, "end_frame", f[-4], True))
        time = int(_number(path, line, "time", f[-3], False))
        group = groups.setdefault((f[0], time), {"frame": frame, "start": start, "end": end, "boxes": {}, "line": line})
        if group["frame"] != frame:
            raise FormatError(path, line, "frame", f"keyframe ({f[0]}, {time}) has frame {frame} here but "
                              f"{group['frame']} on line {group['line']}")
        pid, labels = group["boxes"].setdefault(tuple(f[2:6]), (person, []))
        if label not in labels:
            labels.append(label)
    keyframes = []
    for (video, time), g in sorted(groups.items()):
        boxes = g["boxes"]
        xyxy = np.array([[float(v) for v in b] for b in boxes], np.float32).reshape(-1, 4)
        ids = np.array([p for p, _ in boxes.values()], np.int64)
        start = max(1, g["start"])
        n_frames = max(1, g["end"] - start)
        mid = g["frame"]
        if not start <= mid < start + n_frames:  # a window that misses its keyframe: widen it
            n_frames = max(n_frames, mid - start + 1)
        keyframes.append(Keyframe(video, time, Boxes(xyxy, None, ids), tuple(tuple(sorted(ls)) for _, ls in boxes.values()),
                                  mid_frame=mid, start_frame=start, n_frames=n_frames,
                                  format_str=CHAOTIC_WORLD.format_for(video), frame_rate=CHAOTIC_WORLD.fps))
    return keyframes


def write_cw_csv(path: str | Path, keyframes: Iterable[Keyframe], header: bool = True) -> int:
    """Write the 13-column 1fps layout (the two unexplained trailing columns as 0); returns rows."""
    lines = ["video_id,frame,x1,y1,x2,y2,label,person_id,start_frame,end_frame,time,u1,u2"] if header else []
    for kf in keyframes:
        for box, pid, labels in zip(kf.boxes.xyxy, kf.boxes.ids, kf.labels):
            coords = ",".join(np.format_float_positional(np.float32(v), unique=True, min_digits=3, trim="k") for v in box)
            for label in labels:
                lines.append(f"{kf.video},{kf.mid_frame},{coords},{label},{int(pid)},{kf.start_frame},"
                             f"{kf.start_frame + kf.n_frames},{kf.timestamp},0,0")
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return len(lines) - int(header)
