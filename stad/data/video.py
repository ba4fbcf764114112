"""Read clips of frames by 1-based frame number, from extracted JPEG/PNG folders or from video files.

Both sources return ``uint8 [T, H, W, 3]`` **BGR** stacks (OpenCV order; the transforms turn them
into RGB tensors) for a list of frame numbers, may decode at 1/2, 1/4 or 1/8 size when the caller
will downscale anyway (JPEG DCT scaling, much faster than decoding in full), and decode each
distinct frame once even when a clamped clip repeats it. No torch here.

Frame numbering: file ``root/<video>/(format_str % n)``; in a video file, frame ``n`` is the n-th
decoded frame, shown at ``(n - 1) / fps`` s from the stream start (constant frame rate assumed).
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v")
_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}


def resize_frame(img: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize to ``size = (width, height)`` (area filter when shrinking > 2x, else bilinear)."""
    if size is None or (img.shape[1], img.shape[0]) == tuple(size):
        return img
    interp = cv2.INTER_AREA if img.shape[1] > 2 * size[0] else cv2.INTER_LINEAR
    return cv2.resize(img, tuple(size), interpolation=interp)


class FrameReadError(RuntimeError):
    """A frame or video could not be read; the message names the file."""


def clip_indices(mid_frame: int, clip_len: int, stride: int, num_frames: int | None = None,
                 first_frame: int = 1) -> np.ndarray:
    """Frame numbers ``[T]`` centred on ``mid_frame``: ``mid + stride * (i - T // 2)``, clamped.

    ``T=32, stride=2`` gives ``mid-32 .. mid+30`` (ACAR's TemporalCenterCrop(64, 2) on its window).
    Indices are clamped to ``[first_frame, num_frames]`` (repeating the first/last frame at the ends).
    """
    idx = mid_frame + stride * (np.arange(clip_len) - clip_len // 2)
    return np.clip(idx, first_frame, num_frames if num_frames is not None else None).astype(np.int64)


def decode_jpeg_bytes(data: bytes | np.ndarray, reduction: int = 1, source: str = "<bytes>") -> np.ndarray:
    """Decode an encoded image (JPEG/PNG) to BGR uint8, optionally at 1/``reduction`` size."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED_FLAGS[reduction])
    if img is None:
        raise FrameReadError(f"{source}: cannot decode image")
    return img


class FrameFolderSource:
    """Frames extracted to ``root/<video>/<format_str % n>``.

    ``cache_mb > 0`` keeps decoded (and resized) frames in an LRU cache of about that many megabytes
    per process: from the second epoch on, small datasets skip decoding and resizing.
    """

    def __init__(self, root: str | Path, cache_mb: float = 0.0) -> None:
        self.root = Path(root)
        self._root = str(self.root)
        self._counts: dict[tuple[str, str], int] = {}
        self._sizes: dict[str, tuple[int, int]] = {}
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_bytes, self.cache_bytes_max = 0, int(cache_mb * 2**20)

    def path(self, video: str, format_str: str, frame: int) -> Path:
        return self.root / video / (format_str % int(frame))

    def num_frames(self, video: str, format_str: str) -> int:
        """Highest frame number present (files are assumed contiguous from 1); cached per video."""
        key = (video, format_str)
        if key not in self._counts:
            folder = self.root / video
            if not folder.is_dir():
                raise FrameReadError(f"{folder}: frame folder of video {video!r} does not exist")
            prefix, _, suffix = format_str.partition("%")
            suffix = suffix[suffix.index("d") + 1:] if "d" in suffix else ""
            numbers = [int(n[len(prefix): len(n) - len(suffix)]) for n in os.listdir(folder)
                       if n.startswith(prefix) and n.endswith(suffix) and n[len(prefix): len(n) - len(suffix)].isdigit()]
            if not numbers:
                raise FrameReadError(f"{folder}: no frames named like {format_str!r}")
            self._counts[key] = max(numbers)
        return self._counts[key]

    def frame_size(self, video: str, format_str: str, frame: int) -> tuple[int, int]:
        """(height, width) of the video's frames, read once from ``frame``."""
        if video not in self._sizes:
            path = f"{self._root}/{video}/{format_str % int(frame)}"
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError:
                raise FrameReadError(f"{path}: frame {int(frame)} of video {video!r} is missing") from None
            self._sizes[video] = decode_jpeg_bytes(data, 1, path).shape[:2]
        return self._sizes[video]

    def read(self, video: str, format_str: str, frames: Sequence[int], reduction: int = 1,
             resize: tuple[int, int] | None = None) -> np.ndarray:
        """BGR ``uint8 [T, H, W, 3]`` for frame numbers ``frames`` (each distinct file decoded once),
        decoded at 1/``reduction`` and then resized to ``resize = (w, h)`` if given."""
        frames = [int(n) for n in frames]
        decoded: dict[int, np.ndarray] = {}
        for n in frames:
            if n not in decoded:
                decoded[n] = self._decode(video, format_str, n, reduction, resize)
        first = decoded[frames[0]]
        out = np.empty((len(frames),) + first.shape, np.uint8)
        for i, n in enumerate(frames):
            out[i] = decoded[n]
        return out

    def _decode(self, video: str, format_str: str, frame: int, reduction: int,
                resize: tuple[int, int] | None) -> np.ndarray:
        key = (video, format_str, frame, reduction, resize)
        if self.cache_bytes_max and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        path = f"{self._root}/{video}/{format_str % frame}"
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            raise FrameReadError(f"{path}: frame {frame} of video {video!r} is missing") from None
        img = resize_frame(decode_jpeg_bytes(data, reduction, path), resize)
        if self.cache_bytes_max:
            self._cache[key] = img
            self._cache_bytes += img.nbytes
            while self._cache_bytes > self.cache_bytes_max and len(self._cache) > 1:
                self._cache_bytes -= self._cache.popitem(last=False)[1].nbytes
        return img


class VideoFileSource:
    """Frames decoded straight from ``root/<video>.<ext>`` with PyAV (seek + sequential decode)."""

    def __init__(self, root: str | Path, cache_videos: int = 0) -> None:
        self.root = Path(root)
        self._paths: dict[str, Path] = {}
        self._info: dict[str, tuple[int, float, tuple[int, int]]] = {}
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.cache_videos = cache_videos  # whole decoded videos kept in memory (small datasets)

    def video_path(self, video: str) -> Path:
        if video not in self._paths:
            for ext in VIDEO_EXTENSIONS:
                candidate = self.root / f"{video}{ext}"
                if candidate.is_file():
                    self._paths[video] = candidate
                    break
            else:
                raise FrameReadError(f"{self.root}: no video file for {video!r} (tried {', '.join(VIDEO_EXTENSIONS)})")
        return self._paths[video]

    def info(self, video: str) -> tuple[int, float, tuple[int, int]]:
        """(num_frames, fps, (height, width)) of the video's first video stream."""
        if video not in self._info:
            import av

            path = self.video_path(video)
            try:
                with av.open(str(path)) as container:
                    stream = container.streams.video[0]
                    fps = float(stream.average_rate or stream.guessed_rate or 30)
                    count = int(stream.frames or 0)
                    if count <= 0:  # container without a frame count: count by decoding
                        count = sum(1 for _ in container.decode(stream))
                    self._info[video] = (count, fps, (stream.codec_context.height, stream.codec_context.width))
            except av.FFmpegError as error:
                raise FrameReadError(f"{path}: cannot open video ({error})") from None
        return self._info[video]

    def num_frames(self, video: str, format_str: str = "") -> int:
        return self.info(video)[0]

    def frame_size(self, video: str, format_str: str = "", frame: int = 1) -> tuple[int, int]:
        return self.info(video)[2]

    def _decode_range(self, video: str, first: int, last: int) -> dict[int, np.ndarray]:
        """Decoded BGR frames ``first..last`` (1-based, inclusive)."""
        import av

        path = self.video_path(video)
        _, fps, _ = self.info(video)
        out: dict[int, np.ndarray] = {}
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                base = stream.start_time or 0
                tb = float(stream.time_base)
                target = base + int((first - 1) / fps / tb)
                container.seek(max(base, target - int(1.0 / tb) // 10), stream=stream, backward=True, any_frame=False)
                for frame in container.decode(stream):
                    n = int(round((frame.pts - base) * tb * fps)) + 1
                    if n > last:
                        break
                    if n >= first:
                        out[n] = frame.to_ndarray(format="bgr24")
        except av.FFmpegError as error:
            raise FrameReadError(f"{path}: decoding frames {first}..{last} failed ({error})") from None
        return out

    def _whole(self, video: str) -> np.ndarray:
        with self._lock:
            if video in self._cache:
                self._cache.move_to_end(video)
                return self._cache[video]
        frames = self._decode_range(video, 1, self.num_frames(video))
        stack = np.stack([frames[n] for n in sorted(frames)])
        with self._lock:
            self._cache[video] = stack
            while len(self._cache) > self.cache_videos:
                self._cache.popitem(last=False)
        return stack

    def read(self, video: str, format_str: str, frames: Sequence[int], reduction: int = 1,
             resize: tuple[int, int] | None = None) -> np.ndarray:
        """BGR ``uint8 [T, H, W, 3]`` for 1-based frame numbers (decoded in full, then reduced/resized)."""
        frames = np.asarray(frames, np.int64)
        if self.cache_videos:
            whole = self._whole(video)
            stack = whole[np.clip(frames - 1, 0, len(whole) - 1)]
        else:
            decoded = self._decode_range(video, int(frames.min()), int(frames.max()))
            missing = sorted(set(frames.tolist()) - set(decoded))
            if missing:
                raise FrameReadError(f"{self.video_path(video)}: frames {missing[:5]} not found "
                                     f"(video has {self.num_frames(video)} frames)")
            stack = np.stack([decoded[int(n)] for n in frames])
        if reduction > 1 and resize is None:
            h, w = stack.shape[1:3]
            resize = (-(-w // reduction), -(-h // reduction))
        if resize is not None:
            stack = np.stack([resize_frame(f, resize) for f in stack])
        return stack


def make_source(frames_root: str | Path | None, video_root: str | Path | None, cache_videos: int = 0,
                cache_mb: float = 0.0) -> FrameFolderSource | VideoFileSource:
    """Frame folders when ``frames_root`` is given, else video files under ``video_root``."""
    if frames_root:
        return FrameFolderSource(frames_root, cache_mb)
    if video_root:
        return VideoFileSource(video_root, cache_videos)
    raise ValueError("give frames_root (extracted frames) or video_root (video files)")
