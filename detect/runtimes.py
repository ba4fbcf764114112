"""Inference runtimes for the person detector's network: torch (default), ONNX Runtime, OpenVINO.

The torch runtime is `PersonDetector`'s own fused ultralytics model. The other two run the same
network exported once by ultralytics' own exporter to ONNX (dynamic batch, height and width, so
every letterbox shape and the last partial batch run without re-export). The export is cached
(`default_cache_dir`: beside the weights unless told otherwise) under a name keyed by the
weights' sha256 and the ultralytics version, and written atomically; it is never redone while
the file is there. ONNX Runtime runs that file; OpenVINO reads the same file and compiles it once
per input shape, in full fp32 precision (on CPUs with bf16 support its default is bf16, which
moves boxes by pixels). Ultralytics itself is only touched through `detect.detector`.

Only the network moves to another runtime: letterboxing, NMS and box scaling stay the ultralytics
code the torch path uses, so boxes match the torch runtime up to float rounding.
A network here maps ``[B, 3, h, w]`` float32 in [0, 1] to the raw predictions ``[B, 4 + classes, anchors]``.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stad.onnx_session import onnx_cpu_session

LOGGER = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx", "openvino")
# What runtime "auto" picks on a CPU: the first one whose packages are installed. OpenVINO ran
# 3-8 % faster than ONNX Runtime end to end on a quiet 2-core CPU (bench/RESULTS.md, issue #5).
AUTO_CPU_RUNTIMES = ("openvino", "onnx")
# Python packages each runtime needs (import names -> pip names): export needs onnx (+ onnxslim).
_NEEDS = {
    "torch": {},
    "onnx": {"onnx": "onnx", "onnxslim": "onnxslim", "onnxruntime": "onnxruntime"},
    "openvino": {"onnx": "onnx", "onnxslim": "onnxslim", "openvino": "openvino"},
}
# Compiled OpenVINO models kept per network (one per input shape: letterbox shape x batch size).
MAX_COMPILED_SHAPES = 8
CACHE_ENV = "STAD_EXPORT_CACHE"


class RuntimeUnavailableError(RuntimeError):
    """A runtime's Python package is not installed."""


class Network(Protocol):
    threads: int

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """``[B, 3, h, w]`` float32 in [0, 1] -> raw predictions ``[B, 4 + classes, anchors]`` float32."""

    def replica(self, threads: int) -> "Network":
        """An independent network on the same file for another inference stream."""


def check_runtime(name: str) -> str:
    """``name`` if it is a known runtime whose packages are installed; a clear error otherwise."""
    if name not in RUNTIMES:
        close = difflib.get_close_matches(str(name), RUNTIMES + ("auto",), n=1, cutoff=0.4)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown detector runtime {name!r}{hint}; choose one of {', '.join(RUNTIMES)} or auto")
    missing = [pip for module, pip in _NEEDS[name].items() if importlib.util.find_spec(module) is None]
    if missing:
        raise RuntimeUnavailableError(
            f"detector runtime {name!r} needs the Python package(s) {', '.join(missing)}, which are not installed: "
            f"install them with `pip install -r requirements.txt` (pinned there), or use --runtime torch")
    return name


def resolve_runtime(name: str, device: str, end2end: bool = False) -> str:
    """The runtime to run: ``name``, or for "auto" the first of `AUTO_CPU_RUNTIMES` whose packages
    are installed on a CPU, and torch elsewhere.

    "auto" also falls back to torch (logged) when no such runtime is installed or the model is
    end-to-end (NMS-free heads export a different output). Unknown names are an error.
    """
    if name != "auto":
        return check_runtime(name)
    if not str(device).startswith("cpu") or end2end:
        return "torch"
    for candidate in AUTO_CPU_RUNTIMES:
        try:
            return check_runtime(candidate)
        except RuntimeUnavailableError as error:
            LOGGER.info("runtime auto: %s", error)
    LOGGER.info("runtime auto: running torch")
    return "torch"


def default_cache_dir(weights: str | Path) -> Path:
    """Where exports of ``weights`` go by default: ``$STAD_EXPORT_CACHE`` if set, else the weights'
    own folder (the export sits beside its source and goes away with it), else, when that folder
    is not writable, ``~/.cache/stad/detector_exports``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    folder = Path(weights).resolve().parent
    if os.access(folder, os.W_OK):
        return folder
    return Path.home() / ".cache" / "stad" / "detector_exports"


def weights_digest(weights: str | Path) -> str:
    digest = hashlib.sha256()
    with open(weights, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_export_path(weights: str | Path, cache_dir: str | Path) -> Path:
    """Where the ONNX export of ``weights`` is cached: ``<cache>/<stem>-<sha256[:16]>-ul<version>-dynamic.onnx``.

    The export has dynamic batch, height and width, so neither imgsz nor batch size is part of the key.
    """
    from detect.detector import ultralytics_version

    weights = Path(weights)
    return Path(cache_dir) / f"{weights.stem}-{weights_digest(weights)[:16]}-ul{ultralytics_version()}-dynamic.onnx"


def export_onnx(weights: str | Path, cache_dir: str | Path | None = None, imgsz: int = 640) -> Path:
    """The cached ONNX export of ``weights`` (ultralytics' exporter, run offline); exports only if missing.

    The exporter writes next to the file it is given, so it runs on a copy of the weights in a
    temporary folder inside ``cache_dir``; the result is renamed into place (atomic: a reader sees
    the whole file or none). ``imgsz`` only sizes the tracing example (the axes are dynamic).
    """
    from detect.detector import export_onnx_with_ultralytics

    for module in ("onnx", "onnxslim"):
        if importlib.util.find_spec(module) is None:
            raise RuntimeUnavailableError(f"exporting the detector to ONNX needs the Python package {module}: "
                                          "install it with `pip install -r requirements.txt`, or use --runtime torch")
    target = onnx_export_path(weights, cache_dir or default_cache_dir(weights))
    if target.is_file():
        LOGGER.info("using the cached ONNX export %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    LOGGER.info("exporting %s to ONNX (once; cached as %s)", weights, target)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=target.parent) as scratch:
        copy = Path(scratch) / Path(weights).name
        shutil.copyfile(weights, copy)
        os.replace(export_onnx_with_ultralytics(copy, imgsz), target)
    return target


def _f32_images(images: np.ndarray) -> np.ndarray:
    if images.dtype != np.float32 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected float32 images [B, 3, h, w], got {images.dtype} {images.shape}")
    return np.ascontiguousarray(images)


class OnnxRuntimeNetwork:
    """An ONNX Runtime CPU session on an exported detector, ``threads`` intra-op threads.

    With one thread the session runs in the calling thread (no thread pool, no spinning).
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.path, self.threads = Path(path), max(1, int(threads))
        self.session = onnx_cpu_session(self.path, self.threads)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: _f32_images(images)})[0]

    def replica(self, threads: int) -> "OnnxRuntimeNetwork":
        return OnnxRuntimeNetwork(self.path, threads)


class OpenVinoNetwork:
    """OpenVINO CPU on an exported detector: one compiled model per input shape (static shapes run
    faster than a dynamic one), at most `MAX_COMPILED_SHAPES` kept; fp32; ``threads`` threads.
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import openvino

        self.path, self.threads = Path(path), max(1, int(threads))
        self.core = openvino.Core()
        self.model = self.core.read_model(str(self.path))
        self.config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": self.threads,
                       "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                       # replicas and other processes share the cores: do not pin threads to them
                       "ENABLE_CPU_PINNING": False}
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        # pybind11 sets up its numpy bindings on first use under a once-flag that waits without
        # releasing the GIL: two stream threads getting there together deadlock (seen with
        # openvino 2026.4). Do it here, in the thread that builds the replicas.
        openvino.Tensor(np.zeros((1,), np.float32)).data

    def _request_for(self, shape: tuple[int, ...]) -> Any:
        if shape in self._compiled:
            self._compiled.move_to_end(shape)
            return self._compiled[shape]
        model = self.model.clone()
        model.reshape(list(shape))
        request = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        self._compiled[shape] = request
        if len(self._compiled) > MAX_COMPILED_SHAPES:
            self._compiled.popitem(last=False)
        return request

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = _f32_images(images)
        request = self._request_for(images.shape)
        request.infer({0: images})
        return request.get_output_tensor(0).data.copy()

    def replica(self, threads: int) -> "OpenVinoNetwork":
        return OpenVinoNetwork(self.path, threads)


def load_network(runtime: str, weights: str | Path, threads: int = 1, cache_dir: str | Path | None = None,
                 imgsz: int = 640) -> Network:
    """The ``runtime`` ("onnx" or "openvino") network of ``weights``, exported (once) to the cache."""
    check_runtime(runtime)
    if runtime == "torch":
        raise ValueError("the torch runtime is PersonDetector's own model; load_network serves onnx and openvino")
    path = export_onnx(weights, cache_dir, imgsz)
    return OnnxRuntimeNetwork(path, threads) if runtime == "onnx" else OpenVinoNetwork(path, threads)
