"""AVA-style GT CSVs (AVA, Chaotic World 8-column, MultiSports) -> a YOLO person-detection dataset.

    python -m detect.yolo_dataset --out data/yolo_person --dataset ava --source frames/ \\
        --split train=ava_train_v2.2.csv --split val=ava_val_v2.2.csv [--exclude train=excl.csv]

Layout (FORMATS.md §5)::

    OUT/data.yaml                       path (absolute), train, val, names {0: person}
    OUT/images/<split>/<name>.jpg       one keyframe image per (video, t); linked, copied or decoded
    OUT/labels/<split>/<name>.txt       'class cx cy w h' per person, normalised

Rules: one box per distinct person box of a keyframe (GT has one row per action), boxes clipped to
[0, 1], zero-area boxes dropped (counted in the log), every label file written once ('w' mode), the
keyframe's *correct* frame number from the dataset convention (AVA t -> (t-900)*30+1), file names
``<video>_<frame:06d>`` prefixed by the video id so they are unique across videos (split back with
``rsplit('_', 1)``; '/' in MultiSports ids becomes '__' and a video extension is stripped).
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from detect.keyframes import CONVENTIONS, get_convention, requests_from_keys
from detect.source import VIDEO_EXTENSIONS, FrameFolderSource, open_source
from stad.cli import run_cli
from stad.data.formats import ava
from stad.io_utils import atomic_write_text
from stad.structures import KeyframeKey

LOGGER = logging.getLogger("detect.yolo_dataset")


@dataclass
class SplitStats:
    keyframes: int = 0
    boxes: int = 0
    duplicate_rows: int = 0
    zero_area_dropped: int = 0
    keyframes_without_boxes: int = 0
    excluded: int = 0


def image_stem(video: str, frame: int) -> str:
    """Unique, splittable file stem ``<video>_<frame:06d>`` for a keyframe image."""
    for ext in VIDEO_EXTENSIONS:
        if video.lower().endswith(ext):
            video = video[: -len(ext)]
            break
    return f"{video.replace('/', '__')}_{frame:06d}"


def person_boxes(gt_csv: str | Path, stats: SplitStats) -> dict[KeyframeKey, np.ndarray]:
    """Distinct person boxes per keyframe ``{(video, t): float32 [N, 4]}``, clipped, no zero-area boxes."""
    found: dict[KeyframeKey, dict[tuple, None]] = defaultdict(dict)
    rows = 0
    for row in ava.iter_gt_rows(gt_csv):
        rows += 1
        found[(row.video, row.timestamp)].setdefault(tuple(round(v, 6) for v in row.box), None)
    out = {}
    for key, boxes in sorted(found.items()):
        xyxy = np.clip(np.array(list(boxes), np.float32), 0.0, 1.0)
        keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        stats.zero_area_dropped += int((~keep).sum())
        out[key] = xyxy[keep]
    stats.duplicate_rows += rows - sum(len(b) for b in found.values())
    return out


def yolo_label_text(xyxy: np.ndarray) -> str:
    """``0 cx cy w h`` lines (6 decimals) for normalised xyxy boxes ``[N, 4]``."""
    lines = []
    for x1, y1, x2, y2 in np.asarray(xyxy, np.float64).reshape(-1, 4):
        lines.append(f"0 {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}")
    return "".join(line + "\n" for line in lines)


def _place(src: Path, dst: Path, mode: str) -> None:
    dst.unlink(missing_ok=True)
    if mode == "symlink":
        os.symlink(src.resolve(), dst)
    elif mode == "hardlink":
        os.link(src, dst)
    else:
        shutil.copyfile(src, dst)


def convert_split(out: Path, split: str, gt_csv: str | Path, source_path: str | Path, dataset: str,
                  excluded: Iterable[KeyframeKey] = (), link: str = "symlink", video_start: float = 0.0,
                  progress: bool = True) -> SplitStats:
    """Write ``images/<split>`` and ``labels/<split>`` for one GT CSV; returns counts."""
    stats = SplitStats()
    boxes = person_boxes(gt_csv, stats)
    excluded = set(excluded)
    stats.excluded = sum(1 for k in boxes if k in excluded)
    for key in [k for k, b in boxes.items() if not len(b)]:
        LOGGER.warning("%s: keyframe %s has no box left after clipping; skipped", gt_csv, key)
        stats.keyframes_without_boxes += 1
    keys = [k for k, b in boxes.items() if len(b) and k not in excluded]
    requests = requests_from_keys(keys, get_convention(dataset), video_start)
    images, labels = out / "images" / split, out / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    source = open_source(source_path)
    stems: dict[str, KeyframeKey] = {}
    for request in requests:
        stem = image_stem(request.video, request.frame)
        if stem in stems:
            raise ValueError(f"keyframes {stems[stem]} and {request.key} map to the same image name {stem}")
        stems[stem] = request.key
    for request in tqdm(requests, desc=f"yolo {split}", unit="img", disable=not progress):
        stem = image_stem(request.video, request.frame)
        if isinstance(source, FrameFolderSource):
            frame_path = source.path_of(request)
            if not frame_path.is_file():
                raise FileNotFoundError(f"{gt_csv}: keyframe {request.video},{request.timestamp}: frame {frame_path} is missing")
            _place(frame_path, images / f"{stem}{frame_path.suffix.lower()}", link)
        else:
            for _, image in source.iter_frames([request]):
                if not cv2.imwrite(str(images / f"{stem}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95]):
                    raise OSError(f"cannot write {images / (stem + '.jpg')}")
        (labels / f"{stem}.txt").write_text(yolo_label_text(boxes[request.key]))
        stats.keyframes += 1
        stats.boxes += len(boxes[request.key])
    return stats


def write_data_yaml(out: Path, splits: Sequence[str]) -> Path:
    data = {"path": str(out.resolve())}
    data.update({split: f"images/{split}" for split in splits})
    data["names"] = {0: "person"}
    path = out / "data.yaml"
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
    return path


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        split, sep, path = value.partition("=")
        if not sep or not split or not path:
            raise SystemExit(f"error: {flag} expects split=path, got {value!r}")
        out[split] = path
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detect.yolo_dataset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--source", required=True, help="frames root (<root>/<video>/<frames>) or video dir")
    parser.add_argument("--dataset", default="ava", choices=sorted(CONVENTIONS), help="keyframe -> frame convention")
    parser.add_argument("--split", action="append", required=True, metavar="SPLIT=GT_CSV",
                        help="e.g. --split train=ava_train_v2.2.csv --split val=ava_val_v2.2.csv")
    parser.add_argument("--exclude", action="append", default=[], metavar="SPLIT=CSV", help="excluded timestamps")
    parser.add_argument("--link", choices=("symlink", "hardlink", "copy"), default="symlink",
                        help="how frame files are placed (videos are always decoded to JPEG)")
    parser.add_argument("--video-start", type=float, default=0.0, help="time (s) of a video file's first frame")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    splits, excludes = _pairs(args.split, "--split"), _pairs(args.exclude, "--exclude")
    unknown = set(excludes) - set(splits)
    if unknown:
        raise SystemExit(f"error: --exclude for unknown split(s) {sorted(unknown)}")
    out = Path(args.out)
    for split, csv_path in splits.items():
        excluded = ava.read_excluded(excludes[split]) if split in excludes else set()
        stats = convert_split(out, split, csv_path, args.source, args.dataset, excluded, args.link, args.video_start)
        LOGGER.info("%s: %s", split, stats)
    LOGGER.info("wrote %s", write_data_yaml(out, list(splits)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
