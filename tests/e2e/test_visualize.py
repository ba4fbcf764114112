"""Drawing, overlay timing, the MP4 writer and the IoU tracker."""
from __future__ import annotations

import numpy as np
import pytest

from stad.structures import Boxes
from stad.apps.tracking import IouTracker, greedy_match
from stad.apps.visualize import Mp4Writer, Overlay, draw_overlay, overlay_at, top_actions
from tests.e2e.demo_testutils import probe


def _boxes(xyxy, ids):
    return Boxes(np.array(xyxy, np.float32), None, np.array(ids, np.int64))


def test_top_actions_threshold_and_k():
    scores = np.array([[0.9, 0.1, 0.5, 0.4], [0.05, 0.2, 0.1, 0.0]])
    out = top_actions(scores, ["a", "b", "c", "d"], k=2, threshold=0.3)
    assert out == ((("a", pytest.approx(0.9)), ("c", pytest.approx(0.5))), (("b", pytest.approx(0.2)),))
    assert top_actions(np.zeros((0, 4)), ["a", "b", "c", "d"]) == ()


def test_overlay_interpolates_same_person_and_labels_from_nearer_keyframe():
    a = Overlay(0.0, _boxes([[0.0, 0.0, 0.2, 0.4], [0.5, 0.5, 0.6, 0.6]], [1, 2]), ((("walk", 0.9),), (("sit", 0.8),)))
    b = Overlay(1.0, _boxes([[0.4, 0.0, 0.6, 0.4]], [1]), ((("run", 0.7),),))
    mid = overlay_at([a, b], 0.25)
    assert np.allclose(mid.boxes.xyxy[0], [0.1, 0.0, 0.3, 0.4])
    assert mid.boxes.ids.tolist() == [1, 2] and mid.actions[0][0][0] == "walk"  # nearer keyframe: a
    late = overlay_at([a, b], 0.75)
    assert late.boxes.ids.tolist() == [1] and np.allclose(late.boxes.xyxy[0], [0.3, 0.0, 0.5, 0.4])
    assert late.actions[0][0][0] == "run"
    assert overlay_at([a, b], 1.0) is b
    assert overlay_at([a, b], 1.8) is None and overlay_at([a, b], 1.7) is b  # held max_gap / 2 = 0.75 s
    assert overlay_at([], 0.0) is None
    assert np.allclose(a.boxes.xyxy[0], [0.0, 0.0, 0.2, 0.4])  # inputs untouched


def test_overlay_needs_one_action_list_per_box():
    with pytest.raises(ValueError, match="2 boxes but 1 action lists"):
        Overlay(0.0, _boxes([[0, 0, 1, 1], [0, 0, 1, 1]], [1, 2]), ((("a", 1.0),),))


def test_draw_overlay_draws_on_a_copy():
    frame = np.full((120, 160, 3), 100, np.uint8)
    overlay = Overlay(0.0, _boxes([[0.25, 0.25, 0.75, 0.9]], [3]), ((("stand", 0.93), ("talk-to", 0.41)),))
    drawn = draw_overlay(frame, overlay, header="clip 0.0s")
    assert (frame == 100).all()
    assert drawn.shape == frame.shape and drawn.dtype == np.uint8
    changed = (drawn != 100).any(axis=2)
    assert changed[int(0.9 * 119), 60]  # bottom edge of the box
    assert not changed[115, 5]  # far from box and labels
    assert (draw_overlay(frame, None) == frame).all()


@pytest.mark.parametrize("size", [(64, 48), (63, 47)])
def test_mp4_writer_frame_count_size_and_atomicity(tmp_path, size):
    width, height = size
    path = tmp_path / "v.mp4"
    with Mp4Writer(path, width, height, 12.5) as writer:
        for i in range(7):
            writer.write(np.full((height, width, 3), i * 30, np.uint8))
    assert probe(path) == (7, width, height, 12.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
    with pytest.raises(ValueError, match="frame is 10x10"):
        with Mp4Writer(tmp_path / "bad.mp4", width, height, 25) as writer:
            writer.write(np.zeros((10, 10, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]  # aborted: nothing left behind


def test_tracker_keeps_ids_through_motion_and_gives_new_ids():
    tracker = IouTracker()
    first = tracker.update(_boxes([[0.1, 0.2, 0.2, 0.6], [0.6, 0.2, 0.7, 0.6]], [-1, -1]))
    assert first.ids.tolist() == [1, 2]
    moved = _boxes([[0.68, 0.2, 0.78, 0.6], [0.16, 0.2, 0.26, 0.6], [0.4, 0.1, 0.45, 0.3]], [-1, -1, -1])
    second = tracker.update(moved)
    assert second.ids.tolist() == [2, 1, 3]
    assert moved.ids.tolist() == [-1, -1, -1]  # input not modified
    # person 3 disappears for one keyframe and comes back: same id (max_age 2)
    tracker.update(_boxes([[0.7, 0.2, 0.8, 0.6], [0.2, 0.2, 0.3, 0.6]], [-1, -1]))
    back = tracker.update(_boxes([[0.4, 0.1, 0.45, 0.3]], [-1]))
    assert back.ids.tolist() == [3]
    assert tracker.update(Boxes.empty()).ids.tolist() == []


def test_greedy_match_prefers_best_pairs():
    iou = np.array([[0.5, 0.6], [0.0, 0.55]])
    assert greedy_match(iou, 0.2) == [(0, 1)]  # row 1's only candidate is taken by the better pair
    assert greedy_match(np.zeros((0, 3)), 0.2) == []
