"""Spatio-temporal action detection on a live or piped stream: person detector -> action model -> outputs.

    python -m stad.stream --source rtsp://camera/stream --out live.mp4 --csv live.csv     (= python -m stad.apps.stream)
    python -m stad.stream --source 0 --show                           # camera 0, annotated frames in a window
    python -m stad.stream --source clip.mp4 --csv clip.csv --summary clip.json
    ffmpeg -i in.mp4 -f rawvideo -pix_fmt rgb24 - | python -m stad.stream --source - --size 320x240 --fps 25 \\
        --pixel-format rgb24 --csv rows.csv --jsonl rows.jsonl

``--source``: a video file, an ``rtsp://`` / ``http(s)://`` (any FFmpeg URL) stream, a camera index, or ``-``
for raw frames on stdin (``--size WxH --fps F``, ``--pixel-format bgr24|rgb24``, read in exact frame-size
chunks). The frames are decoded once into a ring buffer that holds only the clip span; every ``--every``
seconds a keyframe's clip (sampled in time at the model's frame rate, as `stad.demo` does) goes through
the person detector and the action model (`stad.engine.streaming`). Model and output flags are
`stad.demo`'s. Rows are appended as keyframes are scored and flushed after each keyframe: ``--csv``
(AVA-style ``video_id,t,x1,y1,x2,y2,action_id,score``, t = whole seconds from the stream's start, plus
``<csv stem>.labelmap.pbtxt``), ``--jsonl`` (one object per keyframe); ``--out`` the annotated MP4,
``--show`` a window.

Modes (``--realtime``): *off* scores every keyframe (files and ``-`` by default: the reader waits for the
model); *on* never waits: a keyframe that is ready while the model is still busy is dropped and counted,
so memory stays bounded (cameras and network streams by default; a file is then also played at its own
frame rate). A progress line (frames, keyframes done / dropped, keyframes/s, real-time factor = seconds
of stream per wall second, ring use, mean ms per stage: decode, detect, clip, action, draw) is logged
every ``--log-every`` seconds and at the end; ``--summary`` writes it all as JSON (atomically), with
samples (wall s, stream s, keyframes scored, RSS MB) taken about every ``--log-every`` seconds.

Exit codes: 0 the source ended (or ``--duration`` was reached); 2 bad input (nothing processed: one line
``error: ...``); 3 the source failed mid-stream (no frame for ``--stall-timeout`` seconds, a truncated
raw frame, a decoding error): one line ``error: ...``, and every output is complete up to that point
(rows already written stay, the video is finalised, the summary written); 130 interrupted (Ctrl-C or
SIGTERM: outputs finalised the same way).
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

from stad.apps.demo import (add_model_arguments, add_output_arguments, box_finder, csv_labelmap_path, load_model,
                            overlay_for, write_csv_labelmap)
from stad.apps.visualize import Mp4Writer, StreamingAnnotator
from stad.cli import EXIT_INTERRUPTED, run_cli

LOGGER = logging.getLogger("stad.apps.stream")
EXIT_SOURCE_FAILED = 3
DEFAULT_STALL_TIMEOUT = 10.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stad.stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True,
                        help="video file, rtsp:// or http(s):// URL, camera index, or - (raw frames on stdin)")
    parser.add_argument("--size", help="raw stdin frames: WIDTHxHEIGHT")
    parser.add_argument("--fps", type=float, help="raw stdin frames: frame rate (also overrides a camera's)")
    parser.add_argument("--pixel-format", default="bgr24", choices=("bgr24", "rgb24"),
                        help="raw stdin frames: byte order of the pixels (default bgr24)")
    parser.add_argument("--video-id", help="video id of the rows (default: file stem, 'stdin', 'camera0', URL stem)")
    parser.add_argument("--realtime", default="auto", choices=("auto", "on", "off"),
                        help="on: drop keyframes the model has no time for (never queue); off: score every one; "
                             "auto (default): on for cameras and network streams, off for files and stdin")
    parser.add_argument("--stall-timeout", type=float, default=DEFAULT_STALL_TIMEOUT,
                        help="seconds without a frame after which stdin / a live source counts as failed (exit 3; "
                             f"default {DEFAULT_STALL_TIMEOUT:g})")
    parser.add_argument("--reconnect", type=int, default=0, metavar="N",
                        help="camera / network source: reopen it up to N consecutive times when it ends or fails "
                             "(the count restarts once frames flow again; default 0: the stream ends there)")
    parser.add_argument("--reconnect-wait", type=float, default=2.0, metavar="S",
                        help="seconds before each reconnect attempt (default 2)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds of stream")
    add_output_arguments(parser, out_required=False)
    parser.add_argument("--show", action="store_true", help="show the annotated frames in a window (needs an "
                                                            "OpenCV with GUI support)")
    parser.add_argument("--jsonl", help="also write one JSON object per keyframe (boxes, ids, scores)")
    parser.add_argument("--summary", help="write the run's counts and per-stage latency as JSON")
    parser.add_argument("--log-every", type=float, default=10.0,
                        help="seconds between progress lines (default 10; --no-progress: none, the final one stays)")
    add_model_arguments(parser)
    parser.set_defaults(boxes=None, snapshot=None, snapshot_scale=1.0)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- outputs


class RowWriter:
    """``--csv`` and ``--jsonl`` rows appended per keyframe and flushed (a crash loses no written keyframe)."""

    def __init__(self, csv_path: str | None, jsonl_path: str | None, labelmap: Any) -> None:
        self.labelmap, self.rows, self.keyframes = labelmap, 0, 0
        self.handles = {}
        for key, path in (("csv", csv_path), ("jsonl", jsonl_path)):
            if path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.handles[key] = open(path, "w", encoding="utf-8", newline="\n")
        if csv_path:
            write_csv_labelmap(csv_path, labelmap)

    def write(self, result: Any) -> None:
        """One `KeyframePrediction` (boxes ``[N]``, scores ``[N, K]``): N*K CSV rows, one JSON line."""
        from stad.data.formats.ava import format_prediction_rows

        if "csv" in self.handles:
            lines = format_prediction_rows(result.video, result.plan.timestamp, result.boxes.xyxy, result.scores,
                                           self.labelmap)
            self.handles["csv"].write("".join(line + "\n" for line in lines))
            self.rows += len(lines)
        if "jsonl" in self.handles:
            persons = [{"box": [round(float(v), 4) for v in box], "id": int(pid),
                        "scores": {str(c): round(float(s), 4) for c, s in zip(self.labelmap.ids, row)}}
                       for box, pid, row in zip(result.boxes.xyxy, result.boxes.ids, result.scores)]
            self.handles["jsonl"].write(json.dumps({"video_id": result.video, "t": result.plan.timestamp,
                                                    "time": round(result.plan.time, 4), "frame": result.plan.frame,
                                                    "persons": persons}) + "\n")
        for handle in self.handles.values():
            handle.flush()
        self.keyframes += 1

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


class WindowSink:
    """Annotated frames shown in an OpenCV window (`StreamingAnnotator`'s sink interface)."""

    def __init__(self, title: str) -> None:
        import cv2

        self.title, self.frames_written = title, 0
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise ValueError("--show: this OpenCV has no window support (opencv-python-headless); "
                             "write --out instead") from None

    def write(self, frame_bgr: Any) -> None:
        import cv2

        cv2.imshow(self.title, frame_bgr)
        cv2.waitKey(1)
        self.frames_written += 1

    def close(self) -> None:
        import cv2

        cv2.destroyWindow(self.title)

    abort = close


class TeeSink:
    """Several sinks fed the same frames (``--out`` and ``--show``)."""

    def __init__(self, sinks: Sequence[Any]) -> None:
        self.sinks = list(sinks)

    @property
    def frames_written(self) -> int:
        return self.sinks[0].frames_written

    def write(self, frame_bgr: Any) -> None:
        for sink in self.sinks:
            sink.write(frame_bgr)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def abort(self) -> None:
        for sink in self.sinks:
            sink.abort()


def _annotator(args: argparse.Namespace, source: Any, live: bool, ring_capacity: int) -> StreamingAnnotator | None:
    """The drawing of ``--out`` / ``--show`` (None without either); live: at most the ring plus two
    keyframe intervals of frames wait for their keyframe's scores."""
    sinks = ([Mp4Writer(args.out, source.width, source.height, source.fps)] if args.out else []) + \
            ([WindowSink(f"stad.stream {source.name}")] if args.show else [])
    if not sinks:
        return None
    pending = ring_capacity + int(2 * args.every * source.fps) if live else None
    return StreamingAnnotator(sinks[0] if len(sinks) == 1 else TeeSink(sinks), source.width, source.height,
                              Fraction(source.fps).limit_denominator(1001), source.video_id, args.every,
                              max_pending=pending)


# --------------------------------------------------------------------------- the run


def _rss_mb() -> float:
    """This process's resident memory now (MB)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover - psutil is pinned
        return float("nan")


def _sample(engine: Any) -> list[float]:
    """``[wall s since the first frame, stream s, keyframes scored, RSS MB]`` now."""
    stats = engine.stats
    return [round(time.perf_counter() - engine.started, 2), round(stats.frames / stats.fps, 2), stats.keyframes_done,
            round(_rss_mb(), 1)]


def _open(args: argparse.Namespace):
    """The `FrameSource` of ``--source`` (stall timeout for stdin and live sources, not for files)."""
    from stad.data.stream_source import open_source, parse_size, source_kind

    size = parse_size(args.size) if args.size else None
    timeout = None if source_kind(args.source) == "file" else args.stall_timeout
    return open_source(args.source, size=size, fps=args.fps, pixel_format=args.pixel_format, stall_timeout=timeout,
                       video_id=args.video_id, reconnect=args.reconnect, reconnect_wait=args.reconnect_wait)


def _frames_and_plans(args: argparse.Namespace, source: Any, engine: Any, predictor: Any, live: bool) -> tuple:
    """(frames, keyframe plans, whether the plans are finite). A whole file gets `stad.demo`'s plans
    (its header's frame count); anything else keyframes every ``--every`` s until the frames end."""
    from stad.data.video import VideoInfo
    from stad.engine.streaming import paced

    frames = paced(source.frames, source.fps) if live and source.path is not None else source.frames
    if args.duration:
        frames = itertools.islice(frames, max(1, round(args.duration * source.fps)))
    elif source.path is not None:
        info = VideoInfo(source.path, source.num_frames, Fraction(source.fps), source.width, source.height)
        return frames, predictor.plan(info, args.every, model_fps=args.model_fps), True
    return frames, engine.plans_for(args.every), False


def _loop(args: argparse.Namespace, engine: Any, predictor: Any, inputs: tuple, annotator: Any, rows: RowWriter,
          memory: list) -> BaseException | None:
    """Score, track, write rows, draw; returns the source failure or interrupt that ended it (None: the end)."""
    from stad.apps.tracking import IouTracker
    from stad.data.stream_source import SourceFailure
    from stad.data.video import FrameReadError

    tracker, names, failure, last = IouTracker(), predictor.labelmap.names, None, time.perf_counter()
    try:
        for result in engine.run(*inputs, on_frame=annotator.add_frame if annotator else None):
            result, overlay = overlay_for(result, tracker, names, args)
            rows.write(result)
            if annotator is not None:
                with engine.times.time("draw"):
                    annotator.add_overlay(overlay)
            if time.perf_counter() - last >= args.log_every:
                last = time.perf_counter()
                memory.append(_sample(engine))
    except (SourceFailure, FrameReadError) as error:
        failure = error
    except KeyboardInterrupt as error:
        failure = error
    finally:
        rows.close()
        if annotator is not None:
            with engine.times.time("draw"):
                annotator.close()
    return failure


def _warm_up(engine: Any, source: Any) -> None:
    """Live mode: one keyframe of grey frames through detector and action model before the first real one,
    so first-call costs (OpenVINO compilation, allocator growth) do not make the stream drop its first keyframes."""
    import numpy as np

    from stad.structures import Boxes

    start = time.perf_counter()
    frame = np.full((source.height, source.width, 3), 114, np.uint8)
    plan = next(engine.plans_for(1))
    engine.boxes_for(plan, frame)
    sample = engine.predictor.sample([frame] * len(plan.clip), (source.video_id, 0),
                                     Boxes(np.array([[0.25, 0.25, 0.75, 0.75]], np.float32)))
    engine.predictor.score([sample])
    LOGGER.info("warm-up keyframe (detector and action model): %.2f s", time.perf_counter() - start)


def _check(args: argparse.Namespace) -> None:
    for name in ("every", "log_every", "duration", "stall_timeout", "batch_size"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} {value}: must be positive")
    if args.out and args.out == args.csv:
        raise ValueError("--out and --csv name the same file")


def run(args: argparse.Namespace) -> tuple[dict, BaseException | None]:
    """The whole stream; returns (summary, the source failure or interrupt that ended it, or None)."""
    from stad.engine.streaming import StreamEngine

    _check(args)
    source = _open(args)
    try:
        live = args.realtime == "on" or (args.realtime == "auto" and source.live)
        LOGGER.info("%s: %dx%d at %.3f fps, %s mode", source.name, source.width, source.height, source.fps,
                    "live (keyframes dropped when the model is busy)" if live else "offline (every keyframe)")
        predictor = load_model(args)
        boxes_for, _, _ = box_finder(args, source.video_id)
        engine = StreamEngine(predictor, source.video_id, boxes_for, source.fps, live=live, model_fps=args.model_fps,
                              log_interval=None if args.no_progress else args.log_every, name=source.name)
        if live:
            _warm_up(engine, source)
        inputs = _frames_and_plans(args, source, engine, predictor, live)
        annotator = _annotator(args, source, live, engine.ring.capacity)
        rows = RowWriter(args.csv, args.jsonl, predictor.labelmap)
        memory: list[list[float]] = []
        failure = _loop(args, engine, predictor, inputs, annotator, rows, memory)
    finally:
        source.close()
    LOGGER.info("final: %s", engine.progress())
    memory.append([round(engine.stats.wall_seconds, 2), *_sample(engine)[1:]])
    summary = {"source": source.name, "video_id": source.video_id, "mode": "live" if live else "offline",
               "size": [source.width, source.height], **engine.stats.to_dict(), "stages": engine.times.summary(),
               "csv_rows": rows.rows, "action_runtime": predictor.runtime, "reconnects": source.reconnects,
               "ended": "end of stream" if failure is None else
               "interrupted" if isinstance(failure, KeyboardInterrupt) else str(failure),
               "samples": {"columns": ["wall_s", "stream_s", "keyframes_done", "rss_mb"], "rows": memory},
               "outputs": {k: v for k, v in (("out", args.out), ("csv", args.csv),
                                                                  ("jsonl", args.jsonl)) if v}}
    if args.csv:
        summary["labelmap"] = str(csv_labelmap_path(args.csv))
    if args.summary:
        from stad.io_utils import atomic_write_text

        atomic_write_text(args.summary, json.dumps(summary, indent=1) + "\n")
    return summary, failure


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: exit 0 at the end of the source, 2 bad input, 3 source failure mid-stream, 130 interrupted."""
    return run_cli(_main, argv)


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a service manager stopping the stream) ends it as Ctrl-C does: outputs finalised, exit 130."""
    import signal
    import threading

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _main(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    _interrupt_on_sigterm()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary, failure = run(args)
    print(f"{summary['source']}: {summary['frames']} frames ({summary['stream_seconds']:.1f} s), keyframes "
          f"{summary['keyframes_done']} scored / {summary['keyframes_dropped']} dropped, "
          f"{summary['keyframes_per_second']:.2f} keyframes/s, real-time factor {summary['realtime_factor']:.2f}x "
          f"({summary['mode']})")
    print("mean ms per call: " + ", ".join(f"{k} {v['mean_ms']:.1f}" for k, v in summary["stages"].items()))
    for key, path in summary["outputs"].items():
        print(f"{key}: {path}" + (f" ({summary['csv_rows']} rows)" if key == "csv" else ""))
    if isinstance(failure, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if failure is not None:
        print(f"error: {failure}", file=sys.stderr)
        return EXIT_SOURCE_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
