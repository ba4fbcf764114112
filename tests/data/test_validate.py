"""Preflight validator: one test per error it reports, plus the clean case, the CLI and --config."""
import pickle

import numpy as np
import pytest

from stad.data import validate as V
from stad.data.formats import acar_pkl, ava
from stad.data.formats.conventions import TOY
from stad.data.formats.labelmap import write_labelmap
from stad.structures import Boxes, Keyframe, LabelMap

LABELMAP = LabelMap((1, 2, 3), ("stand", "sit", "walk"))


def kf(video="v1", t=1, boxes=((0.1, 0.2, 0.3, 0.9),), labels=((0,),), mid=None):
    mid = TOY.mid_frame(t) if mid is None else mid
    start, n = TOY.window(t, 90)
    return Keyframe(video, t, Boxes(np.array(boxes, np.float32).reshape(-1, 4)), labels, mid, min(start, mid),
                    max(n, mid - min(start, mid) + 1), f"{video}_%06d.jpg", 30.0)


@pytest.fixture
def root(tmp_path):
    for video in ("v1", "v2"):
        (tmp_path / "frames" / video).mkdir(parents=True)
        for n in range(1, 91):
            (tmp_path / "frames" / video / f"{video}_{n:06d}.jpg").touch()
    write_labelmap(LABELMAP, tmp_path / "labelmap.pbtxt")
    return tmp_path


def check(root, keyframes, labelmap=LABELMAP, **kwargs):
    acar_pkl.write_acar_pkl(root / "ann.pkl", keyframes, labelmap)
    kwargs.setdefault("frames_root", root / "frames")
    return V.validate_dataset(root / "ann.pkl", labelmap=kwargs.pop("labels", root / "labelmap.pbtxt"), **kwargs)


def good():
    return [kf("v1", 1), kf("v1", 2, labels=((1, 2),)), kf("v2", 1, boxes=(), labels=())]


def test_clean_dataset_passes(root):
    report = check(root, good(), num_classes=3, require_labels=True)
    assert report.ok, report.format()
    assert report.counts["keyframes"] == 3 and report.counts["boxes"] == 2 and report.counts["videos"] == 2
    assert "result: OK" in report.format()


@pytest.mark.parametrize("name, build, kwargs, code", [
    ("model has 4 classes", good, {"num_classes": 4}, "num_classes"),
    ("no labels for training", lambda: [kf(labels=((),))], {"require_labels": True}, "no_labels"),
    ("pixel boxes", lambda: [kf(boxes=((12, 30, 80, 200),))], {}, "boxes_not_normalised"),
    ("swapped corners", lambda: [kf(boxes=((0.5, 0.2, 0.3, 0.9),))], {}, "boxes_unordered"),
    ("same keyframe twice", lambda: [kf(), kf()], {}, "duplicate_keyframes"),
    ("one keyframe off by a frame", lambda: [kf(t=1), kf(t=2, mid=60)], {}, "timestamp_convention"),
    ("frames of a video missing", lambda: [kf(video="v3")], {}, "missing_videos"),
    ("AVA offset forgotten", lambda: [kf(t=1, mid=30 * 4 + 1), kf(t=2, mid=30 * 5 + 1)], {}, "keyframe_beyond_frames"),
])
def test_errors(root, name, build, kwargs, code):
    report = check(root, build(), **kwargs)
    assert not report.ok and code in {i.code for i in report.errors}, report.format()
    with pytest.raises(V.DatasetValidationError, match=code):
        report.raise_if_failed()


def test_missing_frame_file_and_frames_root(root):
    (root / "frames" / "v1" / "v1_000031.jpg").unlink()
    report = check(root, good())
    assert "missing_frames" in report.codes and "v1_000031.jpg" in report.format()
    assert "frames_root" in check(root, good(), frames_root=root / "nowhere").codes


def test_class_ids_not_in_labelmap(root):
    report = check(root, good(), labelmap=LabelMap((0, 1, 2), ("a", "b", "c")))
    assert "class_ids" in {i.code for i in report.errors} and "e.g. 0" in report.format()
    shuffled = check(root, good(), labelmap=LabelMap((3, 2, 1), ("walk", "sit", "stand")))
    assert shuffled.ok and "class_order" in shuffled.codes


def test_gt_csv_checks(root):
    ava.write_gt_csv(root / "gt.csv", good(), LABELMAP)
    assert check(root, good(), gt_csv=root / "gt.csv").ok
    shifted = LabelMap((11, 12, 13), LABELMAP.names)
    ava.write_gt_csv(root / "bad_ids.csv", good(), shifted)
    assert "gt_ids" in {i.code for i in check(root, good(), gt_csv=root / "bad_ids.csv").errors}
    renamed = [Keyframe(k.video + ".mp4", k.timestamp, k.boxes, k.labels) for k in good()]
    ava.write_gt_csv(root / "renamed.csv", renamed, LABELMAP)
    report = check(root, good(), gt_csv=root / "renamed.csv")
    assert "annotation_vs_gt_csv" in {i.code for i in report.errors}
    ava.write_gt_csv(root / "more.csv", good() + [kf("v2", 2)], LABELMAP)
    partial = check(root, good(), gt_csv=root / "more.csv")
    assert partial.ok and "missing_in_annotation" in partial.codes
    ava.write_excluded(root / "ex.csv", [("v2", 2)])
    assert "missing_in_annotation" not in check(root, good(), gt_csv=root / "more.csv", exclusions=root / "ex.csv").codes


def test_proposal_keys(root):
    ava.write_gt_csv(root / "gt.csv", good(), LABELMAP)
    ava.write_dense_proposals(root / "props.pkl", {("v1", 1): Boxes([[0.1, 0.1, 0.2, 0.2]], [0.9])})
    report = check(root, good(), gt_csv=root / "gt.csv", proposals=root / "props.pkl")
    assert report.ok and "missing_in_proposals" in report.codes
    ava.write_dense_proposals(root / "far.pkl", {("v1", 902): Boxes([[0.1, 0.1, 0.2, 0.2]], [0.9])})
    report = check(root, good(), gt_csv=root / "gt.csv", proposals=root / "far.pkl")
    assert "proposals_vs_gt_csv" in {i.code for i in report.errors}


def test_unreadable_and_empty(root):
    (root / "ann.pkl").write_bytes(pickle.dumps([[{"video": "v1"}], [{"id": 1}]]))
    report = V.validate_dataset(root / "ann.pkl")
    assert [i.code for i in report.errors] == ["unreadable"] and "element 0: field 'time': missing key" in report.format()
    assert "empty" in check(root, []).codes


def test_warnings_do_not_fail(root):
    report = check(root, [kf(boxes=((0.1, 0.2, 0.1, 0.9),))], require_labels=True)
    assert report.ok and {"boxes_empty", "empty_classes"} <= report.codes


def test_video_root(root):
    from stad.data.toy import generate

    toy = root / "toy"
    generate(toy, seed=0, size="tiny", workers=1, progress=False)
    report = V.validate_dataset(toy / "annotations" / "val.pkl", video_root=toy / "videos",
                                labelmap=toy / "labelmap.pbtxt", num_classes=11, gt_csv=toy / "val.csv")
    assert report.ok, report.format()
    report = V.validate_dataset(toy / "annotations" / "val.pkl", video_root=root)
    assert "missing_videos" in report.codes


def test_cli_and_config(root, capsys):
    acar_pkl.write_acar_pkl(root / "ann.pkl", good(), LABELMAP)
    ava.write_gt_csv(root / "gt.csv", good(), LABELMAP)
    args = ["--annotation", str(root / "ann.pkl"), "--frames-root", str(root / "frames"), "--labelmap",
            str(root / "labelmap.pbtxt"), "--num-classes", "3", "--gt-csv", str(root / "gt.csv")]
    assert V.main(args) == 0 and "result: OK" in capsys.readouterr().out
    assert V.main(args[:-4] + ["--num-classes", "5"]) == 1 and "num_classes" in capsys.readouterr().out
    pytest.importorskip("stad.config")
    config = root / "x.yaml"
    config.write_text(f"""
model:
  head: {{type: acar, kwargs: {{num_classes: 3}}}}
train: {{root_path: {root / 'frames'}, annotation_path: {root / 'ann.pkl'}}}
val:
  root_path: {root / 'frames'}
  annotation_path: {root / 'ann.pkl'}
  eval_mAP: {{labelmap: {root / 'labelmap.pbtxt'}, groundtruth: {root / 'gt.csv'}}}
""")
    assert V.main(["--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "train: " in out and "val: " in out
    assert V.main(["--config", str(config), "--set", "model.head.kwargs.num_classes=4"]) == 1
    import stad.config

    with pytest.raises(V.DatasetValidationError, match="num_classes"):
        V.validate_config(stad.config.load_config(config, ["model.head.kwargs.num_classes=4"]))
