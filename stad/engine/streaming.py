"""Streaming inference core: decoded frames -> a ring of the clip span -> keyframes on a schedule -> predictions.

    engine = StreamEngine(predictor, "cam0", boxes_for, live=True)
    plans = predictor.plan(info) if the source is a file else live_plans(predictor, fps)
    for prediction in engine.run(frames, plans, finite=is_file, on_frame=draw):
        write(prediction)                       # KeyframePrediction: boxes [N], scores float32 [N, K]
    engine.stats, engine.times.summary()        # keyframes done / dropped, ring peak, per-stage latency

One pass over the frames. `ClipRing` keeps only the decoded frames that the clip of a keyframe not yet
scored uses (at most the clip span: ``clip_len * stride`` frames at the model's rate, converted to the
source's); keyframes are planned exactly as `stad.engine.inference.plan_keyframes` plans them (clips
sampled in time at the model's frame rate), and a keyframe is *ready* once its last clip frame has been
decoded. Two modes:

* **offline** (``live=False``: files, pipes): every keyframe is scored, ``batch_size`` at a time, in plan
  order; nothing is dropped; the decoder waits for the model (a pipe's writer then blocks).
* **live** (``live=True``: cameras, network streams, ``--realtime``): one keyframe at a time on a worker
  thread (detect -> clip -> action) while this thread keeps decoding and drawing; a keyframe that becomes
  ready while the worker is busy is **dropped and counted**, never queued, so memory stays bounded
  (the ring, one keyframe in flight) whatever the model's speed.

Stages timed (`StageTimes`): decode (getting each frame from the source; for a live source this includes
waiting for it), detect (the person boxes of a keyframe), clip (a keyframe's sample: transforms of its T
frames), action (collate + model + activation for a batch), draw (the caller's ``on_frame`` and result
drawing). The library never imports the applications.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from stad.data.video import VideoInfo
from stad.engine.inference import (DEFAULT_MODEL_FPS, InferenceError, KeyframePlan, KeyframePrediction,
                                   plan_keyframes)
from stad.structures import Boxes

LOGGER = logging.getLogger(__name__)
STAGES = ("decode", "detect", "clip", "action", "draw")
_UNBOUNDED = 2 ** 62  # a live stream's frame count: clips are clamped below only
BoxSource = Callable[[KeyframePlan, np.ndarray], Boxes]  # (keyframe, its BGR frame [H, W, 3]) -> person boxes


# --------------------------------------------------------------------------- keyframe plans


def clip_span_frames(clip_len: int, stride: int, model_fps: float, fps: float) -> int:
    """Most source frames a clip can span, first to last index inclusive: the ring's capacity.

    The clip's frames lie ``(clip_len - 1) * stride / model_fps`` s apart end to end; rounding each index
    to the nearest source frame adds at most one frame.
    """
    width = (clip_len - 1) * stride / model_fps * fps
    return int(np.floor(width + 1e-9)) + 2


def live_plans(clip_len: int, stride: int, model_fps: float, fps: float, every: int = 1,
               name: str = "stream") -> Iterator[KeyframePlan]:
    """Keyframes at 0, every, 2*every ... s of a stream of unknown length, each planned by `plan_keyframes`
    (the same clip indices as for a file; clamped at frame 0, not at an end)."""
    info = VideoInfo(Path(name), _UNBOUNDED, Fraction(fps).limit_denominator(1001), 0, 0)
    for t in itertools.count(0, max(1, int(every))):
        yield from plan_keyframes(info, clip_len, stride, model_fps, timestamps=[t])


def model_fps_of(predictor: Any, model_fps: float | None = None) -> float:
    """The frame rate clips are sampled at: ``model_fps``, else the preset's, else `DEFAULT_MODEL_FPS`."""
    return float(model_fps or predictor.preprocessing.fps or DEFAULT_MODEL_FPS)


# --------------------------------------------------------------------------- ring buffer of the clip span


class ClipRing:
    """The decoded frames that some planned, not yet scored (or dropped) keyframe's clip uses.

    A keyframe is *reserved* before its first clip frame is decoded; `push` keeps a frame only if a
    reserved keyframe uses it; `take` / `release` give a keyframe's frames back (a frame goes when its
    last user is done). With keyframes taken or dropped as soon as they are ready, the ring never holds
    more than ``capacity`` frames (`clip_span_frames`); ``peak`` records the most it held.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.frames: dict[int, np.ndarray] = {}
        self.users: dict[int, int] = {}
        self.last: np.ndarray | None = None
        self.decoded = 0
        self.peak = 0

    def __len__(self) -> int:
        return len(self.frames)

    @staticmethod
    def _indices(plan: KeyframePlan) -> set[int]:
        return {*plan.clip.tolist(), plan.frame}

    def reserve(self, plan: KeyframePlan) -> None:
        for index in self._indices(plan):
            self.users[index] = self.users.get(index, 0) + 1

    def push(self, index: int, frame: np.ndarray) -> None:
        """Decoded frame ``index`` (0-based, BGR ``[H, W, 3]``): kept if a reserved keyframe uses it."""
        self.decoded, self.last = index + 1, frame
        if self.users.get(index):
            self.frames[index] = frame
            self.peak = max(self.peak, len(self.frames))

    def release(self, plan: KeyframePlan) -> None:
        """The keyframe no longer needs its frames (scored or dropped)."""
        for index in self._indices(plan):
            left = self.users.get(index, 0) - 1
            if left > 0:
                self.users[index] = left
            else:
                self.users.pop(index, None)
                self.frames.pop(index, None)

    def take(self, plan: KeyframePlan) -> tuple[list[np.ndarray], np.ndarray]:
        """The keyframe's T clip frames and its keyframe frame (an index never decoded: the last decoded
        frame, as at the end of a stream), then `release`."""
        frames = [self.frames.get(int(i), self.last) for i in plan.clip]
        keyframe = self.frames.get(plan.frame, self.last)
        self.release(plan)
        return frames, keyframe  # type: ignore[return-value]


class KeyframeScheduler:
    """Plans in time order (a finite list for a file, an endless `live_plans` for a stream) -> ready keyframes.

    `advance(index)` is called before frame ``index`` is pushed: it reserves, in the ring, the keyframes
    whose clip starts at or before it. `ready(index)` after the push: ``(j, plan)`` of the reserved
    keyframes whose last clip frame is ``index`` or earlier, in time order (j: the plan's sequence number).
    """

    def __init__(self, plans: Iterable[KeyframePlan], ring: ClipRing, finite: bool) -> None:
        self._upcoming = iter(plans)
        self._next: KeyframePlan | None = next(self._upcoming, None)
        self.ring, self.finite = ring, finite
        self.active: deque[tuple[int, KeyframePlan]] = deque()
        self.planned = 0

    def _pop_next(self) -> tuple[int, KeyframePlan]:
        item = (self.planned, self._next)
        self.planned += 1
        self._next = next(self._upcoming, None)
        return item  # type: ignore[return-value]

    def advance(self, index: int) -> None:
        while self._next is not None and int(self._next.clip.min()) <= index:
            if int(self._next.clip.min()) < index:  # its first frames went by unreserved: plans out of order
                raise ValueError(f"keyframe plans must come in time order: keyframe {self._next.timestamp} s "
                                 "follows a later one")
            self.ring.reserve(self._next)
            self.active.append(self._pop_next())

    def ready(self, index: int) -> list[tuple[int, KeyframePlan]]:
        out = []
        while self.active and self.active[0][1].last_frame <= index:
            out.append(self.active.popleft())
        return out

    def finish(self) -> list[tuple[int, KeyframePlan]]:
        """At the end of the frames: every remaining planned keyframe of a file (the header promised its
        frames: missing ones are the last decoded frame), or of a stream those whose keyframe frame was
        decoded (the others are forgotten)."""
        rest = list(self.active)
        self.active.clear()
        if self.finite:
            while self._next is not None:
                rest.append(self._pop_next())
            return rest
        for _, plan in rest:
            if plan.frame >= self.ring.decoded:
                self.ring.release(plan)
                self.planned -= 1
        return [(j, plan) for j, plan in rest if plan.frame < self.ring.decoded]


# --------------------------------------------------------------------------- timing and counts


class StageTimes:
    """Wall seconds per stage (`STAGES`): calls, total, max, and the last ``window`` calls (percentiles)."""

    def __init__(self, window: int = 2000) -> None:
        self.calls = dict.fromkeys(STAGES, 0)
        self.total = dict.fromkeys(STAGES, 0.0)
        self.max = dict.fromkeys(STAGES, 0.0)
        self.recent: dict[str, deque[float]] = {s: deque(maxlen=window) for s in STAGES}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.calls[stage] += 1
            self.total[stage] += seconds
            self.max[stage] = max(self.max[stage], seconds)
            self.recent[stage].append(seconds)

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per stage: calls, total_s, mean_ms, p50_ms / p95_ms (of the last ``window`` calls), max_ms."""
        out = {}
        with self._lock:
            for stage in STAGES:
                recent = np.asarray(self.recent[stage], np.float64) * 1e3
                n = self.calls[stage]
                out[stage] = {"calls": n, "total_s": round(self.total[stage], 4),
                              "mean_ms": round(self.total[stage] / n * 1e3, 3) if n else 0.0,
                              "p50_ms": round(float(np.percentile(recent, 50)), 3) if n else 0.0,
                              "p95_ms": round(float(np.percentile(recent, 95)), 3) if n else 0.0,
                              "max_ms": round(self.max[stage] * 1e3, 3)}
        return out

    def describe(self) -> str:
        """``decode 2.1, detect 30.4, ...`` (mean ms per call)."""
        return ", ".join(f"{s} {v['mean_ms']:.1f}" for s, v in self.summary().items())


@dataclass
class StreamStats:
    """Counts of one run. ``realtime_factor``: seconds of stream per wall second (>= 1: keeps up)."""

    fps: float
    frames: int = 0
    keyframes_planned: int = 0
    keyframes_done: int = 0
    keyframes_dropped: int = 0
    ring_capacity: int = 0
    ring_peak: int = 0
    wall_seconds: float = 0.0

    @property
    def stream_seconds(self) -> float:
        return self.frames / self.fps if self.fps else 0.0

    @property
    def realtime_factor(self) -> float:
        return self.stream_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def keyframes_per_second(self) -> float:
        return self.keyframes_done / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {"frames": self.frames, "fps": self.fps, "stream_seconds": round(self.stream_seconds, 3),
                "wall_seconds": round(self.wall_seconds, 3), "realtime_factor": round(self.realtime_factor, 4),
                "keyframes_planned": self.keyframes_planned, "keyframes_done": self.keyframes_done,
                "keyframes_dropped": self.keyframes_dropped,
                "keyframes_per_second": round(self.keyframes_per_second, 4),
                "ring_capacity_frames": self.ring_capacity, "ring_peak_frames": self.ring_peak}


def paced(frames: Iterable[np.ndarray], fps: float) -> Iterator[np.ndarray]:
    """``frames`` no faster than ``fps`` per wall second (a file played as a live camera would deliver it)."""
    start = time.perf_counter()
    for index, frame in enumerate(frames):
        delay = start + index / fps - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield frame


# --------------------------------------------------------------------------- the engine

Prepared = tuple[int, KeyframePlan, Boxes, Any]  # (j, plan, boxes, sample or None without boxes)


class StreamEngine:
    """Keyframe predictions from one pass over decoded frames (module docstring: offline and live modes).

    Args:
        predictor: a `stad.engine.inference.Predictor` (``sample``, ``score``, ``preprocessing``, ``batch_size``).
        video_id: the predictions' video id; boxes_for: ``(plan, keyframe_bgr [H,W,3]) -> Boxes`` (the detector).
        fps: the source's frame rate; model_fps: clips' sampling rate (default: `model_fps_of`).
        live: drop keyframes that are ready while the model is busy (one keyframe at a time, on a worker
            thread); otherwise score every keyframe, ``predictor.batch_size`` at a time.
        log_interval: seconds between progress lines (`progress`) on the log; None: none.
        name: how messages name the source (default: the video id).
    """

    def __init__(self, predictor: Any, video_id: str, boxes_for: BoxSource, fps: float, *, live: bool = False,
                 model_fps: float | None = None, log_interval: float | None = None, name: str | None = None) -> None:
        pre = predictor.preprocessing
        self.predictor, self.video_id, self.boxes_for, self.live = predictor, video_id, boxes_for, live
        self.name = name or video_id
        self.model_fps = model_fps_of(predictor, model_fps)
        self.ring = ClipRing(clip_span_frames(pre.clip_len, pre.frame_stride, self.model_fps, fps))
        self.times = StageTimes()
        self.stats = StreamStats(float(fps), ring_capacity=self.ring.capacity)
        self.log_interval = log_interval
        self.failure: BaseException | None = None
        self._last_log = self.started = 0.0  # started: perf_counter() when `run` began
        self._worker: _Worker | None = None

    def plans_for(self, every: int = 1) -> Iterator[KeyframePlan]:
        """`live_plans` with the predictor's clip length / stride at this engine's rates."""
        pre = self.predictor.preprocessing
        return live_plans(pre.clip_len, pre.frame_stride, self.model_fps, self.stats.fps, every, self.video_id)

    def run(self, frames: Iterable[np.ndarray], plans: Iterable[KeyframePlan], finite: bool,
            on_frame: Callable[[int, np.ndarray], None] | None = None) -> Iterator[KeyframePrediction]:
        """Predictions in plan order (live: dropped keyframes absent). ``on_frame(index, frame_bgr)`` sees
        every frame (timed as draw). A source error ends the frames: the keyframes it completed are still
        scored and yielded, then it is re-raised (also kept in ``failure``)."""
        scheduler = KeyframeScheduler(plans, self.ring, finite)
        self._last_log = self.started = time.perf_counter()
        self._worker = _Worker(self) if self.live else None
        output = _Ordered()
        try:
            for index, frame in enumerate(self._frames(frames)):
                scheduler.advance(index)
                self.ring.push(index, frame)
                self.stats.frames = index + 1
                if on_frame is not None:
                    with self.times.time("draw"):
                        on_frame(index, frame)
                self._dispatch(scheduler.ready(index), output)
                yield from self._collect(output)
            if self.ring.decoded == 0:
                raise InferenceError(f"{self.name}: no frame could be decoded"
                                     + (f" ({self.failure})" if self.failure is not None else ""))
            scheduler.finite = scheduler.finite and self.failure is None  # a failed file ends like a stream
            yield from self._finish(scheduler, output)
        finally:
            if self._worker is not None:
                self._worker.stop()
            self._update(scheduler)
        if self.failure is not None:
            raise self.failure

    def _frames(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """``frames`` with each fetch timed as decode; a source error is kept in ``failure`` and ends them."""
        iterator = iter(frames)
        while True:
            start = time.perf_counter()
            try:
                frame = next(iterator)
            except StopIteration:
                return
            except Exception as error:  # the source failed: what it delivered is still scored
                self.failure = error
                return
            finally:
                self.times.add("decode", time.perf_counter() - start)
            yield frame

    def _dispatch(self, ready: Sequence[tuple[int, KeyframePlan]], output: "_Ordered") -> None:
        """Offline: prepare, and score each full batch. Live: hand one to an idle worker, drop the rest."""
        for j, plan in ready:
            if self._worker is None:
                output.pending.append(self._prepare(j, plan, *self.ring.take(plan)))
                if len(output.pending) >= self.predictor.batch_size:
                    output.done.update(self._score(output.pending))
                    output.pending = []
            elif self._worker.idle():
                self._worker.submit(j, plan, *self.ring.take(plan))
            else:
                self.ring.release(plan)
                output.skip(j)
                self.stats.keyframes_dropped += 1

    def _collect(self, output: "_Ordered") -> Iterator[KeyframePrediction]:
        if self._worker is not None:
            output.done.update(self._worker.results())
        for prediction in output.ready():
            self.stats.keyframes_done += 1
            yield prediction
        self._maybe_log()

    def _finish(self, scheduler: KeyframeScheduler, output: "_Ordered") -> Iterator[KeyframePrediction]:
        """The end of the frames: the worker's last keyframe, then every remaining one, scored here."""
        if self._worker is not None:
            output.done.update(self._worker.results(wait=True))
        rest = scheduler.finish()
        short = sum(plan.last_frame >= self.ring.decoded for _, plan in rest)
        if short and scheduler.finite:
            LOGGER.warning("%s: the frames ended after %d; the last %d keyframes use the last decoded frame",
                           self.name, self.ring.decoded, short)
        output.pending += [self._prepare(j, plan, *self.ring.take(plan)) for j, plan in rest]
        size = self.predictor.batch_size if self._worker is None else 1
        for start in range(0, len(output.pending), size):
            output.done.update(self._score(output.pending[start:start + size]))
        output.pending = []
        yield from self._collect(output)

    def _prepare(self, j: int, plan: KeyframePlan, frames: list[np.ndarray], keyframe: np.ndarray) -> Prepared:
        """A keyframe's boxes (detect) and sample (clip; None without boxes)."""
        with self.times.time("detect"):
            boxes = self.boxes_for(plan, keyframe)
        if not len(boxes):
            return j, plan, boxes, None
        with self.times.time("clip"):
            return j, plan, boxes, self.predictor.sample(frames, (self.video_id, plan.timestamp), boxes)

    def _score(self, prepared: Sequence[Prepared]) -> dict[int, KeyframePrediction]:
        """One batch of the prepared keyframes with boxes (action); keyframes without boxes get no rows."""
        empty = np.zeros((0, self.predictor.num_classes), np.float32)
        out = {j: KeyframePrediction(self.video_id, plan, boxes, empty)
               for j, plan, boxes, sample in prepared if sample is None}
        with_boxes = [p for p in prepared if p[3] is not None]
        if with_boxes:
            with self.times.time("action"):
                scored = self.predictor.score([p[3] for p in with_boxes])
            rows = np.cumsum([0, *scored.counts])
            for (j, plan, boxes, _), kept, a, b in zip(with_boxes, scored.kept, rows[:-1], rows[1:]):
                out[j] = KeyframePrediction(self.video_id, plan, boxes[np.flatnonzero(kept)], scored.scores[a:b])
        return out

    def _update(self, scheduler: KeyframeScheduler) -> None:
        self.stats.wall_seconds = time.perf_counter() - self.started
        self.stats.keyframes_planned = scheduler.planned
        self.stats.ring_peak = self.ring.peak

    def progress(self) -> str:
        """One line: frames, stream seconds, keyframes done / dropped, rates, ring use, mean ms per stage."""
        s = self.stats
        return (f"{self.video_id}: {s.frames} frames ({s.stream_seconds:.1f} s of stream) in {s.wall_seconds:.1f} s, "
                f"keyframes {s.keyframes_done} done / {s.keyframes_dropped} dropped, "
                f"{s.keyframes_per_second:.2f} keyframes/s, real-time factor {s.realtime_factor:.2f}x, "
                f"ring {len(self.ring)}/{self.ring.capacity} frames (peak {self.ring.peak}); "
                f"mean ms: {self.times.describe()}")

    def _maybe_log(self) -> None:
        now = time.perf_counter()
        if self.log_interval is not None and now - self._last_log >= self.log_interval:
            self._last_log = now
            self.stats.wall_seconds, self.stats.ring_peak = now - self.started, self.ring.peak
            LOGGER.info("%s", self.progress())


class _Ordered:
    """Scored keyframes waiting to be yielded in plan order; dropped sequence numbers are skipped."""

    def __init__(self) -> None:
        self.pending: list[Prepared] = []
        self.done: dict[int, KeyframePrediction] = {}
        self.skipped: set[int] = set()
        self.next = 0

    def skip(self, j: int) -> None:
        self.skipped.add(j)

    def ready(self) -> Iterator[KeyframePrediction]:
        while True:
            if self.next in self.skipped:
                self.skipped.discard(self.next)
            elif self.next in self.done:
                yield self.done.pop(self.next)
            else:
                return
            self.next += 1


class _Worker:
    """The live mode's model thread: one keyframe at a time (detect -> clip -> action); no queue."""

    def __init__(self, engine: StreamEngine) -> None:
        import queue

        self.engine = engine
        self.inbox: queue.Queue = queue.Queue(maxsize=1)
        self.outbox: queue.Queue = queue.Queue()
        self.busy = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="stream model", daemon=True)
        self.thread.start()

    def idle(self) -> bool:
        return not self.busy.is_set()

    def submit(self, j: int, plan: KeyframePlan, frames: list[np.ndarray], keyframe: np.ndarray) -> None:
        self.busy.set()
        self.inbox.put((j, plan, frames, keyframe))

    def _loop(self) -> None:
        while True:
            item = self.inbox.get()
            if item is None:
                return
            try:
                self.outbox.put(self.engine._score([self.engine._prepare(*item)]))
            except BaseException as error:  # re-raised on the engine's thread
                self.outbox.put(error)
            finally:
                self.busy.clear()

    def results(self, wait: bool = False) -> dict[int, KeyframePrediction]:
        """Scored keyframes so far (``wait``: after the one in flight); a worker error is raised here."""
        if wait:
            while self.busy.is_set():
                time.sleep(0.005)
        out: dict[int, KeyframePrediction] = {}
        while not self.outbox.empty():
            item = self.outbox.get()
            if isinstance(item, BaseException):
                raise item
            out.update(item)
        return out

    def stop(self) -> None:
        self.inbox.put(None)
        self.thread.join(timeout=60)
