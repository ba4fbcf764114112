"""Concurrent inference streams: planning, ordered results, errors, thread counts, identical proposals."""
from __future__ import annotations

import pickle
import threading
import time

import numpy as np
import pytest
import torch

from detect import proposals
from detect.detector import PersonDetector
from detect.keyframes import requests_from_keys
from detect.source import FrameFolderSource
from detect.streams import MAX_AUTO_STREAMS, StreamPool, plan_batch, plan_streams


def test_plan_streams_auto_and_explicit():
    assert plan_streams("cpu", 0, 2) == (2, 1)            # 2 cores: two single-threaded streams
    assert plan_streams("cpu", 0, 1) == (1, 1)
    assert plan_streams("cpu", 0, 16) == (MAX_AUTO_STREAMS, 16 // MAX_AUTO_STREAMS)
    assert plan_streams("cuda:0", 0, 8) == (1, 8)         # GPU: one stream, batching does the work
    assert plan_streams("cpu", 3, 2) == (3, 1)            # explicit count wins, at least 1 thread each
    assert plan_streams("cpu", 1, 4) == (1, 4)
    assert plan_streams("cpu", 0, 0)[0] >= 1              # threads 0: every usable CPU
    with pytest.raises(ValueError, match="streams"):
        plan_streams("cpu", -1, 2)


def test_plan_batch():
    assert plan_batch("cpu") == 4 and plan_batch("cuda:0") == 16 and plan_batch("cpu", 7) == 7
    with pytest.raises(ValueError, match="--batch"):
        plan_batch("cpu", -2)


def test_pool_keeps_input_order_and_uses_one_replica_per_stream():
    made = []

    def make():
        made.append({"id": len(made), "threads": set()})
        return made[-1]

    def work(replica, item):
        time.sleep(0.02 if item % 3 == 0 else 0.001)       # out-of-order completion
        replica["threads"].add(threading.get_ident())
        return item * item, replica["id"], torch.get_num_threads()

    torch.set_num_threads(2)
    pool = StreamPool(make, streams=2, threads_per_stream=1)
    out = list(pool.map(work, range(20)))
    assert [item for item, _ in out] == list(range(20))
    assert [result[0] for _, result in out] == [i * i for i in range(20)]
    assert {result[1] for _, result in out} == {0, 1} and len(made) == 2
    assert all(len(r["threads"]) == 1 for r in made)       # a replica never moves between threads
    assert {result[2] for _, result in out} == {1}         # each stream runs single-threaded
    assert torch.get_num_threads() == 2                     # the caller's count is back


def test_pool_reraises_errors_and_single_stream_runs_inline():
    def work(replica, item):
        if item == 5:
            raise RuntimeError("forward failed on 5")
        return item

    got = []
    with pytest.raises(RuntimeError, match="forward failed on 5"):
        for item, _ in StreamPool(lambda: None, streams=2).map(work, range(50)):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]
    caller = threading.get_ident()
    inline = StreamPool(lambda: "the detector", streams=1).map(lambda r, i: (r, threading.get_ident()), [1, 2])
    assert [result for _, result in inline] == [("the detector", caller)] * 2
    with pytest.raises(ValueError):
        StreamPool(lambda: None, streams=0)


def test_replica_is_independent(coco_weights):
    detector = PersonDetector(coco_weights, imgsz=160, conf=0.5)
    twin = detector.replica()
    assert twin.backend is not detector.backend
    assert all(a is not b for a, b in zip(twin.backend.parameters(), detector.backend.parameters()))
    assert (twin.imgsz, twin.conf, twin.person_index) == (detector.imgsz, detector.conf, detector.person_index)


def test_two_streams_give_the_boxes_of_one_stream_in_request_order(tmp_path, coco_weights, make_frames):
    frames = make_frames(tmp_path / "frames", "vid_s", [30 * t + 1 for t in range(1, 12)])
    keys = [("vid_s", t) for t in range(1, 12)]
    shuffled = [keys[i] for i in (3, 0, 7, 10, 1, 5, 9, 2, 4, 8, 6)]
    requests = requests_from_keys(shuffled, "toy")
    detector = PersonDetector(coco_weights, imgsz=160, conf=0.5)
    source = FrameFolderSource(frames)
    one = proposals.detect_keyframes(detector, source, requests, batch_size=2, progress=False)
    two = proposals.detect_keyframes(detector, source, requests, batch_size=2, progress=False, streams=2)
    three = proposals.detect_keyframes(detector, source, requests, batch_size=1, progress=False, streams=3)
    assert list(one) == list(two) == list(three) == shuffled
    assert all(len(boxes) for boxes in one.values())
    for key in keys:
        for other in (two, three):
            assert len(other[key]) == len(one[key])
            np.testing.assert_allclose(other[key].xyxy, one[key].xyxy, atol=1e-5)
            np.testing.assert_allclose(other[key].scores, one[key].scores, atol=1e-5)
    # keyframes without a person are kept (empty), in order, whatever the stream count
    strict = PersonDetector(coco_weights, imgsz=160, conf=0.99)
    empty = proposals.detect_keyframes(strict, source, requests, batch_size=2, progress=False, streams=2)
    assert list(empty) == shuffled and all(len(boxes) == 0 for boxes in empty.values())


def test_cli_streams_do_not_change_the_output(tmp_path, coco_weights, make_frames):
    frames = make_frames(tmp_path / "frames", "vid_c", [31, 61, 91, 121, 151])
    keys = tmp_path / "keys.csv"
    keys.write_text("".join(f"vid_c,{t:04d}\n" for t in (5, 1, 3, 2, 4)))
    outputs = []
    for streams in ("1", "2"):
        out = tmp_path / f"p{streams}.pkl"
        argv = ["--weights", str(coco_weights), "--source", str(frames), "--annotations", str(keys),
                "--dataset", "toy", "--out", str(out), "--imgsz", "160", "--batch", "2", "--conf", "0.3",
                "--threads", "2", "--streams", streams, "--no-progress"]
        assert proposals.main(argv) == 0
        with open(out, "rb") as handle:
            outputs.append(pickle.load(handle))
    (elements1, _), (elements2, _) = outputs
    assert [e["time"] for e in elements2] == [1, 2, 3, 4, 5]
    assert sum(len(e["labels"]) for e in elements1) > 0
    for a, b in zip(elements1, elements2):
        assert (a["video"], a["time"], len(a["labels"])) == (b["video"], b["time"], len(b["labels"]))
        for box_a, box_b in zip(a["labels"], b["labels"]):
            np.testing.assert_allclose(box_a["bounding_box"], box_b["bounding_box"], atol=1e-5)
            assert box_a["score"] == pytest.approx(box_b["score"], abs=1e-5)


def test_reference_call_keeps_the_callers_thread_count(coco_weights, frame_image):
    torch.set_num_threads(2)
    detector = PersonDetector(coco_weights, imgsz=160, conf=0.5)
    detector.detect_reference(frame_image(0))   # ultralytics' set-up would leave it at cpu_count - 1
    assert torch.get_num_threads() == 2


def test_no_keyframes_gives_an_empty_result_whatever_the_stream_count(tmp_path, coco_weights):
    detector = PersonDetector(coco_weights, imgsz=160, conf=0.5)
    source = FrameFolderSource(tmp_path)
    for streams in (1, 2):
        assert proposals.detect_keyframes(detector, source, [], batch_size=2, progress=False, streams=streams) == {}
    assert detector.degenerate_dropped == 0
