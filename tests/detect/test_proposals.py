"""detect.proposals end to end on a tiny generated video / frame folder."""
from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest

from detect import proposals
from detect.detector import PersonDetector
from detect.keyframes import requests_from_keys
from detect.source import FrameFolderSource, prefetch
from stad.data.formats.acar_pkl import validate_acar
from stad.data.formats.ava import read_proposal_csv


def _run(tmp_path, weights, source, annotations, *extra):
    out = tmp_path / "proposals.pkl"
    csv = tmp_path / "proposals.csv"
    argv = ["--weights", str(weights), "--source", str(source), "--out", str(out), "--csv", str(csv),
            "--imgsz", "160", "--batch", "2", "--no-progress", *extra]
    if annotations is not None:
        argv += ["--annotations", str(annotations)]
    assert proposals.main(argv) == 0
    with open(out, "rb") as handle:
        obj = pickle.load(handle)
    validate_acar(obj)
    return obj, read_proposal_csv(csv) if csv.stat().st_size else {}, csv


def _keyframe_list(tmp_path, rows):
    path = tmp_path / "keyframes.csv"
    path.write_text("".join(f"{v},{t:04d}\n" for v, t in rows))
    return path


def test_video_proposals_pkl_and_csv(tmp_path, coco_weights, make_video):
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "clipA.mp4", seconds=4, empty_after=3.0)
    keys = _keyframe_list(tmp_path, [("clipA", 2), ("clipA", 1), ("clipA", 3)])
    (elements, classes), csv_boxes, _ = _run(tmp_path, coco_weights, videos, keys, "--dataset", "toy", "--conf", "0.5")
    assert classes == []
    assert [(e["video"], e["time"]) for e in elements] == [("clipA", 1), ("clipA", 2), ("clipA", 3)]
    assert [e["mid_frame"] for e in elements] == [31, 61, 91]          # toy: frame t*30+1
    assert all(e["format_str"] == "clipA_%06d.jpg" and e["frame_rate"] == 30.0 for e in elements)
    assert [(e["start_frame"], e["n_frames"]) for e in elements][0] == (1, 76)   # window clamped at frame 1
    n_boxes = 0
    for e in elements:
        boxes = np.array([b["bounding_box"] for b in e["labels"]]).reshape(-1, 4)
        scores = np.array([b["score"] for b in e["labels"]])
        assert ((boxes >= 0) & (boxes <= 1)).all() and (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert np.all(np.diff(scores) <= 0) and (scores >= 0.5).all()
        assert all(b["label"] == [] and b["person_id"] == [-1] for b in e["labels"])
        n_boxes += len(boxes)
        if len(boxes):   # CSV carries the same boxes (4 decimals)
            np.testing.assert_allclose(csv_boxes[(e["video"], e["time"])].xyxy, boxes, atol=1e-4)
    assert n_boxes > 0 and sum(len(b) for b in csv_boxes.values()) == n_boxes


def test_keyframes_without_person_are_kept(tmp_path, coco_weights, make_video):
    make_video(tmp_path / "clipB.mp4", seconds=3)
    keys = _keyframe_list(tmp_path, [("clipB", 1), ("clipB", 2)])
    (elements, _), csv_boxes, csv = _run(tmp_path, coco_weights, tmp_path / "clipB.mp4", keys,
                                         "--dataset", "toy", "--conf", "0.99")
    assert [(e["time"], e["labels"]) for e in elements] == [(1, []), (2, [])]
    assert csv.read_text() == ""


def test_frames_source_matches_direct_detection_and_batch_size(tmp_path, coco_weights, make_frames):
    frames = make_frames(tmp_path / "frames", "vid_x", [31, 61, 91])
    keys = [("vid_x", 1), ("vid_x", 2), ("vid_x", 3)]
    detector = PersonDetector(coco_weights, imgsz=160, conf=0.5)
    requests = requests_from_keys(keys, "toy")
    source = FrameFolderSource(frames)
    by_batch = [proposals.detect_keyframes(detector, source, requests, batch_size=b, progress=False) for b in (1, 3)]
    for key, request in zip(keys, requests):
        direct = detector.detect_reference(cv2.imread(str(source.path_of(request))))
        for found in by_batch:
            assert len(found[key]) == len(direct)
            np.testing.assert_allclose(found[key].xyxy, direct.xyxy, atol=1e-5)
    assert sum(len(b) for b in by_batch[0].values()) > 0


def test_every_nth_frame_of_a_plain_video(tmp_path, coco_weights, make_video):
    video = make_video(tmp_path / "plain.mp4", seconds=2)
    (elements, _), _, _ = _run(tmp_path, coco_weights, video, None, "--every", "25", "--conf", "0.5")
    assert [(e["video"], e["time"], e["mid_frame"]) for e in elements] == [("plain", t, t) for t in (1, 26, 51)]


def test_bad_inputs_name_the_problem(tmp_path, coco_weights, make_video, make_frames):
    frames = make_frames(tmp_path / "frames", "vid_y", [31])
    keys = _keyframe_list(tmp_path, [("vid_y", 1), ("vid_y", 2)])
    with pytest.raises(FileNotFoundError, match=r"vid_y,2.*vid_y_000061.jpg"):
        _run(tmp_path, coco_weights, frames, keys, "--dataset", "toy")
    bad = tmp_path / "bad.csv"
    bad.write_text("vid_y,0001\nvid_y,abc\n")
    with pytest.raises(ValueError, match=r"bad.csv:2 field 1"):
        _run(tmp_path, coco_weights, frames, bad, "--dataset", "toy")
    short = make_video(tmp_path / "short.mp4", seconds=1)
    late = _keyframe_list(tmp_path, [("short", 5)])
    with pytest.raises(ValueError, match="video ends"):
        _run(tmp_path, coco_weights, short, late, "--dataset", "toy")
    other = _keyframe_list(tmp_path, [("another", 1)])
    with pytest.raises(ValueError, match="does not match the video file"):
        _run(tmp_path, coco_weights, short, other, "--dataset", "toy")
    with pytest.raises(SystemExit):
        _run(tmp_path, coco_weights, frames, None)     # neither --annotations nor --every
    with pytest.raises(SystemExit, match="exclude each other"):
        _run(tmp_path, coco_weights, short, other, "--dataset", "toy", "--every", "5")
    assert not (tmp_path / "proposals.pkl").exists()   # nothing half-written


def test_prefetch_propagates_errors_and_stops_early():
    def items():
        yield 1
        yield 2
        raise RuntimeError("decoder failed")

    got = []
    with pytest.raises(RuntimeError, match="decoder failed"):
        for value in prefetch(items(), lambda x: x * 10, maxsize=1):
            got.append(value)
    assert got == [10, 20]
    stream = prefetch(iter(range(10_000)), lambda x: x, maxsize=2)
    assert next(stream) == 0
    stream.close()   # stops the worker thread without draining
