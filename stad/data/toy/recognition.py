"""The toy actors as a clip-level recognition set: one clip per labelled actor per keyframe.

    python -m stad.data.toy.recognition --out data/toy_recognition --seed 0 [--size default] [--crop 96]

The videos are planned and drawn exactly as `stad.data.toy.generate` plans and draws them (same seed, same
scripts); instead of whole frames, every actor labelled at a keyframe ``t`` (the keyframes and exclusions of
`generate.keyframe_annotations`) gives a clip: the 1 s around ``t`` (30 frames, one activity: segments
change on half seconds) cropped to a square of ``3.4`` standing heights centred on the actor at ``t`` (a
partner at its relation's distance is in view; the border is replicated), resized to ``crop`` pixels.

Labels (each clip is labelled with its main actor's activity, the most specific class it carries): its
interaction class (talk-to, hand-over, push, follow) when it has one, else its motion (walk, run, wave, jump),
else its pose (stand, sit, lie): 11 classes, the toy label map's order, 0-based. An interaction's decoy
(the same gesture without a partner) is labelled with its pose, so the context decides. Half of the
labelled actors only stand (partners, decoys, idle actors): one ``stand`` clip in 5 is kept (chosen by
a hash of the clip name), so the classes are of comparable size. ``body`` is the pose
alone (stand, sit, lie): the second head of the multi-head lists.

Output (``OUT``)::

    videos/{train,val}/<clip>.mp4, frames/{train,val}/<clip>/img_%05d.jpg
    {train,val}_list_videos.txt          <split>/<clip>.mp4 <action>
    {train,val}_list_rawframes.txt       <split>/<clip> 30 <action>
    {train,val}_list_videos_body_action.txt   <split>/<clip>.mp4 <body> <action>
    classes_action.txt, classes_body.txt, toy_recognition_meta.json
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from stad.data.toy.actions import CLASSES, INTERACTION_CLASSES, MOTION_CLASSES, POSE_CLASSES
from stad.data.toy.generate import JPEG_QUALITY, SIZES, ToySize, _write_video, keyframe_annotations
from stad.data.toy.render import actor_states, background, render_frame, visible_actors
from stad.data.toy.script import VideoScript, plan_split
from stad.io_utils import atomic_write_text

log = logging.getLogger(__name__)
NAMES = tuple(c[1] for c in CLASSES)
CROP_HEIGHTS = 3.4  # crop side in standing heights of the actor's lane
CLIP_SECONDS = 1.0
STAND = 0  # "stand" (listeners, takers, the pushed, decoys and idle actors: half of all labelled actors) ...
STAND_KEEP_ONE_IN = 5  # ... is kept for one clip in 5 (by a hash of the clip name), so no class dominates


def main_label(labels: tuple[int, ...]) -> int:
    """The most specific of an actor's 0-based class indices: interaction > motion > pose."""
    names = {NAMES[i] for i in labels}
    for family in (INTERACTION_CLASSES, MOTION_CLASSES, POSE_CLASSES):
        found = [n for n in family if n in names]
        if found:
            return NAMES.index(found[0])
    raise ValueError(f"no class among {labels}")


def body_label(labels: tuple[int, ...]) -> int:
    """The pose (0 stand, 1 sit, 2 lie) among an actor's class indices."""
    poses = [POSE_CLASSES.index(NAMES[i]) for i in labels if NAMES[i] in POSE_CLASSES]
    return poses[0] if poses else 0


def crop_clip(frames: list[np.ndarray], centre: tuple[float, float], side: float, size: int) -> list[np.ndarray]:
    """Square crops ``[size, size, 3]`` of side ``side`` px centred on ``centre = (x, y)``; border replicated."""
    pad = int(np.ceil(side))
    x0, y0 = int(round(centre[0] - side / 2)) + pad, int(round(centre[1] - side / 2)) + pad
    out = []
    for img in frames:
        big = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        out.append(cv2.resize(big[y0:y0 + int(side), x0:x0 + int(side)], (size, size), interpolation=cv2.INTER_AREA))
    return out


def video_clips(script: VideoScript, split: str, out: Path, crop: int) -> list[dict]:
    """Render one video's labelled actors as clips (mp4 + JPEG frames); returns one record per clip."""
    world = background(script)
    cache: dict[int, np.ndarray] = {}
    half = int(round(CLIP_SECONDS * script.fps / 2))
    records = []
    keyframes, _ = keyframe_annotations(script)
    for kf in keyframes:
        t = kf.timestamp
        numbers = [n for n in range(t * script.fps + 1 - half, t * script.fps + 1 + half)]
        for n in numbers:
            if n not in cache:
                cache[n] = render_frame(script, world, (n - 1) / script.fps)
        states = {s.actor: s for s in actor_states(script, float(t))}
        labelled = {a.actor: a for a in visible_actors(script, float(t))}
        for actor in kf.boxes.ids.tolist():
            state, seen = states[actor], labelled[actor]
            name = f"{script.video}_t{t:02d}_a{actor}"
            action = main_label(seen.labels)
            if action == STAND and zlib.crc32(name.encode()) % STAND_KEEP_ONE_IN:
                continue
            centre = (state.x - script.cam_x(float(t)), state.ground_y - state.height / 2)
            clip = crop_clip([cache[n] for n in numbers], centre, CROP_HEIGHTS * state.height, crop)
            _write_clip(out, split, name, clip, script.fps)
            records.append({"clip": name, "frames": len(clip), "action": action,
                            "body": body_label(seen.labels)})
    return records


def _write_clip(out: Path, split: str, name: str, frames: list[np.ndarray], fps: int) -> None:
    folder = out / "frames" / split / name
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(frames, 1):
        ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        assert ok
        (folder / f"img_{i:05d}.jpg").write_bytes(jpg.tobytes())
    (out / "videos" / split).mkdir(parents=True, exist_ok=True)
    _write_video(out / "videos" / split / f"{name}.mp4", frames, fps)


def _job(args: tuple) -> list[dict]:
    script, split, out, crop = args
    cv2.setNumThreads(1)
    return video_clips(script, split, out, crop)


def _write_lists(out: Path, split: str, records: list[dict]) -> None:
    atomic_write_text(out / f"{split}_list_videos.txt",
                      "".join(f"{split}/{r['clip']}.mp4 {r['action']}\n" for r in records))
    atomic_write_text(out / f"{split}_list_rawframes.txt",
                      "".join(f"{split}/{r['clip']} {r['frames']} {r['action']}\n" for r in records))
    atomic_write_text(out / f"{split}_list_videos_body_action.txt",
                      "".join(f"{split}/{r['clip']}.mp4 {r['body']} {r['action']}\n" for r in records))


def generate_recognition(out: str | Path, seed: int = 0, size: str | ToySize = "default", crop: int = 96,
                         workers: int = 2) -> dict:
    """Write the toy recognition set under ``out``; returns (and saves) its metadata (clips per class)."""
    out = Path(out)
    spec = SIZES[size] if isinstance(size, str) else size
    dims = dict(width=spec.width, height=spec.height, fps=spec.fps, duration=spec.duration)
    splits = {"train": plan_split("toy_train", spec.train_videos, seed, 0, **dims),
              "val": plan_split("toy_val", spec.val_videos, seed, 1, **dims)}
    jobs = [(s, split, out, crop) for split, scripts in splits.items() for s in scripts]
    if workers > 1:  # spawn, not fork (threads of torch / OpenCV in the parent)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_job, jobs))
    else:
        results = [_job(j) for j in jobs]
    meta: dict = {"seed": seed, "size": spec.__dict__, "crop": crop, "classes": list(NAMES),
                  "body_classes": list(POSE_CLASSES), "splits": {}}
    for split in splits:
        records = [r for (_, s, _, _), found in zip(jobs, results) if s == split for r in found]
        _write_lists(out, split, records)
        counts = np.bincount([r["action"] for r in records], minlength=len(NAMES))
        meta["splits"][split] = {"clips": len(records), "per_class": dict(zip(NAMES, counts.tolist()))}
    atomic_write_text(out / "classes_action.txt", "".join(n + "\n" for n in NAMES))
    atomic_write_text(out / "classes_body.txt", "".join(n + "\n" for n in POSE_CLASSES))
    atomic_write_text(out / "toy_recognition_meta.json", json.dumps(meta, indent=1) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stad.data.toy.recognition", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--crop", type=int, default=96, help="clip side in pixels")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    meta = generate_recognition(args.out, args.seed, args.size, args.crop, args.workers)
    for split, info in meta["splits"].items():
        print(f"{split}: {info['clips']} clips; " + ", ".join(f"{k} {v}" for k, v in info["per_class"].items()))
    return 0


if __name__ == "__main__":
    from stad.cli import run_cli

    sys.exit(run_cli(main))
