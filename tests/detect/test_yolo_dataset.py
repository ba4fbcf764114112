"""GT CSV -> YOLO person dataset: dedupe, clip, zero-area drop, 'w' mode, keyframe frame index, names."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from detect import yolo_dataset

GT = (
    "-ab_c1,0902,0.104,0.213,0.388,0.957,12,3\n"     # AVA id may start with '-' and contain '_'
    "-ab_c1,0902,0.104,0.213,0.388,0.957,80,3\n"     # same person, second action -> same box
    "-ab_c1,0902,0.500,0.500,1.200,1.000,12,4\n"     # clipped to x2 = 1
    "-ab_c1,0902,0.300,0.300,0.300,0.600,12,5\n"     # zero width -> dropped
    "-ab_c1,0903,0.100,0.100,0.200,0.200,17,5\n"
)


def _frames(root, video, numbers):
    (root / video).mkdir(parents=True, exist_ok=True)
    for n in numbers:
        cv2.imwrite(str(root / video / f"{video}_{n:06d}.jpg"), np.full((24, 32, 3), n % 255, np.uint8))


def test_ava_gt_to_yolo(tmp_path):
    gt = tmp_path / "train.csv"
    gt.write_text(GT)
    frames = tmp_path / "frames"
    _frames(frames, "-ab_c1", [61, 91])                    # t=902 -> frame 61, t=903 -> 91 (not 60/90)
    out = tmp_path / "yolo"
    argv = ["--out", str(out), "--source", str(frames), "--dataset", "ava", "--split", f"train={gt}"]
    for _ in range(2):                                     # a re-run must not accumulate lines
        assert yolo_dataset.main(argv) == 0
    labels = sorted(p.name for p in (out / "labels" / "train").iterdir())
    assert labels == ["-ab_c1_000061.txt", "-ab_c1_000091.txt"]
    assert "-ab_c1_000061".rsplit("_", 1) == ["-ab_c1", "000061"]
    lines = (out / "labels" / "train" / "-ab_c1_000061.txt").read_text().splitlines()
    assert lines == ["0 0.246000 0.585000 0.284000 0.744000", "0 0.750000 0.750000 0.500000 0.500000"]
    image = out / "images" / "train" / "-ab_c1_000061.jpg"
    assert image.is_symlink() and cv2.imread(str(image))[0, 0, 0] == 61
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data == {"path": str(out.resolve()), "train": "images/train", "names": {0: "person"}}


def test_video_source_exclusions_and_errors(tmp_path, make_video):
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "toyvid.mp4", seconds=3)
    gt = tmp_path / "val.csv"
    gt.write_text("toyvid,0001,0.1,0.1,0.5,0.9,1,0\ntoyvid,0002,0.2,0.1,0.6,0.9,1,0\n")
    excl = tmp_path / "excl.csv"
    excl.write_text("toyvid,0002\n")
    out = tmp_path / "yolo"
    assert yolo_dataset.main(["--out", str(out), "--source", str(videos), "--dataset", "toy",
                              "--split", f"val={gt}", "--exclude", f"val={excl}"]) == 0
    assert sorted(p.name for p in (out / "images" / "val").iterdir()) == ["toyvid_000031.jpg"]
    assert cv2.imread(str(out / "images" / "val" / "toyvid_000031.jpg")).shape == (120, 160, 3)

    frames = tmp_path / "frames"
    _frames(frames, "toyvid", [31])
    with pytest.raises(FileNotFoundError, match="toyvid_000061.jpg"):
        yolo_dataset.main(["--out", str(out), "--source", str(frames), "--dataset", "toy", "--split", f"val={gt}"])
    with pytest.raises(SystemExit):
        yolo_dataset.main(["--out", str(out), "--source", str(frames), "--split", "val"])


def test_multisports_names():
    assert yolo_dataset.image_stem("basketball/v_Ab_c003.mp4", 101) == "basketball__v_Ab_c003_000101"
