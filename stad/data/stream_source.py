"""Frame sources for streaming inference: a video file, a network stream, a camera, or raw frames on stdin.

    source = open_source("clip.mp4")                  # PyAV, the decoder of stad.data.video (same pixels)
    source = open_source("rtsp://cam/stream")         # OpenCV VideoCapture (FFmpeg backend); also http(s)://
    source = open_source("0")                         # camera index 0 (cv2.VideoCapture(0))
    source = open_source("-", size=(320, 240), fps=25, pixel_format="rgb24")  # raw frames on stdin
    for frame in source.frames:                       # BGR uint8 [H, W, 3], decoding order, each frame once
        ...

Every source yields BGR ``uint8 [H, W, 3]`` frames (OpenCV order, as `stad.data.video`). Opening problems
(a missing file, a camera that does not open, raw stdin without ``size``) raise `StreamSourceError`, a
ValueError naming the source (`stad.cli.run_cli`: one line, exit 2). A source that fails *after*
frames came (no frame for ``stall_timeout`` seconds, a truncated raw frame, a decoding error) raises
`SourceFailure` from its iterator, also naming the source and how many frames it gave: the caller
keeps what it produced. No torch here.
"""
from __future__ import annotations

import os
import queue
import select
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np

LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
PIXEL_FORMATS = ("bgr24", "rgb24")


class StreamSourceError(ValueError):
    """A source that cannot be opened or is described wrongly; the message names it."""


class SourceFailure(RuntimeError):
    """A source that stopped abnormally after opening (stall, truncated or undecodable frame).

    Attributes:
        reason: "stalled", "truncated", "decode", "disconnected" (reopening failed) or "resized" (a
            reopened stream of another frame size).
        frames: frames the source delivered before failing.
    """

    def __init__(self, message: str, reason: str, frames: int) -> None:
        super().__init__(message)
        self.reason, self.frames = reason, frames


@dataclass
class FrameSource:
    """An open source: its frames (an iterator of BGR ``[H, W, 3]`` uint8) and what is known about them.

    Attributes:
        name: how messages name it (path, URL, ``camera 0``, ``stdin``); video_id: the CSV's video id.
        fps: frames per second (the container's, the camera's or ``--fps``); width, height: frame size.
        live: whether frames arrive in real time whatever we do (network, camera): the consumer must
            keep up or drop work; num_frames: the header's frame count of a file, else None.
        path: the file of a file source (None otherwise).
        reconnects: how often a camera / network source was reopened so far (``open_source(reconnect=N)``).
    """

    name: str
    video_id: str
    fps: float
    width: int
    height: int
    live: bool
    frames: Iterator[np.ndarray]
    num_frames: int | None = None
    path: Path | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)
    reconnects: int = 0  # times a live source was reopened after it ended or failed (``reconnect``)

    def close(self) -> None:
        """Release the decoder / capture (idempotent)."""
        while self.closers:
            self.closers.pop()()


def parse_size(text: str) -> tuple[int, int]:
    """``"320x240"`` -> ``(320, 240)`` (width, height); StreamSourceError otherwise."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise StreamSourceError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 320x240") from None
    if width <= 0 or height <= 0:
        raise StreamSourceError(f"--size {text!r}: width and height must be positive")
    return width, height


def source_kind(spec: str) -> str:
    """``"stdin"``, ``"camera"``, ``"network"`` or ``"file"`` for a ``--source`` value."""
    if spec == "-":
        return "stdin"
    if spec.isdigit():
        return "camera"
    if spec.lower().startswith(LIVE_SCHEMES):
        return "network"
    return "file"


def open_source(spec: str, *, size: tuple[int, int] | None = None, fps: float | None = None,
                pixel_format: str = "bgr24", stall_timeout: float | None = None,
                stdin: BinaryIO | None = None, video_id: str | None = None, reconnect: int = 0,
                reconnect_wait: float = 2.0) -> FrameSource:
    """Open ``spec`` (a path, a URL, a camera index, or ``-`` for raw frames on ``stdin``).

    ``size`` (width, height) and ``fps`` are required for ``-`` and override a camera's / stream's
    reported rate; ``pixel_format``: the raw frames' byte order (bgr24 or rgb24). ``stall_timeout``:
    seconds without a frame after which a live source or stdin fails (`SourceFailure`); None: wait forever.
    ``reconnect``: for a camera or network source, how many consecutive times to reopen it, ``reconnect_wait``
    seconds apart, when it ends or fails (the count starts again once frames flow); 0: never.
    """
    if pixel_format not in PIXEL_FORMATS:
        raise StreamSourceError(f"--pixel-format {pixel_format!r}: expected one of {', '.join(PIXEL_FORMATS)}")
    if fps is not None and not fps > 0:
        raise StreamSourceError(f"--fps {fps}: must be positive")
    if stall_timeout is not None and not stall_timeout > 0:
        raise StreamSourceError(f"--stall-timeout {stall_timeout}: must be positive")
    if reconnect < 0 or reconnect_wait < 0:
        raise StreamSourceError(f"--reconnect {reconnect} / --reconnect-wait {reconnect_wait:g}: must not be negative")
    kind = source_kind(spec)
    if reconnect and kind in ("stdin", "file"):
        raise StreamSourceError(f"--reconnect applies to cameras and network streams, not to {spec!r}")
    if kind == "stdin":
        if size is None or fps is None:
            raise StreamSourceError("--source -: raw frames on stdin need --size WxH and --fps F")
        handle = stdin if stdin is not None else os.fdopen(os.dup(0), "rb", buffering=0)
        frames = _raw_frames(handle, size, pixel_format, stall_timeout)
        return FrameSource("stdin", video_id or "stdin", float(fps), size[0], size[1], False, frames,
                           closers=[handle.close] if stdin is None else [])
    if kind == "file":
        return _open_file(Path(spec), video_id)
    source = _open_capture(spec, kind, fps, stall_timeout, video_id)
    if reconnect:
        source.frames = _reconnecting(source, source.frames,
                                      lambda: _open_capture(spec, kind, fps, stall_timeout, video_id),
                                      reconnect, reconnect_wait)
    return source


def _open_file(path: Path, video_id: str | None) -> FrameSource:
    """A video file through PyAV (`stad.data.video.iter_video_frames`: the demo's decoder)."""
    from stad.data.video import FrameReadError, iter_video_frames, probe_video

    try:
        info = probe_video(path)
    except FrameReadError as error:
        raise StreamSourceError(str(error)) from None
    frames = iter_video_frames(path)

    def checked() -> Iterator[np.ndarray]:
        count = 0
        try:
            for frame in frames:
                yield frame
                count += 1
        except FrameReadError as error:
            raise SourceFailure(f"{error} after {count} frames", "decode", count) from None

    return FrameSource(str(path), video_id or info.video_id, float(info.fps), info.width, info.height, False,
                       checked(), num_frames=info.num_frames, path=path, closers=[frames.close])


def _open_capture(spec: str, kind: str, fps: float | None, stall_timeout: float | None,
                  video_id: str | None) -> FrameSource:
    """A camera index or a network URL through OpenCV's VideoCapture (its FFmpeg backend for URLs)."""
    import cv2

    name = f"camera {spec}" if kind == "camera" else spec
    capture = cv2.VideoCapture(int(spec)) if kind == "camera" else cv2.VideoCapture(spec)
    if not capture.isOpened():
        capture.release()
        raise StreamSourceError(f"{name}: cannot open (no such camera / unreachable or unsupported stream)")
    ok, first = capture.read()
    if not ok or first is None:
        capture.release()
        raise StreamSourceError(f"{name}: opened but gave no frame")
    rate = fps or float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    if not 0 < rate < 1000:
        capture.release()
        raise StreamSourceError(f"{name}: the stream does not report its frame rate; give --fps")

    def read() -> Iterator[np.ndarray]:
        yield first
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                return
            yield frame

    frames = read() if stall_timeout is None else _with_stall_timeout(read(), stall_timeout, name)
    default_id = f"camera{spec}" if kind == "camera" else (Path(spec.split("?")[0]).stem or "stream")
    return FrameSource(name, video_id or default_id, rate, first.shape[1], first.shape[0], True, frames,
                       closers=[capture.release])


def _read_exact(handle: BinaryIO, size: int, timeout: float | None) -> bytes:
    """Up to ``size`` bytes (fewer only at end of input); `TimeoutError` when none come for ``timeout`` s."""
    chunks, got = [], 0
    fd = handle.fileno() if timeout is not None else -1
    while got < size:
        if timeout is not None:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, size - got)
        else:
            chunk = handle.read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _raw_frames(handle: BinaryIO, size: tuple[int, int], pixel_format: str,
                stall_timeout: float | None) -> Iterator[np.ndarray]:
    """Frames of exactly ``width * height * 3`` bytes from ``handle`` -> BGR ``[H, W, 3]``."""
    width, height = size
    frame_bytes, count = width * height * 3, 0
    while True:
        try:
            data = _read_exact(handle, frame_bytes, stall_timeout)
        except TimeoutError:
            raise SourceFailure(f"stdin: stalled: no data for {stall_timeout:g} s (--stall-timeout) after "
                                f"{count} frames", "stalled", count) from None
        if not data:
            return
        if len(data) < frame_bytes:
            raise SourceFailure(f"stdin: truncated frame: {len(data)} of {frame_bytes} bytes "
                                f"({width}x{height} {pixel_format}) after {count} frames", "truncated", count)
        frame = np.frombuffer(data, np.uint8).reshape(height, width, 3)
        yield np.ascontiguousarray(frame[..., ::-1]) if pixel_format == "rgb24" else frame
        count += 1


def _with_stall_timeout(frames: Iterator[np.ndarray], timeout: float, name: str) -> Iterator[np.ndarray]:
    """``frames`` read on a daemon thread (a hand-off of one frame); `SourceFailure` when the next frame
    takes longer than ``timeout`` s (a blocking ``VideoCapture.read`` cannot be interrupted otherwise)."""
    slot: queue.Queue = queue.Queue(maxsize=1)
    done = object()

    def pump() -> None:
        try:
            for frame in frames:
                slot.put(frame)
        except BaseException as error:  # handed to the consumer
            slot.put(error)
            return
        slot.put(done)

    threading.Thread(target=pump, name=f"source {name}", daemon=True).start()
    count = 0
    while True:
        try:
            item = slot.get(timeout=timeout)
        except queue.Empty:
            raise SourceFailure(f"{name}: stalled: no frame for {timeout:g} s (--stall-timeout) after "
                                f"{count} frames", "stalled", count) from None
        if item is done:
            return
        if isinstance(item, BaseException):
            raise SourceFailure(f"{name}: reading failed after {count} frames ({item})", "decode", count)
        yield item
        count += 1


def _reconnecting(source: FrameSource, frames: Iterator[np.ndarray], reopen: Callable[[], FrameSource],
                  attempts: int, wait: float) -> Iterator[np.ndarray]:
    """``frames`` (the first connection's), then those of ``reopen()`` each time the source ends or fails,
    for up to ``attempts`` consecutive reopenings (reset once a connection gives a frame). Ends as the
    last connection did: cleanly at its end, or with its `SourceFailure`."""
    failed, count = 0, 0
    while frames is not None:
        error: SourceFailure | None = None
        try:
            for frame in frames:
                failed = 0
                yield frame
                count += 1
        except SourceFailure as failure:
            error = failure
        frames, failed = _reopen(source, reopen, error, count, failed, attempts, wait)


def _reopen(source: FrameSource, reopen: Callable[[], FrameSource], error: SourceFailure | None, count: int,
            failed: int, attempts: int, wait: float) -> tuple[Iterator[np.ndarray] | None, int]:
    """(frames of a reopened connection or None to end cleanly, consecutive attempts so far). Each
    attempt is one line on stderr; a success is counted in ``source.reconnects`` and its resources join
    ``source.closers``. Raises the last `SourceFailure` once ``attempts`` are used up, and a
    `SourceFailure` (reason "resized") for a reopened stream of another frame size."""
    import sys
    import time

    while True:
        failed += 1
        if failed > attempts:
            if error is None:
                return None, failed
            raise SourceFailure(f"{error} (gave up after {attempts} reconnect attempt(s))", error.reason,
                                count) from None
        why = f"failed ({error})" if error is not None else f"ended after {count} frames"
        print(f"[stad.stream] {source.name} {why}; reconnecting in {wait:g} s ({failed}/{attempts})",
              file=sys.stderr, flush=True)
        time.sleep(wait)
        try:
            fresh = reopen()
        except StreamSourceError as failure:
            error = SourceFailure(str(failure), "disconnected", count)
            continue
        source.closers.extend(fresh.closers)
        if (fresh.width, fresh.height) != (source.width, source.height):  # its frames cannot join the same clips
            raise SourceFailure(f"{source.name}: frame size changed to {fresh.width}x{fresh.height} after "
                                f"reconnecting (was {source.width}x{source.height})", "resized", count)
        source.reconnects += 1
        return fresh.frames, failed
