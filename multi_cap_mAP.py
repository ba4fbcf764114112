#!/usr/bin/env python
"""AVA frame-mAP@0.5 with a capacity sweep; numbers equal the official evaluator's for every capacity.

    python multi_cap_mAP.py -l LABELMAP -g GT.csv -d DET.csv [-e EXCL.csv]
        [--capacities 1:50 | --capacities 10,20,50 | --capacity 50]
        [--ignore-keys-without-gt] [--json out.json] [--plot out.png] [--per-class]

Importable too: ``from multi_cap_mAP import evaluate``.
"""
from __future__ import annotations

import argparse
import logging
import sys

from stad.cli import run_cli
from stad.evaluation import OFFICIAL_CAPACITY, AvaCsvError, EvaluationResult, evaluate
from stad.evaluation.report import format_table, write_json, write_plot

__all__ = ["evaluate", "parse_capacities", "main"]


def parse_capacities(text: str) -> list[int]:
    """``"1:50"`` (inclusive range), ``"10,20,50"`` or a mix such as ``"1:5,50,0"`` (0: unlimited)."""
    capacities: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            if ":" in part:
                lo, hi = (int(v) for v in part.split(":"))
                if hi < lo:
                    raise ValueError
                capacities.extend(range(lo, hi + 1))
            else:
                capacities.append(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad capacity spec {part!r}: use N, A:B or a comma list") from None
    if not capacities:
        raise argparse.ArgumentTypeError("no capacities given")
    return list(dict.fromkeys(capacities))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-l", "--labelmap", required=True, help="label map .pbtxt (item/id or label/label_id)")
    parser.add_argument("-g", "--groundtruth", required=True, help="ground-truth CSV")
    parser.add_argument("-d", "--detections", required=True, help="detections CSV (8 columns, with score)")
    parser.add_argument("-e", "--exclusions", help="excluded timestamps CSV (video,timestamp)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--capacities", type=parse_capacities,
                       help="capacities to evaluate, e.g. 1:50 or 10,20,50 (<1 = unlimited); "
                            f"default: {OFFICIAL_CAPACITY} and the sweep 1:50")
    group.add_argument("--capacity", type=int, help="a single capacity")
    parser.add_argument("--ignore-keys-without-gt", action="store_true",
                        help="ActivityNet behaviour: drop detections on keyframes absent from the GT file "
                             "(default, as ACAR-Net: they count as false positives)")
    parser.add_argument("--classes", type=parse_capacities, help="evaluate only these class ids")
    parser.add_argument("--json", help="write all results as JSON")
    parser.add_argument("--plot", help="write the mAP-vs-capacity curve and per-class AP bars (PNG)")
    parser.add_argument("--per-class", action="store_true", help="print the per-class AP table")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> EvaluationResult:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.capacity is not None:
        capacities = [args.capacity]
    else:
        capacities = args.capacities or [OFFICIAL_CAPACITY, *range(1, OFFICIAL_CAPACITY + 1)]
    try:
        result = evaluate(args.labelmap, args.groundtruth, args.detections, args.exclusions, capacities,
                          ignore_keys_without_gt=args.ignore_keys_without_gt, class_subset=args.classes,
                          progress=not args.quiet)
    except (AvaCsvError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(format_table(result, per_class=args.per_class))
    unknown = result.diagnostics.get("detections_outside_labelmap") or {}
    if unknown:
        print(f"note: {sum(unknown.values())} detection rows had class ids outside the label map and were "
              f"dropped before the capacity cut: {unknown}")
    if args.json:
        write_json(result, args.json)
    if args.plot:
        write_plot(result, args.plot)
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
