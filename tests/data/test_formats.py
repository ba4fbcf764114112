"""AVA CSVs, dense proposals, ACAR pickle schema: readers, writers, round trips, error messages."""
import pickle
import subprocess
import sys

import numpy as np
import pytest

from stad.data.formats import acar_pkl, ava
from stad.data.formats.conventions import AVA, TOY, FrameConvention
from stad.data.formats.errors import FormatError
from stad.structures import Boxes, Keyframe, LabelMap

LABELMAP = LabelMap((1, 12, 80), ("bend", "stand", "watch"))
GT = """-5KQ66BBWC4,0902,0.104,0.213,0.388,0.957,12,3
-5KQ66BBWC4,902,0.104,0.213,0.388,0.957,80,3
-5KQ66BBWC4,0902,0.520,0.100,0.790,0.990,1,5
a_b,0903,0.520,0.100,0.790,0.990,12,5
"""


def test_read_gt_groups_boxes_and_labels(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text(GT)
    kfs = ava.read_gt_csv(path, LABELMAP, AVA)
    assert [kf.key for kf in kfs] == [("-5KQ66BBWC4", 902), ("a_b", 903)]
    first = kfs[0]
    assert first.labels == ((1, 2), (0,)) and first.boxes.ids.tolist() == [3, 5]
    np.testing.assert_allclose(first.boxes.xyxy[0], [0.104, 0.213, 0.388, 0.957], rtol=1e-6)
    assert (first.mid_frame, first.start_frame, first.n_frames) == (61, 16, 91)
    assert first.format_str == "-5KQ66BBWC4_%06d.jpg" and first.frame_rate == 30.0


def test_gt_round_trip_is_lossless(tmp_path):
    rng = np.random.default_rng(0)
    xy = np.sort(rng.random((5, 2, 2)), axis=1).reshape(5, 4)[:, [0, 2, 1, 3]].astype(np.float32)
    kfs = [Keyframe("vid", 1, Boxes(xy[:3], None, [0, 1, 2]), ((0,), (1, 2), (2,)), 31, 1, 76, "vid_%06d.jpg"),
           Keyframe("vid", 2, Boxes(xy[3:], None, [7, 8]), ((0, 1), (1,)), 61, 16, 91, "vid_%06d.jpg")]
    path = tmp_path / "gt.csv"
    assert ava.write_gt_csv(path, kfs, LABELMAP) == 7
    back = ava.read_gt_csv(path, LABELMAP, TOY, num_frames={"vid": 100})
    for a, b in zip(kfs, back):
        assert a.key == b.key and a.labels == b.labels
        assert np.array_equal(a.boxes.xyxy, b.boxes.xyxy) and np.array_equal(a.boxes.ids, b.boxes.ids)
    assert back[0].n_frames == 76 and back[0].start_frame == 1  # clamped window from the convention
    three = tmp_path / "three.csv"
    ava.write_gt_csv(three, kfs, LABELMAP, decimals=3)
    assert all(len(f.split(".")[1]) == 3 for f in three.read_text().splitlines()[0].split(",")[2:6])


@pytest.mark.parametrize("row, field, message", [
    ("v,0902,0.1,0.2,0.3,0.4,99,1", "action_id", "id 99 is not in the label map"),
    ("v,09x2,0.1,0.2,0.3,0.4,12,1", "timestamp", "'09x2' is not a valid int"),
    ("v,0902,0.1,nan,0.3,0.4,12,1", "y1", "'nan' is not a valid float"),
    ("v,0902.5,0.1,0.2,0.3,0.4,12,1", "timestamp", "is not a valid int"),
    ("v,0902,0.1,0.2,0.3,0.4,12,1,9", None, "expected 8 columns"),
])
def test_gt_errors_name_file_line_field(tmp_path, row, field, message):
    path = tmp_path / "bad.csv"
    path.write_text(GT + row + "\n")
    with pytest.raises(FormatError, match=message) as info:
        ava.read_gt_csv(path, LABELMAP)
    assert info.value.line == 5 and info.value.field == field and str(path) in str(info.value)


def test_unknown_ids_can_be_dropped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "gt.csv"
    path.write_text(GT + "v,0902,0.1,0.2,0.3,0.4,99,1\n")
    kfs = ava.read_gt_csv(path, LABELMAP, unknown_ids="drop")
    assert len(kfs) == 2 and "dropped 1 rows" in caplog.text


def test_prediction_csv_format_and_top_k(tmp_path):
    boxes = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 0.9]])
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.05]])
    path = tmp_path / "pred.csv"
    assert ava.write_predictions_csv(path, [("vid", 7, boxes, scores)], LABELMAP) == 6
    lines = path.read_text().splitlines()
    assert lines[0] == "vid,0007,0.100,0.200,0.300,0.400,1,0.9000"
    rows = ava.read_predictions_csv(path)
    assert rows[4] == ava.PredictionRow("vid", 7, (0.5, 0.5, 0.9, 0.9), 12, 0.8)
    assert ava.write_predictions_csv(path, [("vid", 7, boxes, scores)], LABELMAP, top_k=2) == 2
    assert [r.score for r in ava.read_predictions_csv(path)] == [0.9, 0.8]
    with pytest.raises(ValueError, match="scores have 2 classes but the label map has 3"):
        ava.format_prediction_rows("v", 1, boxes, scores[:, :2], LABELMAP)
    assert ava.format_prediction_rows("v", 1, np.zeros((0, 4)), np.zeros((0, 3)), LABELMAP) == []


def test_excluded_timestamps(tmp_path):
    path = tmp_path / "ex.csv"
    ava.write_excluded(path, [("b", 903), ("a", 1140), ("a", 1140)])
    assert path.read_text() == "a,1140\nb,0903\n"
    assert ava.read_excluded(path) == {("a", 1140), ("b", 903)}
    path.write_text("a,1140,3\n")
    with pytest.raises(FormatError, match="line 1: expected 2 columns"):
        ava.read_excluded(path)


def test_dense_proposals_round_trip_and_shapes(tmp_path):
    props = {("-x_y", 902): Boxes([[0.1, 0.2, 0.3, 0.4]], [0.87]), ("v", 903): Boxes.empty()}
    path = tmp_path / "p.pkl"
    ava.write_dense_proposals(path, props)
    raw = pickle.loads(path.read_bytes())
    assert set(raw) == {"-x_y,0902", "v,0903"} and raw["-x_y,0902"].shape == (1, 5)
    back = ava.read_dense_proposals(path)
    assert np.array_equal(back[("-x_y", 902)].xyxy, props[("-x_y", 902)].xyxy)
    assert np.array_equal(back[("-x_y", 902)].scores, props[("-x_y", 902)].scores)
    assert len(back[("v", 903)]) == 0
    path.write_bytes(pickle.dumps({"v,0902": np.ones((2, 4), np.float32)}))
    assert ava.read_dense_proposals(path)[("v", 902)].scores.tolist() == [1.0, 1.0]
    path.write_bytes(pickle.dumps({"v,0902": np.ones((2, 3))}))
    with pytest.raises(FormatError, match=r"expected shape \(N,5\) or \(N,4\)"):
        ava.read_dense_proposals(path)
    path.write_bytes(pickle.dumps({"v0902": np.ones((2, 4))}))
    with pytest.raises(FormatError, match="is not 'video,timestamp'"):
        ava.read_dense_proposals(path)


def test_proposal_csv_dedupes_boxes(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("v,0902,0.098,0.205,0.395,0.962,,0.9871\nv,0902,0.098,0.205,0.395,0.962,12,0.9871\n"
                    "v,0902,0.610,0.110,0.800,0.930,-1,0.4410\n")
    props = ava.read_proposal_csv(path)
    assert len(props[("v", 902)]) == 2
    np.testing.assert_allclose(props[("v", 902)].scores, [0.9871, 0.441], rtol=1e-6)


# --------------------------------------------------------------------------- ACAR pickle

def _keyframes():
    return [Keyframe("vid", 902, Boxes([[0.1, 0.2, 0.3, 0.4], [0.5, 0.1, 0.9, 0.9]], [1.0, 0.5], [3, -1]),
                     ((0, 2), ()), 61, 16, 91, "image_%06d.jpg", 30.0),
            Keyframe("vid", 903, Boxes.empty(), (), 91, 46, 91, "image_%06d.jpg", 30.0)]


def test_person_boxes_csv_reads_gt_and_proposal_rows(tmp_path):
    """The demo's --boxes file: GT rows give score 1 and the person id, proposal rows their score."""
    path = tmp_path / "b.csv"
    path.write_text("v,0902,0.1,0.2,0.3,0.4,12,3\nv,0902,0.1,0.2,0.3,0.4,80,3\nv,0903,0.5,0.5,0.9,0.9,,0.75\n"
                    "w,0902,0.1,0.1,0.2,0.2,-1,0.5\nv,0903,0.1,0.1,0.2,0.2,7\n")
    boxes = ava.read_person_boxes_csv(path)
    assert sorted(boxes) == [("v", 902), ("v", 903), ("w", 902)]
    assert len(boxes["v", 902]) == 1 and boxes["v", 902].ids.tolist() == [3] and boxes["v", 902].scores.tolist() == [1.0]
    assert boxes["v", 903].ids.tolist() == [-1, -1] and boxes["v", 903].scores.tolist() == pytest.approx([0.75, 1.0])
    assert boxes["w", 902].scores.tolist() == [0.5]
    assert sorted(ava.read_person_boxes_csv(path, video="w")) == [("w", 902)]
    assert ava.read_person_boxes_csv(path, video="x") == {}


@pytest.mark.parametrize("row, field, message", [
    ("v,0902,0.1,0.2\n", None, "line 1: expected 7 or 8 columns"),
    ("v,09x2,0.1,0.2,0.3,0.4,12,3\n", "timestamp", "'09x2' is not a valid int"),
    ("v,0902,0.1,0.2,0.3,0.4,,high\n", "score", "'high' is not a valid float"),
    ("v,0902,0.1,0.2,0.3,0.4,12,3.5\n", "person_id", "'3.5' is not a valid int"),
])
def test_person_boxes_csv_errors_name_file_line_field(tmp_path, row, field, message):
    path = tmp_path / "bad.csv"
    path.write_text(row)
    with pytest.raises(FormatError, match=message) as info:
        ava.read_person_boxes_csv(path)
    assert info.value.field == field and info.value.line == 1 and info.value.path.endswith("bad.csv")


def test_acar_round_trip_keeps_everything(tmp_path):
    path = tmp_path / "a.pkl"
    assert acar_pkl.write_acar_pkl(path, _keyframes(), LABELMAP) == 2
    raw = pickle.loads(path.read_bytes())
    assert raw[1] == [{"id": 1, "name": "bend"}, {"id": 12, "name": "stand"}, {"id": 80, "name": "watch"}]
    assert raw[0][0]["labels"][0] == {"bounding_box": pytest.approx([0.1, 0.2, 0.3, 0.4]), "label": [0, 2],
                                      "person_id": [3, 3], "score": 1.0}
    assert raw[0][0]["labels"][1]["label"] == [] and raw[0][0]["labels"][1]["person_id"] == [-1]
    back, labelmap = acar_pkl.read_acar_pkl(path)
    assert labelmap == LABELMAP
    assert len(back) == 2 and all(a.equals(b) for a, b in zip(_keyframes(), back))


def _element():
    return {"video": "v", "time": 902, "start_frame": 16, "n_frames": 91, "mid_frame": 61,
            "format_str": "image_%06d.jpg", "frame_rate": 30.0,
            "labels": [{"bounding_box": [0.1, 0.2, 0.3, 0.4], "label": [1], "person_id": [0]}]}


@pytest.mark.parametrize("edit, key, message", [
    (lambda e: e.pop("mid_frame"), "mid_frame", "missing key"),
    (lambda e: e.update(time="9o2"), "time", "expected an int or a string of digits"),
    (lambda e: e.update(time=902.5), "time", "expected an int or a string of digits"),
    (lambda e: e.update(mid_frame=200), "mid_frame", "outside the window"),
    (lambda e: e.update(n_frames=0), "n_frames", "empty or negative"),
    (lambda e: e.update(format_str="image.jpg"), "format_str", "not a printf pattern"),
    (lambda e: e["labels"][0].update(label=[3]), "labels[0].label", r"indices \[3\] outside \[0, 3\)"),
    (lambda e: e["labels"][0].update(label=-1), "labels[0].label", "expected a list of ints"),
    (lambda e: e["labels"][0].update(bounding_box=[0.1, 0.2, 0.3]), "labels[0].bounding_box", "4 finite numbers"),
    (lambda e: e["labels"][0].pop("person_id"), "labels[0].person_id", "missing key"),
    (lambda e: e["labels"][0].update(score="high"), "labels[0].score", "expected a number"),
])
def test_acar_schema_errors_name_element_and_key(edit, key, message):
    elements = [_element(), _element()]
    edit(elements[1])
    with pytest.raises(acar_pkl.AcarSchemaError, match=message) as info:
        acar_pkl.validate_acar([elements, [{"id": 1}, {"id": 12}, {"id": 80}]], source="x.pkl")
    assert info.value.line == 1 and info.value.field == key
    assert str(info.value).startswith("x.pkl: element 1: field")


@pytest.mark.parametrize("time", [902, "902", "0902", np.int64(902)])
def test_acar_time_as_int_or_digit_string_reads_the_same(tmp_path, time):
    """ACAR-Net applies str(time) and nothing else, so pickles that store it as text are valid."""
    element = _element()
    element["time"] = time
    path = tmp_path / "t.pkl"
    path.write_bytes(pickle.dumps([[element], [{"id": 1}, {"id": 12}, {"id": 80}]]))
    keyframes, _ = acar_pkl.read_acar_pkl(path)
    assert keyframes[0].timestamp == 902 and isinstance(keyframes[0].timestamp, int)


def test_acar_top_level_errors(tmp_path):
    with pytest.raises(acar_pkl.AcarSchemaError, match="2-sequence"):
        acar_pkl.validate_acar({"a": 1})
    with pytest.raises(acar_pkl.AcarSchemaError, match=r"idx_to_class\[1\]"):
        acar_pkl.validate_acar([[], [{"id": 1}, {"name": "x"}]])
    path = tmp_path / "junk.pkl"
    path.write_bytes(b"not a pickle")
    with pytest.raises(FormatError, match="not a readable pickle"):
        acar_pkl.read_acar_pkl(path)


def test_conventions():
    assert AVA.mid_frame(902) == 61 and AVA.window(902) == (16, 91) and AVA.window(1798, 26970) == (26896, 75)
    assert TOY.mid_frame(3) == 91 and TOY.timestamp_of(91) == 3.0
    frames = FrameConvention(fps=25, timestamp_unit="frame")
    assert frames.mid_frame(101) == 101
    with pytest.raises(ValueError, match="timestamp_unit"):
        FrameConvention(timestamp_unit="minute")


def test_format_modules_do_not_import_torch():
    code = ("import sys; import stad.data.formats.ava, stad.data.formats.acar_pkl, stad.data.formats.chaotic_world, "
            "stad.data.formats.multisports, stad.data.convert, stad.data.validate, stad.data.toy; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, stdin=subprocess.DEVNULL)
