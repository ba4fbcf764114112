"""`python -m stad.stream`: file / pipe sources, clean ends (end, stall, truncated frame), back-pressure drops.

A tiny model (tests/e2e/demo_testutils.tiny_model: 64 px, 4-frame clips) and the shipped toy person detector
on toy-actor frames rendered by stad.data.toy (persons the detector finds, so keyframes have rows).
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from stad.data.stream_source import SourceFailure, StreamSourceError, open_source, parse_size
from stad.engine.inference import Predictor, plan_keyframes
from stad.engine.streaming import ClipRing, KeyframeScheduler, StreamEngine, clip_span_frames, live_plans
from stad.structures import Boxes
from tests.e2e.demo_testutils import ROOT, probe, tiny_model

DETECTOR = ROOT / "checkpoints" / "toy_person_yolov8n.pt"
FPS, SIZE = 25, (320, 240)
pytestmark = pytest.mark.skipif(not DETECTOR.is_file(), reason="checkpoints/toy_person_yolov8n.pt not present")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """Tiny model, 3 s of toy-actor frames (BGR [75, 240, 320, 3]) and the same frames as an MP4."""
    from stad.apps.visualize import Mp4Writer
    from stad.data.toy.render import background, render_frame
    from stad.data.toy.script import plan_split

    tmp = tmp_path_factory.mktemp("stream")
    config, weights = tiny_model(tmp)
    script = plan_split("toy_stream", 1, 0, 0)[0]
    world = background(script)
    frames = np.stack([render_frame(script, world, i / FPS) for i in range(3 * FPS)])
    video = tmp / "toy.mp4"
    with Mp4Writer(video, SIZE[0], SIZE[1], FPS) as writer:
        for frame in frames:
            writer.write(frame)
    model = ["--config", str(config), "--weights", str(weights), "--detector", str(DETECTOR), "--runtime", "torch"]
    return {"tmp": tmp, "frames": frames, "video": video, "model": model, "config": config, "weights": weights}


def _stream(args: list[str], out: Path) -> subprocess.Popen:
    """``python -m stad.stream ARGS`` reading a pipe; stdout / stderr go to ``out``/stdout.txt, stderr.txt."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1"}
    with (out / "stdout.txt").open("wb") as stdout, (out / "stderr.txt").open("wb") as stderr:
        return subprocess.Popen([sys.executable, "-m", "stad.stream", *args], cwd=out, env=env, stdin=subprocess.PIPE,
                                stdout=stdout, stderr=stderr)


def _feed(process: subprocess.Popen, data: bytes, close: bool) -> None:
    """Write ``data`` to the process's stdin (then close it, or keep it open: a stalled source)."""
    process.stdin.write(data)
    process.stdin.flush()
    if close:
        process.stdin.close()


def _rows(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open()))


def _pipe_args(setup: dict, out: Path, *extra: str) -> list[str]:
    return ["--source", "-", "--size", "320x240", "--fps", str(FPS), *setup["model"], "--csv", str(out / "rows.csv"),
            "--summary", str(out / "summary.json"), *extra]


# --------------------------------------------------------------------------- the core


def test_live_plans_equal_the_file_plans_and_the_ring_capacity_bounds_every_clip(tmp_path):
    from fractions import Fraction

    from stad.data.video import VideoInfo

    for fps, model_fps, clip_len, stride in ((25, 30.0, 4, 4), (30, 30.0, 32, 2), (60, 25.0, 8, 8), (7, 30.0, 16, 1)):
        info = VideoInfo(tmp_path / "v.mp4", fps * 600, Fraction(fps), 64, 48)
        file_plans = plan_keyframes(info, clip_len, stride, model_fps)
        stream = live_plans(clip_len, stride, model_fps, fps)
        for a in file_plans[:-3]:  # the file's last clips are clamped at its end, a stream's are not
            b = next(stream)
            assert (a.timestamp, a.frame) == (b.timestamp, b.frame) and np.array_equal(a.clip, b.clip)
        capacity = clip_span_frames(clip_len, stride, model_fps, fps)
        assert max(p.last_frame - int(p.clip.min()) + 1 for p in file_plans) <= capacity


def test_ring_holds_only_used_frames_of_the_clip_span():
    plans = live_plans(4, 4, 30.0, 25)
    ring = ClipRing(clip_span_frames(4, 4, 30.0, 25))
    scheduler = KeyframeScheduler(plans, ring, finite=False)
    taken = []
    for index in range(100):
        scheduler.advance(index)
        ring.push(index, np.full((2, 2, 3), index, np.uint8))
        for _, plan in scheduler.ready(index):
            frames, keyframe = ring.take(plan)
            taken.append((plan.timestamp, [int(f[0, 0, 0]) for f in frames], int(keyframe[0, 0, 0])))
        assert len(ring) <= ring.capacity
    assert [t for t, _, _ in taken] == [0, 1, 2, 3]
    assert taken[1] == (1, [18, 22, 25, 28], 25)  # 4 frames 4 apart at 30 fps around 1 s, in 25 fps frames
    assert ring.peak == 4  # strided clips: only the 4 used frames are kept
    assert len(ring) == 2  # frames 93 and 97 of the keyframe at 4 s (frame 100)
    assert [plan.timestamp for _, plan in scheduler.finish()] == []  # ... which the stream never reached
    assert len(ring) == 0


def test_raw_stdin_reader_rgb_bgr_truncation_and_stall(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (3, 4, 6, 3), dtype=np.uint8)
    raw = tmp_path / "raw.rgb"
    raw.write_bytes(np.ascontiguousarray(frames[..., ::-1]).tobytes() + b"\x01" * 10)
    with raw.open("rb") as handle:
        source = open_source("-", size=(6, 4), fps=5, pixel_format="rgb24", stdin=handle)
        got = []
        with pytest.raises(SourceFailure, match=r"stdin: truncated frame: 10 of 72 bytes .* after 3 frames"):
            for frame in source.frames:
                got.append(frame)
    assert np.array_equal(np.stack(got), frames)  # rgb24 in, BGR out
    read, write = os.pipe()
    os.write(write, frames[0].tobytes())
    with os.fdopen(read, "rb", buffering=0) as handle:
        source = open_source("-", size=(6, 4), fps=5, stdin=handle, stall_timeout=0.2)
        assert np.array_equal(next(source.frames), frames[0])
        start = time.perf_counter()
        with pytest.raises(SourceFailure, match=r"stalled: no data for 0.2 s .* after 1 frames") as error:
            next(source.frames)
        assert error.value.reason == "stalled" and time.perf_counter() - start < 2
    os.close(write)
    with pytest.raises(StreamSourceError, match="need --size WxH and --fps"):
        open_source("-")
    with pytest.raises(StreamSourceError, match="expected WIDTHxHEIGHT"):
        parse_size("320by240")
    with pytest.raises(StreamSourceError, match="nope.mp4: no such file"):
        open_source(str(tmp_path / "nope.mp4"))


def test_annotator_bounds_waiting_frames_and_forgets_old_overlays():
    """Live drawing: at most ``max_pending`` frames wait for a keyframe; overlays behind the drawn frames go."""
    from stad.apps.visualize import Overlay, StreamingAnnotator

    class Sink:
        frames_written = 0

        def write(self, frame):
            self.frames_written += 1

        close = abort = lambda self: None

    annotator = StreamingAnnotator(Sink(), 8, 6, 5, "v", max_pending=5)
    frame = np.zeros((6, 8, 3), np.uint8)
    for index in range(20):  # no keyframe scored yet (a slow model): the oldest frames are drawn anyway
        annotator.add_frame(index, frame)
        assert len(annotator.frames) <= 5
    assert annotator.writer.frames_written == 15
    box = Boxes(np.array([[0.1, 0.1, 0.5, 0.5]], np.float32))
    for index in range(20, 200):
        annotator.add_frame(index, frame)
        if index % 5 == 0:
            annotator.add_overlay(Overlay(index / 5, box))
        assert len(annotator.overlays) <= 3
    assert annotator.close() == 200


class _SlowPredictor:
    """A predictor whose action stage takes ``delay`` s more (the back-pressure tests)."""

    def __init__(self, predictor: Predictor, delay: float) -> None:
        self.inner, self.delay = predictor, delay
        self.preprocessing, self.batch_size, self.num_classes = predictor.preprocessing, 1, predictor.num_classes

    def sample(self, *args):
        return self.inner.sample(*args)

    def score(self, samples):
        time.sleep(self.delay)
        return self.inner.score(samples)


def _run_engine(predictor, live: bool, frames: np.ndarray, fps: float = 100.0) -> tuple[StreamEngine, list]:
    from stad.engine.streaming import paced

    boxes = Boxes(np.array([[0.1, 0.2, 0.4, 0.9]], np.float32))
    engine = StreamEngine(predictor, "slow", lambda plan, frame: boxes, FPS, live=live)
    out = list(engine.run(paced(frames, fps), engine.plans_for(1), finite=False))
    return engine, out


def test_back_pressure_drops_keyframes_and_bounds_the_ring(setup):
    """Keyframes every 0.25 s of wall time (frames at 100 per s, 25 fps stream), an action stage of 0.4 s:
    live mode scores what it can, drops (and counts) the rest, never queues; offline mode drops nothing."""
    predictor = _SlowPredictor(Predictor.from_weights(setup["weights"], setup["config"]), delay=0.4)
    frames = np.repeat(setup["frames"][:75], 4, axis=0)[:10 * FPS]  # 10 s of stream
    engine, out = _run_engine(predictor, True, frames)
    stats = engine.stats
    assert stats.keyframes_planned == 10
    assert stats.keyframes_dropped >= 3 and stats.keyframes_done + stats.keyframes_dropped == 10
    assert len(out) == stats.keyframes_done and [p.plan.timestamp for p in out] == sorted(p.plan.timestamp for p in out)
    assert stats.ring_peak <= stats.ring_capacity and len(engine.ring) == 0
    assert engine.times.calls["action"] == stats.keyframes_done
    engine, out = _run_engine(predictor, False, frames[:4 * FPS], fps=1000.0)
    assert engine.stats.keyframes_dropped == 0 and [p.plan.timestamp for p in out] == [0, 1, 2, 3]
    assert engine.stats.ring_peak <= engine.stats.ring_capacity


# --------------------------------------------------------------------------- the CLI


def test_file_stream_gives_the_demo_rows(setup, tmp_path):
    """A file through stad.stream (offline) and through stad.demo: the same CSV, byte for byte."""
    from stad.apps import demo, stream

    common = ["--no-progress", *setup["model"]]
    assert stream.main(["--source", str(setup["video"]), "--csv", str(tmp_path / "s.csv"), "--out",
                        str(tmp_path / "s.mp4"), "--jsonl", str(tmp_path / "s.jsonl"), *common]) == 0
    assert demo.main(["--video", str(setup["video"]), "--csv", str(tmp_path / "d.csv"), "--out",
                      str(tmp_path / "d.mp4"), *common]) == 0
    assert (tmp_path / "s.csv").read_bytes() == (tmp_path / "d.csv").read_bytes()
    rows = _rows(tmp_path / "s.csv")
    assert len(rows) > 0 and {r[1] for r in rows} == {"0000", "0001", "0002"}
    keyframes = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [k["t"] for k in keyframes] == [0, 1, 2]
    assert sum(len(k["persons"]) for k in keyframes) * 11 == len(rows)
    assert probe(tmp_path / "s.mp4") == (75, 320, 240, 25.0)


def test_file_played_live_drops_or_scores_every_keyframe_and_finalises_outputs(setup, tmp_path):
    """``--realtime on`` on a file: played at 25 fps after a warm-up keyframe, one keyframe in flight; every
    keyframe is scored or counted as dropped, the annotated video has every frame."""
    from stad.apps import stream

    summary_path = tmp_path / "s.json"
    assert stream.main(["--source", str(setup["video"]), "--realtime", "on", "--out", str(tmp_path / "s.mp4"),
                        "--csv", str(tmp_path / "s.csv"), "--summary", str(summary_path), *setup["model"]]) == 0
    summary = json.loads(summary_path.read_text())
    assert summary["mode"] == "live" and summary["frames"] == 75 and summary["keyframes_planned"] == 3
    assert summary["keyframes_done"] + summary["keyframes_dropped"] == 3 and summary["keyframes_done"] >= 1
    assert summary["wall_seconds"] >= 2.9  # paced: 3 s of stream take 3 s
    assert summary["ring_peak_frames"] <= summary["ring_capacity_frames"]
    assert probe(tmp_path / "s.mp4")[:3] == (75, 320, 240)
    assert {r[1] for r in _rows(tmp_path / "s.csv")} <= {"0000", "0001", "0002"}


def _write_ts(path: Path, frames: np.ndarray) -> None:
    """BGR frames [N, H, W, 3] as H.264 in MPEG-TS at FPS."""
    import av

    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        container.mux(stream.encode())


def _serve_in_turn(files: list[Path]) -> tuple[str, Callable[[], None]]:
    """A local HTTP server whose i-th request gets ``files[i]`` whatever the path, then 404: a camera that
    drops its connection after each file and is gone for good after the last. (URL, shutdown)."""
    import http.server

    served = iter(files)

    class InTurn(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = next(served, None)
            if path is None:
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), InTurn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/cam.ts", server.shutdown


@pytest.fixture
def http_stream(setup, tmp_path):
    """The test frames as H.264 in MPEG-TS (streamable without range requests) served by a local HTTP server."""
    import functools
    import http.server

    _write_ts(tmp_path / "cam.ts", setup["frames"])

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cam.ts"
    server.shutdown()


def test_http_source_is_live_and_drops_what_the_model_cannot_take(setup, http_stream, tmp_path):
    """A network stream (OpenCV's FFmpeg backend): live mode by default; frames come faster than real time
    here, so keyframes ready while the model is busy are dropped, each counted."""
    from stad.apps import stream

    source = open_source(http_stream, stall_timeout=5)
    assert (source.live, source.fps, source.width, source.height, source.video_id) == (True, 25.0, 320, 240, "cam")
    assert sum(1 for _ in source.frames) == 75
    source.close()
    summary_path = tmp_path / "s.json"
    assert stream.main(["--source", http_stream, "--csv", str(tmp_path / "s.csv"), "--summary", str(summary_path),
                        *setup["model"]]) == 0
    summary = json.loads(summary_path.read_text())
    assert summary["mode"] == "live" and summary["frames"] == 75 and summary["keyframes_planned"] == 3
    assert summary["keyframes_done"] >= 1 and summary["keyframes_done"] + summary["keyframes_dropped"] == 3


def test_pipe_stream_ends_cleanly_and_stall_and_truncation_keep_the_rows(setup, tmp_path):
    """Raw frames on stdin: to the end (exit 0); stalled after 2 s of frames and truncated after 2 s of frames
    (exit 3, one line naming stdin): the rows of the keyframes done before are there, equal to the full run's."""
    frames = setup["frames"]
    runs = {name: tmp_path / name for name in ("full", "stall", "cut")}
    for out in runs.values():
        out.mkdir()
    full = _stream(_pipe_args(setup, runs["full"], "--out", str(runs["full"] / "a.mp4")), runs["full"])
    stall = _stream(_pipe_args(setup, runs["stall"], "--stall-timeout", "1.5", "--pixel-format", "rgb24"), runs["stall"])
    cut = _stream(_pipe_args(setup, runs["cut"]), runs["cut"])
    feeds = ((full, frames.tobytes(), True), (stall, np.ascontiguousarray(frames[:50, ..., ::-1]).tobytes(), False),
             (cut, frames[:50].tobytes() + b"\x00" * 1000, True))
    writers = [threading.Thread(target=_feed, args=feed) for feed in feeds]  # all at once: no start waits for
    for writer in writers:                                                   # another's input
        writer.start()
    results = {}
    for name, process in (("full", full), ("cut", cut), ("stall", stall)):
        process.wait(timeout=240)
        results[name] = (process.returncode, (runs[name] / "stderr.txt").read_text())
    assert results["full"][0] == 0, results["full"][1]
    summary = json.loads((runs["full"] / "summary.json").read_text())
    assert summary["frames"] == 75 and summary["keyframes_done"] == 3 and summary["keyframes_dropped"] == 0
    assert summary["ring_peak_frames"] <= summary["ring_capacity_frames"] and summary["ended"] == "end of stream"
    assert set(summary["stages"]) == {"decode", "detect", "clip", "action", "draw"}
    assert probe(runs["full"] / "a.mp4")[:3] == (75, 320, 240)
    full_rows = _rows(runs["full"] / "rows.csv")
    before = [r for r in full_rows if r[1] in ("0000", "0001")]
    assert before and len(before) < len(full_rows)
    for name, message in (("stall", "error: stdin: stalled: no data for 1.5 s (--stall-timeout) after 50 frames"),
                          ("cut", "error: stdin: truncated frame: 1000 of 230400 bytes (320x240 bgr24) after 50 frames")):
        code, stderr = results[name]
        assert code == 3 and stderr.strip().splitlines()[-1] == message and "Traceback" not in stderr
        assert _rows(runs[name] / "rows.csv") == before  # nothing produced before the failure is lost
        assert json.loads((runs[name] / "summary.json").read_text())["frames"] == 50
    stall.stdin.close()
    for writer in writers:
        writer.join()


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from stad.apps import stream

    for args, message in ((["--source", "-"], "error: --source -: raw frames on stdin need --size WxH and --fps F"),
                          (["--source", str(tmp_path / "no.mp4")], f"error: {tmp_path / 'no.mp4'}: no such file"),
                          (["--source", "-", "--size", "3x", "--fps", "5"], "error: --size '3x': expected WIDTHxHEIGHT"),
                          (["--source", "-", "--size", "8x8", "--fps", "5", "--every", "0"],
                           "error: --every 0: must be positive"),
                          (["--source", "http://127.0.0.1:9/cam.ts", "--reconnect", "-1"],
                           "error: --reconnect -1 / --reconnect-wait 2: must not be negative")):
        assert stream.main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(message) and not any("Traceback" in line for line in err), err


def test_plans_out_of_time_order_are_an_error_not_wrong_clips():
    plans = [p for _, p in zip(range(3), live_plans(4, 4, 30.0, 25))]
    ring = ClipRing(clip_span_frames(4, 4, 30.0, 25))
    scheduler = KeyframeScheduler([plans[2], plans[1]], ring, finite=True)
    with pytest.raises(ValueError, match="time order: keyframe 1 s follows a later one"):
        for index in range(80):
            scheduler.advance(index)
            ring.push(index, np.zeros((2, 2, 3), np.uint8))


def test_reconnect_reopens_a_dropped_stream_and_gives_up_after_n_attempts(setup, tmp_path, capsys):
    """``--reconnect N``: a network stream that ends is reopened (one stderr line each, counted), its frames
    continue the same stream; when the source is gone for N attempts the run ends with exit 3, rows kept.
    A reopened stream of another size is a failure, not mixed clips; files and stdin refuse the flag."""
    from stad.apps import stream

    first, small = tmp_path / "a.ts", tmp_path / "small.ts"
    _write_ts(first, setup["frames"])
    _write_ts(small, np.ascontiguousarray(setup["frames"][:10, ::2, ::2]))

    url, shutdown = _serve_in_turn([first, first])
    source = open_source(url, stall_timeout=5, reconnect=2, reconnect_wait=0)
    frames = []
    with pytest.raises(SourceFailure, match="gave up after 2 reconnect attempt") as info:
        frames.extend(source.frames)
    shutdown()
    assert len(frames) == 150 and source.reconnects == 1 and info.value.reason == "disconnected"
    assert np.array_equal(frames[80], frames[5])  # the second connection replays the file
    err = capsys.readouterr().err
    assert err.count(f"[stad.stream] {url} ended after 75 frames; reconnecting in 0 s (1/2)") == 1
    assert "(2/2)" in err and "ended after 150 frames" in err

    url, shutdown = _serve_in_turn([first, small])
    source = open_source(url, stall_timeout=5, reconnect=1, reconnect_wait=0)
    with pytest.raises(SourceFailure, match="frame size changed to 160x120 after reconnecting") as info:
        sum(1 for _ in source.frames)
    shutdown()
    assert info.value.reason == "resized" and info.value.frames == 75
    for spec in (str(setup["video"]), "-"):
        with pytest.raises(StreamSourceError, match="--reconnect applies to cameras and network streams"):
            open_source(spec, size=(8, 8), fps=5, reconnect=1)

    url, shutdown = _serve_in_turn([first, first])
    summary_path = tmp_path / "s.json"
    code = stream.main(["--source", url, "--reconnect", "1", "--reconnect-wait", "0", "--realtime", "off",
                        "--csv", str(tmp_path / "s.csv"), "--summary", str(summary_path), "--no-progress",
                        *setup["model"]])
    shutdown()
    summary = json.loads(summary_path.read_text())
    assert code == 3 and summary["reconnects"] == 1 and summary["frames"] == 150
    assert summary["keyframes_done"] == 6 and "gave up after 1 reconnect attempt" in summary["ended"]
    assert {r[1] for r in _rows(tmp_path / "s.csv")} == {f"{t:04d}" for t in range(6)}
