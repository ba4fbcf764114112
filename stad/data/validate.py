"""Preflight checks for a dataset: catch what would silently train nothing or score mAP 0.

    python -m stad.data.validate --config configs/x.yaml
    python -m stad.data.validate --annotation ann.pkl --frames-root frames/ [--labelmap L.pbtxt]
        [--num-classes K] [--gt-csv val.csv] [--proposals props.pkl] [--exclusions ex.csv]

Checks: the pickle's schema; class count vs the model; class ids vs the label map; labels present
(training); boxes normalised and ordered; one sample per keyframe; a single timestamp <-> frame
convention; every keyframe's frames exist (or its video, with enough frames); GT CSV ids in the
label map; annotation / GT / proposal keys overlap. Prints counts and examples; exits 1 on errors.
No torch import.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stad.cli import run_cli
from stad.data.formats import acar_pkl, ava
from stad.data.formats.errors import FormatError
from stad.data.formats.labelmap import read_labelmap
from stad.structures import Keyframe, KeyframeKey, LabelMap

MAX_EXAMPLES = 3


class DatasetValidationError(ValueError):
    """Raised by `ValidationReport.raise_if_failed`; the message is the full report."""


@dataclass(frozen=True)
class Issue:
    code: str
    severity: str  # "error" | "warning"
    message: str
    examples: tuple[str, ...] = ()

    def format(self) -> str:
        text = f"[{self.severity.upper()}] {self.code}: {self.message}"
        return text + "".join(f"\n      e.g. {e}" for e in self.examples[:MAX_EXAMPLES])


@dataclass
class ValidationReport:
    source: str
    counts: dict[str, int] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def codes(self) -> set[str]:
        return {i.code for i in self.issues}

    def add(self, code: str, severity: str, message: str, examples: Sequence[object] = ()) -> None:
        self.issues.append(Issue(code, severity, message, tuple(str(e) for e in list(examples)[:MAX_EXAMPLES])))

    def format(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        lines = [f"dataset check: {self.source}", f"  {counts}"]
        lines += ["  " + i.format() for i in self.issues] or ["  no problems found"]
        lines.append("  result: " + ("OK" if self.ok else f"FAILED ({len(self.errors)} errors)"))
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise DatasetValidationError(self.format())


# --------------------------------------------------------------------------- checks


def _check_classes(report: ValidationReport, pkl_map: LabelMap, labelmap: LabelMap | None, num_classes: int | None,
                   keyframes: list[Keyframe], require_labels: bool) -> None:
    if num_classes is not None and len(pkl_map) != num_classes:
        report.add("num_classes", "error", f"the annotation's idx_to_class has {len(pkl_map)} classes but the model "
                   f"has num_classes={num_classes}: targets and outputs would not line up")
    if labelmap is not None:
        unknown = [i for i in pkl_map.ids if i not in set(labelmap.ids)]
        if unknown:
            report.add("class_ids", "error", f"{len(unknown)} of {len(pkl_map)} idx_to_class ids are not in the label "
                       "map: the evaluator drops their predictions (AP 0)", unknown)
        elif pkl_map.ids != labelmap.ids:
            report.add("class_order", "warning", "idx_to_class lists the label map's ids in another order; outputs "
                       "are written with idx_to_class ids, so scores stay correct")
    labelled = sum(1 for kf in keyframes for ls in kf.labels if ls)
    boxes = sum(len(kf.boxes) for kf in keyframes)
    report.counts["labelled_boxes"] = labelled
    if boxes and not labelled:
        report.add("no_labels", "error" if require_labels else "warning",
                   "no box has any label" + (": nothing to train on" if require_labels else
                                             " (fine for inference proposals, fatal for training)"))
    per_class = Counter(c for kf in keyframes for ls in kf.labels for c in ls)
    if labelled and require_labels:
        missing = [pkl_map.names[i] for i in range(len(pkl_map)) if per_class[i] == 0]
        if missing:
            report.add("empty_classes", "warning", f"{len(missing)} classes have no training example", missing)


def _check_boxes(report: ValidationReport, keyframes: list[Keyframe]) -> None:
    outside, unordered, empty = [], [], []
    for kf in keyframes:
        b = kf.boxes.xyxy
        for i in np.flatnonzero(((b < -1e-6) | (b > 1 + 1e-6)).any(axis=1)):
            outside.append((kf.key, b[i].round(3).tolist()))
        for i in np.flatnonzero((b[:, 0] > b[:, 2]) | (b[:, 1] > b[:, 3])):
            unordered.append((kf.key, b[i].round(3).tolist()))
        for i in np.flatnonzero((b[:, 0] == b[:, 2]) | (b[:, 1] == b[:, 3])):
            empty.append((kf.key, b[i].round(3).tolist()))
    if outside:
        pixels = max(max(v) for _, v in outside) > 1.5
        report.add("boxes_not_normalised", "error", f"{len(outside)} boxes outside [0, 1]"
                   + (" - they look like pixels; divide by width/height" if pixels else ""), outside)
    if unordered:
        report.add("boxes_unordered", "error", f"{len(unordered)} boxes with x1 > x2 or y1 > y2 (expected "
                   "[x1, y1, x2, y2]; [y1, x1, y2, x2] or [x, y, w, h] input?)", unordered)
    if empty:
        report.add("boxes_empty", "warning", f"{len(empty)} boxes with zero width or height", empty)


def _check_keys_and_convention(report: ValidationReport, keyframes: list[Keyframe]) -> None:
    keys = Counter(kf.key for kf in keyframes)
    dups = [k for k, n in keys.items() if n > 1]
    if dups:
        report.add("duplicate_keyframes", "error", f"{len(dups)} keyframes appear in several samples: each sample's "
                   "predictions are written, so duplicates become false positives (group rows per keyframe)", dups)
    if not keyframes or all(kf.mid_frame == kf.timestamp for kf in keyframes):
        report.counts["convention"] = 0  # timestamps are frame numbers (MultiSports) or nothing to check
        return
    offsets = Counter(kf.mid_frame - int(round(kf.timestamp * kf.frame_rate)) for kf in keyframes)
    common, _ = offsets.most_common(1)[0]
    odd = [(kf.key, kf.mid_frame) for kf in keyframes if kf.mid_frame - int(round(kf.timestamp * kf.frame_rate)) != common]
    if odd:
        report.add("timestamp_convention", "error", f"{len(odd)} keyframes break the dataset's timestamp<->frame "
                   f"rule mid_frame = t*fps + {common} (shown: key, mid_frame): clips would be cut at the wrong time",
                   odd)
    rates = sorted({kf.frame_rate for kf in keyframes})
    if len(rates) > 1:
        report.add("frame_rate", "warning", f"several frame rates in one annotation file: {rates}")


def _frame_numbers(folder: Path, fmt: str) -> set[int]:
    prefix, _, rest = fmt.partition("%")
    suffix = rest[rest.index("d") + 1:] if "d" in rest else ""
    out = set()
    for name in os.listdir(folder):
        core = name[len(prefix): len(name) - len(suffix)] if name.startswith(prefix) and name.endswith(suffix) else ""
        if core.isdigit():
            out.add(int(core))
    return out


def _check_frames(report: ValidationReport, keyframes: list[Keyframe], frames_root: str | Path | None,
                  video_root: str | Path | None) -> None:
    if frames_root:
        _check_frame_folders(report, keyframes, Path(frames_root))
    elif video_root:
        _check_videos(report, keyframes, Path(video_root))
    else:
        report.add("no_frames", "warning", "no frames root or video root given: frames not checked")


def _check_frame_folders(report: ValidationReport, keyframes: list[Keyframe], root: Path) -> None:
    if not root.is_dir():
        report.add("frames_root", "error", f"frames root {root} does not exist")
        return
    by_video: dict[tuple[str, str], list[Keyframe]] = defaultdict(list)
    for kf in keyframes:
        by_video[(kf.video, kf.format_str)].append(kf)
    no_folder, missing, beyond = [], [], []
    for (video, fmt), kfs in by_video.items():
        folder = root / video
        if not folder.is_dir():
            no_folder.append(str(folder))
            continue
        present = _frame_numbers(folder, fmt)
        last = max(present) if present else 0
        for kf in kfs:
            if kf.mid_frame not in present:
                (beyond if kf.mid_frame > last else missing).append(
                    f"{kf.key}: {folder / (fmt % kf.mid_frame)} (video has frames 1..{last})")
    report.counts["videos"] = len({v for v, _ in by_video})
    if no_folder:
        report.add("missing_videos", "error", f"{len(no_folder)} of {len(by_video)} videos have no frame folder",
                   no_folder)
    if beyond:
        report.add("keyframe_beyond_frames", "error", f"{len(beyond)} keyframes point past the last extracted frame: "
                   "timestamp offset (AVA frames start at 900 s) or fps mismatch?", beyond)
    if missing:
        report.add("missing_frames", "error", f"{len(missing)} keyframe frames are missing (wrong format_str or "
                   "numbering from 0?)", missing)


def _check_videos(report: ValidationReport, keyframes: list[Keyframe], root: Path) -> None:
    from stad.data.video import FrameReadError, VideoFileSource

    source = VideoFileSource(root)
    videos = sorted({kf.video for kf in keyframes})
    report.counts["videos"] = len(videos)
    absent, beyond = [], []
    lengths = {}
    for video in videos:
        try:
            lengths[video] = source.num_frames(video)
        except FrameReadError as error:
            absent.append(str(error))
    for kf in keyframes:
        if kf.video in lengths and kf.mid_frame > lengths[kf.video]:
            beyond.append(f"{kf.key}: mid_frame {kf.mid_frame} > {lengths[kf.video]} frames")
    if absent:
        report.add("missing_videos", "error", f"{len(absent)} of {len(videos)} videos cannot be opened", absent)
    if beyond:
        report.add("keyframe_beyond_frames", "error", f"{len(beyond)} keyframes lie past the end of their video", beyond)


def _check_gt(report: ValidationReport, keys: set[KeyframeKey], gt_csv: str | Path, labelmap: LabelMap | None,
              excluded: set[KeyframeKey]) -> set[KeyframeKey]:
    rows = list(ava.iter_gt_rows(gt_csv))
    gt_keys = {(r.video, r.timestamp) for r in rows} - excluded
    report.counts["gt_keyframes"] = len(gt_keys)
    if labelmap is not None:
        unknown = Counter(r.action_id for r in rows if r.action_id not in set(labelmap.ids))
        if unknown and len(unknown) == len({r.action_id for r in rows}):
            report.add("gt_ids", "error", f"no GT action id is in the label map ({sorted(unknown)[:5]}...): every "
                       "GT row is ignored (ids off by one? CW needs label+1)")
        elif unknown:
            report.add("gt_ids", "warning", f"{sum(unknown.values())} GT rows have ids outside the label map "
                       "(ignored by the evaluator, as AVA's 20 non-evaluated classes)", sorted(unknown))
    _compare_keys(report, "annotation", keys, "GT CSV", gt_keys)
    return gt_keys


def _compare_keys(report: ValidationReport, name: str, keys: set[KeyframeKey], other_name: str,
                  other: set[KeyframeKey]) -> None:
    common = keys & other
    if other and not common:
        report.add(f"{name}_vs_{other_name}".replace(" ", "_").lower(), "error",
                   f"no {name} keyframe matches a {other_name} keyframe: mAP would be 0 (video ids with/without "
                   "extension? seconds vs frame numbers?)", [f"{name} {sorted(keys)[:1]} vs {other_name} {sorted(other)[:1]}"])
        return
    only_other = sorted(other - keys)
    if only_other:
        report.add(f"missing_in_{name}".replace(" ", "_").lower(), "warning",
                   f"{len(only_other)} of {len(other)} {other_name} keyframes have no {name} sample (their GT is "
                   "never detected: recall loss)", only_other)


def _load_proposal_keys(path: str | Path) -> set[KeyframeKey]:
    path = Path(path)
    if path.suffix == ".csv":
        return set(ava.read_proposal_csv(path))
    obj = acar_pkl.load_acar_object(path)
    if isinstance(obj, dict):
        return set(ava.read_dense_proposals(path))
    return {kf.key for kf in acar_pkl.read_acar_pkl(path)[0]}


def validate_dataset(annotation_path: str | Path, frames_root: str | Path | None = None,
                     video_root: str | Path | None = None, labelmap: str | Path | LabelMap | None = None,
                     num_classes: int | None = None, gt_csv: str | Path | None = None,
                     proposals: str | Path | None = None, exclusions: str | Path | None = None,
                     require_labels: bool = False) -> ValidationReport:
    """Run every check on one annotation pickle; never raises for data problems (see the report)."""
    report = ValidationReport(str(annotation_path))
    try:
        keyframes, pkl_map = acar_pkl.read_acar_pkl(annotation_path)
        if isinstance(labelmap, (str, Path)):
            labelmap = read_labelmap(labelmap)
    except (FormatError, OSError) as error:
        report.add("unreadable", "error", str(error))
        return report
    report.counts.update(keyframes=len(keyframes), boxes=sum(len(kf.boxes) for kf in keyframes), classes=len(pkl_map))
    if not keyframes:
        report.add("empty", "error", "the annotation has no keyframes")
        return report
    _check_classes(report, pkl_map, labelmap, num_classes, keyframes, require_labels)
    _check_boxes(report, keyframes)
    _check_keys_and_convention(report, keyframes)
    _check_frames(report, keyframes, frames_root, video_root)
    keys = {kf.key for kf in keyframes}
    try:
        excluded = ava.read_excluded(exclusions) if exclusions else set()
        gt_keys = _check_gt(report, keys, gt_csv, labelmap, excluded) if gt_csv else set()
        if proposals:
            prop_keys = _load_proposal_keys(proposals)
            report.counts["proposal_keyframes"] = len(prop_keys)
            _compare_keys(report, "proposals", prop_keys, "GT CSV" if gt_keys else "annotation", gt_keys or keys)
    except (FormatError, OSError) as error:
        report.add("unreadable", "error", str(error))
    return report


def _split_checks(config: Any) -> list[tuple[str, dict]]:
    """(name, validate_dataset kwargs) for the train and val sections of a `stad.config.Config`."""
    out = []
    eval_map = config.val.eval_mAP if config.val is not None else None
    labelmap = eval_map.labelmap if eval_map is not None else None
    for name in ("train", "val"):
        split = getattr(config, name)
        if split is None:
            continue
        kwargs = dict(frames_root=split.root_path or None, video_root=split.video_root, labelmap=labelmap,
                      num_classes=config.num_classes, require_labels=name == "train")
        if name == "val" and eval_map is not None:
            kwargs.update(gt_csv=eval_map.groundtruth, exclusions=eval_map.exclusions)
        out.append((name, dict(annotation_path=split.annotation_path, **kwargs)))
    return out


# --------------------------------------------------------------------------- recognition list files


def _frame_count(folder: Path, template: str) -> int:
    """Files of ``folder`` named like the printf ``template`` (``img_%05d.jpg``)."""
    prefix, _, rest = template.partition("%")
    suffix = rest[rest.index("d") + 1:] if "d" in rest else ""
    return sum(1 for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(suffix)
               and n[len(prefix): len(n) - len(suffix)].isdigit())


def _recognition_media(entry: Any, root: Path, recognition: Any) -> tuple[str, str] | None:
    """(code, message) of what is wrong with one list entry's video or frame folder, else None."""
    from stad.data.recognition_lists import ListFileError, video_id
    from stad.data.video import FrameReadError, probe_video

    path = root / entry.path
    if recognition.list_format == "frames":
        if not path.is_dir():
            return "missing-file", f"{entry.where}: frame folder {path} does not exist"
        found = _frame_count(path, recognition.filename_tmpl)
        if found == 0:
            return "empty-video", f"{entry.where}: {path} holds no frames named like {recognition.filename_tmpl!r}"
        if found < entry.total_frames:
            return "missing-frames", f"{entry.where}: the line says {entry.total_frames} frames, {path} has {found}"
        return None
    try:
        video_id(entry)
        probe_video(path)
    except ListFileError as err:
        return "not-a-video", str(err)
    except FrameReadError as err:
        code = "missing-file" if not path.is_file() else ("empty-video" if "no decodable" in str(err) else "unreadable")
        return code, f"{entry.where}: {err}"
    return None


def validate_recognition_split(list_path: str | Path, root: str | Path, recognition: Any,
                               require_all_classes: bool = False) -> ValidationReport:
    """Check a recognition list file: every line parses (field count, integers, labels in range, one per label
    group), every video / frame folder exists, opens and has frames. Every problem names ``file:line``."""
    from stad.data.recognition_lists import ListFileError, parse_line

    report = ValidationReport(str(list_path))
    groups = dict(recognition.label_groups)
    try:
        lines = Path(list_path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        report.add("unreadable", "error", f"{list_path}: cannot read the list file ({err})")
        return report
    entries, problems = [], defaultdict(list)
    for n, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                entries.append(parse_line(line, f"{list_path}:{n}", recognition.list_format, groups,
                                          recognition.multi_label))
            except ListFileError as err:
                problems["bad-line"].append(str(err))
    for entry in entries:
        found = _recognition_media(entry, Path(root), recognition)
        if found is not None:
            problems[found[0]].append(found[1])
    report.counts.update(videos=len(entries), lines=len(lines))
    if not entries and not problems:
        report.add("empty-list", "error", f"{list_path}: no videos listed")
    for code, found in problems.items():
        report.add(code, "error", f"{len(found)} line(s); first: {found[0]}", found[1:])
    if require_all_classes and entries and not recognition.multi_label:
        for g, (name, count) in enumerate(groups.items()):
            missing = sorted(set(range(count)) - {e.labels[g][0] for e in entries})
            if missing:
                report.add("class-without-videos", "warning", f"group '{name}': classes {missing[:10]} have no "
                           "videos in this split")
    return report


def validate_recognition_config(config: Any, logger: logging.Logger | None = None, raise_on_error: bool = True
                                ) -> list[ValidationReport]:
    """The recognition preflight: `validate_recognition_split` on the train and val list files a config reads."""
    logger = logger or logging.getLogger("stad.data.validate")
    reports = []
    for name in ("train", "val"):
        split = getattr(config, name)
        if split is None or (name == "train" and config.evaluate):
            continue
        report = validate_recognition_split(split.annotation_path, split.root_path, config.recognition,
                                            require_all_classes=name == "train")
        report.source = f"{name}: {report.source}"
        (logger.info if report.ok else logger.error)("%s", report.format())
        reports.append(report)
    failed = [r for r in reports if not r.ok]
    if raise_on_error and failed:
        raise DatasetValidationError("\n".join(r.format() for r in failed))
    return reports


def validate_config(config: Any, logger: logging.Logger | None = None, raise_on_error: bool = True
                    ) -> list[ValidationReport]:
    """Validate every split a config reads; logs the reports and raises on errors (training preflight)."""
    if getattr(config, "task", "detection") == "recognition":
        return validate_recognition_config(config, logger, raise_on_error)
    logger = logger or logging.getLogger("stad.data.validate")
    reports = []
    for name, kwargs in _split_checks(config):
        report = validate_dataset(**kwargs)
        report.source = f"{name}: {report.source}"
        (logger.info if report.ok else logger.error)("%s", report.format())
        reports.append(report)
    if raise_on_error:
        failed = [r for r in reports if not r.ok]
        if failed:
            raise DatasetValidationError("\n".join(r.format() for r in failed))
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stad.data.validate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (checks its train and val sections)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--annotation", help="ACAR pickle to check")
    parser.add_argument("--frames-root")
    parser.add_argument("--video-root")
    parser.add_argument("--labelmap")
    parser.add_argument("--num-classes", type=int)
    parser.add_argument("--gt-csv")
    parser.add_argument("--proposals", help="dense-proposal pkl, proposal CSV or ACAR pkl")
    parser.add_argument("--exclusions")
    parser.add_argument("--train", action="store_true", help="the annotation is for training: labels required")
    args = parser.parse_args(argv)
    if bool(args.config) == bool(args.annotation):
        parser.error("give --config or --annotation")
    if args.config:
        import stad.config as config_module  # lazily: the config loader lives elsewhere

        config = config_module.load_config(args.config, args.set)
        reports = validate_config(config, raise_on_error=False)
    else:
        reports = [validate_dataset(args.annotation, args.frames_root, args.video_root, args.labelmap, args.num_classes,
                                    args.gt_csv, args.proposals, args.exclusions, args.train)]
    for report in reports:
        print(report.format())
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
