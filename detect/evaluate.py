"""Person-proposal quality against ground-truth boxes: AP@0.5, recall, and the stage-2 upper bound.

    python -m detect.evaluate --proposals proposals.pkl --gt val.csv [--exclude val_excluded.csv] [--json out.json]

- **AP@0.5** (person class): detections of all keyframes sorted by score; in each keyframe a
  detection is a true positive if its highest-IoU GT box has IoU >= 0.5 and is not yet matched
  (the PASCAL/AVA rule: a duplicate is a false positive, it does not fall back to the next GT);
  AP is the area under the monotone precision envelope (all-point interpolation), computed by the
  frame-mAP evaluator's `average_precision` (the official code's ranking, ties included).
- **recall@score**: share of GT boxes covered (IoU >= 0.5) by some proposal with score >= s.
- **recall@top-k**: the same with only the k best proposals of each keyframe.
- **uncovered**: GT boxes no proposal covers at IoU 0.5 -- stage 2 can never detect these, so
  ``1 - uncovered / gt`` bounds its frame recall.

Keyframes: GT keyframes plus proposal keyframes (a proposal on a keyframe without GT, e.g. an
empty frame, is a false positive); ``--gt-keyframes-only`` scores only keyframes present in the GT.
Proposals: ACAR pickle, mmaction2 dense-proposal pickle, or LFB-style proposal CSV. numpy only.
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from stad.cli import run_cli
from stad.data.formats import ava
from stad.data.formats.acar_pkl import element_to_keyframe, validate_acar
from stad.data.formats.errors import FormatError
from stad.evaluation.ava_map import average_precision  # the official VOC AP and its tie order
from stad.structures import Boxes, KeyframeKey, box_iou

SCORE_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9)
TOP_K = (1, 2, 3, 5, 10, 20)


def read_gt_boxes(path: str | Path) -> dict[KeyframeKey, Boxes]:
    """Person boxes per keyframe of an AVA-style GT CSV (one row per action: boxes deduplicated)."""
    found: dict[KeyframeKey, dict[tuple, None]] = defaultdict(dict)
    for row in ava.iter_gt_rows(path):
        found[(row.video, row.timestamp)].setdefault(tuple(round(v, 6) for v in row.box), None)
    return {key: Boxes(np.array(list(boxes), np.float32)) for key, boxes in sorted(found.items())}


def read_proposals(path: str | Path) -> dict[KeyframeKey, Boxes]:
    """Proposals from an ACAR pickle, a dense-proposal dict pickle or a proposal CSV."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"proposals not found: {path}")
    if path.suffix.lower() == ".csv":
        return ava.read_proposal_csv(path)
    with open(path, "rb") as handle:
        try:
            obj = pickle.load(handle)
        except (pickle.UnpicklingError, EOFError) as error:
            raise FormatError(path, None, None, f"not a readable pickle ({error})") from None
    if isinstance(obj, dict):
        return ava.read_dense_proposals(path)
    validate_acar(obj, source=str(path))
    out: dict[KeyframeKey, Boxes] = {}
    for element in obj[0]:
        keyframe = element_to_keyframe(element)
        if keyframe.key in out:
            raise FormatError(path, None, "elements", f"keyframe {keyframe.key} appears twice")
        out[keyframe.key] = keyframe.boxes
    return out


def match_keyframe(dets: Boxes, gt: Boxes, iou_threshold: float = 0.5) -> np.ndarray:
    """TP flags ``[N]`` for detections of one keyframe (highest-IoU GT, unmatched, IoU >= thr)."""
    is_tp = np.zeros(len(dets), bool)
    if not len(dets) or not len(gt):
        return is_tp
    iou = box_iou(dets.xyxy, gt.xyxy)
    taken = np.zeros(len(gt), bool)
    for i in np.argsort(-dets.scores, kind="stable"):
        j = int(np.argmax(iou[i]))
        if iou[i, j] >= iou_threshold and not taken[j]:
            taken[j] = is_tp[i] = True
    return is_tp


@dataclass
class DetectionReport:
    keyframes: int
    gt_boxes: int
    proposals: int
    ap50: float
    recall_at_score: dict[float, float] = field(default_factory=dict)
    proposals_per_keyframe_at_score: dict[float, float] = field(default_factory=dict)
    recall_at_topk: dict[str, float] = field(default_factory=dict)
    uncovered: int = 0
    gt_keyframes_without_proposals: int = 0
    proposal_keyframes_without_gt: int = 0

    @property
    def recall_upper_bound(self) -> float:
        return 1.0 - self.uncovered / self.gt_boxes if self.gt_boxes else float("nan")

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["recall_at_score"] = {str(k): v for k, v in self.recall_at_score.items()}
        out["proposals_per_keyframe_at_score"] = {str(k): v for k, v in self.proposals_per_keyframe_at_score.items()}
        out["recall_upper_bound"] = self.recall_upper_bound
        return out

    def format(self) -> str:
        lines = [f"keyframes {self.keyframes}  GT boxes {self.gt_boxes}  proposals {self.proposals}",
                 f"person AP@0.5: {100 * self.ap50:.2f}",
                 f"GT boxes not covered by any proposal at IoU 0.5: {self.uncovered} "
                 f"(stage-2 recall upper bound {100 * self.recall_upper_bound:.2f}%)",
                 f"GT keyframes without proposals: {self.gt_keyframes_without_proposals}; "
                 f"proposal keyframes without GT: {self.proposal_keyframes_without_gt}",
                 "score >=  recall  proposals/keyframe"]
        for s, r in self.recall_at_score.items():
            lines.append(f"  {s:<6}  {100 * r:6.2f}  {self.proposals_per_keyframe_at_score[s]:.2f}")
        lines.append("top-k per keyframe  recall")
        lines += [f"  {k:<17}  {100 * r:6.2f}" for k, r in self.recall_at_topk.items()]
        return "\n".join(lines)


def _covered(dets: Boxes, gt: Boxes, iou_threshold: float) -> np.ndarray:
    if not len(gt):
        return np.zeros(0, bool)
    if not len(dets):
        return np.zeros(len(gt), bool)
    return (box_iou(dets.xyxy, gt.xyxy) >= iou_threshold).any(axis=0)


def evaluate(proposals: Mapping[KeyframeKey, Boxes], gt: Mapping[KeyframeKey, Boxes], *,
             excluded: set[KeyframeKey] = frozenset(), gt_keyframes_only: bool = False, iou_threshold: float = 0.5,
             score_thresholds: Sequence[float] = SCORE_THRESHOLDS, top_k: Sequence[int] = TOP_K) -> DetectionReport:
    keys = set(gt) | (set() if gt_keyframes_only else set(proposals))
    keys = sorted(keys - set(excluded))
    empty = Boxes.empty()
    num_gt = sum(len(gt.get(k, empty)) for k in keys)
    all_scores, all_tp = [], []
    uncovered = 0
    covered_at_score = {s: 0 for s in score_thresholds}
    boxes_at_score = {s: 0 for s in score_thresholds}
    covered_at_k = {k: 0 for k in top_k}
    for key in keys:
        dets, truth = proposals.get(key, empty), gt.get(key, empty)
        all_scores.append(dets.scores)
        all_tp.append(match_keyframe(dets, truth, iou_threshold))
        uncovered += int((~_covered(dets, truth, iou_threshold)).sum())
        for s in score_thresholds:
            kept = dets[np.flatnonzero(dets.scores >= s)]
            covered_at_score[s] += int(_covered(kept, truth, iou_threshold).sum())
            boxes_at_score[s] += len(kept)
        order = np.argsort(-dets.scores, kind="stable")
        for k in top_k:
            covered_at_k[k] += int(_covered(dets[order[:k]], truth, iou_threshold).sum())
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0, np.float32)
    is_tp = np.concatenate(all_tp) if all_tp else np.zeros(0, bool)
    ratio = (lambda n: n / num_gt) if num_gt else (lambda n: float("nan"))
    topk = {str(k): ratio(v) for k, v in covered_at_k.items()}
    topk["all"] = ratio(num_gt - uncovered)
    return DetectionReport(
        keyframes=len(keys), gt_boxes=num_gt, proposals=len(scores),
        ap50=average_precision(scores, is_tp, num_gt),
        recall_at_score={s: ratio(v) for s, v in covered_at_score.items()},
        proposals_per_keyframe_at_score={s: (v / len(keys) if keys else 0.0) for s, v in boxes_at_score.items()},
        recall_at_topk=topk, uncovered=uncovered,
        gt_keyframes_without_proposals=sum(1 for k in keys if k in gt and k not in proposals),
        proposal_keyframes_without_gt=sum(1 for k in keys if k in proposals and k not in gt))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detect.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proposals", required=True, help="ACAR pickle, dense-proposal pickle or proposal CSV")
    parser.add_argument("--gt", required=True, help="AVA-style GT CSV (video,t,x1,y1,x2,y2,action,person)")
    parser.add_argument("--exclude", help="excluded timestamps CSV (video,t)")
    parser.add_argument("--gt-keyframes-only", action="store_true", help="ignore proposals on keyframes without GT")
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--json", help="also write the report as JSON")
    args = parser.parse_args(argv)
    excluded = ava.read_excluded(args.exclude) if args.exclude else set()
    report = evaluate(read_proposals(args.proposals), read_gt_boxes(args.gt), excluded=excluded,
                      gt_keyframes_only=args.gt_keyframes_only, iou_threshold=args.iou)
    print(report.format())
    if args.json:
        from stad.io_utils import atomic_write_text

        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
