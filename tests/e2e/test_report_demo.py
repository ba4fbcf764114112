"""The demo report from hand-made evaluator outputs: interaction-class comparison and targets."""
from __future__ import annotations

import json

import pytest

from stad.data.toy.actions import CLASSES
from stad.apps.report_demo import build_report, format_markdown

INTERACTION_IDS = (8, 9, 10, 11)


def _eval_json(per_class: dict[int, float]) -> dict:
    mean = sum(per_class.values()) / len(per_class)
    capacity = {"mAP": mean, "per_class": {str(k): v for k, v in per_class.items()}}
    return {"classes": [{"id": i, "name": n} for i, n, _ in CLASSES], "capacities": {"50": capacity, "0": capacity},
            "best_capacity": 50, "best_mAP": mean}


def _write_run(tmp_path, runs: dict[str, float]) -> None:
    """One evaluator JSON per run: AP 0.9 on pose/motion classes, the given AP on the interactions."""
    maps = {}
    for run, inter in runs.items():
        maps[run] = tmp_path / "eval" / f"{run}.json"
        maps[run].parent.mkdir(exist_ok=True)
        aps = {i: (inter if i in INTERACTION_IDS else 0.9) for i, _, _ in CLASSES}
        maps[run].write_text(json.dumps(_eval_json(aps)))
    meta = {"timings": {"train_acar": 1.0}, "skipped": {}, "commands": {}, "fast": False, "video": "v.mp4",
            "detector": None, "maps": {k: str(v) for k, v in maps.items()}}
    (tmp_path / "pipeline.json").write_text(json.dumps(meta))


def test_interaction_comparison_states_both_heads_and_the_difference(tmp_path):
    _write_run(tmp_path, {"acar_gt": 0.85, "linear_gt": 0.6, "linear_e2e_gt": 0.8})
    report = build_report(tmp_path)
    inter = report["interaction"]
    assert inter["classes"] == ["talk-to", "hand-over", "push", "follow"]
    assert inter["acar_gt"] == pytest.approx(85.0) and inter["linear_gt"] == pytest.approx(60.0)
    assert inter["acar_minus_linear_gt"] == pytest.approx(25.0)
    assert inter["acar_minus_linear_e2e_gt"] == pytest.approx(5.0)
    gains = [t for t in report["targets"] if t.get("unit") == "points"]
    assert [t["met"] for t in gains] == [True, False]  # probe beaten by 25, end-to-end only by 5
    text = format_markdown(report)
    assert "- ACAR head: 85.0" in text and "- linear probe: 60.0 (ACAR ahead by +25.0 AP points" in text
    assert "linear head trained end to end: 80.0 (ACAR ahead by +5.0" in text
    assert "| 8 | talk-to | interaction | 85.0 | 60.0 | 80.0 |" in text


def test_without_linear_runs_there_is_no_gain_target(tmp_path):
    _write_run(tmp_path, {"acar_gt": 0.85})
    report = build_report(tmp_path)
    assert report["interaction"] == {"classes": ["talk-to", "hand-over", "push", "follow"], "acar_gt": 85.0}
    assert not [t for t in report["targets"] if t.get("unit") == "points"]
    assert report["targets_met"] is False  # the detector-box target was not measured
