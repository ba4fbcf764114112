"""Which frames a dataset needs: keyframe keys from annotation files, mapped to frame numbers.

A keyframe key is ``(video_id, t)``; the dataset's `FrameConvention` (stad.data.formats.conventions,
the one home of frame-rate / first-timestamp rules) maps ``t`` to the frame-folder file number; here
we add the time in a video file for decoding. No torch or ultralytics here.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from stad.data.formats import conventions
from stad.data.formats.conventions import FrameConvention


# Plain videos / frame folders without annotations: t is the 1-based frame number.
PLAIN = FrameConvention(fps=30.0, format_str="{video}_%06d.jpg", window_seconds=1.5, timestamp_unit="frame")

CONVENTIONS: dict[str, FrameConvention] = {
    "ava": conventions.AVA,
    "toy": conventions.TOY,
    "cw": conventions.CHAOTIC_WORLD,
    "multisports": conventions.MULTISPORTS,
    "frames": PLAIN,
}


def get_convention(name: str | FrameConvention) -> FrameConvention:
    if isinstance(name, FrameConvention):
        return name
    if name not in CONVENTIONS:
        raise ValueError(f"unknown dataset convention {name!r}; choose from {sorted(CONVENTIONS)}")
    return CONVENTIONS[name]


@dataclass(frozen=True)
class KeyframeRequest:
    """One keyframe to run the detector on.

    ``frame`` is the 1-based frame file number (``format_str % frame`` under ``<root>/<video>/``);
    ``seconds`` the time in the video file (None: decode index ``frame - 1``).
    """

    video: str
    timestamp: int
    frame: int
    seconds: Optional[float]
    format_str: str

    @property
    def key(self) -> tuple[str, int]:
        return (self.video, self.timestamp)


def request_for(video: str, timestamp: int, convention: FrameConvention,
                video_start: float = 0.0) -> KeyframeRequest:
    """Keyframe request for ``(video, timestamp)``.

    ``video_start``: time (s) shown by the first frame of the video *file* (0 for full AVA videos,
    900 for videos cut with ``-ss 900``); only used when decoding second-based keyframes from video.
    """
    frame = convention.mid_frame(int(timestamp))
    if frame < 1:
        raise ValueError(f"keyframe ({video}, {timestamp}) maps to frame {frame} < 1 "
                         f"(first timestamp {convention.first_timestamp}, {convention.fps} fps): "
                         f"{convention_hint(int(timestamp), convention)}")
    seconds = None
    if convention.timestamp_unit == "second":
        seconds = float(timestamp) - video_start
        if seconds < 0:
            raise ValueError(f"keyframe ({video}, {timestamp}) is before the video start ({video_start} s): "
                             f"pass --video-start with the time the file's first frame shows (0 for a whole "
                             f"video, 900 for AVA clips cut at 15 min)")
    return KeyframeRequest(video, int(timestamp), frame, seconds, convention.format_for(video))


def convention_hint(timestamp: int, convention: FrameConvention) -> str:
    """What to try when ``timestamp`` falls before frame 1 under ``convention``: the other
    conventions that map it to a frame, named as ``--dataset`` values."""
    fits = [name for name, other in CONVENTIONS.items()
            if other != convention and other.mid_frame(timestamp) >= 1]
    hint = "the annotations follow another dataset's frame convention"
    if fits:
        hint += f"; pass --dataset {' or '.join(fits)} (now: first timestamp {convention.first_timestamp} s)"
    return hint + "; for a video file that starts later than its first timestamp, also set --video-start"


def _parse_timestamp(text: str, where: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: timestamp {text!r} is not a number") from None
    if value != int(value):
        raise ValueError(f"{where}: timestamp {text!r} is not an integer")
    return int(value)


def read_keyframe_keys(path: str | Path) -> list[tuple[str, int]]:
    """Unique ``(video, t)`` keys, sorted, from a GT/prediction CSV (>= 7 columns) or a keyframe list.

    A keyframe list has 2 columns ``video,t`` (the excluded-timestamps layout). A header line is
    skipped when its second field is not a number. Bad rows raise naming file, line and field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    keys: set[tuple[str, int]] = set()
    with open(path, newline="") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            if not row or all(not field.strip() for field in row):
                continue
            where = f"{path}:{line_no}"
            if line_no == 1 and len(row) > 1 and not _is_number(row[1]):
                continue  # header
            if len(row) not in (2,) and len(row) < 7:
                raise ValueError(f"{where}: expected 2 columns (video,t) or >= 7 (AVA-style CSV), got {len(row)}")
            video = row[0].strip()
            if not video:
                raise ValueError(f"{where}: empty video id (field 0)")
            keys.add((video, _parse_timestamp(row[1].strip(), f"{where} field 1")))
    if not keys:
        raise ValueError(f"{path}: no keyframes found")
    return sorted(keys)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def requests_from_keys(keys: Iterable[tuple[str, int]], convention: FrameConvention | str,
                       video_start: float = 0.0) -> list[KeyframeRequest]:
    convention = get_convention(convention)
    return [request_for(video, t, convention, video_start) for video, t in keys]


def every_nth_frame(video: str, n_frames: int, every: int, convention: FrameConvention | str = "frames"
                    ) -> list[KeyframeRequest]:
    """Requests for frames 1, 1+every, ... <= n_frames of a plain video (t = frame number)."""
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    convention = get_convention(convention)
    if convention.timestamp_unit != "frame":
        raise ValueError("every-N-th-frame keyframes need a frame-numbered convention (e.g. 'frames')")
    return [request_for(video, t, convention) for t in range(1, n_frames + 1, every)]
