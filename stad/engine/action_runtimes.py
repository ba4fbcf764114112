"""Inference runtimes for the action model: torch (default), ONNX Runtime, OpenVINO, or the fastest measured.

    model = RuntimeActionModel(model, "auto", cache_dir="runs/demo/acar/checkpoints", stem="last")
    logits = model(clips, boxes)          # as ActionDetector: clips [B,3,T,H,W], boxes list of [N_i,4] -> [sum N_i, K]

The conventions of the person detector's `detect.runtimes`: the network is exported once per clip
shape (`stad.engine.action_export`: ONNX, and OpenVINO IR converted from it) into a cache (beside the
weights unless ``$STAD_EXPORT_CACHE`` says otherwise), under a name keyed by the model's digest (its
architecture and every weight), the clip shape and the torch version, written atomically and never
redone while the file is there. ONNX Runtime and OpenVINO (CPU, fp32: OpenVINO's bf16 default on
CPUs that have it would move scores) run with as many threads as torch.

The exported graph scores one clip (`stad.models.export.SingleClipActionModel`); a batch of B clips
runs as B calls. A padded batch (clips of several sizes, ``sizes`` given) runs each clip on its own
unpadded pixels, i.e. the batch-size-1 result that padded batches approximate in PyTorch.

``auto`` on a CPU measures, at the first clip shape it sees, torch eager and every installed
exported runtime on that clip (`measure_runtimes`: blocks of calls in alternating order, the median
of each; a runtime whose logits differ
from torch's by more than `AUTO_TOLERANCE` is not eligible), takes the fastest and writes the choice
and the timings to ``<cache>/<key>.runtime.json`` keyed by the host (CPU model, threads): later
runs on the same host read it instead of measuring. When measuring is not possible (packages
missing, export or a run failing, not a CPU) auto runs torch (logged).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from stad.engine.action_export import ExportError, example_boxes, export_onnx, export_openvino, model_digest
from stad.onnx_session import onnx_cpu_session

LOGGER = logging.getLogger(__name__)
RUNTIMES = ("torch", "onnx", "openvino")
CHOICES = ("auto", *RUNTIMES)
CACHE_ENV = "STAD_EXPORT_CACHE"
_NEEDS = {"torch": (), "onnx": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino")}
AUTO_TOLERANCE = 1e-3  # max |logit difference| from torch for auto to pick a runtime (tests hold them to 1e-4)
AUTO_ROUNDS = 3  # timed calls per block (after one warm-up call each)
AUTO_BLOCKS = 2  # blocks per runtime, in alternating order


class ActionRuntimeError(RuntimeError):
    """An unknown or unusable action-model runtime; the message says what to install or choose."""


def check_runtime(name: str) -> str:
    """``name`` if it is a known runtime whose packages are installed; a clear error otherwise."""
    if name not in RUNTIMES:
        raise ActionRuntimeError(f"unknown action-model runtime {name!r}; choose one of {', '.join(CHOICES)}")
    missing = [module for module in _NEEDS[name] if importlib.util.find_spec(module) is None]
    if missing:
        raise ActionRuntimeError(f"action-model runtime {name!r} needs the Python package(s) {', '.join(missing)}: "
                                 "pip install -r requirements.txt, or use --runtime torch")
    return name


def installed_runtimes() -> list[str]:
    out = []
    for name in RUNTIMES:
        try:
            out.append(check_runtime(name))
        except ActionRuntimeError:
            pass
    return out


def default_cache_dir(weights: str | Path | None = None) -> Path:
    """``$STAD_EXPORT_CACHE`` if set, else the weights' folder when writable, else ``~/.cache/stad/action_exports``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if weights is not None:
        folder = Path(weights).resolve().parent
        if os.access(folder, os.W_OK):
            return folder
    return Path.home() / ".cache" / "stad" / "action_exports"


def host_key(threads: int) -> str:
    """What a runtime measurement is valid for: CPU model, logical cores, threads used."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} | {os.cpu_count()} cpus | {threads} threads"


# --------------------------------------------------------------------------- networks on one clip

class OnnxActionNetwork:
    """ONNX Runtime CPU session on an exported action model: (clip [1,3,T,H,W], boxes [N,4]) -> logits [N,K]."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.path, self.threads = Path(path), max(1, int(threads))
        self.session = onnx_cpu_session(self.path, self.threads)

    def __call__(self, clip: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"clip": clip, "boxes": boxes})[0]


class OpenVinoActionNetwork:
    """OpenVINO CPU on an exported action model (IR), compiled once with a dynamic number of boxes, fp32.

    The CPU plugin's runtime cache (kernels kept per input shape) is off: with it, openvino 2026.4
    returned wrong logits (errors of 0.7-1.0) for 16 or more boxes once it had run 1, 2, ..., 15 boxes
    in turn on the same request (tests/engine/test_action_export.py). Off, a call costs about 5 ms
    more on the toy model (22.5 -> 27.7 ms, one thread).
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import openvino

        self.path, self.threads = Path(path), max(1, int(threads))
        core = openvino.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": self.threads,
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False,
                  "CPU_RUNTIME_CACHE_CAPACITY": 0}
        self.request = core.compile_model(core.read_model(str(self.path)), "CPU", config).create_infer_request()

    def __call__(self, clip: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        self.request.infer({"clip": clip, "boxes": boxes})
        return self.request.get_output_tensor(0).data.copy()


class TorchActionNetwork:
    """The eager model on one clip, as the other networks are called (numpy in, numpy out)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @torch.no_grad()
    def __call__(self, clip: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(clip), [torch.from_numpy(boxes)]).float().numpy()


def export_key(stem: str, digest: str, clip_shape: Sequence[int]) -> str:
    """``<stem>-<digest[:16]>-<T>x<H>x<W>-torch<version>``: one export per model, clip shape and exporter."""
    _, _, frames, height, width = clip_shape
    version = torch.__version__.split("+")[0]
    return f"{stem}-{digest[:16]}-{frames}x{height}x{width}-torch{version}"


def exported_path(runtime: str, model: nn.Module, clip_shape: Sequence[int], cache_dir: str | Path,
                  stem: str = "action", digest: str | None = None) -> Path:
    """The cached export of ``model`` for ``runtime`` ("onnx": .onnx, "openvino": .xml converted from it),
    written if missing (atomically; never redone while it is there)."""
    from stad.models.export import SingleClipActionModel

    cache_dir = Path(cache_dir)
    key = export_key(stem, digest or model_digest(model), clip_shape)
    onnx_path = cache_dir / f"{key}.onnx"
    if not onnx_path.is_file():
        LOGGER.info("exporting the action model to ONNX (once; cached as %s)", onnx_path)
        export_onnx(SingleClipActionModel(model).eval(), onnx_path, clip_shape)
    if runtime == "onnx":
        return onnx_path
    xml_path = cache_dir / f"{key}.xml"
    if not xml_path.is_file():
        LOGGER.info("converting the action model to OpenVINO IR (once; cached as %s)", xml_path)
        export_openvino(onnx_path, xml_path)
    return xml_path


def load_network(runtime: str, model: nn.Module, clip_shape: Sequence[int], cache_dir: str | Path,
                 threads: int, stem: str = "action", digest: str | None = None) -> Callable:
    check_runtime(runtime)
    if runtime == "torch":
        return TorchActionNetwork(model)
    path = exported_path(runtime, model, clip_shape, cache_dir, stem, digest)
    return OnnxActionNetwork(path, threads) if runtime == "onnx" else OpenVinoActionNetwork(path, threads)


def measure_runtimes(networks: dict[str, Callable], clip: np.ndarray, boxes: np.ndarray, rounds: int = AUTO_ROUNDS,
                     blocks: int = AUTO_BLOCKS) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per call of each network on (clip, boxes), and each one's max |logit difference|
    from the ``"torch"`` network's.

    Each network runs ``rounds`` calls in a row (a block), ``blocks`` blocks per network in alternating
    order (a, b, c, c, b, a, ...), after one warm-up (and compile) call each: calls are not interleaved
    one by one because a runtime's idle worker threads spin for a while after its call and would be
    charged to the next runtime (OpenVINO's after it runs made torch's two OpenMP threads 10-60x slower
    on a 2-core host).
    """
    outputs = {name: net(clip, boxes) for name, net in networks.items()}
    reference = outputs.get("torch")
    diffs = {name: float(np.abs(out - reference).max()) if reference is not None and out.size else 0.0
             for name, out in outputs.items()}
    times: dict[str, list[float]] = {name: [] for name in networks}
    order = list(networks)
    for block in range(blocks):
        for name in (order if block % 2 == 0 else order[::-1]):
            net = networks[name]
            net(clip, boxes)  # the first call after another runtime's absorbs its threads' spinning
            for _ in range(rounds):
                start = time.perf_counter()
                net(clip, boxes)
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}, diffs


# --------------------------------------------------------------------------- the model the engine calls

class RuntimeActionModel(nn.Module):
    """An action model run by ``runtime`` ("torch", "onnx", "openvino" or "auto"), called like the
    `ActionDetector` it wraps: ``(clips [B,3,T,H,W], boxes [N_i,4] per clip, sizes=None) -> logits [sum N_i, K]``.

    Exports happen on first use per clip shape, into ``cache_dir`` (`default_cache_dir`), named
    ``<stem>-<model digest>-<clip shape>-torch<version>``. ``threads``: runtime threads (default
    torch's). ``auto`` resolves at the first clip shape (module docstring); ``self.chosen`` says
    what runs and ``self.timings`` what auto measured.
    """

    def __init__(self, model: nn.Module, runtime: str = "auto", *, cache_dir: str | Path | None = None,
                 stem: str = "action", threads: int | None = None) -> None:
        super().__init__()
        if runtime not in CHOICES:
            raise ActionRuntimeError(f"unknown action-model runtime {runtime!r}; choose one of {', '.join(CHOICES)}")
        if runtime != "auto":
            check_runtime(runtime)
        self.model = model.eval()
        self.runtime = runtime
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.stem = stem
        self.threads = int(threads or torch.get_num_threads())
        self.chosen: str | None = None if runtime == "auto" else runtime
        self.timings: dict[str, float] = {}
        self._digest: str | None = None
        self._networks: dict[tuple[str, tuple[int, ...]], Callable] = {}

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def digest(self) -> str:
        if self._digest is None:
            self._digest = model_digest(self.model)
        return self._digest

    def train(self, mode: bool = True) -> "RuntimeActionModel":
        if mode:
            raise RuntimeError("RuntimeActionModel is for inference only")
        return super().train(False)

    def _network(self, runtime: str, shape: tuple[int, ...]) -> Callable:
        key = (runtime, shape)
        if key not in self._networks:
            self._networks[key] = load_network(runtime, self.model, shape, self.cache_dir, self.threads,
                                               self.stem, self.digest if runtime != "torch" else None)
        return self._networks[key]

    def _choice_path(self, shape: tuple[int, ...]) -> Path:
        return self.cache_dir / f"{export_key(self.stem, self.digest, shape)}.runtime.json"

    def resolve(self, clip: torch.Tensor) -> str:
        """The runtime to run clips of this shape with (auto: cached choice, else measured now)."""
        if self.chosen is not None:
            return self.chosen
        shape = tuple(int(s) for s in clip.shape)
        if clip.device.type != "cpu":
            self.chosen = "torch"
            LOGGER.info("action runtime auto: torch (the model runs on %s)", clip.device)
            return self.chosen
        host = host_key(self.threads)
        path = self._choice_path(shape)
        try:
            cached = json.loads(path.read_text()) if path.is_file() else None
        except (OSError, ValueError):
            cached = None
        if cached and cached.get("host") == host and cached.get("choice") in installed_runtimes():
            self.chosen, self.timings = cached["choice"], cached.get("seconds", {})
            LOGGER.info("action runtime auto: %s (measured earlier on this host: %s)", self.chosen, path)
            return self.chosen
        self.chosen = self._measure(clip, shape, host, path)
        return self.chosen

    def _measure(self, clip: torch.Tensor, shape: tuple[int, ...], host: str, path: Path) -> str:
        networks: dict[str, Callable] = {"torch": self._network("torch", shape)}
        for runtime in installed_runtimes():
            if runtime == "torch":
                continue
            try:
                networks[runtime] = self._network(runtime, shape)
            except (ExportError, OSError, RuntimeError) as error:
                LOGGER.warning("action runtime auto: %s not usable (%s)", runtime, error)
        if len(networks) == 1:
            LOGGER.info("action runtime auto: torch (no exported runtime usable)")
            return "torch"
        try:
            seconds, diffs = measure_runtimes(networks, clip.float().contiguous().numpy(), example_boxes().numpy())
        except Exception as error:  # noqa: BLE001 - measuring is best effort; torch always works
            LOGGER.warning("action runtime auto: measuring failed (%s: %s): torch", type(error).__name__, error)
            return "torch"
        eligible = {name: s for name, s in seconds.items() if diffs[name] <= AUTO_TOLERANCE}
        choice = min(eligible, key=eligible.get)
        self.timings = seconds
        for runtime in networks:  # the others' sessions (and thread pools) go
            if runtime != choice:
                self._networks.pop((runtime, shape), None)
        LOGGER.info("action runtime auto: %s (median per clip with 3 boxes: %s; max |logit - torch|: %s)", choice,
                    ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in seconds.items()),
                    ", ".join(f"{k} {v:.1e}" for k, v in diffs.items() if k != "torch"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            scratch = path.with_name(f".{path.name}.{os.getpid()}")
            scratch.write_text(json.dumps({"choice": choice, "host": host, "seconds": seconds, "max_abs_diff": diffs,
                                           "clip_shape": list(shape), "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
                                           "tolerance": AUTO_TOLERANCE}, indent=2) + "\n")
            os.replace(scratch, path)
        except OSError as error:
            LOGGER.warning("action runtime auto: could not cache the choice in %s (%s)", path, error)
        return choice

    def forward(self, clips: torch.Tensor, boxes: Sequence[torch.Tensor],
                sizes: Sequence[Sequence[float]] | None = None) -> torch.Tensor:
        if len(boxes) != clips.shape[0]:
            raise ValueError(f"{len(boxes)} box lists for a batch of {clips.shape[0]} clips")
        if self.resolve(clips[:1]) == "torch":  # the eager model on the whole batch, as without a wrapper
            return self.model(clips, list(boxes)) if sizes is None else self.model(clips, list(boxes), sizes=sizes)
        outputs = []
        for index, clip_boxes in enumerate(boxes):
            clip = clips[index:index + 1]
            if sizes is not None:  # a padded batch: the clip's own pixels (ACAR-Net's ceil rule)
                frac_h, frac_w = sizes[index]
                clip = clip[..., :round(clip.shape[-2] * frac_h), :round(clip.shape[-1] * frac_w)]
            clip_boxes = torch.as_tensor(clip_boxes).reshape(-1, 4)
            network = self._network(self.chosen, tuple(int(s) for s in clip.shape))
            logits = network(clip.detach().float().cpu().contiguous().numpy(),
                             clip_boxes.detach().float().cpu().contiguous().numpy())
            outputs.append(torch.from_numpy(np.asarray(logits, np.float32)).to(clips.device))
        if not outputs:
            return clips.new_zeros(0, self.num_classes)
        return torch.cat(outputs)


def wrap_model(model: nn.Module, runtime: str, device: str | torch.device = "cpu", *,
               cache_dir: str | Path | None = None, stem: str = "action", threads: int | None = None) -> nn.Module:
    """``model`` itself for "torch" (the eager path, unchanged) and for "auto" off a CPU; else a
    `RuntimeActionModel`. An exported runtime asked for on another device is an error."""
    if runtime not in CHOICES:
        raise ActionRuntimeError(f"unknown action-model runtime {runtime!r}; choose one of {', '.join(CHOICES)}")
    if runtime == "torch":
        return model
    if torch.device(device).type != "cpu":
        if runtime == "auto":
            return model
        raise ActionRuntimeError(f"action-model runtime {runtime!r} runs on the CPU; the device is {device}")
    return RuntimeActionModel(model, runtime, cache_dir=cache_dir, stem=stem, threads=threads)
