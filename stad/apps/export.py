"""Export the whole action model (backbone(s), fusion, RoIAlign, head) for ONNX Runtime, OpenVINO or TorchScript.

    python -m stad.export --weights runs/demo/acar/checkpoints/last.pth --format onnx --out toy.onnx
    python -m stad.export --weights AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar --format openvino --out r50.xml \
        --frame-size 640x360                                    (= python -m stad.apps.export)

``--weights`` is what `stad.demo` takes (a ``main.py`` checkpoint, or an ACAR-Net model-zoo file whose
preset is inferred from its keys; ``--config`` to build from a config checked against them). The
graph (`stad.engine.action_export`): inputs ``clip`` float32 ``[1, 3, T, H, W]`` (one clip after the
preset's transform: resized, normalised RGB) and ``boxes`` float32 ``[N, 4]`` (normalised xyxy, N
dynamic, 0 included); output ``logits`` ``[N, K]`` before the preset's activation. The clip shape
is fixed: the preset's exact resize, or for a short-side resize (AVA: 256) the shape frames of
``--frame-size WxH`` (default 320x240, 4:3) become. Beside the file, ``<file>.json`` holds the
preset (mean/std, resize, clip length / stride / fps, activation, label map) and the graph's
inputs and outputs. ``--check`` runs the export on zero, one and several boxes and prints the
largest difference from PyTorch.

The demo and the engine's Predictor export on their own when asked to (``--runtime onnx|openvino|auto``,
cached beside the weights); this command is for taking the model elsewhere.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from stad.cli import run_cli

LOGGER = logging.getLogger("stad.apps.export")
FORMATS = ("onnx", "openvino", "torchscript")


class ExportCliError(ValueError):
    """A user-facing problem: `stad.cli.run_cli` prints it without a traceback, exit code 2."""


def _frame_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT (e.g. 640x360), got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"frame size must be positive, got {text!r}")
    return width, height


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stad.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", "--checkpoint", dest="weights", required=True,
                        help="action model weights: a main.py checkpoint or an ACAR-Net model-zoo file")
    parser.add_argument("--config", help="build the model from this config (checked against the weights' preset)")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="onnx, openvino (IR .xml + .bin) or torchscript")
    parser.add_argument("--out", required=True,
                        help="output file (.onnx / .xml / .pt; the suffix is set from --format)")
    parser.add_argument("--frame-size", type=_frame_size, default=(320, 240),
                        help="WIDTHxHEIGHT of the video frames, for presets that resize the short side "
                             "(default 320x240)")
    parser.add_argument("--check", action="store_true",
                        help="run the exported file on 0, 1 and 5 boxes and print the max |difference| from PyTorch")
    return parser.parse_args(argv)


def check_export(path: Path, fmt: str, model, clip_shape: Sequence[int], counts: Sequence[int] = (0, 1, 5)) -> dict:
    """Max |logit difference| of the exported file from the eager model on a random clip, per box count."""
    import numpy as np
    import torch

    from stad.engine.action_runtimes import OnnxActionNetwork, OpenVinoActionNetwork

    generator = torch.Generator().manual_seed(0)
    clip = torch.randn(tuple(clip_shape), generator=generator)
    if fmt == "onnx":
        run = OnnxActionNetwork(path)
    elif fmt == "openvino":
        run = OpenVinoActionNetwork(path)
    else:
        traced = torch.jit.load(str(path))
        def run(clip_np, boxes_np):
            with torch.no_grad():
                return traced(torch.from_numpy(clip_np), torch.from_numpy(boxes_np)).numpy()
    out = {}
    for count in counts:
        corner = torch.rand(count, 2, generator=generator) * 0.6
        boxes = torch.cat([corner, corner + 0.1 + torch.rand(count, 2, generator=generator) * 0.3], dim=1)
        with torch.no_grad():
            reference = model(clip, [boxes]).numpy()
        got = run(clip.numpy(), boxes.numpy())
        if got.shape != reference.shape:
            raise ExportCliError(f"{path}: {count} boxes gave logits {got.shape}, PyTorch {reference.shape}")
        out[count] = float(np.abs(got - reference).max()) if got.size else 0.0
    return out


def run(args: argparse.Namespace) -> dict:
    from stad.config import ConfigError
    from stad.engine.action_export import (ExportError, clip_shape_for, export_action_model, metadata_path,
                                           model_digest)
    from stad.engine.inference import InferenceError, Predictor, weights_preset_for
    from stad.models.export import SingleClipActionModel
    from stad.models.presets import UnknownLayoutError

    try:
        predictor = Predictor.from_weights(args.weights, args.config, logger=LOGGER)
        from stad.engine.checkpoint import read_checkpoint

        preset = weights_preset_for(read_checkpoint(Path(args.weights)), str(args.weights), args.config,
                                    logging.getLogger("stad.apps.export.preset"))
    except (InferenceError, UnknownLayoutError) as error:
        raise ExportCliError(str(error)) from None
    except ConfigError as error:
        raise ExportCliError(f"config error: {error}") from None
    model = predictor.model
    clip_shape = clip_shape_for(predictor.preprocessing, *args.frame_size)
    LOGGER.info("exporting %s as %s: clip %s, boxes [N, 4] (N dynamic)", args.weights, args.format, list(clip_shape))
    try:
        written = export_action_model(SingleClipActionModel(model).eval(), args.out, args.format, clip_shape,
                                      preset=preset, source=str(args.weights), digest=model_digest(model))
    except ExportError as error:
        raise ExportCliError(str(error)) from None
    summary = {"out": str(written), "format": args.format, "clip_shape": list(clip_shape),
               "metadata": str(metadata_path(written))}
    if args.check:
        summary["max_abs_diff"] = check_export(written, args.format, model, clip_shape)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: bad input is one line on stderr and exit code 2 (`stad.cli.run_cli`)."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = run(args)
    print(f"exported: {summary['out']} ({summary['format']}; clip {summary['clip_shape']}, boxes [N, 4]; "
          f"metadata: {summary['metadata']})")
    if "max_abs_diff" in summary:
        print("max |logits - PyTorch|: " + ", ".join(f"{n} boxes {d:.1e}" for n, d in summary["max_abs_diff"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
