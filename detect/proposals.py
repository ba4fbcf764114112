"""Person proposals on keyframes -> ACAR annotation pickle (+ AVA-style scored CSV).

    python -m detect.proposals --weights checkpoints/toy_person_yolov8n.pt --source data/toy/frames \\
        --annotations data/toy/annotations/val.csv --dataset toy --out proposals.pkl --csv proposals.csv

Only the keyframes named by ``--annotations`` (or every N-th frame of a plain video with ``--every``)
are decoded. Decoding and letterboxing run in a background thread while the model runs on batches.
On a CPU the network runs on OpenVINO by default (``--runtime auto``; an ONNX export of the
weights is made once and cached, see detect/runtimes.py); ``--runtime torch`` keeps PyTorch.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from detect.keyframes import (CONVENTIONS, KeyframeRequest, get_convention, every_nth_frame, read_keyframe_keys,
                              requests_from_keys)
from detect.source import KeyframeSource, open_source, prefetch, video_frame_count
from detect.runtimes import CACHE_ENV, RUNTIMES
from detect.streams import StreamPool, plan_batch, plan_streams
from stad.cli import run_cli
from stad.data.formats.acar_pkl import write_acar_pkl
from stad.data.formats.ava import keyframe_for, write_dense_proposals
from stad.data.formats.conventions import FrameConvention
from stad.data.formats.labelmap import read_labelmap
from stad.io_utils import atomic_open
from stad.structures import Boxes, Keyframe, KeyframeKey, LabelMap

LOGGER = logging.getLogger("detect.proposals")
# built-in inference defaults; the weights' sidecar / train_args come first (detect.detector.detector_settings)
DEFAULTS = {"imgsz": 640, "conf": 0.1, "iou": 0.7, "max_det": 100}


def _batches(items: Iterable[tuple], batch_size: int) -> Iterator[list[tuple]]:
    """Group ``(request, letterboxed, shape)`` items into batches of one letterboxed shape."""
    batch: list[tuple] = []
    for item in items:
        if batch and (len(batch) == batch_size or item[1].shape != batch[0][1].shape):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def detect_keyframes(detector, source: KeyframeSource, requests: Sequence[KeyframeRequest], batch_size: int = 16,
                     queue_size: int = 64, progress: bool = True, streams: int = 1, threads_per_stream: int = 1,
                     pool: StreamPool | None = None) -> dict[KeyframeKey, Boxes]:
    """Person boxes for every request: ``{(video, t): Boxes}`` in request order (normalised, scores descending).

    ``detector`` is a `detect.detector.PersonDetector` (anything with ``letterbox``,
    ``detect_letterboxed`` and, for ``streams > 1``, ``replica``). Keyframes without a person map to
    empty `Boxes`. ``streams > 1`` runs that many batches concurrently, each on its own detector
    replica with ``threads_per_stream`` threads (see `detect.streams`); the boxes do not
    depend on it. With one stream the detector itself runs in the calling thread. ``pool``: a
    `StreamPool` of replicas made beforehand (reused across calls; ``streams`` is then ignored).
    """
    if batch_size < 1:
        raise ValueError(f"--batch must be >= 1, got {batch_size}")
    keys = [r.key for r in requests]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate keyframes in the request list")

    def prepare(item: tuple[KeyframeRequest, np.ndarray]) -> tuple:
        request, image = item
        return request, detector.letterbox(image), image.shape[:2]

    def infer(replica, batch: list[tuple]) -> list[Boxes]:
        return replica.detect_letterboxed([b[1] for b in batch], [b[2] for b in batch])

    own_pool = pool is None
    if own_pool:
        pool = make_pool(detector, streams, threads_per_stream)
    found: dict[KeyframeKey, Boxes] = {}
    with tqdm(total=len(requests), desc="proposals", unit="kf", disable=not progress, file=sys.stderr) as bar:
        batches = _batches(prefetch(source.iter_frames(requests), prepare, queue_size), batch_size)
        for batch, boxes in pool.map(infer, batches):
            for (request, _, _), per_frame in zip(batch, boxes):
                found[request.key] = per_frame
            bar.update(len(batch))
    if own_pool and pool.streams > 1:
        detector.degenerate_dropped += sum(replica.degenerate_dropped for replica in pool.replicas)
    missing = [k for k in keys if k not in found]
    if missing:
        raise RuntimeError(f"{len(missing)} keyframes were not processed, e.g. {missing[:3]}")
    return {key: found[key] for key in keys}


def make_pool(detector, streams: int, threads_per_stream: int) -> StreamPool:
    """``streams`` inference streams: the detector itself for one, else one replica per stream."""
    if streams == 1:
        return StreamPool(lambda: detector, 1, threads_per_stream)
    return StreamPool(lambda: detector.replica(threads_per_stream), streams, threads_per_stream)


def to_keyframes(found: dict[KeyframeKey, Boxes], convention: FrameConvention) -> list[Keyframe]:
    """Proposal keyframes (sorted by key): boxes with scores, person id -1, no labels."""
    return [keyframe_for(key, boxes, [()] * len(boxes), convention) for key, boxes in sorted(found.items())]


def format_proposal_rows(keyframes: Iterable[Keyframe]) -> list[str]:
    """LFB/SlowFast proposal CSV rows ``video,%04d,x1,y1,x2,y2,,score`` (column 6 empty: no label)."""
    rows = []
    for kf in keyframes:
        for (x1, y1, x2, y2), score in zip(kf.boxes.xyxy, kf.boxes.scores):
            rows.append(f"{kf.video},{kf.timestamp:04d},{x1:.4f},{y1:.4f},{x2:.4f},{y2:.4f},,{score:.6f}")
    return rows


def write_proposal_csv(path: str | Path, keyframes: Iterable[Keyframe]) -> int:
    rows = format_proposal_rows(keyframes)
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write("".join(row + "\n" for row in rows))
    return len(rows)


def build_requests(args: argparse.Namespace) -> list[KeyframeRequest]:
    convention = get_convention(args.dataset)
    if args.annotations and args.every:
        raise SystemExit("error: --annotations and --every exclude each other (keyframes come from one of them)")
    if args.annotations:
        return requests_from_keys(read_keyframe_keys(args.annotations), convention, args.video_start)
    if not args.every:
        raise SystemExit("error: pass --annotations <GT csv | keyframe list> or --every N (plain video)")
    source = Path(args.source)
    if not source.is_file():
        raise SystemExit("error: --every needs --source to be one video file")
    if convention.timestamp_unit != "frame":
        convention = CONVENTIONS["frames"]
    return every_nth_frame(source.stem, video_frame_count(source), args.every, convention)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m detect.proposals", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="ultralytics .pt (COCO yolov8*.pt or a person detector)")
    parser.add_argument("--source", required=True, help="frames root (<root>/<video>/<frames>), video dir, or video file")
    parser.add_argument("--annotations", help="GT/prediction CSV (>= 7 columns) or keyframe list (video,t)")
    parser.add_argument("--every", type=int, default=0, help="without --annotations: every N-th frame of a video file")
    parser.add_argument("--dataset", default="ava", choices=sorted(CONVENTIONS),
                        help="keyframe -> frame convention (default: ava)")
    parser.add_argument("--video-start", type=float, default=0.0,
                        help="time (s) of a video file's first frame (900 for AVA videos cut at 900 s)")
    parser.add_argument("--out", required=True, help="ACAR annotation pickle to write")
    parser.add_argument("--csv", help="also write an AVA-style proposal CSV (video,t,x1,y1,x2,y2,,score)")
    parser.add_argument("--dense", help="also write an mmaction2 dense-proposal pickle {'video,%%04d': (N,5)}")
    parser.add_argument("--labelmap", help="pbtxt giving idx_to_class of the pickle (default: empty list)")
    parser.add_argument("--conf", type=float, help="score threshold (default: the weights' sidecar <stem>.yaml, "
                                                    f"else {DEFAULTS['conf']})")
    parser.add_argument("--iou", type=float, help=f"NMS IoU threshold (default: sidecar, else {DEFAULTS['iou']})")
    parser.add_argument("--max-det", type=int, help=f"boxes kept per keyframe (default: sidecar, else "
                                                     f"{DEFAULTS['max_det']})")
    parser.add_argument("--imgsz", type=int, help="inference size (default: the weights' sidecar, else the size "
                                                  f"ultralytics stored as train_args, else {DEFAULTS['imgsz']})")
    parser.add_argument("--batch", type=int, default=0,
                        help="keyframes per forward pass and stream (0: auto = 4 on CPU with torch, 2 with "
                             "onnx/openvino, 16 on GPU)")
    parser.add_argument("--device", default="cpu", help="cpu, 0, cuda:0, ...")
    parser.add_argument("--person-class", help="class index or name (default: read 'person' from the weights)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads in total (0: every usable CPU)")
    parser.add_argument("--streams", type=int, default=0,
                        help="concurrent inference streams, each on its own model copy and batches (0: auto = "
                             "one single-threaded stream per CPU core, up to 4, on CPU; 1 on GPU)")
    parser.add_argument("--runtime", default="auto", choices=("auto", *RUNTIMES),
                        help="network runtime: torch, or onnx (ONNX Runtime) / openvino on an ONNX export made once "
                             "by ultralytics' exporter and cached (CPU only; same boxes up to fp rounding); "
                             "auto (default): openvino, else onnx, on a CPU when installed; torch otherwise")
    parser.add_argument("--export-cache", help=f"folder of cached exports (default: ${CACHE_ENV}, else the "
                                               "weights' folder, else ~/.cache/stad/detector_exports)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    requests = build_requests(args)
    source = open_source(args.source)
    labelmap = read_labelmap(args.labelmap) if args.labelmap else LabelMap((), ())
    from detect.detector import PersonDetector, detector_settings, torch_device  # imports ultralytics (offline)

    person_class = args.person_class
    if person_class is not None and person_class.isdigit():
        person_class = int(person_class)
    streams, threads_per_stream = plan_streams(torch_device(args.device), args.streams, args.threads)
    settings = detector_settings(args.weights, {"imgsz": args.imgsz, "conf": args.conf, "iou": args.iou,
                                                "max_det": args.max_det}, DEFAULTS)
    LOGGER.info("detector settings: %s", settings.describe())
    detector = PersonDetector(args.weights, device=args.device, imgsz=settings["imgsz"], conf=settings["conf"],
                              iou=settings["iou"], max_det=settings["max_det"], person_class=person_class,
                              runtime=args.runtime,
                              runtime_threads=threads_per_stream, export_cache=args.export_cache)
    batch = plan_batch(detector.device, args.batch, detector.runtime)
    if streams == 1 and args.threads:
        import torch
        torch.set_num_threads(args.threads)
    LOGGER.info("%s on %d keyframes from %s: batch %d, %d inference stream(s) x %d thread(s)", detector,
                len(requests), args.source, batch, streams, threads_per_stream)
    found = detect_keyframes(detector, source, requests, batch, progress=not args.no_progress, streams=streams,
                             threads_per_stream=threads_per_stream)
    keyframes = to_keyframes(found, get_convention(args.dataset) if args.annotations else CONVENTIONS["frames"])
    if detector.degenerate_dropped:
        LOGGER.warning("dropped %d boxes with zero area after clipping to the image", detector.degenerate_dropped)
    write_acar_pkl(args.out, keyframes, labelmap, with_scores=True)
    n_boxes = sum(len(kf.boxes) for kf in keyframes)
    empty = sum(1 for kf in keyframes if not len(kf.boxes))
    LOGGER.info("wrote %s: %d keyframes, %d boxes, %d keyframes without a person", args.out, len(keyframes),
                n_boxes, empty)
    if args.csv:
        LOGGER.info("wrote %s: %d rows", args.csv, write_proposal_csv(args.csv, keyframes))
    if args.dense:
        write_dense_proposals(args.dense, {kf.key: kf.boxes for kf in keyframes})
        LOGGER.info("wrote %s", args.dense)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
