"""Export the whole action model (backbone(s), fusion, RoIAlign, head) to ONNX, OpenVINO IR and TorchScript.

    net = SingleClipActionModel(model).eval()                     # stad.models.export
    export_action_model(net, "toy.onnx", "onnx", clip_shape=(1, 3, 8, 120, 160), preset=preset)
    # -> toy.onnx + toy.onnx.json (the preset: preprocessing, label map; the graph's inputs and outputs)

The graph: inputs ``clip`` float32 ``[1, 3, T, H, W]`` (the preset's transform applied: resized and
normalised RGB) and ``boxes`` float32 ``[N, 4]`` (normalised xyxy in the clip), N dynamic, 0 included;
output ``logits`` float32 ``[N, K]`` (before the preset's activation). One clip per call: a batch of
B keyframes is B calls (`stad.engine.action_runtimes`). The clip shape is fixed at export (the preset's
resize and the video's aspect ratio fix it); a clip of another shape needs its own export.

ONNX: ``torch.onnx.export``'s TorchScript-based exporter (the dynamo one needs onnxscript, not a
dependency), opset 17; RoIAlign becomes ONNX ``RoiAlign`` (torchvision's symbolic, ``aligned=False``
as ACAR-Net). OpenVINO IR: the ONNX file converted by ``openvino.convert_model``, weights kept in
fp32. TorchScript: ``torch.jit.trace`` of the same module. Files are written atomically (a reader sees
the whole file or none). The metadata JSON beside each file (``<file>.json``, e.g. ``toy.onnx.json``)
carries the `stad.models.presets.ModelPreset` and what the graph expects: the file alone is enough to run it.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

FORMATS = ("onnx", "openvino", "torchscript")
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".pt"}
OPSET = 17
METADATA_VERSION = 1


class ExportError(RuntimeError):
    """The model could not be exported (a missing package, an unsupported part); the message says which."""


def example_boxes(count: int = 3) -> torch.Tensor:
    """``count`` distinct, valid normalised boxes (the tracing example; N is dynamic in the graph)."""
    x1 = torch.linspace(0.05, 0.55, count)
    return torch.stack([x1, torch.full((count,), 0.1), x1 + 0.3, torch.full((count,), 0.9)], dim=1)


def clip_shape_for(preprocessing: Any, frame_width: int, frame_height: int) -> tuple[int, int, int, int, int]:
    """``(1, 3, T, H, W)`` of the clips the preset's test-time transform makes from frames of this size."""
    import numpy as np

    from stad.data.dataset import sample_from_frames
    from stad.engine.builders import transform_from_preprocessing
    from stad.structures import Boxes

    frames = [np.zeros((int(frame_height), int(frame_width), 3), np.uint8)] * preprocessing.clip_len
    sample = sample_from_frames(frames, ("shape", 0), Boxes.empty(), preprocessing.num_classes,
                                [transform_from_preprocessing(preprocessing)])
    return (1, *tuple(int(s) for s in sample.pixels.shape))


def model_digest(model: nn.Module) -> str:
    """sha256 of a model's architecture (its repr) and every parameter and buffer (names, dtypes, bytes):
    the cache key of its exports (the same weights in another architecture give another key)."""
    digest = hashlib.sha256(repr(model).encode())
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


@contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """A temporary path in ``path``'s folder, renamed onto ``path`` when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(scratch)
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)


def _check_net(net: nn.Module) -> None:
    if net.training:
        raise ExportError("export needs the model in eval mode (.eval()): dropout off, no box jitter")


def _quiet_trace():
    """Tracer warnings about Python-side shape checks (fixed at export by the clip shape) are expected."""
    context = warnings.catch_warnings()
    context.__enter__()
    warnings.simplefilter("ignore", torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    return context


def export_onnx(net: nn.Module, path: str | Path, clip_shape: Sequence[int]) -> Path:
    """``net`` (clip, boxes) -> logits as ONNX at ``path``: clip shape fixed, number of boxes dynamic."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        raise ExportError("ONNX export needs the Python package onnx: pip install -r requirements.txt")
    _check_net(net)
    path = Path(path)
    clip = torch.zeros(tuple(clip_shape))
    context = _quiet_trace()
    try:
        with torch.no_grad(), _atomic_target(path) as scratch:
            torch.onnx.export(net, (clip, example_boxes()), str(scratch), dynamo=False, opset_version=OPSET,
                              input_names=["clip", "boxes"], output_names=["logits"],
                              dynamic_axes={"boxes": {0: "num_boxes"}, "logits": {0: "num_boxes"}},
                              do_constant_folding=True)
    except ExportError:
        raise
    except Exception as error:  # the exporter's errors name the unsupported op
        raise ExportError(f"ONNX export failed: {type(error).__name__}: {error}") from error
    finally:
        context.__exit__(None, None, None)
    return path


def export_openvino(onnx_path: str | Path, path: str | Path) -> Path:
    """The ONNX file as OpenVINO IR (``path`` .xml + .bin), fp32 weights."""
    try:
        import openvino
    except ImportError:
        raise ExportError("OpenVINO export needs the Python package openvino: "
                          "pip install -r requirements.txt") from None
    path = Path(path).with_suffix(".xml")
    ov_model = openvino.convert_model(str(onnx_path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.stem}-", dir=path.parent) as scratch:
        xml = Path(scratch) / path.name
        openvino.save_model(ov_model, str(xml), compress_to_fp16=False)
        os.replace(xml.with_suffix(".bin"), path.with_suffix(".bin"))  # the weights first: the .xml names them
        os.replace(xml, path)
    return path


def export_torchscript(net: nn.Module, path: str | Path, clip_shape: Sequence[int]) -> Path:
    """``torch.jit.trace`` of ``net`` at ``path`` (any number of boxes; the clip shape of the trace)."""
    _check_net(net)
    path = Path(path)
    context = _quiet_trace()
    try:
        with torch.no_grad():
            traced = torch.jit.trace(net, (torch.zeros(tuple(clip_shape)), example_boxes()), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    except Exception as error:
        raise ExportError(f"TorchScript export failed: {type(error).__name__}: {error}") from error
    finally:
        context.__exit__(None, None, None)
    with _atomic_target(path) as scratch:
        scratch.write_bytes(buffer.getvalue())
    return path


def metadata_path(path: str | Path) -> Path:
    """``model.onnx`` / ``model.xml`` / ``model.pt`` -> ``model.onnx.json`` / ...: one per exported file."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_metadata(path: str | Path, fmt: str, clip_shape: Sequence[int], num_classes: int, preset: Any = None,
                   source: str | None = None, digest: str | None = None) -> Path:
    """The export's metadata beside it: format, graph inputs/outputs, the preset (preprocessing, label map)."""
    meta = {
        "format": fmt, "file": Path(path).name, "metadata_version": METADATA_VERSION,
        "inputs": {"clip": {"shape": list(clip_shape), "dtype": "float32",
                            "meaning": "one clip: RGB frames after the preset's transform (resize, "
                                       "(x / norm_value - mean) / std), [1, 3, T, H, W]"},
                   "boxes": {"shape": ["num_boxes", 4], "dtype": "float32",
                             "meaning": "person boxes, normalised x1, y1, x2, y2 in the clip; num_boxes >= 0"}},
        "outputs": {"logits": {"shape": ["num_boxes", num_classes], "dtype": "float32",
                               "meaning": "per box and class, before the preset's activation"}},
        "preset": preset.to_dict() if preset is not None else None,
        "source": source, "model_sha256": digest,
        "torch": torch.__version__, "opset": OPSET if fmt in ("onnx", "openvino") else None,
    }
    target = metadata_path(path)
    with _atomic_target(target) as scratch:
        scratch.write_text(json.dumps(meta, indent=2) + "\n")
    return target


def read_metadata(path: str | Path) -> dict:
    return json.loads(metadata_path(path).read_text())


def export_action_model(net: nn.Module, out: str | Path, fmt: str, clip_shape: Sequence[int], *,
                        preset: Any = None, source: str | None = None, digest: str | None = None) -> Path:
    """Write ``net`` (a `stad.models.export.SingleClipActionModel`, eval mode) as ``fmt`` at ``out`` and
    its metadata beside it (`write_metadata`); returns the model file (OpenVINO: the .xml)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.suffix != SUFFIXES[fmt]:
        out = out.with_suffix(SUFFIXES[fmt]) if out.suffix in SUFFIXES.values() else Path(f"{out}{SUFFIXES[fmt]}")
    if fmt == "onnx":
        written = export_onnx(net, out, clip_shape)
    elif fmt == "torchscript":
        written = export_torchscript(net, out, clip_shape)
    else:
        with tempfile.TemporaryDirectory(prefix=".onnx-", dir=out.parent if out.parent.exists() else None) as scratch:
            written = export_openvino(export_onnx(net, Path(scratch) / "model.onnx", clip_shape), out)
    write_metadata(written, fmt, clip_shape, int(net.num_classes), preset, source, digest)
    return written
