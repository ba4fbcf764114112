"""Draw person boxes, person ids and top actions on video frames; write MP4 files with PyAV.

No torch here. Frames are BGR ``uint8 [H, W, 3]`` (OpenCV order); boxes are normalised xyxy.

The action model runs on keyframes (typically one per second); between keyframes `overlay_at`
interpolates the boxes of each person id seen at both neighbouring keyframes, and shows the
labels of the nearer keyframe, so the annotated video moves smoothly at the input frame rate.
"""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from stad.structures import Boxes

Action = tuple[str, float]  # (class name, score)


@dataclass(frozen=True)
class Overlay:
    """What to draw around one keyframe.

    Attributes:
        time: keyframe time in seconds from the first frame of the video.
        boxes: N person boxes (normalised xyxy); ``boxes.ids`` are the person ids shown.
        actions: per box, the actions to print, best first.
    """

    time: float
    boxes: Boxes
    actions: tuple[tuple[Action, ...], ...] = ()

    def __post_init__(self) -> None:
        actions = self.actions or tuple(() for _ in range(len(self.boxes)))
        if len(actions) != len(self.boxes):
            raise ValueError(f"Overlay at {self.time:.2f}s: {len(self.boxes)} boxes but {len(actions)} action lists")
        object.__setattr__(self, "actions", tuple(tuple(a) for a in actions))


def top_actions(scores: np.ndarray, names: Sequence[str], k: int = 3, threshold: float = 0.3
                ) -> tuple[tuple[Action, ...], ...]:
    """Per box the ``k`` best classes scoring at least ``threshold`` (the best one always kept).

    Args:
        scores: ``[N, K]`` class probabilities.
        names: ``K`` class names.
    """
    scores = np.asarray(scores, np.float64).reshape(-1, len(names))
    out = []
    for row in scores:
        order = np.argsort(-row, kind="stable")[:k]
        kept = [(names[i], float(row[i])) for j, i in enumerate(order) if j == 0 or row[i] >= threshold]
        out.append(tuple(kept))
    return tuple(out)


# --------------------------------------------------------------------------- timing


def overlay_at(overlays: Sequence[Overlay], time: float, max_gap: float = 1.5) -> Overlay | None:
    """The overlay to draw at ``time`` (s), from keyframe overlays sorted by time.

    Between two keyframes at most ``max_gap`` apart, a person id present at both gets a linearly
    interpolated box; every box takes its labels from the nearer keyframe. Persons seen at only one
    of them are shown while that keyframe is the nearer one. Outside the keyframes' span the nearest
    keyframe is held for half a gap.
    """
    if not overlays:
        return None
    times = [o.time for o in overlays]
    right = bisect.bisect_left(times, time)
    if right < len(overlays) and times[right] == time:
        return overlays[right]
    if right == 0 or right == len(overlays):
        nearest = overlays[0 if right == 0 else -1]
        return nearest if abs(nearest.time - time) <= max_gap / 2 else None
    before, after = overlays[right - 1], overlays[right]
    gap = after.time - before.time
    if gap > max_gap:
        nearest = before if time - before.time <= after.time - time else after
        return nearest if abs(nearest.time - time) <= max_gap / 2 else None
    return _interpolate(before, after, (time - before.time) / gap, time)


def _interpolate(before: Overlay, after: Overlay, alpha: float, time: float) -> Overlay:
    near, far = (before, after) if alpha <= 0.5 else (after, before)
    far_index = {int(i): j for j, i in enumerate(far.boxes.ids) if i >= 0}
    xyxy = near.boxes.xyxy.copy()
    for j, person in enumerate(near.boxes.ids):
        k = far_index.get(int(person))
        if person >= 0 and k is not None:
            a, b = (xyxy[j], far.boxes.xyxy[k]) if near is before else (far.boxes.xyxy[k], xyxy[j])
            xyxy[j] = (1.0 - alpha) * a + alpha * b
    return Overlay(time, Boxes(xyxy, near.boxes.scores, near.boxes.ids), near.actions)


# --------------------------------------------------------------------------- drawing


def color_for(person_id: int) -> tuple[int, int, int]:
    """A stable, saturated BGR colour per person id (-1: grey)."""
    if person_id < 0:
        return (180, 180, 180)
    hue = int((person_id * 47) % 180)  # golden-angle-like spread over OpenCV's 0..179 hue range
    hsv = np.uint8([[[hue, 220, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _text_scale(height: int) -> tuple[float, int]:
    scale = max(0.3, min(1.0, height / 720.0 * 0.6))
    return scale, 1 if height < 720 else 2


def _label_lines(person_id: int, actions: Sequence[Action]) -> list[str]:
    head = f"#{person_id}" if person_id >= 0 else "person"
    if not actions:
        return [head]
    return [f"{head} {actions[0][0]} {actions[0][1]:.2f}"] + [f"{name} {score:.2f}" for name, score in actions[1:]]


def draw_overlay(frame_bgr: np.ndarray, overlay: Overlay | None, header: str | None = None) -> np.ndarray:
    """A copy of ``frame_bgr`` with each box, its person id and its actions (name + score) drawn."""
    canvas = np.ascontiguousarray(frame_bgr).copy()
    height, width = canvas.shape[:2]
    scale, thickness = _text_scale(height)
    font = cv2.FONT_HERSHEY_SIMPLEX
    line_h = int(cv2.getTextSize("Ag", font, scale, thickness)[0][1] * 1.7) + 1
    if overlay is not None:
        pixels = np.round(overlay.boxes.clip().to_pixels(width - 1, height - 1)).astype(int)
        for (x1, y1, x2, y2), person, actions in zip(pixels, overlay.boxes.ids, overlay.actions):
            color = color_for(int(person))
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, max(1, thickness + (height >= 360)))
            lines = _label_lines(int(person), actions)
            text_w = max(cv2.getTextSize(t, font, scale, thickness)[0][0] for t in lines) + 4
            top = y1 - line_h * len(lines) if y1 - line_h * len(lines) >= 0 else y1
            left = min(max(0, x1), max(0, width - text_w))
            _blend_rect(canvas, left, top, left + text_w, top + line_h * len(lines), color)
            for i, text in enumerate(lines):
                base = top + line_h * (i + 1) - line_h // 4
                cv2.putText(canvas, text, (left + 2, base), font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    if header:
        _blend_rect(canvas, 0, 0, cv2.getTextSize(header, font, scale, thickness)[0][0] + 6, line_h, (40, 40, 40))
        cv2.putText(canvas, header, (3, line_h - line_h // 4), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return canvas


def _blend_rect(canvas: np.ndarray, x1: int, y1: int, x2: int, y2: int, color: tuple[int, int, int],
                alpha: float = 0.65) -> None:
    """Fill a rectangle of ``canvas`` (our own copy) half-transparently with ``color``."""
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(canvas.shape[1], x2), min(canvas.shape[0], y2)
    if x2 <= x1 or y2 <= y1:
        return
    patch = canvas[y1:y2, x1:x2].astype(np.float32)
    canvas[y1:y2, x1:x2] = (patch * (1 - alpha) + np.float32(color) * alpha).astype(np.uint8)


# --------------------------------------------------------------------------- writing


class Mp4Writer:
    """H.264 MP4 written with PyAV, frame by frame, renamed into place on `close` (atomic).

    Even frame sizes use yuv420p (plays everywhere); odd sizes keep their exact size with yuv444p.

        with Mp4Writer("out.mp4", width, height, fps) as writer:
            writer.write(frame_bgr)
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float | Fraction, crf: int = 20) -> None:
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height = int(width), int(height)
        self._tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp{self.path.suffix or '.mp4'}")
        rate = fps if isinstance(fps, Fraction) else Fraction(float(fps)).limit_denominator(1001)
        self._container = av.open(str(self._tmp), "w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = self.width, self.height
        even = self.width % 2 == 0 and self.height % 2 == 0
        self._stream.pix_fmt = "yuv420p" if even else "yuv444p"
        self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self.frames_written = 0
        self._closed = False

    def write(self, frame_bgr: np.ndarray) -> None:
        import av

        if frame_bgr.shape[:2] != (self.height, self.width):
            raise ValueError(f"{self.path}: frame is {frame_bgr.shape[1]}x{frame_bgr.shape[0]}, "
                             f"the video is {self.width}x{self.height}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_bgr), format="bgr24")
        self._container.mux(self._stream.encode(frame))
        self.frames_written += 1

    def close(self) -> Path:
        if not self._closed:
            self._closed = True
            self._container.mux(self._stream.encode())
            self._container.close()
            os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._container.close()
            finally:
                self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def save_png(path: str | Path, frame_bgr: np.ndarray) -> Path:
    """Write one frame as PNG (atomically)."""
    from stad.io_utils import atomic_write_bytes

    ok, data = cv2.imencode(".png", frame_bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, data.tobytes())
    return Path(path)


# --------------------------------------------------------------------------- drawing while decoding


class StreamingAnnotator:
    """Draws and encodes a video's frames while it is decoded (one pass), each with `overlay_at` its time.

    Keyframe overlays arrive in time order (`add_overlay`); a frame at time t waits until the first
    keyframe at or after t is known (then `overlay_at` over the overlays known so far equals
    `overlay_at` over all of them), or until `close`. Memory: the frames decoded between a keyframe and
    the moment its scores arrive (about a clip's half span plus a batch of keyframes).

    ``snapshot``: also save, as PNG, the annotated keyframe showing the most actions, then the most
    persons (the first of equals), drawn on the frame enlarged ``snapshot_scale`` times.

    ``out``: an MP4 path, or any sink with ``write(frame_bgr)``, ``close()`` and ``abort()`` (a window).
    ``max_pending``: at most this many frames wait for their keyframe (a live stream whose model lags or
    drops keyframes): older ones are drawn with the overlays known so far. None: no limit (a file).
    Overlays no later frame can use are forgotten, so memory does not grow with the stream's length.
    """

    def __init__(self, out: str | Path | Any, width: int, height: int, fps: Fraction, video_id: str,
                 every: float = 1.0, snapshot: str | Path | None = None, snapshot_scale: float = 1.0,
                 max_pending: int | None = None) -> None:
        from collections import deque

        self.writer = Mp4Writer(out, width, height, fps) if isinstance(out, (str, Path)) else out
        self.max_pending = max_pending
        self.fps, self.video_id, self.max_gap = float(fps), video_id, 1.5 * every
        self.snapshot, self.snapshot_scale = snapshot, snapshot_scale
        self.frames: deque[tuple[int, np.ndarray]] = deque()
        self.overlays: list[Overlay] = []
        self.best: Overlay | None = None
        self.snap: tuple[int, np.ndarray, Overlay | None, float] | None = None

    def add_frame(self, index: int, frame_bgr: np.ndarray) -> None:
        """Decoded frame ``index`` (0-based, BGR ``[H, W, 3]``; not modified)."""
        self.frames.append((index, frame_bgr))
        self._flush(final=False)
        while self.max_pending is not None and len(self.frames) > self.max_pending:
            self._draw_next()

    def add_overlay(self, overlay: Overlay) -> None:
        """The next keyframe's overlay (times increasing)."""
        self.overlays.append(overlay)
        if self.best is None or _richness(overlay) > _richness(self.best):
            self.best = overlay
        self._flush(final=False)

    def close(self) -> int:
        """Draw the remaining frames, finish the MP4 (and the snapshot); returns the frames written."""
        self._flush(final=True)
        self.writer.close()
        if self.snapshot and self.snap is not None and self.best is not None and \
                self.snap[0] == int(round(self.best.time * self.fps)):
            _, frame, overlay, time = self.snap
            scaled = frame if self.snapshot_scale == 1 else cv2.resize(
                frame, None, fx=self.snapshot_scale, fy=self.snapshot_scale, interpolation=cv2.INTER_CUBIC)
            save_png(self.snapshot, draw_overlay(scaled, overlay, header=f"{self.video_id}  {time:5.1f}s"))
        return self.writer.frames_written

    def abort(self) -> None:
        """Discard the partial MP4."""
        self.writer.abort()

    def _flush(self, final: bool) -> None:
        known = self.overlays[-1].time if self.overlays else None
        while self.frames:
            index, frame = self.frames[0]
            time = index / self.fps
            if not final and (known is None or known < time):
                return
            self._draw_next()

    def _draw_next(self) -> None:
        """Draw and write the oldest waiting frame; forget the overlays no later frame needs."""
        index, frame = self.frames.popleft()
        time = index / self.fps
        overlay = overlay_at(self.overlays, time, max_gap=self.max_gap)
        self.writer.write(draw_overlay(frame, overlay, header=f"{self.video_id}  {time:5.1f}s"))
        if self.best is not None and index == int(round(self.best.time * self.fps)):
            self.snap = (index, frame, overlay, time)
        while len(self.overlays) >= 2 and self.overlays[1].time <= time:  # overlay_at never reaches back past it
            self.overlays.pop(0)


def _richness(overlay: Overlay) -> tuple[int, int]:
    """(actions shown, persons): which keyframe makes the snapshot."""
    return sum(len(a) for a in overlay.actions), len(overlay.boxes)
