"""`python -m stad.demo` on any video: output video frame count/size/rate, CSV, clear errors."""
from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from stad.demo import DemoError, VideoInfo, plan_keyframes, probe_video, read_boxes_csv
from tests.e2e.demo_testutils import probe, run_cli, tiny_model, write_test_video


def test_non_video_input_fails_clearly(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n")
    result = run_cli(["-m", "stad.demo", "--video", str(fake), "--out", str(tmp_path / "out.mp4")], cwd=tmp_path)
    assert result.returncode == 2
    assert "not a readable video file" in result.stderr and str(fake) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_missing_video_and_missing_demo_model_are_clear_errors(tmp_path):
    result = run_cli(["-m", "stad.demo", "--video", str(tmp_path / "nope.mp4"), "--out", "o.mp4"], cwd=tmp_path)
    assert result.returncode == 2 and "no such file" in result.stderr and "Traceback" not in result.stderr
    video = write_test_video(tmp_path / "clip.mp4", seconds=0.4)
    # cwd without runs/demo: the default model is absent -> tells the user to run `make demo`
    result = run_cli(["-m", "stad.demo", "--video", str(video), "--out", "o.mp4"], cwd=tmp_path)
    assert result.returncode == 2 and "make demo" in result.stderr and "Traceback" not in result.stderr


def test_probe_video_rejects_a_text_file(tmp_path):
    path = tmp_path / "x.avi"
    path.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(DemoError, match="not a readable video file"):
        probe_video(path)


def test_annotated_video_keeps_frame_count_size_and_rate(tmp_path):
    """Odd size (161x121, yuv444p path) at 25 fps; boxes from a GT-style CSV; CSV rows per box x class."""
    video = write_test_video(tmp_path / "my clip.mp4", width=161, height=121, fps=25, seconds=2.0)
    config, checkpoint = tiny_model(tmp_path)
    boxes = tmp_path / "boxes.csv"
    # keyframes t=0 and t=1; the person at t=1 has two actions (two rows, one box)
    boxes.write_text("my clip,0,0.05,0.20,0.30,0.90,1,7\n"
                     "my clip,1,0.30,0.25,0.45,0.90,4,7\n"
                     "my clip,1,0.30,0.25,0.45,0.90,1,7\n"
                     "my clip,1,0.65,0.15,0.85,0.85,2,9\n"
                     "other,1,0.1,0.1,0.2,0.2,1,1\n")
    out, out_csv, snap = tmp_path / "out.mp4", tmp_path / "out.csv", tmp_path / "snap.png"
    result = run_cli(["-m", "stad.demo", "--video", str(video), "--config", str(config), "--checkpoint",
                      str(checkpoint), "--boxes", str(boxes), "--out", str(out), "--csv", str(out_csv),
                      "--snapshot", str(snap), "--no-progress"])
    assert result.returncode == 0, result.stderr
    assert probe(out) == (50, 161, 121, 25.0)
    rows = list(csv.reader(out_csv.open()))
    assert len(rows) == 3 * 11  # 3 distinct boxes x 11 classes
    assert {r[0] for r in rows} == {"my clip"} and {r[1] for r in rows} == {"0000", "0001"}
    assert {int(r[6]) for r in rows} == set(range(1, 12))
    scores = np.array([float(r[7]) for r in rows])
    assert ((scores >= 0) & (scores <= 1)).all()
    import cv2

    assert cv2.imread(str(snap)).shape == (121, 161, 3)
    assert "50 frames" in result.stdout


def test_plan_keyframes_samples_clips_in_time_at_any_frame_rate(tmp_path):
    for fps, step in ((30, 2), (60, 4), (15, 1)):
        info = VideoInfo(tmp_path / "v.mp4", num_frames=fps * 3, fps=Fraction(fps), width=64, height=48)
        plans = plan_keyframes(info, clip_len=8, stride=2, model_fps=30.0)
        assert [p.timestamp for p in plans] == [0, 1, 2]
        middle = plans[1]
        assert middle.frame == fps
        assert np.array_equal(np.diff(middle.clip), np.full(7, step))  # 2 frames at 30 fps = 1/15 s
        assert middle.clip[4] == middle.frame  # index T//2 is the keyframe, as the training sampler
        assert plans[0].clip.min() == 0 and plans[-1].clip.max() <= info.num_frames - 1  # clamped


def test_plan_keyframes_from_timestamps_with_video_start(tmp_path):
    info = VideoInfo(tmp_path / "v.mp4", num_frames=90, fps=Fraction(30), width=64, height=48)
    plans = plan_keyframes(info, 4, 2, 30.0, timestamps=[900, 902, 905], video_start=900.0)
    assert [(p.timestamp, p.frame) for p in plans] == [(900, 0), (902, 60)]  # 905 s is past the end


def test_read_boxes_csv(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("v,0902,0.1,0.2,0.3,0.4,12,3\nv,0902,0.1,0.2,0.3,0.4,80,3\nv,0903,0.5,0.5,0.9,0.9,,0.75\n"
                    "w,0902,0.1,0.1,0.2,0.2,-1,0.5\n")
    boxes = read_boxes_csv(path, "v")
    assert sorted(boxes) == [902, 903]
    assert len(boxes[902]) == 1 and boxes[902].ids.tolist() == [3] and boxes[902].scores.tolist() == [1.0]
    assert boxes[903].ids.tolist() == [-1] and boxes[903].scores.tolist() == pytest.approx([0.75])
    with pytest.raises(DemoError, match="no rows for video 'x'"):
        read_boxes_csv(path, "x")
    bad = tmp_path / "bad.csv"
    bad.write_text("v,0902,0.1,0.2\n")
    with pytest.raises(DemoError, match=r"bad.csv:1: expected >= 7 columns"):
        read_boxes_csv(bad, "v")
