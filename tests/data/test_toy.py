"""The toy-actors generator: files, determinism, label statistics, conventions."""
import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from stad.data.formats import acar_pkl, ava
from stad.data.formats.labelmap import read_labelmap
from stad.data.toy import CLASSES, INTERACTION_CLASSES, MOTION_CLASSES, POSE_CLASSES, generate


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "toy"
    meta = generate(out, seed=0, size="tiny", workers=2, progress=False)
    return out, meta


def _digest(root: Path, pattern: str) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob(pattern))}


def test_layout_and_counts(tiny):
    out, meta = tiny
    assert meta["size"]["duration"] == 3 and len(meta["splits"]["train"]["videos"]) == 2
    for split in ("train", "val"):
        for video, n in meta["splits"][split]["videos"].items():
            assert n == 90
            assert (out / "videos" / f"{video}.mp4").stat().st_size > 1000
            frames = sorted((out / "frames" / video).glob("*.jpg"))
            assert len(frames) == 90 and frames[0].name == f"{video}_000001.jpg"
        assert (out / f"{split}_excluded_timestamps.csv").exists()
        assert any((out / "yolo" / "labels" / split).glob("*.txt"))
    assert "path:" in (out / "yolo" / "dataset.yaml").read_text()


def test_deterministic_across_runs_and_workers(tiny, tmp_path):
    out, _ = tiny
    again = tmp_path / "again"
    generate(again, seed=0, size="tiny", workers=1, write_video=False, progress=False)
    for pattern in ("*.csv", "annotations/*.pkl", "labelmap.pbtxt", "frames/*/*.jpg", "yolo/labels/*/*.txt"):
        first, second = _digest(out, pattern), _digest(again, pattern)
        assert first and first == second, pattern
    other = tmp_path / "seed1"
    generate(other, seed=1, size="tiny", workers=1, write_video=False, progress=False)
    assert _digest(out, "*.csv") != _digest(other, "*.csv")


def test_csv_pkl_and_labelmap_agree(tiny):
    out, _ = tiny
    labelmap = read_labelmap(out / "labelmap.pbtxt")
    assert labelmap.names == tuple(c[1] for c in CLASSES)
    for split in ("train", "val"):
        from_csv = ava.read_gt_csv(out / f"{split}.csv", labelmap)
        from_pkl, pkl_map = acar_pkl.read_acar_pkl(out / "annotations" / f"{split}.pkl")
        assert pkl_map.ids == labelmap.ids
        by_key = {kf.key: kf for kf in from_pkl}
        for kf in from_csv:
            ref = by_key[kf.key]
            np.testing.assert_allclose(kf.boxes.xyxy, ref.boxes.xyxy, atol=6e-4)
            assert kf.labels == ref.labels
            # toy convention: keyframe t <-> frame t*30+1, window clamped inside the video
            assert ref.mid_frame == kf.timestamp * 30 + 1
            assert 1 <= ref.start_frame <= ref.mid_frame < ref.start_frame + ref.n_frames <= 91
            assert ref.format_str == f"{kf.video}_%06d.jpg"
            assert (out / "frames" / kf.video / (ref.format_str % ref.mid_frame)).exists()
        assert all(1 <= kf.timestamp <= 2 for kf in from_pkl)


def test_every_class_in_train_and_val_and_multilabel(tmp_path):
    out = tmp_path / "small"
    generate(out, seed=0, size="small", workers=2, write_video=False, progress=False)
    names = {c[0]: c[1] for c in CLASSES}
    for split in ("train", "val"):
        rows = list(csv.reader(open(out / f"{split}.csv")))
        counts = Counter(names[int(r[6])] for r in rows)
        assert set(counts) == set(names.values()), (split, counts)
        per_box = Counter((r[0], r[1], r[7]) for r in rows)
        assert max(per_box.values()) >= 3  # e.g. stand + walk + follow on one box
        keyframe_sizes = Counter((r[0], r[1]) for r in rows if names[int(r[6])] in POSE_CLASSES)
        assert max(keyframe_sizes.values()) >= 3  # several actors per frame
    assert set(POSE_CLASSES + MOTION_CLASSES + INTERACTION_CLASSES) == set(names.values())


def test_yolo_labels_match_normalised_boxes(tiny):
    out, _ = tiny
    for txt in (out / "yolo" / "labels" / "train").glob("*.txt"):
        assert (out / "yolo" / "images" / "train" / f"{txt.stem}.jpg").exists()
        for line in txt.read_text().splitlines():
            cls, cx, cy, w, h = line.split()
            assert cls == "0" and 0 < float(w) <= 1 and 0 < float(h) <= 1
            assert 0 <= float(cx) - float(w) / 2 + 1e-6 and float(cx) + float(w) / 2 <= 1 + 1e-6


def test_cli(tmp_path, capsys):
    from stad.data.toy.__main__ import main

    assert main(["--out", str(tmp_path / "cli"), "--size", "tiny", "--workers", "1", "--no-video"]) == 0
    out = capsys.readouterr().out
    assert "train: 2 videos" in out and "val: 2 videos" in out
    assert not (tmp_path / "cli" / "videos").exists() and (tmp_path / "cli" / "annotations" / "val.pkl").exists()
