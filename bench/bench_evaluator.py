#!/usr/bin/env python
"""Benchmark multi_cap_mAP against the official AVA evaluator at AVA v2.2 val scale.

Generates (once, cached under bench/out/) a synthetic set shaped like AVA v2.2 val: 64 videos x
897 keyframes, ~5 detected boxes per keyframe with all 60 evaluated classes written per box at
``%.3f`` scores (ties are the normal case), and GT with 1-3 actions per person. Then, in one run,
each evaluator in its own process (so peak RSS is its own):
  * ours, capacity 50;  * ours, capacity 50 + sweep 1..50;
  * the official code (ACAR-Net ``calc_mAP.py``), capacity 50, when ``--official-dir`` is given
    (a checkout of ACAR-Net; it is not part of this repo).
It checks every per-class AP against the official one and prints a markdown table.

    python bench/bench_evaluator.py --official-dir /path/to/ACAR-Net [--videos 64] [--keyframes 897]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
AVA60 = [i for i in range(1, 81) if i not in {2, 16, 18, 19, 21, 23, 25, 31, 32, 33, 35, 39, 40, 42, 44, 50, 53,
                                              55, 71, 75}]


def _write_rows(path: Path, columns: list[np.ndarray], formats: list[str]) -> None:
    import pandas as pd
    from tqdm import tqdm

    frame = pd.DataFrame({i: c for i, c in enumerate(columns)})
    tmp = path.with_suffix(".tmp")
    chunk = 1_000_000
    with open(tmp, "w") as handle:
        for start in tqdm(range(0, len(frame), chunk), desc=f"writing {path.name}", unit="Mrow"):
            part = frame.iloc[start:start + chunk]
            cols = [part[i].map(fmt.__mod__) if fmt else part[i].astype(str) for i, fmt in enumerate(formats)]
            handle.write("\n".join(",".join(row) for row in zip(*cols)) + "\n")
    tmp.replace(path)


def generate(out: Path, videos: int, keyframes: int, seed: int = 0) -> dict[str, Path]:
    paths = {"labelmap": out / "labelmap.pbtxt", "gt": out / "gt.csv", "det": out / "det.csv",
             "excl": out / "excluded.csv"}
    if all(p.exists() for p in paths.values()):
        return paths
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths["labelmap"].write_text("".join(f'item {{\n  name: "action_{i}"\n  id: {i}\n}}\n' for i in AVA60))
    vids = np.array([f"v{v:03d}_{rng.integers(1e6):06d}" for v in range(videos)])
    n_keys = videos * keyframes
    key_video = np.repeat(np.arange(videos), keyframes)
    key_time = np.tile(np.arange(902, 902 + keyframes), videos)
    persons = rng.integers(1, 6, n_keys)
    # GT persons: random boxes; 1-3 actions each (pose class + others, ids from the 80-class list)
    p_key = np.repeat(np.arange(n_keys), persons)
    xy = rng.uniform(0, 0.6, (len(p_key), 2))
    wh = rng.uniform(0.1, 0.4, (len(p_key), 2))
    gt_boxes = np.round(np.concatenate([xy, xy + wh], 1), 3)
    n_act = rng.integers(1, 4, len(p_key))
    g_person = np.repeat(np.arange(len(p_key)), n_act)
    g_action = rng.integers(1, 81, len(g_person))
    g_key = p_key[g_person]
    _write_rows(paths["gt"], [vids[key_video[g_key]], key_time[g_key], *gt_boxes[g_person].T, g_action,
                              g_person % 50], ["", "%04d", "%.3f", "%.3f", "%.3f", "%.3f", "%d", "%d"])
    # detections: jittered GT persons plus false boxes, ~5 per key, 60 classes each
    d_per_key = persons + rng.integers(1, 4, n_keys)
    d_key = np.repeat(np.arange(n_keys), d_per_key)
    start = np.repeat(np.cumsum(persons) - persons, d_per_key)
    local = np.arange(len(d_key)) - np.repeat(np.cumsum(d_per_key) - d_per_key, d_per_key)
    src = np.minimum(start + local, len(p_key) - 1)
    boxes = np.clip(gt_boxes[src] + rng.normal(0, 0.03, (len(d_key), 4)), 0, 1)
    boxes = np.round(np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], 1), 3)
    classes = np.array(AVA60)
    r_det = np.repeat(np.arange(len(d_key)), len(classes))
    r_cls = np.tile(classes, len(d_key))
    scores = np.round(rng.beta(0.3, 3.0, len(r_det)), 3)
    _write_rows(paths["det"], [vids[key_video[d_key[r_det]]], key_time[d_key[r_det]], *boxes[r_det].T, r_cls, scores],
                ["", "%04d", "%.3f", "%.3f", "%.3f", "%.3f", "%d", "%.3f"])
    excl = rng.choice(n_keys, n_keys // 200, replace=False)
    paths["excl"].write_text("".join(f"{vids[key_video[k]]},{key_time[k]:04d}\n" for k in excl))
    return paths


RUNNER = """
import json, sys, time
sys.path.insert(0, {root!r})
t = time.perf_counter()
{body}
seconds = time.perf_counter() - t
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({{"seconds": seconds, "peak_rss_mb": int(hwm) / 1024, "ap": ap}}))
"""
OURS = """
from stad.evaluation import evaluate
res = evaluate({labelmap!r}, {gt!r}, {det!r}, {excl!r}, capacities={caps!r})
ap = {{"mAP": res.results[50].mAP, **{{str(k): v for k, v in res.results[50].per_class.items()}}}}
"""
OFFICIAL = """
import numpy as np, logging
for n, v in (("float", float), ("int", int), ("bool", bool), ("NAN", np.nan)):
    hasattr(np, n) or setattr(np, n, v)
sys.path.insert(0, {official!r})
import calc_mAP
logging.disable(logging.INFO)
m = calc_mAP.run_evaluation(open({labelmap!r}), open({gt!r}), open({det!r}), open({excl!r}), logging.getLogger())
ap = {{"mAP": m["PascalBoxes_Precision/mAP@0.5IOU"]}}
ap.update({{k.rsplit("_", 1)[-1]: v for k, v in m.items() if "PerformanceByCategory" in k}})
"""


def run(body: str) -> dict:
    code = RUNNER.format(root=str(ROOT), body=body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-dir", help="checkout of ACAR-Net (for calc_mAP.py); skipped if absent")
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--keyframes", type=int, default=897)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "evaluator_v2"))
    args = parser.parse_args()
    paths = {k: str(v) for k, v in generate(Path(args.out) / f"{args.videos}x{args.keyframes}", args.videos,
                                             args.keyframes).items()}
    size_mb = os.path.getsize(paths["det"]) / 2**20
    n_rows = sum(1 for _ in open(paths["det"], "rb"))
    print(f"detections: {n_rows} rows, {size_mb:.0f} MB")
    common = dict(labelmap=paths["labelmap"], gt=paths["gt"], det=paths["det"], excl=paths["excl"])
    run(OURS.format(caps=[50], **common))  # warm the numba cache so compile time is not counted
    rows = {"ours, capacity 50": run(OURS.format(caps=[50], **common)),
            "ours, capacity 50 + sweep 1..50": run(OURS.format(caps=[50, *range(1, 51)], **common))}
    if args.official_dir:
        rows["official calc_mAP.py, capacity 50"] = run(OFFICIAL.format(official=args.official_dir, **common))
    print(f"\n| run | seconds | peak RSS (MB) |\n|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['seconds']:.2f} | {row['peak_rss_mb']:.0f} |")
    ours_one, ours_sweep = rows["ours, capacity 50"], rows["ours, capacity 50 + sweep 1..50"]
    print(f"\nsweep / one capacity: {ours_sweep['seconds'] / ours_one['seconds']:.2f}x")
    if args.official_dir:
        official = rows["official calc_mAP.py, capacity 50"]
        print(f"speed-up at capacity 50: {official['seconds'] / ours_one['seconds']:.1f}x")
        diffs = [abs(official["ap"][k] - ours_one["ap"][k]) for k in official["ap"]
                 if official["ap"][k] is not None and not np.isnan(official["ap"][k])]
        print(f"largest |AP difference| vs official over mAP + {len(diffs) - 1} classes: {max(diffs):.3g}")


if __name__ == "__main__":
    main()
