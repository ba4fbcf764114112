"""`make demo` in miniature: every stage through its real CLI on tiny data, a tiny model, one epoch.

Toy data 'tiny' (2+2 videos of 3 s), a randomly initialised person detector written by
ultralytics itself, 64-px 4-frame clips, one process. Checks each file the pipeline writes.
"""
from __future__ import annotations

import importlib.util
import json
import pickle

import pytest

from stad.apps.demo_pipeline import PROPOSAL_MIN_SCORE
from tests.e2e.demo_testutils import ROOT, TINY_SETS, probe, run_cli

STAGES = ("data", "proposals", "detector_eval", "train_acar", "eval_acar_det", "train_linear", "train_linear_e2e",
          "map_acar_gt", "map_acar_det", "map_linear_gt", "map_linear_e2e_gt", "video", "report")


@pytest.fixture(scope="module")
def detector_weights(tmp_path_factory):
    """The shipped toy detector when present (real boxes), else a random one written by ultralytics."""
    shipped = ROOT / "checkpoints" / "toy_person_yolov8n.pt"
    if shipped.is_file():
        return shipped
    from detect.detector import build_untrained_detector

    return build_untrained_detector(tmp_path_factory.mktemp("det") / "person_random.pt", {0: "person"})


def _kept_boxes(elements, min_score):
    """Boxes the engine scores: score >= min(min_score, best score of the keyframe)."""
    total = 0
    for element in elements:
        scores = [box.get("score", 1.0) for box in element["labels"]]
        total += sum(s >= min(min_score, max(scores)) for s in scores) if scores else 0
    return total


def test_demo_pipeline_end_to_end(tmp_path, detector_weights):
    out = tmp_path / "demo"
    args = ["-m", "stad.demo_pipeline", "--out", str(out), "--size", "tiny", "--nproc", "1",
            "--detector", str(detector_weights), "--linear-e2e"]
    for item in TINY_SETS:
        args += ["--set", item]
    exports = tmp_path / "exports"  # the detector's ONNX export goes here, not beside the shipped weights
    beside_weights = sorted(detector_weights.parent.iterdir())
    result = run_cli(args, timeout=900, extra_env={"STAD_EXPORT_CACHE": str(exports)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(detector_weights.parent.iterdir()) == beside_weights
    if importlib.util.find_spec("openvino") or importlib.util.find_spec("onnxruntime"):  # runtime auto exported
        assert [p.suffix for p in exports.iterdir()] == [".onnx"]

    toy = out / "data" / "toy"
    for rel in ("toy_meta.json", "train.csv", "val.csv", "labelmap.pbtxt", "annotations/train.pkl",
                "annotations/val.pkl", "videos/toy_val_000.mp4"):
        assert (toy / rel).is_file(), rel
    for stage in STAGES:  # a log per stage, each starting with its command
        assert (out / "logs" / f"{stage}.log").read_text().startswith("$ python "), stage

    with open(out / "proposals" / "val_proposals.pkl", "rb") as handle:
        elements, classes = pickle.load(handle)
    val_keys = {tuple(line.split(",")[:2]) for line in (toy / "val.csv").read_text().splitlines()}
    assert {(e["video"], f"{e['time']:04d}") for e in elements} == val_keys
    assert [c["id"] for c in classes] == list(range(1, 12))
    assert (out / "proposals" / "val_proposals.csv").is_file()
    assert isinstance(json.loads((out / "eval" / "detector.json").read_text()), dict)

    gt_boxes = len({tuple(line.split(",")[:6]) for line in (toy / "val.csv").read_text().splitlines()})
    expected_rows = {"acar": gt_boxes * 11, "linear": gt_boxes * 11, "linear_e2e": gt_boxes * 11,
                     "acar_det": _kept_boxes(elements, PROPOSAL_MIN_SCORE) * 11}
    for run, expected in expected_rows.items():  # every scored box gets a row per class
        predictions = list((out / run).glob("predict_epoch*.csv"))
        assert len(predictions) == 1, run
        rows = predictions[0].read_text().splitlines()
        assert len(rows) == expected and all(len(r.split(",")) == 8 for r in rows), run
    assert (out / "acar" / "checkpoints" / "last.pth").is_file()
    assert (out / "acar" / "config.yaml").is_file()

    report = json.loads((out / "report.json").read_text())
    assert set(report["mAP"]) == {"acar_gt", "acar_det", "linear_gt", "linear_e2e_gt"}
    for run, m in report["mAP"].items():
        assert 0.0 <= m["official"] <= 1.0, run
        assert set(m["sweep"]) >= {"0", "1", "50"}
    assert [t["met"] is not None for t in report["targets"]] == [True, True, True, True]
    inter = report["interaction"]  # both linear heads compared with the ACAR head on the interaction classes
    assert set(inter) == {"classes", "acar_gt", "linear_gt", "acar_minus_linear_gt", "linear_e2e_gt",
                          "acar_minus_linear_e2e_gt"}
    assert inter["acar_minus_linear_gt"] == pytest.approx(inter["acar_gt"] - inter["linear_gt"], abs=0.011)
    e2e_config = (out / "linear_e2e" / "config.yaml").read_text()
    assert "type: linear" in e2e_config and "learnable: true" in e2e_config.lower()
    assert {row["group"] for row in report["per_class"]} == {"pose", "motion", "interaction"}
    assert set(report["timings"]) == set(STAGES) - {"report"}
    for name in ("acar_gt", "acar_det", "linear_gt", "linear_e2e_gt"):
        assert (out / "eval" / f"{name}.json").is_file() and (out / "eval" / f"{name}.png").is_file()
    assert "Targets:" in (out / "report.md").read_text() and "- linear probe: " in (out / "report.md").read_text()
    assert (out / "report.png").stat().st_size > 1000

    video = out / "demo_video.mp4"
    frames, width, height, fps = probe(video)
    assert (frames, width, height, fps) == (90, 320, 240, 30.0)  # a 3 s tiny toy video, unchanged geometry
    assert (out / "demo_video.csv").is_file() and (out / "demo_frame.png").is_file()
    assert "Total time:" in result.stdout and str(video) in result.stdout
