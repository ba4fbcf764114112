"""Proposal throughput: the reference way vs detect.proposals, on the same keyframes.

Reference (what the reference system did): per keyframe one ``cv2.imread`` and one ultralytics
``model(image)`` call. Ours: `detect.proposals.detect_keyframes` -- decoding + letterboxing in a
background thread, one forward pass per batch, predictor set up once. Boxes must be identical.

    .venv/bin/python bench/bench_proposals.py --weights checkpoints/toy_person_yolov8n.pt \\
        --frames data/toy/frames --annotations data/toy/train.csv data/toy/val.csv --dataset toy \\
        --imgsz 320 --threads 2 --append bench/RESULTS.md

Rounds alternate (ref, ours, ref, ours, ...) so background load hits both alike; the best round
of each is reported along with the median.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from detect.detector import PersonDetector  # noqa: E402
from detect.keyframes import read_keyframe_keys, requests_from_keys  # noqa: E402
from detect.proposals import detect_keyframes  # noqa: E402
from detect.source import FrameFolderSource  # noqa: E402


def run_reference(detector: PersonDetector, source: FrameFolderSource, requests: list) -> dict:
    out = {}
    for request in requests:
        image = cv2.imread(str(source.path_of(request)))
        out[request.key] = detector.detect_reference(image)
    return out


def compare(ref: dict, ours: dict) -> tuple[int, float, float]:
    """(keyframes whose box count differs, max |xyxy diff|, max |score diff|)."""
    count_diff, max_box, max_score = 0, 0.0, 0.0
    for key, a in ref.items():
        b = ours[key]
        if len(a) != len(b):
            count_diff += 1
            continue
        if len(a):
            max_box = max(max_box, float(np.abs(a.xyxy - b.xyxy).max()))
            max_score = max(max_score, float(np.abs(a.scores - b.scores).max()))
    return count_diff, max_box, max_score


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--frames", required=True, help="frames root")
    parser.add_argument("--annotations", nargs="+", required=True, help="GT CSVs / keyframe lists")
    parser.add_argument("--dataset", default="toy")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--conf", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (both paths)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--append", help="append a section to this markdown file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keys = sorted({k for path in args.annotations for k in read_keyframe_keys(path)})
    requests = requests_from_keys(keys, args.dataset)
    source = FrameFolderSource(args.frames)
    detector = PersonDetector(args.weights, imgsz=args.imgsz, conf=args.conf)
    warm = requests[: min(8, len(requests))]
    run_reference(detector, source, warm)
    detect_keyframes(detector, source, warm, args.batch, progress=False)

    times = {"reference": [], "ours": []}
    results = {}
    for _ in range(args.rounds):
        for name in ("reference", "ours"):
            start = time.perf_counter()
            if name == "reference":
                results[name] = run_reference(detector, source, requests)
            else:
                results[name] = detect_keyframes(detector, source, requests, args.batch, progress=False)
            times[name].append(time.perf_counter() - start)
    count_diff, max_box, max_score = compare(results["reference"], results["ours"])
    n = len(requests)
    fps = {name: n / min(t) for name, t in times.items()}
    median = {name: n / statistics.median(t) for name, t in times.items()}
    boxes = sum(len(b) for b in results["ours"].values())
    lines = [
        f"keyframes {n} ({boxes} boxes at conf {args.conf}), imgsz {args.imgsz}, batch {args.batch}, "
        f"torch threads {args.threads}, {args.rounds} alternating rounds",
        f"reference (imread + model(image) per keyframe): {fps['reference']:.1f} frames/s best, "
        f"{median['reference']:.1f} median",
        f"ours (background decode+letterbox, batched forward): {fps['ours']:.1f} frames/s best, "
        f"{median['ours']:.1f} median",
        f"speed-up: {fps['ours'] / fps['reference']:.2f}x best, {median['ours'] / median['reference']:.2f}x median",
        f"identical boxes: keyframes with a different box count {count_diff}, max |xyxy diff| {max_box:.2e}, "
        f"max |score diff| {max_score:.2e}",
    ]
    print("\n".join(lines))
    if args.append:
        command = "python bench/bench_proposals.py " + " ".join(sys.argv[1:])
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        section = [f"\n## bench_proposals ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
                   f"- command: `{command}`",
                   f"- machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), "
                   f"no GPU; load average at start of write-up {load:.1f} (other agents share the CPU)",
                   f"- weights: {Path(args.weights).name}", ""] + [f"- {line}" for line in lines] + [""]
        with open(args.append, "a", encoding="utf-8") as handle:
            handle.write("\n".join(section))
    return 0 if count_diff == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
