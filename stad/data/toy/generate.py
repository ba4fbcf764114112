"""Write the toy-actors dataset: videos, frames, AVA CSVs, label map, exclusions, ACAR pkls, YOLO set.

Output layout (``OUT``)::

    videos/<vid>.mp4                       H.264 (PyAV), 30 fps
    frames/<vid>/<vid>_%06d.jpg            1-based; frame n shows time (n-1)/30 s
    train.csv, val.csv                     AVA GT (video,%04d,x1,y1,x2,y2,action_id,person_id)
    train_excluded_timestamps.csv, val_excluded_timestamps.csv
    labelmap.pbtxt                         11 classes, ids 1..11 (label/label_id dialect)
    annotations/train.pkl, val.pkl         ACAR [elements, idx_to_class], GT boxes
    yolo/images/{train,val}/<vid>_<frame:06d>.jpg, yolo/labels/..., yolo/dataset.yaml
    toy_meta.json                          sizes, seed, convention, per-video frame counts

Keyframes are at t = 1 .. duration-1 s (frame t*30+1) so a +-1.5 s window fits inside the video.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from stad.data.formats import acar_pkl, ava
from stad.data.formats.conventions import TOY
from stad.data.formats.labelmap import write_labelmap
from stad.data.toy.actions import toy_labelmap
from stad.data.toy.render import (AMBIGUOUS_MIN_VISIBLE, LABEL_MIN_VISIBLE, PARTNER_MIN_VISIBLE, background,
                                  render_frame, visible_actors)
from stad.data.toy.script import VideoScript, plan_split
from stad.io_utils import atomic_write_text
from stad.structures import Boxes, Keyframe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToySize:
    train_videos: int
    val_videos: int
    duration: int  # seconds
    width: int = 320
    height: int = 240
    fps: int = 30


SIZES = {
    "tiny": ToySize(2, 2, 3),
    "small": ToySize(4, 4, 6),
    "default": ToySize(32, 10, 10),
    "large": ToySize(96, 24, 10),  # what `make demo` trains and evaluates on
}
JPEG_QUALITY = 92
YOLO_SAMPLE_SECONDS = 0.5  # one detector-training image every half second
# Lying figures are a few % of the boxes, and a detector trained on the plain sample scores them
# 0.1-0.35 (the rest 0.7+): frames showing one are also sampled every 0.1 s.
YOLO_RARE_SAMPLE_SECONDS = 0.1
YOLO_RARE_ACTIVITIES = frozenset({"lie"})


@dataclass(frozen=True)
class VideoResult:
    video: str
    num_frames: int
    keyframes: list[Keyframe]
    excluded: list[tuple[str, int]]
    yolo: list[tuple[int, np.ndarray]]  # (frame, normalised xyxy boxes [N, 4])


def keyframe_annotations(script: VideoScript) -> tuple[list[Keyframe], list[tuple[str, int]]]:
    """GT keyframes at t = 1..duration-1 and the keys excluded as unlabelable: a half-visible person, or
    a labelled interaction whose partner is mostly out of view."""
    keyframes, excluded = [], []
    for t in range(1, script.duration):
        actors = visible_actors(script, float(t))
        shown = [a for a in actors if a.visible >= LABEL_MIN_VISIBLE]
        if any(AMBIGUOUS_MIN_VISIBLE < a.visible < LABEL_MIN_VISIBLE for a in actors) or \
                any(a.partner_visible < PARTNER_MIN_VISIBLE for a in shown):
            excluded.append((script.video, t))
            continue
        boxes = Boxes(np.array([a.box for a in shown], np.float32).reshape(-1, 4), None,
                      np.array([a.actor for a in shown], np.int64))
        keyframes.append(ava.keyframe_for((script.video, t), boxes, [a.labels for a in shown], TOY,
                                          {script.video: script.num_frames}))
    return keyframes, excluded


def _write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    import av  # local: only the generator and the video reader need PyAV

    tmp = path.with_name(f".{path.name}.tmp.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "17", "preset": "veryfast", "threads": "1"}
        stream.codec_context.thread_count = 1
        for img in frames:
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    os.replace(tmp, path)


def render_video(script: VideoScript, out: Path, split: str, write_video: bool = True) -> VideoResult:
    """Render all frames of one video, write JPEGs (+ mp4) and the YOLO images; return annotations."""
    world = background(script)
    frame_dir = out / "frames" / script.video
    frame_dir.mkdir(parents=True, exist_ok=True)
    yolo_every = int(round(YOLO_SAMPLE_SECONDS * script.fps))
    rare_every = int(round(YOLO_RARE_SAMPLE_SECONDS * script.fps))
    frames, yolo = [], []
    for n in range(1, script.num_frames + 1):
        t = (n - 1) / script.fps
        img = render_frame(script, world, t)
        ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        assert ok
        (frame_dir / f"{script.video}_{n:06d}.jpg").write_bytes(jpg.tobytes())
        if write_video:
            frames.append(img)
        if (n - 1) % yolo_every == 0 or (n - 1) % rare_every == 0:
            shown = [a for a in visible_actors(script, t) if a.visible > AMBIGUOUS_MIN_VISIBLE]
            if (n - 1) % yolo_every and not any(a.activity in YOLO_RARE_ACTIVITIES for a in shown):
                continue
            boxes = [a.box for a in shown]
            stem = f"{script.video}_{n:06d}"
            (out / "yolo" / "images" / split / f"{stem}.jpg").write_bytes(jpg.tobytes())
            yolo.append((n, np.array(boxes, np.float32).reshape(-1, 4)))
    if write_video:
        (out / "videos").mkdir(parents=True, exist_ok=True)
        _write_video(out / "videos" / f"{script.video}.mp4", frames, script.fps)
    keyframes, excluded = keyframe_annotations(script)
    return VideoResult(script.video, script.num_frames, keyframes, excluded, yolo)


def _yolo_label_text(boxes: np.ndarray) -> str:
    """Ultralytics ``class cx cy w h`` lines (class 0 = person), zero-area boxes dropped."""
    lines = []
    for x1, y1, x2, y2 in np.clip(boxes, 0, 1):
        if x2 > x1 and y2 > y1:
            lines.append(f"0 {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}")
    return "".join(line + "\n" for line in lines)


def _render_job(args: tuple) -> VideoResult:
    script, out, split, write_video = args
    cv2.setNumThreads(1)
    return render_video(script, out, split, write_video)


def generate(out: str | Path, seed: int = 0, size: str | ToySize = "default", workers: int = 2,
             write_video: bool = True, progress: bool = True) -> dict:
    """Generate the toy dataset under ``out``; returns the metadata also saved as ``toy_meta.json``."""
    out = Path(out)
    spec = SIZES[size] if isinstance(size, str) else size
    dims = dict(width=spec.width, height=spec.height, fps=spec.fps, duration=spec.duration)
    splits = {"train": plan_split("toy_train", spec.train_videos, seed, 0, **dims),
              "val": plan_split("toy_val", spec.val_videos, seed, 1, **dims)}
    for split in splits:
        (out / "yolo" / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "yolo" / "labels" / split).mkdir(parents=True, exist_ok=True)
    jobs = [(script, out, split, write_video) for split, scripts in splits.items() for script in scripts]
    if workers > 1:
        # spawn, not fork: forking a process that already runs threads (torch, OpenCV pools) can deadlock
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(tqdm(pool.map(_render_job, jobs), total=len(jobs), desc="toy videos", disable=not progress))
    else:
        results = [_render_job(j) for j in tqdm(jobs, desc="toy videos", disable=not progress)]
    labelmap = toy_labelmap()
    write_labelmap(labelmap, out / "labelmap.pbtxt")
    meta = {"seed": seed, "size": spec.__dict__, "fps": spec.fps, "first_timestamp": 0,
            "convention": "keyframe t (s) <-> frame t*fps+1; keyframes t=1..duration-1",
            "frame_format": "{video}_%06d.jpg", "splits": {}}
    by_video = {r.video: r for r in results}
    for split, scripts in splits.items():
        res = [by_video[s.video] for s in scripts]
        keyframes = [kf for r in res for kf in r.keyframes]
        ava.write_gt_csv(out / f"{split}.csv", keyframes, labelmap)
        ava.write_excluded(out / f"{split}_excluded_timestamps.csv", [k for r in res for k in r.excluded])
        acar_pkl.write_acar_pkl(out / "annotations" / f"{split}.pkl", keyframes, labelmap)
        for r in res:
            for n, boxes in r.yolo:
                atomic_write_text(out / "yolo" / "labels" / split / f"{r.video}_{n:06d}.txt", _yolo_label_text(boxes))
        meta["splits"][split] = {"videos": {r.video: r.num_frames for r in res}, "keyframes": len(keyframes),
                                 "boxes": sum(len(kf.boxes) for kf in keyframes),
                                 "excluded": sum(len(r.excluded) for r in res)}
    yaml_text = (f"path: {(out / 'yolo').resolve()}\ntrain: images/train\nval: images/val\nnames:\n  0: person\n")
    atomic_write_text(out / "yolo" / "dataset.yaml", yaml_text)
    atomic_write_text(out / "toy_meta.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta
