"""`python -m stad.demo` (alias of `stad.apps.demo`) on any video: output video frame count/size/rate, CSV, clear errors."""
from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from stad.apps.demo import DemoError, read_boxes
from stad.data.video import FrameReadError, VideoInfo, probe_video
from stad.engine.inference import plan_keyframes
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
    with pytest.raises(FrameReadError, match="not a readable video file"):
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


def test_read_boxes_errors_are_clear(tmp_path):
    """--boxes goes through stad.data.formats.ava.read_person_boxes_csv (tests/data/test_formats.py); the demo
    turns its FormatError and a file without the video into one clear message."""
    path = tmp_path / "b.csv"
    path.write_text("v,0902,0.1,0.2,0.3,0.4,12,3\nw,0902,0.1,0.1,0.2,0.2,-1,0.5\n")
    assert sorted(read_boxes(path, "v")) == [902]
    with pytest.raises(DemoError, match="no rows for video 'x'.*videos in the file: v, w"):
        read_boxes(path, "x")
    bad = tmp_path / "bad.csv"
    bad.write_text("v,0902,0.1,0.2\n")
    with pytest.raises(DemoError, match=r"bad.csv: line 1: expected 7 or 8 columns"):
        read_boxes(bad, "v")


# --------------------------------------------------------------------------- weights without a config (presets)

AVA_IDS = (1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34, 36, 37, 38, 41, 43,
           45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 72, 73, 74, 76,
           77, 78, 79, 80)
NARROW_R50 = {"backbone": "slowfast_r50", "head": "acar", "backbone_kwargs": {"width": 8, "frozen_bn": True},
              "head_kwargs": {"reduce_dim": 32, "hidden_dim": 16, "depth": 2}}


@pytest.fixture
def narrow_acar_r50(tmp_path, monkeypatch):
    """A synthetic ACAR-Net model-zoo file (``module.backbone.module.*`` / ``module.head.module.*``: exactly the
    keys of AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar) of a SlowFast-R50 8 channels wide, and the R50 preset
    narrowed to match it (64 px clips of 8 frames) so the demo runs in seconds."""
    import dataclasses

    import torch

    from stad.models import presets
    from tests.models.models_testutils import load_manifest, manifest_shapes

    real = presets.get_preset("acar_slowfast_r50_ava")
    narrow = dataclasses.replace(real, model=presets.ACTION_MODEL, model_kwargs=NARROW_R50,
                                 preprocessing=dataclasses.replace(real.preprocessing, resize=64, clip_len=8))
    monkeypatch.setitem(presets._CACHE, "acar_slowfast_r50_ava", narrow)
    torch.manual_seed(0)
    model = narrow.build_model()
    state = {("module.backbone.module." + k[len("backbone."):]) if k.startswith("backbone.") else
             ("module.head.module." + k[len("head."):]): v for k, v in model.state_dict().items()}
    assert set(state) == set(manifest_shapes(load_manifest("acar_ava_slowfast_r50_hr2o")))  # the official layout
    path = tmp_path / "AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar"
    torch.save({"state_dict": state, "optimizer": {}, "scheduler": {}, "epoch": 6}, path)
    return path


def test_acar_model_zoo_weights_alone_give_ava_outputs(tmp_path, narrow_acar_r50, caplog):
    """`--weights <ACAR-Net file>` and no config: preset inferred from the keys; AVA class ids and names."""
    import logging

    from stad.apps import demo
    from stad.data.formats.labelmap import read_labelmap

    video = write_test_video(tmp_path / "my.mp4", width=96, height=72, fps=30, seconds=2.0)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("my,0,0.05,0.20,0.30,0.90,,0.9\nmy,1,0.30,0.25,0.45,0.90,,0.8\nmy,1,0.65,0.15,0.85,0.85,,0.7\n")
    out, out_csv = tmp_path / "my_annotated.mp4", tmp_path / "my.csv"
    with caplog.at_level(logging.INFO):
        code = demo.main(["--video", str(video), "--weights", str(narrow_acar_r50), "--boxes", str(boxes),
                          "--out", str(out), "--csv", str(out_csv), "--no-progress"])
    assert code == 0
    assert "acar_slowfast_r50_ava, inferred from the key layout" in caplog.text
    assert "6 slow_res3 blocks (R50)" in caplog.text and "clips sampled at 30 fps (the preset's" in caplog.text
    assert probe(out) == (60, 96, 72, 30.0)
    rows = list(csv.reader(out_csv.open()))
    assert len(rows) == 3 * 60 and tuple(sorted({int(r[6]) for r in rows})) == AVA_IDS
    scores = np.array([float(r[7]) for r in rows]).reshape(3, 60)
    np.testing.assert_allclose(scores[:, :13].sum(1), 1.0, atol=0.02)  # pose softmax over AVA's 13 poses (%.3f)
    labels = read_labelmap(demo.csv_labelmap_path(out_csv))
    assert labels.ids == AVA_IDS and labels.names[0] == "bend/bow (at the waist)" and len(labels) == 60


def test_config_disagreeing_with_acar_weights_is_a_clear_error(tmp_path, narrow_acar_r50, capsys):
    """The bug the presets guard against: R50 weights with the R101 normalisation, through the demo."""
    from stad.apps import demo
    from stad.config import config_to_dict, load_config

    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "ava" / "eval_SLOWFAST_R50_ACAR_HR2O.yaml",
                         ["val.augmentation.spatial=[{type: Scale, kwargs: {resize: 64}}, {type: ToTensor, kwargs: "
                          "{norm_value: 1.}}, {type: Normalize, kwargs: {mean: [110.63666788, 103.16065604, "
                          "96.29023126], std: [38.7568578, 37.88248729, 40.02898126]}}]",
                          "val.augmentation.temporal.kwargs.size=16"])
    import yaml

    path = tmp_path / "r101_norm.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    video = write_test_video(tmp_path / "my.mp4", width=96, height=72, fps=30, seconds=1.0)
    code = demo.main(["--video", str(video), "--config", str(path), "--checkpoint", str(narrow_acar_r50),
                      "--boxes", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o.mp4"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "config error" in err and "disagrees with the weights" in err
    assert "ToTensor.norm_value: config 1.0 vs weights 255.0" in err and "Normalize.mean" in err


def test_our_checkpoint_alone_and_detector_defaults_from_its_sidecar(tmp_path):
    """`--weights ckpt_E.pth` of main.py: the preset stored in it; the shipped detector's sidecar settings."""
    import torch

    from stad.config import config_to_dict, load_config
    from stad.engine import builders
    from stad.engine.checkpoint import save_checkpoint

    config_path, _ = tiny_model(tmp_path)
    config = load_config(config_path)
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "ckpt_1.pth", epoch=1, model=builders.build_model(config),
                              config=config_to_dict(config))
    video = write_test_video(tmp_path / "clip.mp4", width=160, height=120, fps=30, seconds=1.0)
    out_csv = tmp_path / "clip.csv"
    result = run_cli(["-m", "stad.demo", "--video", str(video), "--weights", str(weights), "--detector",
                      str(Path(__file__).resolve().parents[2] / "checkpoints" / "toy_person_yolov8n.pt"),
                      "--runtime", "torch", "--out", str(tmp_path / "o.mp4"), "--csv", str(out_csv), "--no-progress"])
    assert result.returncode == 0, result.stderr
    assert "the preset stored in" in result.stderr
    assert "imgsz 320 (toy_person_yolov8n.yaml: imgsz), conf 0.4 (toy_person_yolov8n.yaml: demo_conf)" in result.stderr
    assert probe(tmp_path / "o.mp4")[0] == 30
    from stad.data.formats.labelmap import read_labelmap
    from stad.data.toy.actions import toy_labelmap

    assert read_labelmap(out_csv.with_suffix(".labelmap.pbtxt")).names == toy_labelmap().names


def test_missing_or_unknown_weights_are_clear_errors(tmp_path):
    import torch

    video = write_test_video(tmp_path / "clip.mp4", seconds=0.4)
    result = run_cli(["-m", "stad.demo", "--video", str(video), "--weights", str(tmp_path / "nope.pth"),
                      "--out", "o.mp4"], cwd=tmp_path)
    assert result.returncode == 2 and "nope.pth: weights not found" in result.stderr
    assert "Traceback" not in result.stderr
    odd = tmp_path / "odd.pth"
    torch.save({"state_dict": {"encoder.conv.weight": torch.zeros(2, 2)}}, odd)
    result = run_cli(["-m", "stad.demo", "--video", str(video), "--weights", str(odd), "--out", "o.mp4"],
                     cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown weight layout" in result.stderr
    for name in ("acar_slowfast_r50_ava", "acar_slowfast_r101_ava", "linear_slowfast_r50_ava", "cw_vitsf_acar"):
        assert name in result.stderr
    result = run_cli(["-m", "stad.demo", "--video", str(video), "--config", "x.yaml", "--out", "o.mp4"], cwd=tmp_path)
    assert result.returncode == 2 and "--config needs --weights" in result.stderr
