"""Bad input names file, line and field; odd-but-valid input is accepted; diagnostics are reported."""
import json
import math

import pytest

import multi_cap_mAP
from stad.evaluation import AvaCsvError, evaluate
from stad.evaluation.report import format_table, key_mismatch_warning

LABELMAP = 'item {\n  name: "stand"\n  id: 1\n}\nitem {\n  name: "sit"\n  id: 3\n}\n'
GT = "vid_a,0902,0.1,0.1,0.5,0.9,1,7\nvid_a,0902,0.1,0.1,0.5,0.9,3,7\nvid_a,0903,0.5,0.2,0.9,0.9,3,8\n"
DET = ("vid_a,0902,0.1,0.1,0.5,0.9,1,0.9\nvid_a,0902,0.1,0.1,0.5,0.9,3,0.2\n"
       "vid_a,0903,0.5,0.2,0.9,0.9,3,0.8\nvid_a,0903,0.5,0.2,0.9,0.9,1,0.1\n")


@pytest.fixture
def files(tmp_path):
    def make(gt=GT, det=DET, labelmap=LABELMAP):
        paths = {"labelmap": tmp_path / "lm.pbtxt", "groundtruth": tmp_path / "gt.csv", "detections": tmp_path / "det.csv"}
        for key, text in zip(paths, (labelmap, gt, det)):
            paths[key].write_text(text)
        return paths
    return make


def test_perfect_detections_give_ap_one(files):
    result = evaluate(**files(), capacities=[50, 1, 0])
    assert result.results[50].mAP == 1.0
    assert result.results[50].per_class == {1: 1.0, 3: 1.0}
    # capacity 1 keeps only the top row of each keyframe: (0902, class 1) and (0903, class 3)
    assert result.results[1].per_class[3] == 0.5
    assert result.results[1].num_detections == 2


@pytest.mark.parametrize("row, field, line", [
    ("vid_a,0902,abc,0.1,0.5,0.9,1,0.5", "x1", 2),
    ("vid_a,0902,0.1,0.1,1.5,0.9,1,0.5", "x2", 2),
    ("vid_a,0902,0.6,0.1,0.5,0.9,1,0.5", "x1", 2),
    ("vid_a,0902,0.1,0.95,0.5,0.9,1,0.5", "y1", 2),
    ("vid_a,09x2,0.1,0.1,0.5,0.9,1,0.5", "timestamp", 2),
    ("vid_a,902.5,0.1,0.1,0.5,0.9,1,0.5", "timestamp", 2),
    ("vid_a,0902,0.1,0.1,0.5,0.9,one,0.5", "action_id", 2),
    ("vid_a,0902,0.1,0.1,0.5,0.9,1,high", "score", 2),
    ("vid_a,0902,0.1,0.1,0.5,0.9,1,nan", "score", 2),
])
def test_malformed_detection_rows_name_file_line_and_field(files, row, field, line):
    paths = files(det="vid_a,0902,0.1,0.1,0.5,0.9,1,0.9\n" + row + "\n")
    with pytest.raises(AvaCsvError) as info:
        evaluate(**paths)
    message = str(info.value)
    assert f"det.csv:{line}:" in message and f"'{field}'" in message


def test_wrong_column_count_is_reported_with_line(files):
    paths = files(gt=GT + "vid_a,0904,0.1,0.1\n")
    with pytest.raises(AvaCsvError, match=r"gt\.csv:4: expected 2 or 7 or 8 columns, got 4"):
        evaluate(**paths)


def test_header_line_gets_a_hint(files):
    paths = files(det="video,time,x1,y1,x2,y2,action,score\n" + DET)
    with pytest.raises(AvaCsvError, match=r"det\.csv:1: field 'timestamp'"):
        evaluate(**paths)


def test_float_timestamps_are_accepted_as_the_same_key(files):
    det = DET.replace("0902", "902.0").replace("0903", "903")
    assert evaluate(**files(det=det)).results[50].mAP == 1.0


def test_bad_exclusions_and_labelmap(files, tmp_path):
    paths = files()
    bad = tmp_path / "ex.csv"
    bad.write_text("vid_a,0902,extra\n")
    with pytest.raises(AvaCsvError, match=r"ex\.csv:1: .*2 columns"):
        evaluate(**paths, exclusions=bad)
    with pytest.raises(ValueError, match="lm.pbtxt"):
        evaluate(**files(labelmap="nothing here\n"))


def test_exclusions_remove_keys_on_both_sides(files, tmp_path):
    paths = files(det=DET + "vid_a,0904,0.1,0.1,0.5,0.9,3,0.99\n")
    assert evaluate(**paths).results[50].per_class[3] < 1.0  # 0904 has no GT: a false positive
    excl = tmp_path / "ex.csv"
    excl.write_text("vid_a,904\n")
    assert evaluate(**paths, exclusions=excl).results[50].per_class[3] == 1.0
    # ActivityNet behaviour: keys absent from the GT file are ignored
    assert evaluate(**paths, ignore_keys_without_gt=True).results[50].per_class[3] == 1.0


def test_unknown_class_ids_are_counted_and_do_not_take_capacity(files):
    det = "vid_a,0902,0.1,0.1,0.5,0.9,99,0.99\n" + DET
    result = evaluate(**files(det=det), capacities=[1])
    assert result.diagnostics["detections_outside_labelmap"] == {"99": 1}
    assert result.results[1].per_class[1] == 1.0


def test_empty_inputs(files):
    result = evaluate(**files(det=""))
    assert result.results[50].per_class == {1: 0.0, 3: 0.0}
    assert "no rows" in key_mismatch_warning(result)
    no_gt = evaluate(**files(gt=""))
    assert math.isnan(no_gt.results[50].mAP)


def test_key_mismatch_is_explained(files):
    det = DET.replace("vid_a", "vid_a.mp4")
    result = evaluate(**files(det=det))
    warning = key_mismatch_warning(result)
    assert "match no ground-truth keyframe" in warning and "vid_a.mp4,0902" in warning and "vid_a,0902" in warning
    assert warning in format_table(result)


def test_cli_writes_json_plot_and_table(files, tmp_path, capsys):
    paths = files()
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    multi_cap_mAP.main(["-l", str(paths["labelmap"]), "-g", str(paths["groundtruth"]), "-d", str(paths["detections"]),
                        "--capacities", "1:3,50", "--json", str(out_json), "--plot", str(out_png), "--per-class", "-q"])
    printed = capsys.readouterr().out
    assert "stand" in printed and "best capacity" in printed and "tuned on the evaluated set" in printed
    data = json.loads(out_json.read_text())
    assert sorted(data["capacities"]) == ["1", "2", "3", "50"] and data["capacities"]["50"]["mAP"] == 1.0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_reports_bad_input_without_traceback(files, capsys):
    paths = files(det="vid_a,0902,0.1,0.1,0.5\n")
    with pytest.raises(SystemExit) as info:
        multi_cap_mAP.main(["-l", str(paths["labelmap"]), "-g", str(paths["groundtruth"]), "-d", str(paths["detections"])])
    assert info.value.code == 2
    assert "det.csv:1" in capsys.readouterr().err


def test_parse_capacities():
    assert multi_cap_mAP.parse_capacities("1:3,50,0") == [1, 2, 3, 50, 0]
    with pytest.raises(Exception, match="bad capacity"):
        multi_cap_mAP.parse_capacities("5:1")


def test_compiled_parser_equals_python_float(tmp_path):
    """The compiled fast path must give Python's float() bit for bit, and defer anything unusual."""
    import numpy as np

    from stad.evaluation import fast_csv

    rng = np.random.default_rng(0)
    texts = [f"{v:.{d}f}" for v, d in zip(rng.random(3000), rng.integers(0, 15, 3000))]
    texts += ["0", "1", "0.5", "1.", "0.1", "0.7", "0.3000000000001", "0.12345678901234", "-0.0"]
    rows = [f"v-{i % 3}_x,{i % 7:04d},{t},{t},{t},{t},{i % 80},{t}" for i, t in enumerate(texts)]
    path = tmp_path / "p.csv"
    path.write_text("\n".join(rows) + "\r\n")
    names, code, ts, x1, y1, x2, y2, action, score = fast_csv.parse(str(path), 8)
    assert [float(t) for t in texts] == x1.tolist() == score.tolist()
    assert np.signbit(x1[-1]) and sorted(names) == ["v-0_x", "v-1_x", "v-2_x"]
    assert names[code].tolist() == [f"v-{i % 3}_x" for i in range(len(texts))]
    assert ts.tolist() == [i % 7 for i in range(len(texts))]
    for odd in ("1e-3", " 0.5", "0.1234567890123456", "+0.5", '"0.5"'):
        path.write_text(f"v,0902,{odd},0.1,0.5,0.6,1,0.5\n")
        assert fast_csv.parse(str(path), 8) is None
    path.write_text("v,0902,0.1,0.1,0.5,0.6,1,0.5\nv,0902,0.1,0.1,0.5,0.6,1\n")
    assert fast_csv.parse(str(path), 8) is None


def test_compiled_parser_segments_agree(tmp_path):
    """Reading in tiny segments (parsed on worker threads while the rest is read) must give the
    same columns, and the same first-appearance video numbering, as one segment."""
    import numpy as np

    from stad.evaluation import fast_csv

    rng = np.random.default_rng(1)
    rows = [f"vid{rng.integers(0, 9)},{rng.integers(0, 2000):04d},0.0{rng.integers(0, 99):02d},0.1,0.9,"
            f"0.95,{rng.integers(1, 81)},0.{rng.integers(0, 999):03d}" for _ in range(500)]
    path = tmp_path / "seg.csv"
    path.write_text("\n".join(rows))  # no final newline: the last segment ends at the end of file
    whole = fast_csv.parse(str(path), 8, segment_bytes=1 << 20)
    first_seen = list(dict.fromkeys(r.split(",")[0] for r in rows))
    assert whole[0].tolist() == first_seen
    for segment_bytes in (1, 37, 1000):
        parts = fast_csv.parse(str(path), 8, segment_bytes=segment_bytes, workers=2)
        assert parts[0].tolist() == first_seen
        for a, b in zip(parts[1:], whole[1:]):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    # blank lines (and CRLF endings) leave no rows behind and shift nothing
    path.write_text("\r\n".join(r if i % 50 else r + "\r\n" for i, r in enumerate(rows)) + "\n\n")
    for segment_bytes in (64, 1 << 20):
        parts = fast_csv.parse(str(path), 8, segment_bytes=segment_bytes, workers=2)
        for a, b in zip(parts[1:], whole[1:]):
            assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("row", ["v,0902,0.5,0.1,0.4,0.6,1,0.5", "v,0902,0.1,0.1,0.5,1.5,1,0.5"])
def test_compiled_parser_defers_bad_boxes(tmp_path, row):
    """A box the careful reader rejects (swapped corners, outside [0, 1]) is not accepted silently:
    the compiled parser defers, and read_box_csv names the line and field."""
    from stad.evaluation import fast_csv
    from stad.evaluation.csv_io import read_box_csv

    path = tmp_path / "bad.csv"
    path.write_text("v,0902,0.1,0.1,0.5,0.6,1,0.5\n" + row + "\n")
    assert fast_csv.parse(str(path), 8) is None
    with pytest.raises(AvaCsvError, match=r"bad\.csv:2: field '(x1|y2)'"):
        read_box_csv(path)
