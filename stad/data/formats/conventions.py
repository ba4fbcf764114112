"""Timestamp <-> frame-number conventions, one object per dataset (FORMATS.md §1.6, §3, §4).

A keyframe is keyed by ``(video, t)``. For second-based datasets (AVA, Chaotic World, the toy
set) frame files are numbered from 1 and file ``n`` shows time ``first_timestamp + (n - 1) / fps``,
so keyframe ``t`` is ``mid_frame = round((t - first_timestamp) * fps) + 1``. For frame-based
datasets (MultiSports) ``t`` already is the 1-based frame number.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FrameConvention:
    """How keyframe timestamps map to frame files.

    Attributes:
        fps: frames per second of the extracted frames.
        first_timestamp: time (s) shown by frame file 1 (AVA: 900, toy/CW: 0).
        format_str: frame file name pattern; ``{video}`` is replaced by the video id, ``%06d`` by
            the frame number (e.g. ``"{video}_%06d.jpg"``).
        window_seconds: half width of the ACAR ``start_frame``/``n_frames`` window (AVA: 1.5 s).
        timestamp_unit: ``"second"`` or ``"frame"`` (timestamp is the frame number itself).
    """

    fps: float = 30.0
    first_timestamp: float = 0.0
    format_str: str = "{video}_%06d.jpg"
    window_seconds: float = 1.5
    timestamp_unit: str = "second"

    def __post_init__(self) -> None:
        if self.timestamp_unit not in ("second", "frame"):
            raise ValueError(f"timestamp_unit must be 'second' or 'frame', got {self.timestamp_unit!r}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")

    def mid_frame(self, timestamp: int) -> int:
        """1-based frame number of keyframe ``timestamp``."""
        if self.timestamp_unit == "frame":
            return int(timestamp)
        return int(round((timestamp - self.first_timestamp) * self.fps)) + 1

    def timestamp_of(self, frame: int) -> float:
        """Time (s, or frame number for frame-based sets) shown by 1-based ``frame``."""
        if self.timestamp_unit == "frame":
            return float(frame)
        return self.first_timestamp + (frame - 1) / self.fps

    def window(self, timestamp: int, num_frames: int | None = None) -> tuple[int, int]:
        """ACAR ``(start_frame, n_frames)`` around the keyframe, clamped to ``[1, num_frames]``."""
        mid = self.mid_frame(timestamp)
        half = int(round(self.window_seconds * self.fps))
        start = max(1, mid - half)
        end = mid + half if num_frames is None else min(num_frames, mid + half)
        return start, max(1, end - start + 1)

    def format_for(self, video: str) -> str:
        """printf pattern of ``video``'s frame files (``format_str % n`` gives a file name)."""
        return self.format_str.replace("{video}", video)


AVA = FrameConvention(fps=30.0, first_timestamp=900.0, format_str="{video}_%06d.jpg")
# The toy set: keyframe t (seconds, 1..duration-1) <-> frame t*30+1; see stad.data.toy.
TOY = FrameConvention(fps=30.0, first_timestamp=0.0, format_str="{video}_%06d.jpg")
CHAOTIC_WORLD = FrameConvention(fps=25.0, first_timestamp=0.0, format_str="{video}_%06d.png")
MULTISPORTS = FrameConvention(fps=25.0, format_str="{video}_%06d.jpg", window_seconds=1.0,
                              timestamp_unit="frame")
