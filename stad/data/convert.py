"""Annotation converters: ``python -m stad.data.convert {ava2acar,cw2acar,multisports,acar2ava} ...``.

* ``ava2acar``   AVA GT CSV (+ dense-proposal pkl or proposal CSV) -> ACAR pickle
* ``cw2acar``    Chaotic World ``chaos_*_1fps.csv`` -> ACAR pickle (+ the 1..50 GT CSV and label map)
* ``multisports`` ``multisports_GT.pkl`` -> AVA-style CSV (timestamp = frame) + ACAR pickle
* ``acar2ava``   ACAR pickle -> AVA GT CSV (ids from its ``idx_to_class``)

All outputs are written atomically; every converter is a function usable from Python too.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from stad.cli import run_cli
from stad.data.formats import acar_pkl, ava, chaotic_world, multisports
from stad.data.formats.conventions import AVA, CHAOTIC_WORLD, MULTISPORTS, TOY, FrameConvention
from stad.data.formats.labelmap import read_labelmap, write_labelmap
from stad.structures import Boxes, Keyframe, KeyframeKey, LabelMap, box_iou

log = logging.getLogger("stad.data.convert")
CONVENTIONS = {"ava": AVA, "toy": TOY, "cw": CHAOTIC_WORLD, "multisports": MULTISPORTS}


def _with_boxes(kf: Keyframe, boxes: Boxes, labels: Sequence[Sequence[int]]) -> Keyframe:
    return Keyframe(kf.video, kf.timestamp, boxes, tuple(tuple(x) for x in labels), kf.mid_frame, kf.start_frame,
                    kf.n_frames, kf.format_str, kf.frame_rate)


def merge_proposals(gt: list[Keyframe], proposals: dict[KeyframeKey, Boxes], mode: str, convention: FrameConvention,
                    min_score: float = 0.0, label_iou: float = 0.5) -> list[Keyframe]:
    """Combine GT keyframes with detector boxes.

    ``mode``: ``gt`` (GT boxes only), ``proposals`` (detector boxes only; each takes the labels of the
    best GT box with IoU >= ``label_iou``, else none), ``gt+proposals`` (GT boxes, then the detector
    boxes scoring >= ``min_score`` as extra boxes with person id -1, labelled the same way; as in
    ACAR's ``*_with_fair_0.9.pkl``). Keys with proposals but no GT are kept (their boxes unlabelled).
    """
    if mode not in ("gt", "proposals", "gt+proposals"):
        raise ValueError(f"mode must be gt, proposals or gt+proposals, got {mode!r}")
    by_key = {kf.key: kf for kf in gt}
    if mode == "gt":
        return list(gt)
    out = []
    for key in sorted(set(by_key) | set(proposals)):
        base = by_key.get(key) or ava.keyframe_for(key, Boxes.empty(), (), convention)
        props = proposals.get(key, Boxes.empty())
        props = props[np.flatnonzero(props.scores >= min_score)] if len(props) else props
        labels = _labels_by_iou(base, props, label_iou)
        props = Boxes(props.xyxy, props.scores, np.full(len(props), -1, np.int64))
        if mode == "proposals":
            out.append(_with_boxes(base, props, labels))
        else:
            xyxy = np.concatenate([base.boxes.xyxy, props.xyxy])
            scores = np.concatenate([base.boxes.scores, props.scores])
            ids = np.concatenate([base.boxes.ids, props.ids])
            out.append(_with_boxes(base, Boxes(xyxy, scores, ids), list(base.labels) + labels))
    return out


def _labels_by_iou(gt: Keyframe, props: Boxes, threshold: float) -> list[tuple[int, ...]]:
    if not len(props):
        return []
    if not len(gt.boxes):
        return [()] * len(props)
    iou = box_iou(props.xyxy, gt.boxes.xyxy)
    best = iou.argmax(axis=1)
    return [gt.labels[j] if iou[i, j] >= threshold else () for i, j in enumerate(best)]


def ava_to_acar(csv_path: str | Path, labelmap_path: str | Path, out: str | Path, convention: str = "ava",
                proposals: str | Path | None = None, mode: str | None = None, min_score: float = 0.0,
                label_iou: float = 0.5, unknown_ids: str = "error", exclusions: str | Path | None = None) -> int:
    """AVA GT CSV (+ proposals) -> ACAR pickle; returns the number of keyframes written."""
    labelmap = read_labelmap(labelmap_path)
    conv = CONVENTIONS[convention]
    keyframes = ava.read_gt_csv(csv_path, labelmap, conv, unknown_ids=unknown_ids)
    if proposals is not None:
        props = (ava.read_dense_proposals(proposals) if str(proposals).endswith(".pkl")
                 else ava.read_proposal_csv(proposals))
        keyframes = merge_proposals(keyframes, props, mode or "proposals", conv, min_score, label_iou)
    if exclusions is not None:
        excluded = ava.read_excluded(exclusions)
        before = len(keyframes)
        keyframes = [kf for kf in keyframes if kf.key not in excluded]
        log.info("dropped %d excluded keyframes", before - len(keyframes))
    return acar_pkl.write_acar_pkl(out, keyframes, labelmap, with_scores=proposals is not None)


def cw_to_acar(csv_path: str | Path, out: str | Path, gt_csv: str | Path | None = None,
               labelmap_out: str | Path | None = None) -> int:
    """Chaotic World 1fps CSV -> ACAR pickle (ids 1..50), optionally the +1 GT CSV and label map."""
    keyframes = chaotic_world.read_cw_csv(csv_path)
    labelmap = chaotic_world.cw_labelmap()
    if gt_csv is not None:
        ava.write_gt_csv(gt_csv, keyframes, labelmap)
    if labelmap_out is not None:
        write_labelmap(labelmap, labelmap_out)
    return acar_pkl.write_acar_pkl(out, keyframes, labelmap)


def multisports_to_ava(gt_path: str | Path, split: str, out_csv: str | Path | None = None,
                       out_pkl: str | Path | None = None, labelmap_out: str | Path | None = None,
                       proposals: str | Path | None = None, min_score: float = 0.0) -> int:
    """MultiSports GT pickle -> AVA-style CSV (timestamp = frame number) and/or ACAR pickle.

    With ``proposals`` (``MultiSports_box`` pkl) the pickle holds the detector boxes instead,
    labelled from GT boxes at IoU >= 0.5 (``merge_proposals`` mode ``proposals``).
    """
    gt = multisports.read_multisports_gt(gt_path, split)
    labelmap = multisports.multisports_labelmap(gt)
    keyframes = multisports.multisports_keyframes(gt, split)
    if out_csv is not None:
        ava.write_gt_csv(out_csv, keyframes, labelmap)
    if proposals is not None:
        videos = multisports.split_videos(gt, split)
        props = multisports.read_multisports_proposals(proposals, videos)
        merged = merge_proposals(keyframes, props, "proposals", MULTISPORTS, min_score)
        keyframes = [kf if kf.format_str == multisports.frame_format(kf.video) else Keyframe(
            kf.video, kf.timestamp, kf.boxes, kf.labels, kf.mid_frame, *MULTISPORTS.window(
                kf.timestamp, int(gt["nframes"][kf.video])), multisports.frame_format(kf.video), kf.frame_rate)
            for kf in merged]
    if out_pkl is not None:
        acar_pkl.write_acar_pkl(out_pkl, keyframes, labelmap, with_scores=proposals is not None)
    if labelmap_out is not None:
        write_labelmap(labelmap, labelmap_out, dialect="item")
    return len(keyframes)


def acar_to_ava(pkl_path: str | Path, out_csv: str | Path, labelmap_path: str | Path | None = None,
                decimals: int | None = None) -> int:
    """ACAR pickle -> AVA GT CSV (one row per box and label); returns rows written."""
    keyframes, labelmap = acar_pkl.read_acar_pkl(pkl_path)
    if labelmap_path is not None:
        other = read_labelmap(labelmap_path)
        if len(other) != len(labelmap):
            raise ValueError(f"{labelmap_path} has {len(other)} classes but {pkl_path} has {len(labelmap)}")
        labelmap = other
    unlabelled = sum(1 for kf in keyframes for ls in kf.labels if not ls)
    if unlabelled:
        log.warning("%s: %d boxes without labels have no AVA GT row", pkl_path, unlabelled)
    return ava.write_gt_csv(out_csv, keyframes, labelmap, decimals)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stad.data.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ava2acar", help="AVA CSV (+ proposals) -> ACAR pkl")
    p.add_argument("--csv", required=True)
    p.add_argument("--labelmap", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--convention", choices=sorted(CONVENTIONS), default="ava")
    p.add_argument("--proposals", help="dense-proposal .pkl or LFB proposal .csv")
    p.add_argument("--mode", choices=("gt", "proposals", "gt+proposals"), help="default: proposals if given, else gt")
    p.add_argument("--min-score", type=float, default=0.0)
    p.add_argument("--label-iou", type=float, default=0.5)
    p.add_argument("--unknown-ids", choices=("error", "drop"), default="error",
                   help="rows whose id is not in the label map (AVA 80 -> 60: drop)")
    p.add_argument("--exclusions", help="excluded-timestamps CSV: drop those keyframes")
    p = sub.add_parser("cw2acar", help="Chaotic World chaos_*_1fps.csv -> ACAR pkl")
    p.add_argument("--csv", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--gt-csv", help="also write the AVA-style GT CSV with ids 1..50")
    p.add_argument("--labelmap-out", help="also write the 50-class label map")
    p = sub.add_parser("multisports", help="multisports_GT.pkl -> AVA CSV + ACAR pkl")
    p.add_argument("--gt", required=True)
    p.add_argument("--split", choices=("train", "val", "test"), required=True)
    p.add_argument("--out-csv")
    p.add_argument("--out-pkl")
    p.add_argument("--labelmap-out")
    p.add_argument("--proposals", help="MultiSports_box proposals pkl: the ACAR pkl gets these boxes")
    p.add_argument("--min-score", type=float, default=0.0)
    p = sub.add_parser("acar2ava", help="ACAR pkl -> AVA GT CSV")
    p.add_argument("--pkl", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--labelmap", help="label map to take ids from (default: the pickle's idx_to_class)")
    p.add_argument("--decimals", type=int, help="coordinate decimals (default: lossless)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The CLI; bad input prints one clear line naming the file (and line/field) and exits 2."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.command == "ava2acar":
        n = ava_to_acar(args.csv, args.labelmap, args.out, args.convention, args.proposals, args.mode,
                        args.min_score, args.label_iou, args.unknown_ids, args.exclusions)
        print(f"wrote {n} keyframes to {args.out}")
    elif args.command == "cw2acar":
        n = cw_to_acar(args.csv, args.out, args.gt_csv, args.labelmap_out)
        print(f"wrote {n} keyframes to {args.out}")
    elif args.command == "multisports":
        if not args.out_csv and not args.out_pkl:
            raise SystemExit("multisports: give --out-csv and/or --out-pkl")
        n = multisports_to_ava(args.gt, args.split, args.out_csv, args.out_pkl, args.labelmap_out, args.proposals,
                               args.min_score)
        print(f"wrote {n} keyframes ({args.split})")
    else:
        n = acar_to_ava(args.pkl, args.out, args.labelmap, args.decimals)
        print(f"wrote {n} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
