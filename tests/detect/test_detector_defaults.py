"""Detector inference defaults travel with the weights: sidecar YAML > ultralytics train_args > built-ins;
an explicit command-line value always wins, and every value is logged with its source."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from detect import proposals
from detect.detector import configure_offline, detector_settings, read_sidecar, sidecar_path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "checkpoints" / "toy_person_yolov8n.pt"
DEMO_DEFAULTS = {"imgsz": 640, "conf": 0.4, "iou": 0.6}


def with_train_args(src: Path, dst: Path, **train_args) -> Path:
    """A copy of an ultralytics checkpoint whose ``train_args`` are set (as ultralytics' trainer saves them)."""
    configure_offline()
    import torch

    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    ckpt["train_args"] = dict(train_args)
    torch.save(ckpt, dst)
    return dst


def test_sidecar_then_defaults_and_the_command_line_wins(tmp_path):
    weights = tmp_path / "person.pt"
    weights.write_bytes(b"not read when the sidecar has imgsz")
    sidecar_path(weights).write_text("imgsz: 320\nconf: 0.05\ndemo_conf: 0.3\n")
    settings = detector_settings(weights, {}, proposals.DEFAULTS)
    assert settings.values == {"imgsz": 320, "conf": 0.05, "iou": 0.7, "max_det": 100}
    assert settings.sources == {"imgsz": "person.yaml: imgsz", "conf": "person.yaml: conf", "iou": "default",
                                "max_det": "default"}
    explicit = detector_settings(weights, {"imgsz": 640, "conf": None}, proposals.DEFAULTS)
    assert (explicit["imgsz"], explicit.sources["imgsz"], explicit["conf"]) == (640, "command line", 0.05)
    demo = detector_settings(weights, {}, DEMO_DEFAULTS, sidecar_keys={"conf": "demo_conf"})
    assert demo.values == {"imgsz": 320, "conf": 0.3, "iou": 0.6}
    assert demo.describe() == "imgsz 320 (person.yaml: imgsz), conf 0.3 (person.yaml: demo_conf), iou 0.6 (default)"


def test_bad_sidecars_are_clear_errors(tmp_path):
    weights = tmp_path / "person.pt"
    sidecar_path(weights).write_text("imgsize: 320\n")
    with pytest.raises(ValueError, match=r"person.yaml: unknown key 'imgsize'; known: imgsz, conf"):
        read_sidecar(weights)
    sidecar_path(weights).write_text("conf: low\n")
    with pytest.raises(ValueError, match="conf: expected float, got 'low'"):
        read_sidecar(weights)


def test_imgsz_from_ultralytics_train_args(tmp_path, single_class_weights):
    weights = with_train_args(single_class_weights, tmp_path / "trained.pt", imgsz=192, conf=None, iou=0.7)
    settings = detector_settings(weights, {}, proposals.DEFAULTS)
    assert (settings["imgsz"], settings.sources["imgsz"]) == (192, "train_args of trained.pt")
    assert (settings["conf"], settings["iou"]) == (0.1, 0.7)  # train_args' conf/iou are validation settings
    assert detector_settings(weights, {"imgsz": 256}, proposals.DEFAULTS)["imgsz"] == 256
    # weights without train_args (a model built from a yaml): the built-in size
    assert detector_settings(single_class_weights, {}, proposals.DEFAULTS).sources["imgsz"] == "default"


def test_shipped_toy_detector_defaults():
    proposals_settings = detector_settings(SHIPPED, {}, proposals.DEFAULTS)
    assert (proposals_settings["imgsz"], proposals_settings["conf"]) == (320, 0.05)
    assert proposals_settings.sources["conf"] == "toy_person_yolov8n.yaml: conf"
    demo = detector_settings(SHIPPED, {}, DEMO_DEFAULTS, sidecar_keys={"conf": "demo_conf"})
    assert (demo["imgsz"], demo["conf"]) == (320, 0.4)


def test_proposals_cli_uses_and_logs_the_weights_defaults(tmp_path, single_class_weights, make_frames, caplog):
    weights = shutil.copy(single_class_weights, tmp_path / "person.pt")
    sidecar_path(weights).write_text("imgsz: 96\nconf: 0.2\n")
    make_frames(tmp_path / "frames", "v", [31, 61])
    keys = tmp_path / "keys.csv"
    keys.write_text("v,1\nv,2\n")
    argv = ["--weights", str(weights), "--source", str(tmp_path / "frames"), "--annotations", str(keys),
            "--dataset", "toy", "--out", str(tmp_path / "p.pkl"), "--runtime", "torch", "--streams", "1",
            "--no-progress"]
    with caplog.at_level(logging.INFO, logger="detect.proposals"):
        assert proposals.main(argv) == 0
    assert "imgsz 96 (person.yaml: imgsz), conf 0.2 (person.yaml: conf), iou 0.7 (default)" in caplog.text
    assert "imgsz=96, conf=0.2" in caplog.text  # the detector really runs with them
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="detect.proposals"):
        assert proposals.main(argv + ["--imgsz", "128", "--conf", "0.3"]) == 0
    assert "imgsz 128 (command line), conf 0.3 (command line)" in caplog.text and "imgsz=128" in caplog.text
