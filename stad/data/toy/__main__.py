"""CLI: ``python -m stad.data.toy --out data/toy --seed 0 [--size default]``."""
from __future__ import annotations

import argparse
import logging
import sys
import time

from stad.cli import run_cli
from stad.data.toy.generate import SIZES, generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stad.data.toy", description=__doc__)
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=sorted(SIZES), default="default",
                        help=", ".join(f"{k}: {v.train_videos}+{v.val_videos} videos x {v.duration} s"
                                       for k, v in SIZES.items()))
    parser.add_argument("--workers", type=int, default=2, help="processes rendering videos in parallel")
    parser.add_argument("--no-video", action="store_true", help="write JPEG frames only, no mp4 files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    meta = generate(args.out, seed=args.seed, size=args.size, workers=args.workers, write_video=not args.no_video)
    for split, info in meta["splits"].items():
        print(f"{split}: {len(info['videos'])} videos, {info['keyframes']} keyframes, {info['boxes']} boxes, "
              f"{info['excluded']} excluded keyframes")
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
