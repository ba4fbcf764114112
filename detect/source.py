"""Keyframe images from a frame-folder root or from video files, decoded in a background thread.

Sources yield ``(request, image)`` with ``image`` a BGR uint8 ``[H, W, 3]`` array, one keyframe at a
time: a video is read sequentially and only the requested frames are converted, so no video is ever
held in memory. `prefetch` runs any per-item work (decoding, letterboxing) in a thread with a
bounded queue, overlapping it with inference in the caller.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

import cv2
import numpy as np

from detect.keyframes import KeyframeRequest
from stad.data.threads import prefetch as background_prefetch

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v")
Item = tuple[KeyframeRequest, np.ndarray]
T = TypeVar("T")
U = TypeVar("U")


class KeyframeSource(Protocol):
    def iter_frames(self, requests: Sequence[KeyframeRequest]) -> Iterator[Item]: ...


class FrameFolderSource:
    """Frames extracted to ``<root>/<video>/<format_str % frame>`` (dataset convention)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"frames root not found: {self.root}")

    def path_of(self, request: KeyframeRequest) -> Path:
        return self.root / request.video / (request.format_str % request.frame)

    def iter_frames(self, requests: Sequence[KeyframeRequest]) -> Iterator[Item]:
        for request in requests:
            path = self.path_of(request)
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                reason = "missing" if not path.exists() else "unreadable"
                raise FileNotFoundError(f"keyframe {request.video},{request.timestamp}: frame file {path} is {reason}")
            yield request, image


class VideoSource:
    """Video files: one file, or a folder with ``<video>.<ext>`` (or the video id itself as file name).

    Frames are read sequentially (exact indices) and only requested ones are decoded to BGR.
    Decode index: ``round(seconds * fps)`` for second-based keyframes, else ``frame - 1``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"video source not found: {self.path}")

    def video_path(self, video: str) -> Path:
        if self.path.is_file():
            if video not in (self.path.stem, self.path.name):
                raise ValueError(f"keyframe video id {video!r} does not match the video file {self.path} "
                                 f"(expected {self.path.stem!r})")
            return self.path
        candidates = [self.path / video] + [self.path / f"{video}{ext}" for ext in VIDEO_EXTENSIONS]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"no video file for {video!r} in {self.path} (tried {video}{{,"
                                f"{','.join(VIDEO_EXTENSIONS)}}})")

    def iter_frames(self, requests: Sequence[KeyframeRequest]) -> Iterator[Item]:
        by_video: OrderedDict[str, list[KeyframeRequest]] = OrderedDict()
        for request in requests:
            by_video.setdefault(request.video, []).append(request)
        for video, video_requests in by_video.items():
            yield from self._iter_video(self.video_path(video), video_requests)

    @staticmethod
    def _iter_video(path: Path, requests: list[KeyframeRequest]) -> Iterator[Item]:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise OSError(f"cannot open video {path}")
        try:
            fps = capture.get(cv2.CAP_PROP_FPS)
            if not fps or fps <= 0:
                raise OSError(f"{path}: the video reports no frame rate")
            wanted = sorted(((int(round(r.seconds * fps)) if r.seconds is not None else r.frame - 1), i)
                            for i, r in enumerate(requests))
            position, cursor = -1, 0
            while cursor < len(wanted):
                if not capture.grab():
                    missing = [f"{requests[i].video},{requests[i].timestamp}" for _, i in wanted[cursor:]]
                    raise ValueError(f"{path}: video ends at frame index {position} before keyframes "
                                     f"{missing[:5]}{'...' if len(missing) > 5 else ''} (decode index {wanted[cursor][0]})")
                position += 1
                if position < wanted[cursor][0]:
                    continue
                ok, image = capture.retrieve()
                if not ok:
                    raise OSError(f"{path}: cannot decode frame index {position}")
                while cursor < len(wanted) and wanted[cursor][0] == position:
                    yield requests[wanted[cursor][1]], image
                    cursor += 1
        finally:
            capture.release()


def video_frame_count(path: str | Path) -> int:
    """Frame count reported by the container (used for every-N-th-frame keyframes)."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise OSError(f"cannot open video {path}")
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()


def open_source(path: str | Path) -> KeyframeSource:
    """A video file, a folder of videos, or a frame-folder root (``<root>/<video>/<frames>``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--source not found: {path}")
    if path.is_file():
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise ValueError(f"{path}: not a video file ({', '.join(VIDEO_EXTENSIONS)})")
        return VideoSource(path)
    if any(child.suffix.lower() in VIDEO_EXTENSIONS and child.is_file() for child in path.iterdir()):
        return VideoSource(path)
    return FrameFolderSource(path)


def prefetch(items: Iterable[T], transform: Callable[[T], U], maxsize: int = 32) -> Iterator[U]:
    """Yield ``transform(item)`` for ``items``, computed in a background thread (bounded queue).

    Errors raised in the thread are re-raised in the caller; leaving the loop early stops the thread.
    OpenCV decoding/resizing and torch inference release the GIL, so the two really overlap.
    (`stad.data.threads.prefetch` over a lazy map: the generator runs in the producing thread.)
    """
    return background_prefetch((transform(item) for item in items), depth=maxsize)
