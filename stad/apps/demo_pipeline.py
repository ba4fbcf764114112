"""``make demo``: the whole two-stage pipeline on generated data, every stage through its real CLI.

    python -m stad.apps.demo_pipeline [--out runs/demo] [--fast]     (alias: python -m stad.demo_pipeline)

Stages (each a subprocess; its output goes to ``OUT/logs/<stage>.log``):

1. data          ``python -m stad.data.toy`` -> toy actors videos, frames, AVA CSVs, ACAR pkls
2. proposals     ``python -m detect.proposals`` with the shipped person detector on the val keyframes
3. detector_eval ``python -m detect.evaluate``: person AP / recall of those proposals
4. train_acar    ``python main.py --config configs/toy/demo_acar.yaml --nproc_per_node 2`` (GT boxes;
                 ends by predicting the val split with GT boxes)
5. eval_acar_det ``python main.py ... --set evaluate=True``: predict the val split on detector boxes
6. train_linear  ``python main.py --config configs/toy/demo_linear.yaml``: a linear head on the
                 same backbone, frozen, for the relation-reasoning comparison
   train_linear_e2e (``--linear-e2e`` only) ``demo_acar.yaml`` with a linear head instead of the
                 ACAR head, trained end to end: the second baseline (costs as much as train_acar)
7. map_*         ``python multi_cap_mAP.py`` (capacity sweep) on each prediction CSV
8. video         ``python -m stad.apps.demo`` on one val video -> annotated MP4 + CSV + PNG snapshot
9. report        ``python -m stad.apps.report_demo`` -> report.json / report.md / report.png

Without the shipped detector (``checkpoints/toy_person_yolov8n.pt``) stages 2, 3 and 5 are skipped
(said loudly) and the video uses GT boxes. ``--fast`` is a smoke run (small data, few epochs):
its mAPs are not meaningful.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from stad.cli import run_cli
from stad.io_utils import atomic_write_text

REPO = Path(__file__).resolve().parents[2]
DETECTOR = Path("checkpoints/toy_person_yolov8n.pt")
ACAR_CONFIG = Path("configs/toy/demo_acar.yaml")
LINEAR_CONFIG = Path("configs/toy/demo_linear.yaml")
DETECTOR_IMGSZ = 320  # the toy detector is trained at 320 (scripts/train_toy_detector.sh)
# The ACAR recipe with the ACAR head swapped for a linear one (everything else identical).
LINEAR_E2E_SETS = ("--set", "model.head.type=linear", "--set", "model.head.kwargs={num_classes: 11, roi_spatial: 7}")
PROPOSAL_MIN_SCORE = 0.4  # val.min_score for detector boxes (best box of a keyframe always stays); chosen on toy val


class StageFailed(RuntimeError):
    pass


@dataclass
class Pipeline:
    """Runs stages in order, logging each to ``out/logs`` and recording its wall time."""

    out: Path
    python: str = sys.executable
    timings: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    def run(self, name: str, args: Sequence[str | Path], env: dict | None = None) -> None:
        cmd = [self.python] + [str(a) for a in args]
        log = self.logs / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        shown = shlex.join(["python"] + cmd[1:])
        self.commands[name] = shown
        print(f"==> {name}: {shown}", flush=True)
        start = time.perf_counter()
        with open(log, "w", encoding="utf-8") as handle:
            handle.write(f"$ {shown}\n")
            handle.flush()
            code = subprocess.run(cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                                  env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL).returncode
        seconds = time.perf_counter() - start
        self.timings[name] = round(seconds, 1)
        if code != 0:
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
            print("\n".join("    " + line[-300:] for line in tail), file=sys.stderr)
            raise StageFailed(f"stage '{name}' failed (exit code {code}); full log: {log}")
        print(f"    done in {seconds:.1f} s (log: {log})", flush=True)

    def skip(self, name: str, why: str) -> None:
        self.skipped[name] = why
        print(f"==> {name}: SKIPPED - {why}", flush=True)


def free_port() -> int:
    """A free TCP port for torch.distributed (other jobs may hold the default 31114)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def data_overrides(toy: Path, result: Path, val_annotations: Path | None = None) -> list[str]:
    """``--set`` overrides pointing a toy config at the generated data and a result folder."""
    pairs = {"result_path": result, "train.root_path": toy / "frames",
             "train.annotation_path": toy / "annotations" / "train.pkl", "val.root_path": toy / "frames",
             "val.annotation_path": val_annotations or toy / "annotations" / "val.pkl",
             "val.eval_mAP.labelmap": toy / "labelmap.pbtxt", "val.eval_mAP.groundtruth": toy / "val.csv",
             "val.eval_mAP.exclusions": toy / "val_excluded_timestamps.csv"}
    out = []
    for key, value in pairs.items():
        out += ["--set", f"{key}={value}"]
    return out


def data_is_current(toy: Path, seed: int, size: str) -> bool:
    """True when ``toy`` holds a complete dataset generated with ``seed`` and ``size``."""
    meta_path = toy / "toy_meta.json"
    if not meta_path.is_file():
        return False
    from stad.data.toy.generate import SIZES

    meta = json.loads(meta_path.read_text())
    spec = SIZES[size]
    return meta.get("seed") == seed and meta.get("size", {}).get("train_videos") == spec.train_videos and \
        meta.get("size", {}).get("val_videos") == spec.val_videos and meta.get("size", {}).get("duration") == spec.duration


def pick_video(toy: Path) -> Path:
    """The val video whose GT has the most distinct classes (ties: the first), to show off the model."""
    classes: dict[str, set[str]] = {}
    for line in (toy / "val.csv").read_text().splitlines():
        fields = line.split(",")
        classes.setdefault(fields[0], set()).add(fields[6])
    video = max(sorted(classes), key=lambda v: len(classes[v]))
    return toy / "videos" / f"{video}.mp4"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stad.demo_pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--fast", action="store_true", help="smoke run: small data, 2 epochs (mAPs meaningless)")
    parser.add_argument("--size", choices=("tiny", "small", "default", "large"),
                        help="toy data size (default: 'large', or 'small' with --fast)")
    parser.add_argument("--nproc", type=int, default=2, help="training/inference processes (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="toy data seed")
    parser.add_argument("--regenerate", action="store_true", help="regenerate the toy data even if present")
    parser.add_argument("--detector", default=str(DETECTOR), help="person detector weights")
    parser.add_argument("--linear-e2e", action="store_true",
                        help="also train a linear-head model end to end (same recipe as the ACAR model) and report it")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for both trainings, e.g. train.n_epochs=4")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    started = time.perf_counter()
    pipe = Pipeline(out)
    try:
        result = run_pipeline(pipe, args, out)
    except StageFailed as error:
        print(f"\nerror: {error}", file=sys.stderr)
        return 1
    total = time.perf_counter() - started
    print_summary(result, out, total)
    return 0


def run_pipeline(pipe: Pipeline, args: argparse.Namespace, out: Path) -> dict:
    """Every stage in order; writes ``pipeline.json`` and the report, returns the metadata."""
    toy = out / "data" / "toy"
    size = args.size or ("small" if args.fast else "large")
    if args.regenerate or not data_is_current(toy, args.seed, size):
        pipe.run("data", ["-m", "stad.data.toy", "--out", toy, "--seed", args.seed, "--size", size])
    else:
        pipe.skip("data", f"{toy} already holds the seed-{args.seed} '{size}' toy set (--regenerate to redo)")
    detector = (REPO / args.detector) if not Path(args.detector).is_absolute() else Path(args.detector)
    proposals = None
    if detector.is_file():
        proposals = _detect(pipe, detector, toy, out)
    else:
        for stage in ("proposals", "detector_eval", "eval_acar_det"):
            pipe.skip(stage, f"person detector {detector} is missing: GT boxes only "
                             "(train it with scripts/train_toy_detector.sh)")
    runs = _train_and_predict(pipe, args, toy, out, proposals)
    maps = _evaluate(pipe, runs, toy, out)
    video = pick_video(toy)
    _annotate_video(pipe, video, runs["acar_gt"], out, toy, detector if detector.is_file() else None)
    meta = {"timings": pipe.timings, "skipped": pipe.skipped, "commands": pipe.commands, "fast": args.fast,
            "detector": str(detector) if detector.is_file() else None, "video": str(video),
            "proposal_min_score": PROPOSAL_MIN_SCORE, "maps": {k: str(v) for k, v in maps.items()},
            "detector_eval_log": str(pipe.logs / "detector_eval.log") if detector.is_file() else None}
    atomic_write_text(out / "pipeline.json", json.dumps(meta, indent=2) + "\n")
    pipe.run("report", ["-m", "stad.apps.report_demo", "--out", out])
    return meta


def _detect(pipe: Pipeline, detector: Path, toy: Path, out: Path) -> Path:
    """Person proposals for the val keyframes and the detector's own evaluation; returns the pickle."""
    proposals = out / "proposals" / "val_proposals.pkl"
    pipe.run("proposals", ["-m", "detect.proposals", "--weights", detector, "--source", toy / "frames",
                           "--annotations", toy / "val.csv", "--dataset", "toy", "--imgsz", DETECTOR_IMGSZ,
                           "--conf", "0.05", "--labelmap", toy / "labelmap.pbtxt", "--threads", "2",
                           "--out", proposals, "--csv", proposals.with_suffix(".csv"), "--no-progress"])
    pipe.run("detector_eval", ["-m", "detect.evaluate", "--proposals", proposals, "--gt", toy / "val.csv",
                               "--exclude", toy / "val_excluded_timestamps.csv",
                               "--json", out / "eval" / "detector.json"])
    return proposals


def _train_and_predict(pipe: Pipeline, args: argparse.Namespace, toy: Path, out: Path,
                       proposals: Path | None) -> dict[str, Path]:
    """Train the ACAR model and the baselines (each predicts val); returns run name -> result folder."""
    fast = ["--set", "train.n_epochs=2", "--set", "train.val_freq=2"] if args.fast else []
    extra = fast + [x for o in args.overrides for x in ("--set", o)]

    def main_py(stage: str, config: Path, result: Path, *sets: str, val_annotations: Path | None = None) -> None:
        pipe.run(stage, ["main.py", "--config", config, "--nproc_per_node", str(args.nproc),
                         "--master_port", free_port(), *data_overrides(toy, result, val_annotations), *extra, *sets],
                 env={"OMP_NUM_THREADS": "1"})

    runs = {"acar_gt": out / "acar", "linear_gt": out / "linear"}
    main_py("train_acar", ACAR_CONFIG, runs["acar_gt"])
    checkpoint = runs["acar_gt"] / "checkpoints" / "last.pth"
    if proposals is not None:
        main_py("eval_acar_det", ACAR_CONFIG, out / "acar_det", "--set", "evaluate=True",
                "--set", f"resume_path={checkpoint}", "--set", f"val.min_score={PROPOSAL_MIN_SCORE}",
                val_annotations=proposals)
    main_py("train_linear", LINEAR_CONFIG, runs["linear_gt"], "--set", f"pretrain.path={checkpoint}")
    if args.linear_e2e:
        runs["linear_e2e_gt"] = out / "linear_e2e"
        main_py("train_linear_e2e", ACAR_CONFIG, runs["linear_e2e_gt"], *LINEAR_E2E_SETS)
    if proposals is not None:
        runs["acar_det"] = out / "acar_det"
    return runs


def _evaluate(pipe: Pipeline, runs: dict[str, Path], toy: Path, out: Path) -> dict[str, Path]:
    """The evaluator with the capacity sweep on each run's last predictions; returns name -> JSON."""
    maps = {}
    for name, folder in runs.items():
        predictions = max(folder.glob("predict_epoch*.csv"), key=lambda p: int(p.stem.split("epoch")[-1]))
        maps[name] = out / "eval" / f"{name}.json"
        pipe.run(f"map_{name}", ["multi_cap_mAP.py", "-l", toy / "labelmap.pbtxt", "-g", toy / "val.csv",
                                 "-d", predictions, "-e", toy / "val_excluded_timestamps.csv",
                                 "--capacities", "1:50,0", "--json", maps[name],
                                 "--plot", maps[name].with_suffix(".png"), "--per-class", "-q"])
    return maps


def _annotate_video(pipe: Pipeline, video: Path, acar: Path, out: Path, toy: Path, detector: Path | None) -> None:
    """`stad.demo` on one val video with the ACAR run ``acar``'s model: detector boxes, else the GT boxes."""
    video_args = ["-m", "stad.apps.demo", "--video", video, "--config", acar / "config.yaml",
                  "--checkpoint", acar / "checkpoints" / "last.pth", "--out", out / "demo_video.mp4",
                  "--csv", out / "demo_video.csv", "--snapshot", out / "demo_frame.png", "--snapshot-scale", "2",
                  "--no-progress"]
    if detector is not None:
        video_args += ["--detector", detector, "--imgsz", DETECTOR_IMGSZ]
    else:
        video_args += ["--boxes", toy / "val.csv"]
    pipe.run("video", video_args)


def print_summary(meta: dict, out: Path, total: float) -> None:
    report = json.loads((out / "report.json").read_text())
    print("\n" + (out / "report.md").read_text())
    print(f"Everything is in {out}:")
    for label, rel in (("report", "report.md / report.json / report.png"), ("annotated video", "demo_video.mp4"),
                       ("video predictions", "demo_video.csv"), ("snapshot", "demo_frame.png"),
                       ("ACAR model", "acar/ (config.yaml, checkpoints/last.pth, predict_epoch*.csv)"),
                       ("linear model", "linear/"), ("evaluator outputs", "eval/"), ("stage logs", "logs/")):
        print(f"  {label:18s} {out / rel.split(' ')[0]}{'' if ' ' not in rel else ' ' + rel.split(' ', 1)[1]}")
    print(f"\nTotal time: {total / 60:.1f} min ({total:.0f} s); stages: "
          + ", ".join(f"{k} {v:.0f}s" for k, v in meta["timings"].items()))
    if report.get("targets_met") is False and not meta["fast"]:
        print("note: some targets were missed (see report.md)")
    print("Try your own video: python -m stad.demo --video clip.mp4 --out clip_annotated.mp4 --csv clip.csv")


if __name__ == "__main__":
    sys.exit(run_cli(main))
