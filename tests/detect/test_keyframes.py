"""Keyframe keys from annotation files and their frame numbers under each dataset convention."""
from __future__ import annotations

import pytest

from detect.keyframes import every_nth_frame, get_convention, read_keyframe_keys, request_for, requests_from_keys


def test_frame_numbers_per_dataset():
    ava = requests_from_keys([("-vid_1", 902), ("-vid_1", 1798)], "ava")
    assert [(r.frame, r.seconds, r.format_str) for r in ava] == [(61, 902.0, "-vid_1_%06d.jpg"),
                                                                (26941, 1798.0, "-vid_1_%06d.jpg")]
    cut = request_for("v", 902, get_convention("ava"), video_start=900)   # video cut with -ss 900
    assert cut.seconds == 2.0
    cw = request_for("ABCDWXYZ", 10, get_convention("cw"))
    assert (cw.frame, cw.format_str) == (251, "ABCDWXYZ_%06d.png")
    ms = request_for("basketball/v_x_c003.mp4", 101, get_convention("multisports"))
    assert (ms.frame, ms.seconds) == (101, None)                          # decoded at index 100
    toy = request_for("toy_val_000", 3, get_convention("toy"))
    assert (toy.frame, toy.seconds) == (91, 3.0)
    assert [r.timestamp for r in every_nth_frame("plain", 100, 30)] == [1, 31, 61, 91]


def test_read_keys_from_gt_and_lists(tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_text("b,0902,0.1,0.1,0.2,0.2,12,1\nb,902,0.1,0.1,0.2,0.2,17,1\na,0903,0.1,0.1,0.2,0.2,12,1\n\n")
    assert read_keyframe_keys(gt) == [("a", 903), ("b", 902)]            # unique, sorted, '0902' == 902
    listing = tmp_path / "keys.csv"
    listing.write_text("video,timestamp\nx,0001\nx,2\n")                  # header skipped
    assert read_keyframe_keys(listing) == [("x", 1), ("x", 2)]


@pytest.mark.parametrize("text, match", [
    ("a,1,2\n", r"bad.csv:1: expected 2 columns"),
    ("a,0001\na,1.5\n", r"bad.csv:2 field 1: timestamp '1.5' is not an integer"),
    (",0001\n", r"bad.csv:1: empty video id"),
    ("\n", r"no keyframes"),
])
def test_bad_keyframe_files(tmp_path, text, match):
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_keyframe_keys(bad)


def test_bad_conventions_and_times(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_keyframe_keys(tmp_path / "none.csv")
    with pytest.raises(ValueError, match="unknown dataset convention 'kinetics'"):
        get_convention("kinetics")
    with pytest.raises(ValueError, match="maps to frame"):
        request_for("v", 899, get_convention("ava"))
    with pytest.raises(ValueError, match="before the video start"):
        request_for("v", 902, get_convention("ava"), video_start=950)
    with pytest.raises(ValueError, match="frame-numbered"):
        every_nth_frame("v", 10, 2, "ava")


def test_wrong_convention_names_the_dataset_flags():
    """Toy keyframes (t = 1 s) read with the default AVA convention: the error says what to pass."""
    with pytest.raises(ValueError) as info:
        request_for("toy_000", 1, get_convention("ava"))
    message = str(info.value)
    assert "maps to frame -26969 < 1" in message
    assert "--dataset toy or cw or multisports or frames" in message and "--video-start" in message
    with pytest.raises(ValueError, match="pass --video-start"):
        request_for("v", 902, get_convention("ava"), video_start=950)
    with pytest.raises(ValueError, match=">= 1"):
        every_nth_frame("v", 10, 0)
