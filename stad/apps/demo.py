"""Spatio-temporal action detection on any video file: person detector -> action model -> outputs.

    python -m stad.demo --video clip.mp4 --out clip_annotated.mp4 [--csv clip.csv]
    python -m stad.demo --video my.mp4 --weights AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar --detector yolov8n.pt \
        --out my_annotated.mp4 --csv my.csv
    python -m stad.demo --video clip.mp4 --config configs/ava/eval_SLOWFAST_R50_ACAR_HR2O.yaml \
        --weights checkpoints/AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar --detector checkpoints/yolov8x.pt --out out.mp4

``--weights`` (alias ``--checkpoint``) is enough: an ACAR-Net model-zoo file (its preset, R50 / R101 /
linear, is inferred from its keys and logged) or a checkpoint written by ``main.py`` (its preset is
stored in it) gives the model, the test-time transform, the clip length / stride / frame rate, the
activation and the label map (AVA's 60 class ids and names for ACAR-Net files; stad.models.presets).
With ``--config`` the config builds them instead, and must agree with the weights' preset
(``preprocessing_override: true`` in the config runs anyway, logged). Without either it uses the
model ``make demo`` trained (``runs/demo/acar``).

The video is decoded with PyAV at its own frame rate and size. Keyframes are taken every
``--every`` seconds (or at the timestamps of ``--boxes``); each keyframe's clip is sampled in
*time* at the frame rate the model was trained at (the preset's, or ``--model-fps``), so a 25, 30
or 60 fps video gives the model the same temporal extent. The person detector's image size and
threshold come from its weights (sidecar ``<stem>.yaml``: ``imgsz``, ``demo_conf``; ultralytics'
``train_args``) unless given. Outputs: the annotated video (same size, frame rate and frame count
as the input; boxes, person ids from a greedy IoU tracker, top actions with scores), an AVA-style
prediction CSV (``video_id,t,x1,y1,x2,y2,action_id,score``, video id = file stem) and, next to it,
the label map of its action ids (``<csv stem>.labelmap.pbtxt``).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from detect.runtimes import RUNTIMES
from stad.structures import Boxes, LabelMap
from stad.apps.visualize import Mp4Writer, Overlay, draw_overlay, overlay_at, save_png, top_actions

LOGGER = logging.getLogger("stad.demo")
DEMO_RUN = Path("runs/demo")
DEFAULT_CHECKPOINT = DEMO_RUN / "acar" / "checkpoints" / "last.pth"
DEFAULT_DETECTOR = Path("checkpoints/toy_person_yolov8n.pt")
# the demo's detector settings when neither the command line nor the weights give them (detect.detector_settings);
# the demo's threshold is the sidecar's ``demo_conf`` (boxes drawn and classified), not the proposals' ``conf``
DETECTOR_DEFAULTS = {"imgsz": 640, "conf": 0.4, "iou": 0.6}
DEFAULT_MODEL_FPS = 30.0


class DemoError(Exception):
    """A user-facing problem (bad file, missing model): printed without a traceback, exit code 2."""


# --------------------------------------------------------------------------- video


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    num_frames: int
    fps: Fraction
    width: int
    height: int

    @property
    def video_id(self) -> str:
        return self.path.stem

    @property
    def duration(self) -> float:
        return self.num_frames / float(self.fps)


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, frame rate and size of the first video stream; `DemoError` if it is not a video."""
    import av

    path = Path(path)
    if not path.is_file():
        raise DemoError(f"{path}: no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DemoError(f"{path}: not a video file (no video stream)")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            count = int(stream.frames or 0)
            if count <= 0:  # containers without a frame count: count by decoding
                count = sum(1 for _ in container.decode(stream))
            width, height = stream.codec_context.width, stream.codec_context.height
    except DemoError:
        raise
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise DemoError(f"{path}: not a readable video file ({error})") from None
    if count <= 0 or not width or not height:
        raise DemoError(f"{path}: the video stream has no decodable frames")
    return VideoInfo(path, count, Fraction(rate) if rate else Fraction(30), int(width), int(height))


def iter_frames(path: Path) -> Iterator[np.ndarray]:
    """BGR frames ``uint8 [H, W, 3]`` in decoding order."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="bgr24")
    except av.FFmpegError as error:
        raise DemoError(f"{path}: decoding failed ({error})") from None


# --------------------------------------------------------------------------- keyframes


@dataclass(frozen=True)
class KeyframePlan:
    """One keyframe: its AVA timestamp, time in the file, frame index and clip frame indices (0-based)."""

    timestamp: int
    time: float
    frame: int
    clip: np.ndarray  # int64 [T]


def plan_keyframes(info: VideoInfo, clip_len: int, stride: int, model_fps: float, every: int = 1,
                   timestamps: Sequence[int] | None = None, video_start: float = 0.0) -> list[KeyframePlan]:
    """Keyframes every ``every`` s (or at ``timestamps``, shifted by ``video_start``) with their clips.

    Clip frame i of a keyframe at time s is the frame nearest to ``s + (i - T//2) * stride / model_fps``
    (the training sampler's ``mid + stride * (i - T//2)`` at the model's frame rate), clamped to the video.
    """
    fps, last = float(info.fps), info.num_frames - 1
    if timestamps is None:
        timestamps = range(0, int(np.floor(last / fps)) + 1, max(1, int(every)))
    offsets = (np.arange(clip_len) - clip_len // 2) * stride / model_fps
    plans = []
    for t in timestamps:
        time = float(t) - video_start
        frame = int(round(time * fps))
        if not 0 <= frame <= last:
            LOGGER.warning("%s: keyframe %s (%.2f s) is outside the video (%.2f s): skipped", info.path, t, time,
                           info.duration)
            continue
        clip = np.clip(np.round((time + offsets) * fps), 0, last).astype(np.int64)
        plans.append(KeyframePlan(int(t), time, frame, clip))
    return plans


@dataclass(frozen=True)
class KeyframeResult:
    plan: KeyframePlan
    boxes: Boxes  # normalised; ids = person ids (-1 unknown)
    scores: np.ndarray  # [N, K] class probabilities


def predict_video(info: VideoInfo, plans: Sequence[KeyframePlan], find_boxes: Callable[[KeyframePlan, np.ndarray], Boxes],
                  score_boxes: Callable[[np.ndarray, Boxes], np.ndarray], progress: bool = True) -> list[KeyframeResult]:
    """One streaming decode: each keyframe is scored as soon as its last clip frame is decoded.

    Only frames some pending keyframe needs are kept, so memory stays at about one clip window.
    ``find_boxes(plan, keyframe_bgr)`` gives the persons, ``score_boxes(clip_bgr [T,H,W,3], boxes)`` their scores.
    """
    from tqdm import tqdm

    users: dict[int, int] = defaultdict(int)
    for plan in plans:
        for index in {*plan.clip.tolist(), plan.frame}:
            users[index] += 1
    order = sorted(range(len(plans)), key=lambda j: max(int(plans[j].clip.max()), plans[j].frame))
    buffer: dict[int, np.ndarray] = {}
    results: dict[int, KeyframeResult] = {}
    last_frame, decoded = None, 0

    def score(j: int) -> None:
        plan = plans[j]
        frames = np.stack([buffer.get(int(i), last_frame) for i in plan.clip])
        boxes = find_boxes(plan, buffer.get(plan.frame, last_frame))
        results[j] = KeyframeResult(plan, boxes, score_boxes(frames, boxes))
        for index in {*plan.clip.tolist(), plan.frame}:
            users[index] -= 1
            if users[index] == 0:
                buffer.pop(index, None)

    pending = list(order)
    with tqdm(total=info.num_frames, desc="detect + classify", unit="frame", disable=not progress,
              file=sys.stderr) as bar:
        for index, frame in enumerate(iter_frames(info.path)):
            decoded, last_frame = index + 1, frame
            if users.get(index):
                buffer[index] = frame
            while pending and max(int(plans[pending[0]].clip.max()), plans[pending[0]].frame) <= index:
                score(pending.pop(0))
            bar.update(1)
    if decoded == 0:
        raise DemoError(f"{info.path}: no frame could be decoded")
    if pending:
        LOGGER.warning("%s: decoded %d frames, the header said %d; the last %d keyframes use the last frame",
                       info.path, decoded, info.num_frames, len(pending))
        for j in pending:
            score(j)
    return [results[j] for j in range(len(plans))]


# --------------------------------------------------------------------------- model and boxes


class ActionModel:
    """An action detector with its preset's test-time transform, clip sampling, activation and label map.

    ``weights``: an ACAR-Net model-zoo file, a Chaotic World reference file or a checkpoint of ours
    (`stad.engine.builders.weights_preset`). ``config``: build the model and preprocessing from this
    config instead; it must agree with the weights' preset (`builders.check_preprocessing`).
    """

    def __init__(self, weights: str | Path, config: str | Path | None = None, device: str = "cpu") -> None:
        import torch

        from stad.config import ConfigError, load_config
        from stad.engine import builders
        from stad.engine.checkpoint import read_checkpoint
        from stad.models.presets import UnknownLayoutError

        weights = Path(weights)
        if not weights.is_file():
            raise DemoError(f"{weights}: weights not found (an ACAR-Net model-zoo .pth.tar or a checkpoint of "
                            "main.py, e.g. runs/<run>/checkpoints/last.pth)")
        try:
            state = read_checkpoint(weights)
        except RuntimeError as error:
            raise DemoError(str(error)) from None
        try:
            if config is None:
                preset, reason = builders.weights_preset(state, str(weights))
                LOGGER.info("model preset: %s", reason)
            else:
                preset = self._config_preset(load_config(config), state, weights, builders)
        except (ConfigError, UnknownLayoutError) as error:
            raise DemoError(f"config error: {error}" if isinstance(error, ConfigError) else str(error)) from None
        self.preset = preset
        pre = preset.preprocessing
        self.clip_len, self.stride, self.fps = pre.clip_len, pre.frame_stride, pre.fps
        self.transform = builders.transform_from_preprocessing(pre)
        self.device = torch.device(device)
        self.model = preset.build_model()
        try:
            builders.load_weights(self.model, state, strict=True)
        except (RuntimeError, KeyError, ValueError) as error:
            raise DemoError(f"{weights} does not fit the model of its preset {preset.name or '(from a config)'}: "
                            f"{error}") from None
        self.model.to(self.device).eval()
        self.activation = pre.activation_fn()
        self.labelmap = pre.labelmap
        LOGGER.info("action model: %s, %d classes (%s ... %s), clips of %d frames %d apart at %s fps, "
                    "resize %s, norm %s mean %s std %s, %s", preset.name or "from the config", pre.num_classes,
                    self.labelmap.names[0], self.labelmap.names[-1], pre.clip_len, pre.frame_stride,
                    pre.fps or "unknown", pre.resize, pre.norm_value, list(pre.mean), list(pre.std), pre.activation)

    @staticmethod
    def _config_preset(config, state: dict, weights: Path, builders):
        """The config's preset, checked against the weights' (stored or inferred); what the config leaves
        unknown (frame rate, label map when its files are absent) comes from the weights."""
        from dataclasses import replace

        preset = builders.preset_from_config(config)
        stored, reason = builders.weights_preset(state, str(weights), required=False)
        if stored is None:
            LOGGER.warning("%s: preprocessing not checked against the weights (%s)", weights, reason)
            return preset
        builders.check_preprocessing(config, stored, reason, LOGGER)
        pre, theirs = preset.preprocessing, stored.preprocessing
        if not pre.label_ids and theirs.label_ids and theirs.num_classes == pre.num_classes:
            pre = replace(pre, label_ids=theirs.label_ids, label_names=theirs.label_names)
        return replace(preset, preprocessing=replace(pre, fps=pre.fps or theirs.fps))

    def __call__(self, frames_bgr: np.ndarray, boxes: Boxes) -> np.ndarray:
        """Class probabilities ``[N, K]`` for ``boxes`` in the clip ``frames_bgr`` ``[T, H, W, 3]``."""
        import torch

        if not len(boxes):
            return np.zeros((0, len(self.labelmap)), np.float32)
        recipe = self.transform.sample(frames_bgr.shape[1], frames_bgr.shape[2], np.random.default_rng(0))
        clip = recipe.render(frames_bgr)[None].to(self.device)
        rois = torch.from_numpy(recipe.map_boxes(boxes.xyxy)).to(self.device)
        with torch.no_grad():
            logits = self.model(clip, [rois])
        return self.activation(logits.float()).cpu().numpy().astype(np.float32)


def read_boxes_csv(path: str | Path, video_id: str) -> dict[int, Boxes]:
    """Person boxes of ``video_id`` per timestamp from an AVA-style CSV.

    GT rows (``...,action_id,person_id``) give score 1 and the person id; proposal rows (column 6
    empty or -1) give column 7 as the score. One box per distinct box string at a keyframe.
    """
    import csv

    path = Path(path)
    if not path.is_file():
        raise DemoError(f"{path}: no such file")
    found: dict[int, dict[str, tuple[list[float], float, int]]] = defaultdict(dict)
    videos = set()
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not row:
                continue
            if len(row) < 7:
                raise DemoError(f"{path}:{line}: expected >= 7 columns (video,t,x1,y1,x2,y2,...), got {len(row)}")
            videos.add(row[0])
            if row[0] != video_id:
                continue
            try:
                t, box = int(float(row[1])), [float(v) for v in row[2:6]]
                proposal = row[6].strip() in ("", "-1")
                last = row[7].strip() if len(row) > 7 else ""
                score, person = (float(last or 1.0), -1) if proposal else (1.0, int(float(last)) if last else -1)
            except ValueError as error:
                raise DemoError(f"{path}:{line}: {error}") from None
            found[t].setdefault(",".join(row[2:6]), (box, score, person))
    if not found:
        sample = ", ".join(sorted(videos)[:5])
        raise DemoError(f"{path}: no rows for video {video_id!r} (the file stem); videos in the file: {sample}")
    out = {}
    for t, by_box in sorted(found.items()):
        boxes, scores, ids = zip(*by_box.values())
        out[t] = Boxes(np.array(boxes, np.float32), np.array(scores, np.float32), np.array(ids, np.int64))
    return out


# --------------------------------------------------------------------------- outputs


def assign_person_ids(results: Sequence[KeyframeResult]) -> list[KeyframeResult]:
    """Results whose boxes carry track ids; boxes that already have ids (e.g. GT) keep theirs."""
    from stad.apps.tracking import IouTracker

    if all(len(r.boxes) == 0 or (r.boxes.ids >= 0).all() for r in results):
        return list(results)
    tracker = IouTracker()
    return [KeyframeResult(r.plan, tracker.update(r.boxes), r.scores) for r in results]


def write_csv(path: str | Path, video_id: str, results: Sequence[KeyframeResult], labelmap: LabelMap) -> int:
    from stad.data.formats.ava import write_predictions_csv

    return write_predictions_csv(path, ((video_id, r.plan.timestamp, r.boxes.xyxy, r.scores) for r in results),
                                 labelmap)


def csv_labelmap_path(csv_path: str | Path) -> Path:
    """``out.csv`` -> ``out.labelmap.pbtxt``: the ids and names of the CSV's action column."""
    return Path(csv_path).with_suffix(".labelmap.pbtxt")


def write_csv_labelmap(csv_path: str | Path, labelmap: LabelMap) -> Path:
    """Write the label map of the CSV's class ids next to it (the evaluator's ``-l`` reads it)."""
    from stad.data.formats.labelmap import write_labelmap

    path = csv_labelmap_path(csv_path)
    write_labelmap(labelmap, path)
    return path


def write_annotated_video(info: VideoInfo, overlays: Sequence[Overlay], out: str | Path, every: float = 1.0,
                          snapshot: str | Path | None = None, snapshot_scale: float = 1.0,
                          progress: bool = True) -> int:
    """Second decode pass: draw the overlay of each frame's time and encode; returns frames written.

    ``snapshot``: also save, as PNG, the annotated keyframe showing the most actions and persons (drawn on the
    frame enlarged ``snapshot_scale`` times, so small videos give a readable picture).
    """
    import cv2
    from tqdm import tqdm

    # the keyframe showing the most actions, then the most persons
    best = max(overlays, key=lambda o: (sum(len(a) for a in o.actions), len(o.boxes)), default=None)
    snap_frame = int(round(best.time * float(info.fps))) if (snapshot and best is not None) else -1
    fps = float(info.fps)
    with Mp4Writer(out, info.width, info.height, info.fps) as writer, \
            tqdm(total=info.num_frames, desc="annotated video", unit="frame", disable=not progress,
                 file=sys.stderr) as bar:
        for index, frame in enumerate(iter_frames(info.path)):
            time = index / fps
            drawn = draw_overlay(frame, overlay_at(overlays, time, max_gap=1.5 * every),
                                 header=f"{info.video_id}  {time:5.1f}s")
            writer.write(drawn)
            if index == snap_frame:
                save_png(snapshot, drawn if snapshot_scale == 1 else draw_overlay(
                    cv2.resize(frame, None, fx=snapshot_scale, fy=snapshot_scale, interpolation=cv2.INTER_CUBIC),
                    overlay_at(overlays, time, max_gap=1.5 * every), header=f"{info.video_id}  {time:5.1f}s"))
            bar.update(1)
        return writer.frames_written


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stad.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", required=True, help="input video file (any container/codec FFmpeg reads)")
    parser.add_argument("--out", required=True, help="annotated MP4 to write")
    parser.add_argument("--csv", help="also write AVA-style predictions (video id = file stem)")
    parser.add_argument("--weights", "--checkpoint", dest="weights",
                        help="action model weights: an ACAR-Net model-zoo file (preset inferred from its keys) or a "
                             f"main.py checkpoint (preset stored in it); default: {DEFAULT_CHECKPOINT} (make demo)")
    parser.add_argument("--config", help="build the model and preprocessing from this config instead of the weights' "
                                         "preset (needs --weights; the two must agree)")
    parser.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="ultralytics person detector .pt")
    parser.add_argument("--boxes", help="AVA-style CSV of person boxes (GT or proposals) to use instead of the "
                                         "detector; its timestamps of this video become the keyframes")
    parser.add_argument("--video-start", type=float, default=0.0,
                        help="timestamp (s) of the file's first frame, for --boxes (AVA clips cut at 900 s: 900)")
    parser.add_argument("--every", type=int, default=1, help="seconds between keyframes (default 1, as AVA)")
    parser.add_argument("--model-fps", type=float,
                        help="frame rate the model was trained at (default: the preset's, e.g. AVA 30, Chaotic World "
                             f"25; else {DEFAULT_MODEL_FPS:g})")
    parser.add_argument("--conf", type=float, help="detector score threshold (default: the detector's sidecar "
                                                   f"demo_conf, else {DETECTOR_DEFAULTS['conf']})")
    parser.add_argument("--iou", type=float, help="detector NMS IoU threshold, duplicates above it go (default: "
                                                  f"sidecar, else {DETECTOR_DEFAULTS['iou']})")
    parser.add_argument("--imgsz", type=int, help="detector image size (default: the detector's sidecar, else the size "
                                                  f"it was trained at, else {DETECTOR_DEFAULTS['imgsz']})")
    parser.add_argument("--top-k", type=int, default=3, help="actions printed per person")
    parser.add_argument("--threshold", type=float, default=0.3, help="min score of printed actions (best always shown)")
    parser.add_argument("--snapshot", help="also save the annotated keyframe showing the most actions as PNG")
    parser.add_argument("--snapshot-scale", type=float, default=1.0, help="enlarge the snapshot (small videos)")
    parser.add_argument("--runtime", default="auto", choices=("auto", *RUNTIMES),
                        help="detector network runtime, as `detect.proposals --runtime` (auto: openvino, else onnx, "
                             "on a CPU when installed; torch otherwise)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def _model_paths(args: argparse.Namespace) -> tuple[Path | None, Path]:
    if args.weights:
        return (Path(args.config) if args.config else None), Path(args.weights)
    if args.config:
        raise DemoError("--config needs --weights (the config says how to build the model, not which weights)")
    if not DEFAULT_CHECKPOINT.is_file():
        raise DemoError(f"no --weights given and the demo model is missing ({DEFAULT_CHECKPOINT}): "
                        "run `make demo` first, or pass --weights")
    LOGGER.info("using the model trained by `make demo`: %s", DEFAULT_CHECKPOINT)
    return None, DEFAULT_CHECKPOINT


def _box_finder(args: argparse.Namespace, info: VideoInfo) -> tuple[Callable, list[int] | None]:
    if args.boxes:
        by_time = read_boxes_csv(args.boxes, info.video_id)
        LOGGER.info("boxes from %s: %d keyframes of %s", args.boxes, len(by_time), info.video_id)
        return (lambda plan, frame: by_time.get(plan.timestamp, Boxes.empty())), sorted(by_time)
    weights = Path(args.detector)
    if not weights.is_file():
        raise DemoError(f"{weights}: person detector not found (see checkpoints/README.md; `make demo` uses "
                        "the shipped toy detector), or pass --boxes with your own person boxes")
    from detect.detector import PersonDetector, detector_settings

    try:
        settings = detector_settings(weights, {"imgsz": args.imgsz, "conf": args.conf, "iou": args.iou},
                                     DETECTOR_DEFAULTS, sidecar_keys={"conf": "demo_conf"})
    except ValueError as error:
        raise DemoError(str(error)) from None
    LOGGER.info("detector settings: %s", settings.describe())
    detector = PersonDetector(weights, device=args.device, imgsz=settings["imgsz"], conf=settings["conf"],
                              iou=settings["iou"], runtime=args.runtime,
                              runtime_threads=args.threads or os.cpu_count() or 1)
    LOGGER.info("%s", detector)
    return (lambda plan, frame: detector.detect([frame])[0]), None


def run(args: argparse.Namespace) -> dict:
    """The whole demo; returns a summary (paths, counts)."""
    info = probe_video(args.video)
    LOGGER.info("%s: %d frames, %.3f fps, %dx%d", info.path, info.num_frames, float(info.fps), info.width, info.height)
    config, checkpoint = _model_paths(args)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    model = ActionModel(checkpoint, config, args.device)
    model_fps = args.model_fps or model.fps or DEFAULT_MODEL_FPS
    LOGGER.info("clips sampled at %g fps (%s)", model_fps, "--model-fps" if args.model_fps else
                "the preset's frame rate" if model.fps else "the preset does not say: default")
    find_boxes, timestamps = _box_finder(args, info)
    plans = plan_keyframes(info, model.clip_len, model.stride, model_fps, args.every, timestamps,
                           args.video_start if args.boxes else 0.0)
    if not plans:
        raise DemoError(f"{info.path}: no keyframe inside the video")
    results = assign_person_ids(predict_video(info, plans, find_boxes, model, progress=not args.no_progress))
    names = model.labelmap.names
    overlays = [Overlay(r.plan.time, r.boxes, top_actions(r.scores, names, args.top_k, args.threshold))
                for r in results]
    summary = {"video": str(info.path), "frames": info.num_frames, "fps": float(info.fps),
               "size": [info.width, info.height], "keyframes": len(results),
               "boxes": int(sum(len(r.boxes) for r in results)), "out": str(args.out)}
    if args.csv:
        summary["csv_rows"] = write_csv(args.csv, info.video_id, results, model.labelmap)
        summary["csv"] = str(args.csv)
        summary["labelmap"] = str(write_csv_labelmap(args.csv, model.labelmap))
    summary["frames_written"] = write_annotated_video(info, overlays, args.out, args.every, args.snapshot,
                                                      args.snapshot_scale, progress=not args.no_progress)
    if args.snapshot:
        summary["snapshot"] = str(args.snapshot)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run(args)
    except DemoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"annotated video: {summary['out']} ({summary['frames_written']} frames, "
          f"{summary['size'][0]}x{summary['size'][1]}, {summary['fps']:.3f} fps)")
    print(f"keyframes: {summary['keyframes']}, person boxes: {summary['boxes']}")
    if "csv" in summary:
        print(f"predictions: {summary['csv']} ({summary['csv_rows']} rows; class ids: {summary['labelmap']})")
    if "snapshot" in summary:
        print(f"snapshot: {summary['snapshot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
