"""Golden values produced by the official evaluators run as oracles.

How the fixtures were made (see tests/fixtures/evaluation/README.md): inputs by
``make_inputs.py``; ``expected.json`` by running, unmodified, ACAR-Net's ``calc_mAP.py``
(``acar_ties``) and ActivityNet's ``get_ava_performance.py`` (``activitynet_label_dialect``) with
numpy 2.4.6, wrapping their ``read_csv`` so that the hard-coded detection capacity 50 is replaced
by each capacity in turn (capacity 0 = unlimited).
"""
import json
import math
from pathlib import Path

import pytest

from stad.evaluation import evaluate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "evaluation"
CASES = {
    "acar_ties": dict(exclusions="excluded.csv", ignore_keys_without_gt=False),
    "activitynet_label_dialect": dict(exclusions=None, ignore_keys_without_gt=True),
}


def _official(case: str) -> dict[int, dict[str, float]]:
    raw = json.loads((FIXTURES / case / "expected.json").read_text())
    return {int(cap): entry["metrics"] for cap, entry in raw.items()}


def _same(expected, actual) -> bool:
    if expected is None:
        return math.isnan(actual)
    return abs(expected - actual) <= 1e-12


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_capacity_matches_the_official_evaluator(case):
    expected = _official(case)
    folder = FIXTURES / case
    options = CASES[case]
    exclusions = folder / options["exclusions"] if options["exclusions"] else None
    result = evaluate(folder / "labelmap.pbtxt", folder / "gt.csv", folder / "det.csv", exclusions,
                      capacities=sorted(expected), ignore_keys_without_gt=options["ignore_keys_without_gt"])
    assert sorted(result.results) == sorted(expected)
    for capacity, metrics in expected.items():
        got = result.results[capacity]
        assert _same(metrics["PascalBoxes_Precision/mAP@0.5IOU"], got.mAP), capacity
        for class_id, name in zip(result.labelmap.ids, result.labelmap.names):
            official = metrics[f"PascalBoxes_PerformanceByCategory/AP@0.5IOU/{name}"]
            assert _same(official, got.per_class[class_id]), (capacity, class_id)


def test_golden_cases_exercise_ties_and_capacity():
    expected = _official("acar_ties")
    maps = {cap: m["PascalBoxes_Precision/mAP@0.5IOU"] for cap, m in expected.items()}
    assert len(set(maps.values())) > 3, "capacity must change the result in the golden case"
    # class 8 has detections but no GT: NaN, not 0
    assert expected[50]["PascalBoxes_PerformanceByCategory/AP@0.5IOU/action 8"] is None
