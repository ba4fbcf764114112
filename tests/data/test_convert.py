"""Converters: AVA <-> ACAR, Chaotic World -> ACAR, MultiSports -> AVA/ACAR; lossless round trips."""
import pickle

import numpy as np
import pytest

from stad.data import convert
from stad.data.formats import acar_pkl, ava, chaotic_world, multisports
from stad.data.formats.conventions import AVA, MULTISPORTS
from stad.data.formats.errors import FormatError
from stad.data.formats.labelmap import read_labelmap, write_labelmap
from stad.structures import Boxes, LabelMap

LABELMAP = LabelMap((1, 12, 80), ("bend", "stand", "watch"), ("PERSON_MOVEMENT",) * 3)
GT = """-5KQ66BBWC4,0902,0.104,0.213,0.388,0.957,12,3
-5KQ66BBWC4,0902,0.104,0.213,0.388,0.957,80,3
-5KQ66BBWC4,0902,0.520,0.100,0.790,0.990,1,5
-5KQ66BBWC4,0903,0.52,0.1,0.79,0.99,12,5
a_b,1798,0.333333343,0.1,0.79,0.99,12,5
"""


@pytest.fixture
def ava_files(tmp_path):
    (tmp_path / "gt.csv").write_text(GT)
    write_labelmap(LABELMAP, tmp_path / "labelmap.pbtxt", dialect="item")
    return tmp_path


def _rows(path):
    return sorted(tuple(np.float32(x) if i in range(2, 6) else x for i, x in enumerate(line.split(",")))
                  for line in path.read_text().splitlines())


def test_ava_to_acar_to_ava_round_trip(ava_files):
    d = ava_files
    assert convert.main(["ava2acar", "--csv", str(d / "gt.csv"), "--labelmap", str(d / "labelmap.pbtxt"),
                         "--out", str(d / "gt.pkl")]) == 0
    kfs, labelmap = acar_pkl.read_acar_pkl(d / "gt.pkl")
    assert labelmap.ids == (1, 12, 80) and len(kfs) == 3
    assert kfs[0].labels == ((1, 2), (0,)) and (kfs[0].mid_frame, kfs[0].start_frame, kfs[0].n_frames) == (61, 16, 91)
    assert convert.main(["acar2ava", "--pkl", str(d / "gt.pkl"), "--out", str(d / "back.csv")]) == 0
    assert _rows(d / "back.csv") == _rows(d / "gt.csv")
    again = ava.read_gt_csv(d / "back.csv", LABELMAP, AVA)
    assert all(a.equals(b) for a, b in zip(kfs, again))
    # and pkl -> csv -> pkl gives the identical pickle content
    convert.ava_to_acar(d / "back.csv", d / "labelmap.pbtxt", d / "again.pkl")
    assert pickle.loads((d / "again.pkl").read_bytes()) == pickle.loads((d / "gt.pkl").read_bytes())


def test_ava_to_acar_with_dense_proposals(ava_files):
    d = ava_files
    props = {("-5KQ66BBWC4", 902): Boxes([[0.105, 0.21, 0.39, 0.95], [0.0, 0.0, 0.05, 0.05]], [0.97, 0.6]),
             ("zzz", 905): Boxes([[0.2, 0.2, 0.4, 0.4]], [0.91])}
    ava.write_dense_proposals(d / "props.pkl", props)
    convert.ava_to_acar(d / "gt.csv", d / "labelmap.pbtxt", d / "det.pkl", proposals=d / "props.pkl")
    kfs = {kf.key: kf for kf in acar_pkl.read_acar_pkl(d / "det.pkl")[0]}
    first = kfs[("-5KQ66BBWC4", 902)]
    assert first.labels == ((1, 2), ()) and first.boxes.ids.tolist() == [-1, -1]
    np.testing.assert_allclose(first.boxes.scores, [0.97, 0.6], rtol=1e-6)
    assert len(kfs[("-5KQ66BBWC4", 903)].boxes) == 0  # GT keyframe without proposals stays, empty
    assert kfs[("zzz", 905)].mid_frame == 151 and kfs[("zzz", 905)].labels == ((),)
    convert.ava_to_acar(d / "gt.csv", d / "labelmap.pbtxt", d / "both.pkl", proposals=d / "props.pkl",
                        mode="gt+proposals", min_score=0.9)
    both = {kf.key: kf for kf in acar_pkl.read_acar_pkl(d / "both.pkl")[0]}[("-5KQ66BBWC4", 902)]
    assert both.boxes.ids.tolist() == [3, 5, -1] and both.labels == ((1, 2), (0,), (1, 2))


def test_ava_to_acar_unknown_ids_and_exclusions(ava_files):
    d = ava_files
    (d / "gt80.csv").write_text(GT + "a_b,1798,0.1,0.1,0.2,0.2,2,9\n")
    with pytest.raises(FormatError, match="line 6: field 'action_id': id 2 is not in the label map"):
        convert.ava_to_acar(d / "gt80.csv", d / "labelmap.pbtxt", d / "x.pkl")
    ava.write_excluded(d / "ex.csv", [("a_b", 1798)])
    n = convert.ava_to_acar(d / "gt80.csv", d / "labelmap.pbtxt", d / "x.pkl", unknown_ids="drop", exclusions=d / "ex.csv")
    assert n == 2


CW_HEADER = "video_id,frame,x1,y1,x2,y2,label,person_id,start,end,time,a,b\n"
CW_ROWS = """ABCDWXYZ,251,0.312,0.205,0.401,0.688,45,7,214,289,10,0,0
ABCDWXYZ,251,0.312,0.205,0.401,0.688,41,7,214,289,10,0,0
ABCDWXYZ,251,0.5,0.2,0.6,0.7,0,8,214,289,10,0,0
ABCDWXYZ,26,0.5,0.2,0.6,0.7,49,8,0,64,1.0,0,0
"""


def test_cw_to_acar_groups_rows_and_shifts_ids(tmp_path):
    (tmp_path / "chaos.csv").write_text(CW_HEADER + CW_ROWS)
    assert convert.main(["cw2acar", "--csv", str(tmp_path / "chaos.csv"), "--out", str(tmp_path / "cw.pkl"),
                         "--gt-csv", str(tmp_path / "gt.csv"), "--labelmap-out", str(tmp_path / "cw.pbtxt")]) == 0
    raw = pickle.loads((tmp_path / "cw.pkl").read_bytes())
    assert len(raw[0]) == 2  # one sample per keyframe, not per row
    assert raw[1][0] == {"id": 1, "name": "aiming weapon", "label_type": "PERSON_MOVEMENT"} and raw[1][49]["id"] == 50
    kfs, _ = acar_pkl.read_acar_pkl(tmp_path / "cw.pkl")
    t1, t10 = kfs
    assert t1.key == ("ABCDWXYZ", 1) and t1.start_frame == 1 and t1.labels == ((49,),)  # start 0 clamped to 1
    assert t10.labels == ((41, 45), (0,)) and t10.mid_frame == 251 and t10.format_str == "ABCDWXYZ_%06d.png"
    assert (t10.start_frame, t10.n_frames, t10.frame_rate) == (214, 75, 25.0)
    gt_rows = (tmp_path / "gt.csv").read_text().splitlines()
    assert "ABCDWXYZ,0010,0.312,0.205,0.401,0.688,46,7" in gt_rows and "ABCDWXYZ,0001,0.500,0.200,0.600,0.700,50,8" in gt_rows
    assert read_labelmap(tmp_path / "cw.pbtxt").ids == tuple(range(1, 51))
    # CW CSV round trip through our writer
    chaotic_world.write_cw_csv(tmp_path / "again.csv", kfs)
    assert all(a.equals(b) for a, b in zip(chaotic_world.read_cw_csv(tmp_path / "again.csv"), kfs))


def test_cw_errors(tmp_path):
    path = tmp_path / "chaos.csv"
    path.write_text(CW_ROWS + "ABCDWXYZ,251,0.3,0.2,0.4,0.6,50,7,214,289,10,0,0\n")
    with pytest.raises(FormatError, match="line 5: field 'label': 50 outside 0..49"):
        chaotic_world.read_cw_csv(path)
    path.write_text(CW_ROWS + "ABCDWXYZ,252,0.3,0.2,0.4,0.6,5,7,214,289,10,0,0\n")
    with pytest.raises(FormatError, match="line 5: field 'frame'.*251 on line 1"):
        chaotic_world.read_cw_csv(path)
    path.write_text("ABCDWXYZ,251,0.3,0.2,0.4,0.6,5,7\n")
    with pytest.raises(FormatError, match="expected >= 13 columns, got 8"):
        chaotic_world.read_cw_csv(path)


def _multisports_gt():
    tube_a = np.array([[101, 420, 180, 470, 400], [102, 424, 181, 474, 401]], np.float32)
    tube_b = np.array([[102, 10, 20, 110, 220]], np.float32)
    return {"labels": [f"class{i}" for i in range(66)],
            "train_videos": [["basketball/v_AbCd_c003"]], "test_videos": [["football/v_Zz_c001"]],
            "nframes": {"basketball/v_AbCd_c003": 150, "football/v_Zz_c001": 40},
            "resolution": {"basketball/v_AbCd_c003": (720, 1280), "football/v_Zz_c001": (720, 1280)},
            "gttubes": {"basketball/v_AbCd_c003": {48: [tube_a], 3: [tube_b, tube_a.copy()]},
                        "football/v_Zz_c001": {0: [np.array([[5, 0, 0, 640, 720]], np.float32)]}}}


def test_multisports_to_ava_and_acar(tmp_path):
    gt = _multisports_gt()
    original = {v: {k: [t.copy() for t in ts] for k, ts in by.items()} for v, by in gt["gttubes"].items()}
    (tmp_path / "gt.pkl").write_bytes(pickle.dumps(gt))
    assert convert.main(["multisports", "--gt", str(tmp_path / "gt.pkl"), "--split", "train",
                         "--out-csv", str(tmp_path / "train.csv"), "--out-pkl", str(tmp_path / "train.pkl"),
                         "--labelmap-out", str(tmp_path / "ms.pbtxt")]) == 0
    lines = (tmp_path / "train.csv").read_text().splitlines()
    assert "basketball/v_AbCd_c003,0101,0.328125,0.250,0.3671875,0.5555556,48,1" in lines
    kfs, labelmap = acar_pkl.read_acar_pkl(tmp_path / "train.pkl")
    assert labelmap.ids == tuple(range(66)) and [kf.timestamp for kf in kfs] == [101, 102]
    f102 = kfs[1]
    assert f102.labels == ((3,), (3, 48)) and f102.mid_frame == 102 and f102.format_str == "v_AbCd_c003_%06d.jpg"
    assert (f102.start_frame, f102.n_frames) == (77, 51)
    from_csv = ava.read_gt_csv(tmp_path / "train.csv", read_labelmap(tmp_path / "ms.pbtxt"), MULTISPORTS,
                               num_frames={"basketball/v_AbCd_c003": 150})
    assert all(a.labels == b.labels and a.boxes.equals(b.boxes) and a.mid_frame == b.mid_frame
               for a, b in zip(from_csv, kfs))
    tubes = multisports.keyframes_to_gttubes(kfs, gt)["basketball/v_AbCd_c003"]
    np.testing.assert_allclose(tubes[48][0], original["basketball/v_AbCd_c003"][48][0], atol=1e-3)
    np.testing.assert_allclose(tubes[3][0], original["basketball/v_AbCd_c003"][3][0], atol=1e-3)
    assert all(np.array_equal(gt["gttubes"][v][k][i], original[v][k][i])
               for v in original for k in original[v] for i in range(len(original[v][k])))  # input untouched
    assert convert.multisports_to_ava(tmp_path / "gt.pkl", "val", out_pkl=tmp_path / "val.pkl") == 1


def test_multisports_errors(tmp_path):
    gt = _multisports_gt()
    gt["n_frames"] = gt.pop("nframes")
    (tmp_path / "gt.pkl").write_bytes(pickle.dumps(gt))
    with pytest.raises(FormatError, match="field 'nframes': missing key \\(the key is 'nframes', not 'n_frames'\\)"):
        multisports.read_multisports_gt(tmp_path / "gt.pkl")
    gt = _multisports_gt()
    gt["gttubes"]["football/v_Zz_c001"][0] = [np.zeros((3, 4))]
    (tmp_path / "gt.pkl").write_bytes(pickle.dumps(gt))
    with pytest.raises(FormatError, match=r"expected \(n, 5\)"):
        multisports.read_multisports_gt(tmp_path / "gt.pkl")


def test_multisports_test_only_gt_converts_the_test_split(tmp_path, capsys):
    """MMAction2's MultiSports test file holds only labels, test_videos, nframes, gttubes, resolution."""
    gt = _multisports_gt()
    del gt["train_videos"]
    del gt["gttubes"]["basketball/v_AbCd_c003"]
    (tmp_path / "gt.pkl").write_bytes(pickle.dumps(gt))
    assert convert.main(["multisports", "--gt", str(tmp_path / "gt.pkl"), "--split", "test",
                         "--out-csv", str(tmp_path / "test.csv"), "--out-pkl", str(tmp_path / "test.pkl")]) == 0
    kfs, _ = acar_pkl.read_acar_pkl(tmp_path / "test.pkl")
    assert [(kf.video, kf.timestamp, kf.labels) for kf in kfs] == [("football/v_Zz_c001", 5, ((0,),))]
    assert (tmp_path / "test.csv").read_text().startswith("football/v_Zz_c001,0005,")
    # the train split of that file: one clear line, exit 2, no traceback
    assert convert.main(["multisports", "--gt", str(tmp_path / "gt.pkl"), "--split", "train",
                         "--out-csv", str(tmp_path / "train.csv")]) == 2
    err = capsys.readouterr().err
    assert "field 'train_videos': missing key" in err and "Traceback" not in err
    assert not (tmp_path / "train.csv").exists()
    del gt["test_videos"]
    (tmp_path / "none.pkl").write_bytes(pickle.dumps(gt))
    with pytest.raises(FormatError, match="neither video list"):
        multisports.read_multisports_gt(tmp_path / "none.pkl")
    assert convert.main(["multisports", "--gt", str(tmp_path / "missing.pkl"), "--split", "test",
                         "--out-csv", str(tmp_path / "x.csv")]) == 2
    assert "missing.pkl" in capsys.readouterr().err


def test_multisports_proposals(tmp_path):
    gt = _multisports_gt()
    (tmp_path / "gt.pkl").write_bytes(pickle.dumps(gt))
    props = {"v_AbCd_c003,101": np.array([[0.33, 0.25, 0.37, 0.55, 0.9], [0.0, 0.0, 0.1, 0.1, 0.2]], np.float32),
             "basketball/v_AbCd_c003.mp4,140": np.array([[0.1, 0.1, 0.2, 0.2, 0.7]], np.float32)}
    (tmp_path / "props.pkl").write_bytes(pickle.dumps(props))
    convert.multisports_to_ava(tmp_path / "gt.pkl", "train", out_pkl=tmp_path / "p.pkl", proposals=tmp_path / "props.pkl")
    kfs = {kf.key: kf for kf in acar_pkl.read_acar_pkl(tmp_path / "p.pkl")[0]}
    f101 = kfs[("basketball/v_AbCd_c003", 101)]
    assert f101.labels == ((3, 48), ()) and f101.boxes.scores.tolist() == pytest.approx([0.9, 0.2])
    f140 = kfs[("basketball/v_AbCd_c003", 140)]  # proposals only: window and file pattern still MultiSports'
    assert f140.format_str == "v_AbCd_c003_%06d.jpg" and (f140.start_frame, f140.n_frames) == (115, 36)
    assert len(kfs[("basketball/v_AbCd_c003", 102)].boxes) == 0
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps({"v_Unknown_c001,5": np.zeros((1, 5))}))
    with pytest.raises(FormatError, match=r"1 keys name no video of the split, e.g. \['v_Unknown_c001,5'\]"):
        convert.multisports_to_ava(tmp_path / "gt.pkl", "train", out_pkl=tmp_path / "x.pkl", proposals=tmp_path / "bad.pkl")
