"""PersonDetector: loading real ultralytics checkpoints, person-class lookup, batched == reference."""
from __future__ import annotations

import numpy as np
import pytest

from detect.detector import PersonDetector, resolve_person_class


@pytest.mark.parametrize("names, expected", [
    ({0: "person", 1: "bicycle", 2: "car"}, 0),           # COCO
    ({0: "car", 1: "Person"}, 1),                          # person anywhere, any case
    ({0: "pedestrian"}, 0),                                # a fine-tuned detector's synonym
    ({0: "actor"}, 0),                                     # any single-class detector
    (["dog", "person"], 1),                                # list form
])
def test_resolve_person_class_from_names(names, expected):
    assert resolve_person_class(names) == expected


def test_resolve_person_class_errors_and_overrides():
    with pytest.raises(ValueError, match="cannot tell which class"):
        resolve_person_class({0: "car", 1: "dog"})
    with pytest.raises(ValueError, match="no class names"):
        resolve_person_class({})
    assert resolve_person_class({0: "car", 1: "dog"}, requested="dog") == 1
    assert resolve_person_class({0: "car", 1: "dog"}, requested=0) == 0
    with pytest.raises(ValueError, match="not one of"):
        resolve_person_class({0: "car"}, requested="person")
    with pytest.raises(ValueError, match="not one of"):
        resolve_person_class({0: "car"}, requested=3)


def test_person_class_read_from_saved_weights(coco_weights, single_class_weights):
    coco = PersonDetector(coco_weights, imgsz=160)
    assert coco.names[0] == "person" and len(coco.names) == 80 and coco.person_index == 0
    single = PersonDetector(single_class_weights, imgsz=160)
    assert single.names == {0: "pedestrian"} and single.person_index == 0


def test_batched_path_matches_one_call_per_image(coco_weights, frame_image):
    detector = PersonDetector(coco_weights, imgsz=160, conf=0.5)
    images = [frame_image(i) for i in range(3)] + [frame_image(5)[:100, :150].copy()]  # 2 letterbox shapes
    batched = detector.detect(images)
    total = 0
    for image, fast in zip(images, batched):
        ref = detector.detect_reference(image)
        assert len(fast) == len(ref)
        np.testing.assert_allclose(fast.xyxy, ref.xyxy, atol=1e-5)
        np.testing.assert_allclose(fast.scores, ref.scores, atol=1e-5)
        assert np.all(np.diff(fast.scores) <= 0)
        assert fast.is_valid().all() and (fast.area() > 0).all()
        total += len(fast)
    assert total > 0, "the fixture detector should produce some boxes"


def test_detector_bad_inputs(tmp_path, coco_weights):
    with pytest.raises(FileNotFoundError, match="not found"):
        PersonDetector(tmp_path / "missing.pt")
    bad = tmp_path / "weights.onnx"
    bad.write_bytes(b"x")
    with pytest.raises(ValueError, match=".pt"):
        PersonDetector(bad)
    with pytest.raises(ValueError, match="conf"):
        PersonDetector(coco_weights, conf=1.5)
    detector = PersonDetector(coco_weights, imgsz=160)
    with pytest.raises(ValueError, match="BGR image"):
        detector.letterbox(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="shapes"):
        detector.detect_letterboxed([detector.letterbox(np.zeros((10, 10, 3), np.uint8))], [])
    assert detector.detect([]) == []
