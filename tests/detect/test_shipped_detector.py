"""The shipped toy detector on freshly generated toy-actors keyframes (end to end, real weights)."""
from __future__ import annotations

from pathlib import Path

import pytest

from detect import proposals
from detect.evaluate import evaluate, read_gt_boxes, read_proposals

WEIGHTS = Path(__file__).resolve().parents[2] / "checkpoints" / "toy_person_yolov8n.pt"


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="checkpoints/toy_person_yolov8n.pt not present")
def test_shipped_detector_finds_toy_actors(tmp_path):
    from stad.data.toy.generate import generate

    generate(tmp_path / "toy", seed=0, size="tiny", workers=1, write_video=False, progress=False)
    out = tmp_path / "val.pkl"
    assert proposals.main(["--weights", str(WEIGHTS), "--source", str(tmp_path / "toy" / "frames"),
                           "--annotations", str(tmp_path / "toy" / "val.csv"), "--dataset", "toy",
                           "--imgsz", "320", "--conf", "0.05", "--out", str(out), "--no-progress",
                           "--export-cache", str(tmp_path / "exports")]) == 0  # not beside the shipped weights
    gt = read_gt_boxes(tmp_path / "toy" / "val.csv")
    report = evaluate(read_proposals(out), gt)
    assert report.keyframes == len(gt) and report.gt_boxes > 0
    assert report.ap50 > 0.7, report.format()
    assert report.recall_upper_bound > 0.8, report.format()
