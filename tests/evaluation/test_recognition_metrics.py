"""Recognition metrics against values computed by hand (no scikit-learn)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from stad.evaluation import recognition_metrics as m

# 6 videos, 3 classes. Predictions (argmax): 0, 1, 1, 2, 0, 2; labels: 0, 0, 1, 2, 2, 2.
SCORES = np.array([[0.7, 0.2, 0.1],
                   [0.3, 0.6, 0.1],   # label 0, second best is 0 -> top-2 hit
                   [0.1, 0.8, 0.1],
                   [0.2, 0.1, 0.7],
                   [0.5, 0.1, 0.4],   # label 2, second best
                   [0.1, 0.3, 0.6]])
LABELS = np.array([0, 0, 1, 2, 2, 2])


def test_topk_and_confusion_by_hand():
    assert m.top_k_accuracy(SCORES, LABELS, 1) == pytest.approx(4 / 6)
    assert m.top_k_accuracy(SCORES, LABELS, 2) == pytest.approx(6 / 6)
    confusion = m.confusion_matrix(LABELS, SCORES.argmax(1), 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_per_class_mean_class_and_f1_by_hand():
    found = m.single_label_metrics(SCORES, LABELS)
    # recall per class: 1/2, 1/1, 2/3
    assert found["per_class_accuracy"] == pytest.approx([0.5, 1.0, 2 / 3])
    assert found["mean_class_accuracy"] == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)
    # F1 = 2TP / (2TP + FP + FN): class 0: TP1 FP1 FN1 -> 0.5; class 1: TP1 FP1 FN0 -> 2/3; class 2: TP2 FP0 FN1 -> 0.8
    assert found["f1_macro"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert found["top5"] == 1.0 and found["num_videos"] == 6


def test_absent_class_is_none_and_ties_take_the_lower_index():
    scores = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    found = m.single_label_metrics(scores, np.array([0, 2]))
    assert found["top1"] == 1.0  # the tie 0.5/0.5 predicts class 0
    assert found["per_class_accuracy"] == [1.0, None, 1.0]
    assert found["mean_class_accuracy"] == 1.0
    assert found["f1_macro"] == 1.0  # class 1 is neither a label nor a prediction: not averaged


def test_average_precision_by_hand_with_ties():
    # descending: 0.9(+) 0.8(-) 0.7(+) 0.1(-): AP = 1/2 * 1 + 1/2 * 2/3
    assert m.average_precision(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    # a tie at 0.5 between a positive and a negative counts as one threshold: precision 1/2 at recall 1
    assert m.average_precision(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)
    assert np.isnan(m.average_precision(np.array([0.3]), np.array([0])))


def test_multi_label_map_skips_classes_without_positives():
    scores = np.array([[0.9, 0.1, 0.2], [0.2, 0.8, 0.3], [0.6, 0.7, 0.1]])
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    found = m.multi_label_metrics(scores, labels)
    # class 0: 0.9(+) 0.6(+) -> 1; class 1: 0.8(+) 0.7(+) -> 1; class 2: no positives
    assert found["mAP"] == pytest.approx(1.0) and found["per_class_ap"][2] is None


def test_confusion_png_is_written(tmp_path):
    path = m.confusion_png(np.array([[3, 1], [0, 2]]), ["walk", "run"], tmp_path / "c.png", "test")
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 80 and img.shape[1] > 80
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically, nothing left behind
