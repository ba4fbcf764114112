"""detect.evaluate on a hand-made case whose numbers are worked out below."""
from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest

from detect.evaluate import average_precision, evaluate, main, match_keyframe, read_gt_boxes, read_proposals
from stad.structures import Boxes

GT_CSV = (
    # keyframe A: two persons; person 1 has two actions (two rows, one box)
    "vidA,0902,0.100,0.100,0.400,0.900,12,1\n"
    "vidA,0902,0.100,0.100,0.400,0.900,80,1\n"
    "vidA,0902,0.600,0.100,0.900,0.900,12,2\n"
    # keyframe B: one person
    "vidA,0903,0.200,0.200,0.500,0.800,17,1\n"
)
A, B, C = ("vidA", 902), ("vidA", 903), ("vidA", 904)
PROPOSALS = {
    # A: a hit on GT1 (0.9), a duplicate of GT1 (0.8, FP), a miss (0.7, FP); GT2 never covered
    A: Boxes([[0.10, 0.10, 0.40, 0.90], [0.11, 0.10, 0.41, 0.90], [0.45, 0.0, 0.55, 0.2]], [0.9, 0.8, 0.7]),
    # B: a hit (0.6): IoU = 0.3*0.54 / (0.3*0.6) = 0.9
    B: Boxes([[0.20, 0.20, 0.50, 0.74]], [0.6]),
    # C: a keyframe without GT (e.g. an empty frame): its box is a false positive
    C: Boxes([[0.0, 0.0, 0.5, 0.5]], [0.95]),
}


def test_average_precision_hand_computed():
    # ranked: .95 FP, .9 TP, .8 FP, .7 FP, .6 TP over 3 GT boxes.
    # precision envelope: 0.5 up to recall 1/3, 0.4 up to 2/3 -> AP = (0.5 + 0.4) / 3 = 0.3
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.6])
    is_tp = np.array([False, True, False, False, True])
    assert average_precision(scores, is_tp, 3) == pytest.approx(0.3)
    assert average_precision(scores[1:], is_tp[1:], 3) == pytest.approx(0.5)   # without C: 1/3 + 0.5/3
    assert average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0
    assert math.isnan(average_precision(scores, is_tp, 0))


def test_duplicate_is_a_false_positive():
    gt = Boxes([[0.1, 0.1, 0.4, 0.9]])
    dets = Boxes([[0.11, 0.1, 0.41, 0.9], [0.1, 0.1, 0.4, 0.9]], [0.8, 0.9])
    assert match_keyframe(dets, gt).tolist() == [False, True]   # the higher score takes the GT box


def _files(tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_text(GT_CSV)
    elements = [{"video": v, "time": t, "start_frame": 1, "n_frames": 91, "mid_frame": 46,
                 "format_str": "image_%06d.jpg", "frame_rate": 30.0,
                 "labels": [{"bounding_box": [float(x) for x in box], "label": [], "person_id": [-1],
                             "score": float(s)} for box, s in zip(b.xyxy, b.scores)]}
                for (v, t), b in sorted(PROPOSALS.items())]
    pkl = tmp_path / "proposals.pkl"
    pkl.write_bytes(pickle.dumps([elements, []]))
    return gt, pkl


def test_report_numbers(tmp_path):
    gt_path, pkl = _files(tmp_path)
    gt = read_gt_boxes(gt_path)
    assert {k: len(v) for k, v in gt.items()} == {A: 2, B: 1}      # duplicate action rows -> one box
    found = read_proposals(pkl)
    assert set(found) == {A, B, C}

    report = evaluate(found, gt)
    assert (report.keyframes, report.gt_boxes, report.proposals) == (3, 3, 5)
    assert report.ap50 == pytest.approx(0.3)
    assert report.uncovered == 1 and report.recall_upper_bound == pytest.approx(2 / 3)
    # score >= 0.7 keeps only A (and C) boxes: GT1 covered, B lost
    assert report.recall_at_score[0.5] == pytest.approx(2 / 3)
    assert report.recall_at_score[0.7] == pytest.approx(1 / 3)
    assert report.recall_at_score[0.9] == pytest.approx(1 / 3)
    assert report.recall_at_score[0.85] == pytest.approx(1 / 3)
    assert report.proposals_per_keyframe_at_score[0.7] == pytest.approx(4 / 3)   # A: 3, C: 1
    assert report.recall_at_topk["1"] == pytest.approx(2 / 3) and report.recall_at_topk["all"] == pytest.approx(2 / 3)
    assert report.proposal_keyframes_without_gt == 1 and report.gt_keyframes_without_proposals == 0

    only_gt = evaluate(found, gt, gt_keyframes_only=True)
    assert only_gt.ap50 == pytest.approx(0.5) and only_gt.keyframes == 2
    excluded = evaluate(found, gt, excluded={B})
    assert excluded.gt_boxes == 2 and excluded.uncovered == 1


def test_cli_with_csv_proposals_and_json(tmp_path, capsys):
    gt_path, _ = _files(tmp_path)
    csv = tmp_path / "proposals.csv"
    csv.write_text("".join(f"{v},{t:04d},{x1:.4f},{y1:.4f},{x2:.4f},{y2:.4f},,{s:.4f}\n"
                           for (v, t), b in sorted(PROPOSALS.items()) for (x1, y1, x2, y2), s in zip(b.xyxy, b.scores)))
    out = tmp_path / "report.json"
    assert main(["--proposals", str(csv), "--gt", str(gt_path), "--json", str(out)]) == 0
    assert "person AP@0.5: 30.00" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["uncovered"] == 1 and report["ap50"] == pytest.approx(0.3)


def test_bad_inputs(tmp_path):
    gt_path, _ = _files(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        read_proposals(tmp_path / "missing.pkl")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps([[{"video": "v"}], []]))
    with pytest.raises(ValueError, match="missing key"):
        read_proposals(bad)
    bad_gt = tmp_path / "bad_gt.csv"
    bad_gt.write_text("vidA,0902,0.1,0.1,0.4\n")
    with pytest.raises(ValueError, match="bad_gt.csv: line 1"):
        read_gt_boxes(bad_gt)


def test_person_ap_breaks_score_ties_as_the_official_evaluator():
    """One AP implementation: tied scores rank as numpy's argsort reversed (later detection first)."""
    from stad.evaluation.ava_map import average_precision as frame_map_ap

    assert average_precision is frame_map_ap
    scores, is_tp = np.array([0.5, 0.5]), np.array([True, False])
    assert average_precision(scores, is_tp, 1) == 0.5  # the false positive ranks first
    assert average_precision(scores[::-1].copy(), is_tp[::-1].copy(), 1) == 1.0
