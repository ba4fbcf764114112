"""Proposal throughput: the reference way vs detect.proposals, on the same keyframes.

Reference (what the reference system did): per keyframe one ``cv2.imread`` and one ultralytics
``model(image)`` call. Ours: `detect.proposals.detect_keyframes` -- decoding + letterboxing in a
background thread, batches run by concurrent single-threaded inference streams (one per core on
a CPU, see detect/streams.py), predictor set up once. Boxes must be identical. ``--runtimes``
adds a row per network runtime (torch, onnx = ONNX Runtime, openvino; see detect/runtimes.py),
``--plans all`` one per stream plan (1 stream x all threads, and one single-threaded stream per
thread) instead of the CLI's automatic plan only.

    .venv/bin/python -m stad.data.toy --out /tmp/toyp --seed 0
    .venv/bin/python bench/bench_proposals.py --weights checkpoints/toy_person_yolov8n.pt \\
        --frames /tmp/toyp/frames --annotations /tmp/toyp/train.csv /tmp/toyp/val.csv --dataset toy \\
        --imgsz 640 --append bench/RESULTS.md      # [--plans all] [--batch 1 2 4] [--runtimes torch onnx]

Both ways get the whole machine: ``--threads`` (default: every usable CPU) torch threads for the
reference's one stream, and the same total split over ours' streams. The reference also runs with
the thread count ultralytics itself sets on a CPU (``min(8, cpu_count - 1)``, 1 on 2 cores) when that
differs, and the headline ratio is taken against the faster of the two. Rounds alternate
(ref, ref, ours, ref, ref, ours, ...) so background load hits all alike; the best round of each
way is reported along with the median, and the process CPU time per keyframe (all threads).
"""
from __future__ import annotations

import argparse
import datetime
import itertools
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
from detect.proposals import detect_keyframes, make_pool  # noqa: E402
from detect.runtimes import RUNTIMES  # noqa: E402
from detect.source import FrameFolderSource  # noqa: E402
from detect.streams import plan_batch, plan_streams, usable_cpus  # noqa: E402

# Torch threads ultralytics' predictor sets on a CPU (select_device): what the reference way gets
# unless the caller resets it.
ULTRALYTICS_THREADS = min(8, max(1, (os.cpu_count() or 1) - 1))


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
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.1)
    parser.add_argument("--batch", type=int, nargs="+", default=[0],
                        help="ours: keyframes per forward pass, a row each (0: auto per runtime, as the CLI)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads in total, for both ways (0: every usable CPU)")
    parser.add_argument("--streams", type=int, default=0, help="ours: inference streams (0: auto, as the CLI)")
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES,
                        help="ours: network runtimes to run, a row each (default: all three; the CLI's default "
                             "on a CPU, auto, is openvino)")
    parser.add_argument("--plans", default="auto", choices=("auto", "all"),
                        help="ours: the CLI's automatic stream plan per runtime, or every plan (1 x N and N x 1)")
    parser.add_argument("--export-cache", help="folder of cached onnx exports (default: beside the weights)")
    parser.add_argument("--reference-threads", type=int, nargs="+",
                        help="torch thread counts of the reference rows (default: --threads and ultralytics' own; "
                             "the headline needs both)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--append", help="append a section to this markdown file")
    args = parser.parse_args()
    args.threads = args.threads or usable_cpus()
    torch.set_num_threads(args.threads)
    keys = sorted({k for path in args.annotations for k in read_keyframe_keys(path)})
    requests = requests_from_keys(keys, args.dataset)
    source = FrameFolderSource(args.frames)
    detector = PersonDetector(args.weights, imgsz=args.imgsz, conf=args.conf)
    ways = {f"reference, {t} thread(s)": reference_way(detector, source, t, args.threads)
            for t in sorted(set(args.reference_threads or (args.threads, ULTRALYTICS_THREADS)), reverse=True)}
    for runtime in args.runtimes:
        for (streams, per_stream), batch in itertools.product(
                stream_plans(args), dict.fromkeys(plan_batch("cpu", b, runtime) for b in args.batch)):
            name = f"ours {runtime}, {streams} stream(s) x {per_stream} thread(s), batch {batch}"
            ways[name] = our_way(args, runtime, streams, per_stream, batch, source,
                                 detector if runtime == "torch" else None)
    for way in ways.values():  # warm-up: model set-up, oneDNN kernels for the input shape
        way(requests[: min(8, len(requests))])
    load_start = os.getloadavg()
    wall, cpu, results = {name: [] for name in ways}, {name: [] for name in ways}, {}
    for round_no in range(args.rounds):
        for name, way in ways.items():
            if torch.get_num_threads() != args.threads:
                raise RuntimeError(f"torch threads changed to {torch.get_num_threads()} (expected {args.threads})")
            start, start_cpu = time.perf_counter(), time.process_time()
            results[name] = way(requests)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
        print(f"round {round_no + 1}: " + ", ".join(f"{name}: {len(requests) / wall[name][-1]:.1f} frames/s"
                                                     for name in ways), flush=True)
    lines = summary(args, requests, detector, results, wall, cpu, (load_start, os.getloadavg()))
    print("\n".join(lines))
    if args.append:
        append_section(args, lines)
    first_ours = next(name for name in results if name.startswith("ours"))
    return 0 if all(compare(results[name], results[first_ours])[0] == 0 for name in results) else 1


def stream_plans(args) -> list[tuple[int, int]]:
    """The CLI's automatic plan, or with ``--plans all`` also one stream with every thread and
    one single-threaded stream per thread."""
    plans = [plan_streams("cpu", args.streams, args.threads)]
    if args.plans == "all":
        plans += [(1, args.threads), (args.threads, 1)]
    return list(dict.fromkeys(plans))


def our_way(args, runtime: str, streams: int, per_stream: int, batch: int, source: FrameFolderSource,
            torch_detector: PersonDetector | None):
    """detect.proposals' way on a detector (and stream replicas) built once, as one CLI run does."""
    detector = torch_detector or PersonDetector(args.weights, imgsz=args.imgsz, conf=args.conf, runtime=runtime,
                                                runtime_threads=per_stream, export_cache=args.export_cache)
    pool = make_pool(detector, streams, per_stream)
    return lambda reqs: detect_keyframes(detector, source, reqs, batch, progress=False, pool=pool)


def reference_way(detector: PersonDetector, source: FrameFolderSource, threads: int, restore: int):
    def run(requests: list) -> dict:
        torch.set_num_threads(threads)
        try:
            return run_reference(detector, source, requests)
        finally:
            torch.set_num_threads(restore)
    return run


def summary(args, requests, detector, results, wall, cpu, load) -> list[str]:
    n = len(requests)
    best = {name: n / min(t) for name, t in wall.items()}
    median = {name: n / statistics.median(t) for name, t in wall.items()}
    cpu_ms = {name: 1000 * statistics.median(t) / n for name, t in cpu.items()}
    references = [name for name in results if name.startswith("reference")]
    ours_all = [name for name in results if name.startswith("ours")]
    boxes = sum(len(b) for b in results[ours_all[0]].values())
    image = cv2.imread(str(FrameFolderSource(args.frames).path_of(requests[0])))
    boxed = detector.letterbox(image).shape
    lines = [f"keyframes {n} ({boxes} boxes at conf {args.conf}), frames {image.shape[1]}x{image.shape[0]} -> "
             f"network input {boxed[1]}x{boxed[0]} (imgsz {args.imgsz}), {args.rounds} "
             f"alternating rounds, load average {load[0][0]:.1f} at the start, {load[1][0]:.1f} at the end"]
    for name in results:
        lines.append(f"{name}: {best[name]:.1f} frames/s best, {median[name]:.1f} median; "
                     f"CPU time {cpu_ms[name]:.0f} ms/keyframe (all threads)")
    fastest_best = max(best[name] for name in references)
    fastest_median = max(median[name] for name in references)
    for ours in ours_all:
        per_reference = ", ".join(f"{best[ours] / best[name]:.2f}x best / {median[ours] / median[name]:.2f}x "
                                  f"median over {name}" for name in references)
        lines.append(f"{ours}: **{best[ours] / fastest_best:.2f}x best, {median[ours] / fastest_median:.2f}x "
                     f"median over the faster reference** ({per_reference})")
    for ours in ours_all:
        for name in references + [ours_all[0]] * (ours != ours_all[0]):
            count_diff, max_box, max_score = compare(results[name], results[ours])
            lines.append(f"boxes of {ours} vs {name}: keyframes with a different box count {count_diff}, "
                         f"max |xyxy diff| {max_box:.2e}, max |score diff| {max_score:.2e}")
    return lines


def append_section(args, lines: list[str]) -> None:
    command = ".venv/bin/python bench/bench_proposals.py " + " ".join(sys.argv[1:])
    section = [f"\n## bench_proposals ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
               f"- command: `{command}`",
               f"- machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU; "
               f"torch {torch.__version__}",
               f"- weights: {Path(args.weights).name}", ""] + [f"- {line}" for line in lines] + [""]
    with open(args.append, "a", encoding="utf-8") as handle:
        handle.write("\n".join(section))


if __name__ == "__main__":
    sys.exit(main())
