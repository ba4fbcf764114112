"""Spatio-temporal action detection on any video file: person detector -> action model -> outputs.

    python -m stad.demo --video clip.mp4 --out clip_annotated.mp4 [--csv clip.csv]     (= python -m stad.apps.demo)
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

Everything between the pixels and the scores is the engine's `stad.engine.inference.Predictor`, the
path ``main.py`` evaluation scores with: the video is decoded once, at its own frame rate and size
(`stad.data.video`); keyframes are taken every ``--every`` seconds (or at the timestamps of
``--boxes``, read by `stad.data.formats.ava.read_person_boxes_csv`), each keyframe's clip is sampled
in *time* at the frame rate the model was trained at (the preset's, or ``--model-fps``), so a 25, 30
or 60 fps video gives the model the same temporal extent, and keyframes are scored ``--batch-size``
at a time. The annotated video is drawn and encoded during the same decoding pass. The pass is the
file case of the stream core (`stad.engine.streaming`, offline mode: no keyframe is dropped) that
``python -m stad.stream`` runs on live sources; the log ends with its per-stage times.

The person detector's image size and threshold come from its weights (sidecar ``<stem>.yaml``: ``imgsz``, ``demo_conf``; ultralytics'
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
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from detect.runtimes import RUNTIMES
from stad.apps.visualize import Overlay, StreamingAnnotator, top_actions
from stad.cli import run_cli
from stad.structures import Boxes, LabelMap

LOGGER = logging.getLogger("stad.apps.demo")
DEMO_RUN = Path("runs/demo")
DEFAULT_CHECKPOINT = DEMO_RUN / "acar" / "checkpoints" / "last.pth"
DEFAULT_DETECTOR = Path("checkpoints/toy_person_yolov8n.pt")
# the demo's detector settings when neither the command line nor the weights give them (detect.detector_settings);
# the demo's threshold is the sidecar's ``demo_conf`` (boxes drawn and classified), not the proposals' ``conf``
DETECTOR_DEFAULTS = {"imgsz": 640, "conf": 0.4, "iou": 0.6}
DEFAULT_BATCH_SIZE = 2
ACTION_RUNTIMES = ("auto", "torch", "onnx", "openvino")  # stad.engine.action_runtimes.CHOICES (no torch import here)


class DemoError(ValueError):
    """A user-facing problem (bad file, missing model): `stad.cli.run_cli` prints it, exit code 2."""


# --------------------------------------------------------------------------- inputs


def load_predictor(weights: Path, config: Path | None, device: str, batch_size: int, runtime: str = "torch",
                   threads: int | None = None):
    """The engine's `Predictor` for ``weights`` (preset from the weights, or ``config`` checked against them);
    ``runtime``: the action model's (`stad.engine.action_runtimes`: exports cached beside the weights)."""
    from stad.config import ConfigError
    from stad.engine.inference import InferenceError, Predictor
    from stad.models.presets import UnknownLayoutError

    try:
        return Predictor.from_weights(weights, config, logger=LOGGER, device=device, batch_size=batch_size,
                                      runtime=runtime, runtime_threads=threads)
    except InferenceError as error:
        raise DemoError(str(error)) from None
    except ConfigError as error:
        raise DemoError(f"config error: {error}") from None
    except UnknownLayoutError as error:
        raise DemoError(str(error)) from None


def read_boxes(path: str | Path, video_id: str) -> dict[int, Boxes]:
    """Person boxes of ``video_id`` per timestamp from an AVA-style CSV (GT or proposal rows)."""
    from stad.data.formats.ava import read_person_boxes_csv
    from stad.data.formats.errors import FormatError

    path = Path(path)
    if not path.is_file():
        raise DemoError(f"{path}: no such file")
    try:
        found = read_person_boxes_csv(path, video=video_id)
        if not found:
            sample = ", ".join(sorted({v for v, _ in read_person_boxes_csv(path)})[:5])
            raise DemoError(f"{path}: no rows for video {video_id!r} (the file stem); videos in the file: {sample}")
    except FormatError as error:
        raise DemoError(str(error)) from None
    return {t: boxes for (_, t), boxes in found.items()}


def model_paths(args: argparse.Namespace) -> tuple[Path | None, Path]:
    """(config or None, weights) of the model flags; the `make demo` model when neither is given."""
    if args.weights:
        return (Path(args.config) if args.config else None), Path(args.weights)
    if args.config:
        raise DemoError("--config needs --weights (the config says how to build the model, not which weights)")
    if not DEFAULT_CHECKPOINT.is_file():
        raise DemoError(f"no --weights given and the demo model is missing ({DEFAULT_CHECKPOINT}): "
                        "run `make demo` first, or pass --weights")
    LOGGER.info("using the model trained by `make demo`: %s", DEFAULT_CHECKPOINT)
    return None, DEFAULT_CHECKPOINT


def box_finder(args: argparse.Namespace, video_id: str) -> tuple[Callable, list[int] | None, bool]:
    """(boxes_for(plan, keyframe_bgr), the keyframe timestamps of --boxes or None, whether to track ids:
    detector boxes are tracked; for --boxes `run` decides from the planned keyframes)."""
    if args.boxes:
        by_time = read_boxes(args.boxes, video_id)
        LOGGER.info("boxes from %s: %d keyframes of %s", args.boxes, len(by_time), video_id)
        return (lambda plan, frame: by_time.get(plan.timestamp, Boxes.empty())), sorted(by_time), True
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
    return (lambda plan, frame: detector.detect([frame])[0]), None, True


def load_model(args: argparse.Namespace):
    """The `Predictor` of the model flags (`add_model_arguments`); logs how clips are sampled."""
    config, checkpoint = model_paths(args)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    predictor = load_predictor(checkpoint, config, args.device, args.batch_size, args.action_runtime,
                               args.threads or None)
    from stad.engine.inference import DEFAULT_MODEL_FPS

    fps = predictor.preprocessing.fps
    LOGGER.info("clips sampled at %g fps (%s)", args.model_fps or fps or DEFAULT_MODEL_FPS, "--model-fps" if args.model_fps else
                "the preset's frame rate" if fps else "the preset does not say: default")
    return predictor


# --------------------------------------------------------------------------- outputs


def write_csv(path: str | Path, results: Sequence, labelmap: LabelMap) -> int:
    """AVA-style prediction CSV of `KeyframePrediction`s (one row per box x class); returns rows."""
    from stad.data.formats.ava import write_predictions_csv

    return write_predictions_csv(path, ((r.video, r.plan.timestamp, r.boxes.xyxy, r.scores) for r in results),
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


# --------------------------------------------------------------------------- CLI


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The action model, person detector and keyframe flags (shared by ``stad.demo`` and ``stad.stream``)."""
    parser.add_argument("--weights", "--checkpoint", dest="weights",
                        help="action model weights: an ACAR-Net model-zoo file (preset inferred from its keys) or a "
                             f"main.py checkpoint (preset stored in it); default: {DEFAULT_CHECKPOINT} (make demo)")
    parser.add_argument("--config", help="build the model and preprocessing from this config instead of the weights' "
                                         "preset (needs --weights; the two must agree)")
    parser.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="ultralytics person detector .pt")
    parser.add_argument("--every", type=int, default=1, help="seconds between keyframes (default 1, as AVA)")
    parser.add_argument("--model-fps", type=float,
                        help="frame rate the model was trained at (default: the preset's, e.g. AVA 30, Chaotic World "
                             "25; else 30)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="keyframes per model forward (more: faster on a GPU, more frames held for the "
                             f"annotated video; default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--conf", type=float, help="detector score threshold (default: the detector's sidecar "
                                                   f"demo_conf, else {DETECTOR_DEFAULTS['conf']})")
    parser.add_argument("--iou", type=float, help="detector NMS IoU threshold, duplicates above it go (default: "
                                                  f"sidecar, else {DETECTOR_DEFAULTS['iou']})")
    parser.add_argument("--imgsz", type=int, help="detector image size (default: the detector's sidecar, else the size "
                                                  f"it was trained at, else {DETECTOR_DEFAULTS['imgsz']})")
    parser.add_argument("--runtime", default="auto", choices=("auto", *RUNTIMES),
                        help="detector network runtime, as `detect.proposals --runtime` (auto: openvino, else onnx, "
                             "on a CPU when installed; torch otherwise)")
    parser.add_argument("--action-runtime", default="torch", choices=ACTION_RUNTIMES,
                        help="action model runtime (default torch, the eager model): onnx / openvino run the whole "
                             "model exported once per clip shape, cached beside the weights (python -m stad.export); "
                             "auto measures torch and the installed ones on the first clip and keeps the fastest "
                             "(the choice is cached: measured once per host)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")


def add_output_arguments(parser: argparse.ArgumentParser, out_required: bool = True) -> None:
    """The annotated video, prediction CSV and label flags (shared by ``stad.demo`` and ``stad.stream``)."""
    parser.add_argument("--out", required=out_required, help="annotated MP4 to write")
    parser.add_argument("--csv", help="also write AVA-style predictions (video_id,t,x1,y1,x2,y2,action_id,score)")
    parser.add_argument("--top-k", type=int, default=3, help="actions printed per person")
    parser.add_argument("--threshold", type=float, default=0.3, help="min score of printed actions (best always shown)")
    parser.add_argument("--no-progress", action="store_true")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stad.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", required=True, help="input video file (any container/codec FFmpeg reads)")
    add_output_arguments(parser)
    add_model_arguments(parser)
    parser.add_argument("--boxes", help="AVA-style CSV of person boxes (GT or proposals) to use instead of the "
                                         "detector; its timestamps of this video become the keyframes")
    parser.add_argument("--video-start", type=float, default=0.0,
                        help="timestamp (s) of the file's first frame, for --boxes (AVA clips cut at 900 s: 900)")
    parser.add_argument("--snapshot", help="also save the annotated keyframe showing the most actions as PNG")
    parser.add_argument("--snapshot-scale", type=float, default=1.0, help="enlarge the snapshot (small videos)")
    return parser.parse_args(argv)


def _probe(path: str | Path):
    from stad.data.video import FrameReadError, probe_video

    try:
        return probe_video(path)
    except FrameReadError as error:
        raise DemoError(str(error)) from None


def overlay_for(result, tracker, names: Sequence[str], args: argparse.Namespace) -> tuple:
    """(the prediction with person ids from ``tracker`` if any, its `Overlay`: top actions per box)."""
    if tracker is not None:
        result = replace(result, boxes=tracker.update(result.boxes))
    return result, Overlay(result.plan.time, result.boxes, top_actions(result.scores, names, args.top_k,
                                                                       args.threshold))


def _predict_and_draw(args: argparse.Namespace, predictor, info, plans, boxes_for: Callable, track: bool) -> tuple:
    """One decoding pass through the stream core (`stad.engine.streaming`, offline: every keyframe scored):
    keyframes scored by the predictor, every frame drawn and encoded; returns (predictions with person ids,
    frames written, the engine: per-stage times and counts)."""
    from tqdm import tqdm

    from stad.apps.tracking import IouTracker
    from stad.data.video import FrameReadError, iter_video_frames
    from stad.engine.inference import InferenceError
    from stad.engine.streaming import StreamEngine

    tracker, names, results = (IouTracker() if track else None), predictor.labelmap.names, []
    engine = StreamEngine(predictor, info.video_id, boxes_for, float(info.fps), model_fps=args.model_fps,
                          name=str(info.path))
    annotator = StreamingAnnotator(args.out, info.width, info.height, info.fps, info.video_id, args.every,
                                   args.snapshot, args.snapshot_scale)
    with tqdm(total=info.num_frames, desc="detect + classify + draw", unit="frame", disable=args.no_progress,
              file=sys.stderr) as bar:
        def on_frame(index: int, frame) -> None:
            annotator.add_frame(index, frame)
            bar.update(1)

        try:
            for result in engine.run(iter_video_frames(info.path), plans, finite=True, on_frame=on_frame):
                result, overlay = overlay_for(result, tracker, names, args)
                results.append(result)
                with engine.times.time("draw"):
                    annotator.add_overlay(overlay)
        except (FrameReadError, InferenceError) as error:
            annotator.abort()
            raise DemoError(str(error)) from None
        except BaseException:
            annotator.abort()
            raise
    with engine.times.time("draw"):
        written = annotator.close()
    return results, written, engine


def run(args: argparse.Namespace) -> dict:
    """The whole demo; returns a summary (paths, counts; ``predictions``: the `KeyframePrediction`s)."""
    info = _probe(args.video)
    LOGGER.info("%s: %d frames, %.3f fps, %dx%d", info.path, info.num_frames, float(info.fps), info.width, info.height)
    predictor = load_model(args)
    boxes_for, timestamps, track = box_finder(args, info.video_id)
    plans = predictor.plan(info, args.every, timestamps, args.video_start if args.boxes else 0.0, args.model_fps)
    if not plans:
        raise DemoError(f"{info.path}: no keyframe inside the video")
    if timestamps is not None:  # --boxes: person ids from the file unless some planned box has none
        track = any((boxes_for(plan, None).ids < 0).any() for plan in plans)
    results, written, engine = _predict_and_draw(args, predictor, info, plans, boxes_for, track)
    LOGGER.info("%s", engine.progress())
    summary = {"video": str(info.path), "frames": info.num_frames, "fps": float(info.fps),
               "size": [info.width, info.height], "keyframes": len(results),
               "boxes": int(sum(len(r.boxes) for r in results)), "out": str(args.out), "frames_written": written,
               "action_runtime": predictor.runtime, "stages": engine.times.summary(),
               "stream": engine.stats.to_dict(), "predictions": results}
    if args.csv:
        summary["csv_rows"] = write_csv(args.csv, results, predictor.labelmap)
        summary["csv"] = str(args.csv)
        summary["labelmap"] = str(write_csv_labelmap(args.csv, predictor.labelmap))
    if args.snapshot:
        summary["snapshot"] = str(args.snapshot)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: bad input is one line on stderr and exit code 2 (`stad.cli.run_cli`)."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = run(args)
    print(f"annotated video: {summary['out']} ({summary['frames_written']} frames, "
          f"{summary['size'][0]}x{summary['size'][1]}, {summary['fps']:.3f} fps)")
    print(f"keyframes: {summary['keyframes']}, person boxes: {summary['boxes']} (action model runtime: "
          f"{summary['action_runtime']})")
    if "csv" in summary:
        print(f"predictions: {summary['csv']} ({summary['csv_rows']} rows; class ids: {summary['labelmap']})")
    if "snapshot" in summary:
        print(f"snapshot: {summary['snapshot']}")
    print("mean ms per call: " + ", ".join(f"{k} {v['mean_ms']:.1f}" for k, v in summary["stages"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
