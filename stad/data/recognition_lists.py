"""MMAction2-style list files and clip sampling for recognition, without torch (the preflight reads them).

See `stad.data.recognition` for the formats and the sampling rules.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from stad.data.video import VIDEO_EXTENSIONS


class ListFileError(ValueError):
    """A list-file line is malformed; the message starts with ``file:line``."""


@dataclass(frozen=True)
class VideoEntry:
    """One list-file line.

    Attributes:
        where: ``"file:line"`` of the line (for every later error about this video).
        path: the video file or frame folder, relative to the split's root.
        total_frames: the frame count the line states (frames format), None for videos.
        labels: per label group, the 0-based class indices of the line (one each unless multi-label).
    """

    where: str
    path: str
    total_frames: int | None
    labels: tuple[tuple[int, ...], ...]


def _int(token: str, where: str, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise ListFileError(f"{where}: {what} must be an integer, got {token!r}") from None


def parse_line(text: str, where: str, list_format: str, groups: Mapping[str, int],
               multi_label: bool = False) -> VideoEntry:
    """One line -> `VideoEntry`; raises `ListFileError` (``where`` = ``file:line``) for a wrong field count,
    a non-integer or a label outside ``[0, K)`` of its group."""
    tokens = text.split()
    head = 2 if list_format == "frames" else 1
    names = list(groups)
    if len(tokens) < head + 1:
        need = "<frame_dir> <total_frames> <label>" if head == 2 else "<video_path> <label>"
        raise ListFileError(f"{where}: expected '{need} ...', got {text.strip()!r}")
    labels = tokens[head:]
    if not multi_label and len(labels) != len(names):
        raise ListFileError(f"{where}: expected {len(names)} label(s) ({', '.join(names)}), got {len(labels)}: "
                            f"{text.strip()!r}")
    total = _int(tokens[1], where, "total_frames") if head == 2 else None
    if total is not None and total < 1:
        raise ListFileError(f"{where}: total_frames must be >= 1 (an empty video), got {total}")
    values = [_int(t, where, "a label") for t in labels]
    per_group = [tuple(values)] if multi_label else [(v,) for v in values]
    for name, found in zip(names, per_group):
        for v in found:
            if not 0 <= v < groups[name]:
                raise ListFileError(f"{where}: label {v} of group '{name}' is outside [0, {groups[name]})")
    return VideoEntry(where, tokens[0], total, tuple(per_group))


def read_list_file(path: str | Path, list_format: str, groups: Mapping[str, int],
                   multi_label: bool = False) -> list[VideoEntry]:
    """Every entry of a list file, in order; `ListFileError` on the first bad line or an empty file."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ListFileError(f"{path}: cannot read the list file ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise ListFileError(f"{path}: not a UTF-8 text list file ({err.reason})") from None
    entries = [parse_line(line, f"{path}:{n}", list_format, groups, multi_label)
               for n, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]
    if not entries:
        raise ListFileError(f"{path}: no videos listed")
    return entries


def video_id(entry: VideoEntry) -> str:
    """The `VideoFileSource` id of a videos-format entry: its path without the video extension."""
    suffix = Path(entry.path).suffix.lower()
    if suffix not in VIDEO_EXTENSIONS:
        raise ListFileError(f"{entry.where}: {entry.path!r} is not a video file ({', '.join(VIDEO_EXTENSIONS)})")
    return entry.path[: -len(suffix)]


def frame_indices(num_frames: int, sampling: Any, clip: int = 0, num_clips: int = 1,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """0-based frame offsets ``[clip_len]`` of one clip of a ``num_frames``-frame video.

    ``rng`` given: a training draw; else test clip ``clip`` of ``num_clips`` (deterministic).
    ``sampling`` has ``type`` (dense | uniform), ``clip_len``, ``frame_interval`` (`stad.config.SamplingConfig`).
    """
    n, length = max(int(num_frames), 1), int(sampling.clip_len)
    if sampling.type == "uniform":
        segment = n / length
        within = rng.random(length) if rng is not None else np.full(length, (clip + 0.5) / num_clips)
        offsets = np.floor(segment * (np.arange(length) + within)).astype(np.int64)
    else:
        span = (length - 1) * int(sampling.frame_interval) + 1
        free = max(n - span, 0)
        start = int(rng.integers(0, free + 1)) if rng is not None else int(free * (clip + 0.5) / num_clips)
        offsets = start + np.arange(length, dtype=np.int64) * int(sampling.frame_interval)
    return np.clip(offsets, 0, n - 1)
