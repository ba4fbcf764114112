"""Read clips of frames by 1-based frame number, from extracted JPEG/PNG folders or from video files.

Both sources return ``uint8 [T, H, W, 3]`` **BGR** stacks (OpenCV order; the transforms turn them
into RGB tensors) for a list of frame numbers - or, with ``read_frames``, the list of the T frames
without stacking them (a repeated frame is the same array) - may decode at 1/2, 1/4 or 1/8 size
when the caller will downscale anyway (JPEG DCT scaling, much faster than decoding in full), resize
each frame once to the caller's size, and decode each distinct frame once even when a clamped clip
repeats it. No torch here.

JPEGs are decoded with simplejpeg (libjpeg-turbo with less overhead than ``cv2.imdecode``;
bit-identical output - tested) when it is installed, else with OpenCV; PNGs and other formats
always with OpenCV.

Frame numbering: file ``root/<video>/(format_str % n)``; in a video file, frame ``n`` is the n-th
decoded frame, shown at ``(n - 1) / fps`` s from the stream start (constant frame rate assumed).
"""
from __future__ import annotations

import functools
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from stad.data.threads import ClipThreadPool, resolve_decode_threads

try:  # libjpeg-turbo through its TurboJPEG API: same pixels as cv2.imdecode, less overhead
    import simplejpeg
except ImportError:  # pragma: no cover - optional speed-up
    simplejpeg = None

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


def _is_jpeg(data: bytes | np.ndarray) -> bool:
    return len(data) > 3 and bytes(data[:3]) == b"\xff\xd8\xff"


def decode_jpeg_bytes(data: bytes | np.ndarray, reduction: int = 1, source: str = "<bytes>",
                      use_simplejpeg: bool = True, scratch: bytearray | None = None) -> np.ndarray:
    """Decode an encoded image (JPEG/PNG) to BGR uint8, optionally at 1/``reduction`` size.

    A reduced decode has ``ceil(w / reduction) x ceil(h / reduction)`` pixels (libjpeg's DCT scaling).
    ``scratch``: a reusable buffer (grown as needed) the JPEG may be decoded into - the result is
    then a view of it, valid until the next call: for callers that resize right away, it spares
    the page faults of a fresh output array per frame.
    """
    if reduction not in _REDUCED_FLAGS:
        raise ValueError(f"reduction must be 1, 2, 4 or 8, got {reduction}")
    if use_simplejpeg and simplejpeg is not None and _is_jpeg(data):
        try:
            h, w = simplejpeg.decode_jpeg_header(data)[:2]
            # the smallest libjpeg scale giving at least ceil(dim / r) is exactly 1/r
            kwargs = {} if reduction == 1 else {"min_height": -(-h // reduction), "min_width": -(-w // reduction)}
            if scratch is not None:
                needed = -(-h // reduction) * -(-w // reduction) * 3
                if len(scratch) < needed:
                    scratch.extend(bytes(needed - len(scratch)))
                kwargs["buffer"] = scratch
            return simplejpeg.decode_jpeg(data, colorspace="BGR", **kwargs)
        except ValueError:  # unusual JPEG (e.g. CMYK, corrupt): let OpenCV try and report
            pass
    img = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED_FLAGS[reduction])
    if img is None:
        raise FrameReadError(f"{source}: cannot decode image")
    return img


def read_file(path: str) -> bytes:
    """The bytes of ``path`` (os-level open/fstat/read: a third of ``open().read()``'s overhead)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)
        while len(data) > size:  # the file grew: read the rest
            more = os.read(fd, 1 << 20)
            if not more:
                break
            data += more
        return data
    finally:
        os.close(fd)


class _ThreadedSource:
    """A source decoding with ``decode_threads`` threads (None = auto); the pool starts on first use."""

    decode_threads: int | None = 1
    _pool: ClipThreadPool | None = None

    @property
    def pool(self) -> ClipThreadPool:
        """This process's pool for ``decode_threads`` (rebuilt when the setting changes)."""
        threads = resolve_decode_threads(self.decode_threads)
        if self._pool is None or self._pool.threads != threads:
            if self._pool is not None:
                self._pool.shutdown()
            self._pool = ClipThreadPool(threads)
        return self._pool


class FrameFolderSource(_ThreadedSource):
    """Frames extracted to ``root/<video>/<format_str % n>``.

    ``cache_mb > 0`` keeps decoded (and resized) frames in an LRU cache of about that many megabytes
    per process: from the second epoch on, small datasets skip decoding and resizing.

    ``decode_threads``: a clip's distinct frames are read, decoded and resized on this many threads
    of the calling process (`stad.data.threads`; None = auto = min(4, cpu count); 0 or 1 = inline).

    Without the cache, the frames of the last clip read from each of the two most recent videos are
    kept: in a sequential pass (evaluation) the next keyframe's clip reuses the frames it shares with
    the previous one (clips longer than the keyframe interval) instead of decoding them again.
    """

    RECENT_VIDEOS = 2  # videos whose last clip is kept (0: none; the benchmark's no-reuse rows)

    def __init__(self, root: str | Path, cache_mb: float = 0.0, decode_threads: int | None = 1) -> None:
        if not cache_mb >= 0:
            raise ValueError(f"cache_mb must be >= 0 (0 = no frame cache), got {cache_mb!r}")
        resolve_decode_threads(decode_threads)  # validate now, resolve per process on first use
        self.root = Path(root)
        self._root = str(self.root)
        self._counts: dict[tuple[str, str], int] = {}
        self._sizes: dict[str, tuple[int, int]] = {}
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_bytes, self.cache_bytes_max = 0, int(cache_mb * 2**20)
        self._cache_lock = threading.Lock()
        self._recent: OrderedDict[tuple, dict[int, np.ndarray]] = OrderedDict()  # per video: the last clip
        self._scratch: dict[int, bytearray] = {}  # per thread: decode buffer reused across frames
        self.decode_threads = decode_threads
        self._pool: ClipThreadPool | None = None

    def __getstate__(self) -> dict:  # pool threads, locks and the last clips stay in their process
        state = self.__dict__.copy()
        state.update(_cache_lock=None, _recent=OrderedDict(), _scratch={}, _pool=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._cache_lock = threading.Lock()

    @property
    def reuses_previous_clip(self) -> bool:
        """Whether the next clip of a video reuses the frames it shares with the last one."""
        return not self.cache_bytes_max and self.RECENT_VIDEOS > 0

    def close(self) -> None:
        """Stop the decode threads (they restart on the next read) and drop the kept clips."""
        if self._pool is not None:
            self._pool.shutdown()
        self._recent.clear()

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
        return np.stack(self.read_frames(video, format_str, frames, reduction, resize))

    def read_frames(self, video: str, format_str: str, frames: Sequence[int], reduction: int = 1,
                    resize: tuple[int, int] | None = None) -> list[np.ndarray]:
        """Like `read`, as a list of T BGR ``[H, W, 3]`` arrays (a repeated frame number gives the same
        array object; treat them as read-only: they may live in the cache or be shared with the next
        clip)."""
        numbers = [int(n) for n in frames]
        params = (video, format_str, reduction, resize)
        decoded = self._known(params, numbers)
        missing = [n for n in dict.fromkeys(numbers) if n not in decoded]
        if missing:
            load = functools.partial(self._load, video, format_str, reduction=reduction, resize=resize)
            loaded = self.pool.map(load, missing)
            decoded.update(zip(missing, loaded))
            if self.cache_bytes_max:
                self._cache_store(params, missing, loaded)
        if not self.cache_bytes_max:
            with self._cache_lock:
                self._recent[params] = decoded
                self._recent.move_to_end(params)
                while len(self._recent) > self.RECENT_VIDEOS:
                    self._recent.popitem(last=False)
        return [decoded[n] for n in numbers]

    def _known(self, params: tuple, numbers: list[int]) -> dict[int, np.ndarray]:
        """The frames of ``numbers`` already decoded with ``params``: from the cache, else from the
        video's last clip."""
        video, format_str, reduction, resize = params
        if self.cache_bytes_max:
            found = {}
            with self._cache_lock:
                for n in numbers:
                    key = (video, format_str, n, reduction, resize)
                    img = self._cache.get(key)
                    if img is not None:
                        self._cache.move_to_end(key)
                        found[n] = img
            return found
        with self._cache_lock:
            previous = self._recent.get(params)
        return {n: previous[n] for n in numbers if n in previous} if previous else {}

    def _cache_store(self, params: tuple, numbers: list[int], images: list[np.ndarray]) -> None:
        video, format_str, reduction, resize = params
        with self._cache_lock:
            for n, img in zip(numbers, images):
                self._cache[(video, format_str, n, reduction, resize)] = img
                self._cache_bytes += img.nbytes
            while self._cache_bytes > self.cache_bytes_max and len(self._cache) > 1:
                self._cache_bytes -= self._cache.popitem(last=False)[1].nbytes

    def _load(self, video: str, format_str: str, frame: int, reduction: int,
              resize: tuple[int, int] | None) -> np.ndarray:
        """Read, decode (at 1/``reduction``) and resize one frame into a new array (any thread)."""
        path = f"{self._root}/{video}/{format_str % frame}"
        try:
            data = read_file(path)
        except OSError:
            raise FrameReadError(f"{path}: frame {frame} of video {video!r} is missing") from None
        if resize is None:
            return decode_jpeg_bytes(data, reduction, path)
        # decoded into this thread's reused scratch buffer, resized into a new array
        scratch = self._scratch.setdefault(threading.get_ident(), bytearray())
        img = resize_frame(decode_jpeg_bytes(data, reduction, path, scratch=scratch), resize)
        if np.shares_memory(img, np.frombuffer(scratch, np.uint8)):
            img = img.copy()  # already at the target size: leave the scratch buffer
        return img


@dataclass(frozen=True)
class VideoInfo:
    """What one probe of a video file says: frame count, frame rate (exact) and size of its first video stream."""

    path: Path
    num_frames: int
    fps: Fraction
    width: int
    height: int

    @property
    def video_id(self) -> str:
        """The file stem (the video id of AVA-style CSVs)."""
        return self.path.stem

    @property
    def duration(self) -> float:
        return self.num_frames / float(self.fps)


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, frame rate and size of the first video stream (frames counted by decoding when the
    container does not say). `FrameReadError` naming the file if it is missing or not a readable video."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FrameReadError(f"{path}: no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise FrameReadError(f"{path}: not a video file (no video stream)")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            count = int(stream.frames or 0)
            if count <= 0:  # containers without a frame count: count by decoding
                count = sum(1 for _ in container.decode(stream))
            width, height = stream.codec_context.width, stream.codec_context.height
    except FrameReadError:
        raise
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise FrameReadError(f"{path}: not a readable video file ({error})") from None
    if count <= 0 or not width or not height:
        raise FrameReadError(f"{path}: the video stream has no decodable frames")
    return VideoInfo(path, count, Fraction(rate) if rate else Fraction(30), int(width), int(height))


def iter_video_frames(path: str | Path, codec_threads: int = 0) -> Iterator[np.ndarray]:
    """Every frame of the first video stream once, in decoding order, as BGR ``uint8 [H, W, 3]`` (frame
    ``n`` of `VideoFileSource` is the n-th one). ``codec_threads``: 0 = FFmpeg's automatic threading."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if codec_threads != 1:
                stream.thread_type = "AUTO"
            stream.codec_context.thread_count = codec_threads
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="bgr24")
    except av.FFmpegError as error:
        raise FrameReadError(f"{path}: decoding failed ({error})") from None


def _to_bgr(frame, resize: tuple[int, int] | None) -> np.ndarray:
    """A decoded ``av.VideoFrame`` -> BGR ``uint8 [H, W, 3]`` resized to ``resize`` (any thread)."""
    return resize_frame(frame.to_ndarray(format="bgr24"), resize)


class _OpenDecoder:
    """An open container whose decoder has returned frames up to ``position`` (1-based)."""

    def __init__(self, container, stream, fps: float) -> None:
        self.container, self.stream = container, stream
        self.base = stream.start_time or 0
        self.tb, self.fps = float(stream.time_base), fps
        self.frames = container.decode(stream)
        self.position = 0  # last frame number returned; 0: nothing decoded since the last seek

    def frame_number(self, frame) -> int:
        return int(round((frame.pts - self.base) * self.tb * self.fps)) + 1

    def seek(self, first: int) -> None:
        """Seek to the keyframe at or before ``first`` (a tenth of a second of margin)."""
        target = self.base + int((first - 1) / self.fps / self.tb)
        self.container.seek(max(self.base, target - int(1.0 / self.tb) // 10), stream=self.stream, backward=True,
                            any_frame=False)
        self.frames = self.container.decode(self.stream)
        self.position = 0

    def close(self) -> None:
        self.container.close()


_VIDEO_SOURCES: "weakref.WeakSet[VideoFileSource]" = weakref.WeakSet()


def _close_decoders_before_fork() -> None:
    """A forked child (DataLoader worker) must not inherit open decoders: their FFmpeg threads do not
    exist there and the first use (or free) of such a decoder deadlocks. They are only a cache."""
    for source in list(_VIDEO_SOURCES):
        source.close()


os.register_at_fork(before=_close_decoders_before_fork)


class VideoFileSource(_ThreadedSource):
    """Frames decoded straight from ``root/<video>.<ext>`` with PyAV.

    One decoder per video stays open (the two most recent videos): a clip starting after the
    decoder's position continues decoding forward when that costs fewer frames than seeking to the
    preceding keyframe did on this video, and frames shared with the previous clip are reused, so
    sequential reads (evaluation) decode each frame about once even with long GOPs; otherwise the
    decoder seeks. Only the requested frames are converted to BGR and resized. ``codec_threads``: 0 = FFmpeg's automatic frame/slice threading (main
    process), 1 = single thread (DataLoader workers, where processes already share the cores).
    ``decode_threads``: the requested frames' BGR conversion and resize run on this many threads
    (`stad.data.threads`; None = auto = min(4, cpu count); 0 or 1 = inline); decoding itself is
    sequential (FFmpeg's own threads, ``codec_threads``).
    """

    def __init__(self, root: str | Path, cache_videos: int = 0, codec_threads: int = 0,
                 decode_threads: int | None = 1) -> None:
        resolve_decode_threads(decode_threads)  # validate now, resolve per process on first use
        self.root = Path(root)
        self._paths: dict[str, Path] = {}
        self._info: dict[str, tuple[int, float, tuple[int, int]]] = {}
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.cache_videos = cache_videos  # whole decoded videos kept in memory (small datasets)
        self.codec_threads = codec_threads
        self._decoders: OrderedDict[str, _OpenDecoder] = OrderedDict()
        self._seek_cost: dict[str, int] = {}  # most frames decoded before the first wanted one after a seek
        self._recent: tuple[tuple | None, dict[int, np.ndarray]] = (None, {})  # the last clip's frames
        self._decode_lock = threading.Lock()
        self.decode_threads = decode_threads
        self._pool: ClipThreadPool | None = None
        _VIDEO_SOURCES.add(self)

    def __getstate__(self) -> dict:  # open decoders, pool threads and locks stay in their process
        state = self.__dict__.copy()
        state.update(_lock=None, _decode_lock=None, _decoders=OrderedDict(), _recent=(None, {}), _pool=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock, self._decode_lock = threading.Lock(), threading.Lock()
        _VIDEO_SOURCES.add(self)

    reuses_previous_clip = True
    reads_in_order = True  # an open decoder continues forward: clips in parallel would make it seek

    def close(self) -> None:
        """Close the open decoders and stop the conversion threads (both restart on the next read)."""
        decoders = getattr(self, "_decoders", None)
        while decoders:
            decoders.popitem()[1].close()
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown()

    def __del__(self) -> None:
        self.close()

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
        """(num_frames, fps, (height, width)) of the video's first video stream (`probe_video`)."""
        if video not in self._info:
            try:
                probed = probe_video(self.video_path(video))
            except FrameReadError as error:
                raise FrameReadError(f"cannot open video: {error}") from None
            self._info[video] = (probed.num_frames, float(probed.fps), (probed.height, probed.width))
        return self._info[video]

    def num_frames(self, video: str, format_str: str = "") -> int:
        return self.info(video)[0]

    def frame_size(self, video: str, format_str: str = "", frame: int = 1) -> tuple[int, int]:
        return self.info(video)[2]

    def _decoder(self, video: str) -> _OpenDecoder:
        decoder = self._decoders.get(video)
        if decoder is None:
            import av

            container = av.open(str(self.video_path(video)))
            stream = container.streams.video[0]
            if self.codec_threads != 1:
                stream.thread_type = "AUTO"
            stream.codec_context.thread_count = self.codec_threads
            decoder = self._decoders[video] = _OpenDecoder(container, stream, self.info(video)[1])
            while len(self._decoders) > 2:
                self._decoders.popitem(last=False)[1].close()
        self._decoders.move_to_end(video)
        return decoder

    def _drop_decoder(self, video: str) -> None:
        """Close ``video``'s open decoder after a failed read (the next read reopens it)."""
        decoder = self._decoders.pop(video, None)
        if decoder is not None:
            decoder.close()

    def _decode_range(self, video: str, first: int, last: int, wanted: set[int] | None = None,
                      resize: tuple[int, int] | None = None) -> dict[int, np.ndarray]:
        """BGR frames ``first..last`` (1-based, inclusive; only those in ``wanted`` when given),
        resized to ``resize = (w, h)`` when given."""
        import av

        kept: dict[int, object] = {}  # frame number -> decoded av.VideoFrame, converted at the end
        try:
            decoder = self._decoder(video)
            forward = first - decoder.position - 1  # frames to decode before `first` without seeking
            seeked = decoder.position == 0 or forward < 0 or forward > self._seek_cost.get(video, 0)
            if seeked:
                decoder.seek(first)
            for frame in decoder.frames:
                n = decoder.frame_number(frame)
                decoder.position = n
                if seeked:  # first frame after a seek: learn how far before `first` keyframes lie
                    self._seek_cost[video] = max(self._seek_cost.get(video, 0), first - n)
                    seeked = False
                if n >= first and (wanted is None or n in wanted):
                    kept[n] = frame
                if n >= last:
                    break
            else:  # end of stream: the next read must seek
                decoder.position = 0
            converted = self.pool.map(functools.partial(_to_bgr, resize=resize), list(kept.values()))
        except av.FFmpegError as error:
            self._drop_decoder(video)
            raise FrameReadError(f"{self.video_path(video)}: decoding frames {first}..{last} failed ({error})") from None
        return dict(zip(kept, converted))

    def _whole(self, video: str) -> np.ndarray:
        with self._lock:
            if video in self._cache:
                self._cache.move_to_end(video)
                return self._cache[video]
        with self._decode_lock:
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
        return np.stack(self.read_frames(video, format_str, frames, reduction, resize))

    def read_frames(self, video: str, format_str: str, frames: Sequence[int], reduction: int = 1,
                    resize: tuple[int, int] | None = None) -> list[np.ndarray]:
        """Like `read`, as a list of T ``[H, W, 3]`` arrays (repeated frame numbers share one array)."""
        frames = [int(n) for n in frames]
        if reduction > 1 and resize is None:
            h, w = self.frame_size(video)
            resize = (-(-w // reduction), -(-h // reduction))
        if self.cache_videos:
            whole = self._whole(video)
            decoded = {n: resize_frame(whole[min(max(n, 1), len(whole)) - 1], resize) for n in set(frames)}
            return [decoded[n] for n in frames]
        with self._decode_lock:  # one open decoder per video: one reader at a time
            return self._read_decoded(video, frames, resize)

    def _read_decoded(self, video: str, frames: list[int], resize: tuple[int, int] | None) -> list[np.ndarray]:
        # frames shared with the previous clip (overlapping windows) are reused, not decoded again
        recent_key, recent = self._recent
        decoded = {n: recent[n] for n in frames if n in recent} if recent_key == (video, resize) else {}
        needed = set(frames) - set(decoded)
        if needed:
            decoded.update(self._decode_range(video, min(needed), max(needed), needed, resize))
        missing = sorted(set(frames) - set(decoded))
        if missing:
            self._drop_decoder(video)
            raise FrameReadError(f"{self.video_path(video)}: frames {missing[:5]} not found "
                                 f"(video has {self.num_frames(video)} frames)")
        self._recent = ((video, resize), decoded)
        return [decoded[n] for n in frames]


def make_source(frames_root: str | Path | None, video_root: str | Path | None, cache_videos: int = 0,
                cache_mb: float = 0.0, decode_threads: int | None = 1) -> FrameFolderSource | VideoFileSource:
    """Frame folders when ``frames_root`` is given, else video files under ``video_root``.

    Frames win when both exist: for strided clips (every 2nd+ frame) a JPEG decode per used frame
    costs less than decoding every frame of the span from H.264 (bench/RESULTS.md, bench_loader)."""
    if frames_root:
        return FrameFolderSource(frames_root, cache_mb, decode_threads)
    if video_root:
        return VideoFileSource(video_root, cache_videos, decode_threads=decode_threads)
    raise ValueError("give frames_root (extracted frames) or video_root (video files)")
