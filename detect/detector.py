"""YOLO person detector: the only module of the project that imports ultralytics.

Ultralytics is a black box behind `PersonDetector`. Importing this module is cheap; ultralytics is
imported (and made offline-safe, see `configure_offline`) the first time a detector is built.

Two inference paths give the same boxes:
- `detect_reference(image)`: one ``model(image)`` call per image, as the reference system did.
- `letterbox` (thread-safe, run by the decoding thread) + `detect_letterboxed(batch)`: one forward
  pass per batch on pre-letterboxed uint8 tensors, with the predictor set up once. The forward
  pass runs on the fused torch model or, with ``runtime="onnx"|"openvino"``, on an ONNX export of
  it (`detect.runtimes`); NMS and box scaling are the same code either way.
"""
from __future__ import annotations

import logging
import os
from copy import copy, deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from stad.structures import Boxes

LOGGER = logging.getLogger(__name__)

# Read by ultralytics at import time: no DNS "online" probe, no pip auto-install.
OFFLINE_ENV = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", "MPLBACKEND": "Agg"}


class OfflineError(RuntimeError):
    """Raised instead of any download ultralytics would attempt."""


def _refuse_download(*args: Any, **kwargs: Any) -> None:
    target = kwargs.get("url") or (args[0] if args else "?")
    raise OfflineError(f"download of {target!r} refused: the pipeline runs offline "
                       "(put the file on disk and pass its path)")


def _local_font(font: str = "Arial.ttf") -> Path:
    """Stand-in for ultralytics' check_font: a font shipped with matplotlib, never a download."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def _amp_without_download(model: Any) -> bool:
    """Stand-in for ultralytics' check_amp, which downloads yolo26n.pt to compare FP32 and AMP outputs."""
    import torch

    device = next(model.parameters()).device
    return device.type == "cuda" and torch.cuda.is_available()


_CONFIGURED = False


def configure_offline() -> Any:
    """Import ultralytics with every network path switched off; return the module. Idempotent.

    - env: YOLO_OFFLINE=1 (no DNS probe: ONLINE=False disables update checks, telemetry, hub sync),
      YOLO_AUTOINSTALL=0 (check_requirements never pip-installs);
    - font lookup (`check_font`, called by dataset checks and plotting) returns matplotlib's DejaVuSans;
    - AMP check (downloads yolo26n.pt on CUDA) is replaced by "AMP on CUDA, off on CPU";
    - `safe_download` / `get_github_assets` raise `OfflineError`; `attempt_download_asset` only
      resolves files that exist locally.
    Settings on disk are not modified.
    """
    global _CONFIGURED
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    import ultralytics
    if _CONFIGURED:
        return ultralytics
    import ultralytics.data.utils as data_utils
    import ultralytics.engine.trainer as trainer
    import ultralytics.utils as uutils
    import ultralytics.utils.checks as checks
    import ultralytics.utils.downloads as downloads
    import ultralytics.utils.events as events
    import ultralytics.utils.plotting as plotting

    uutils.ONLINE = checks.ONLINE = events.ONLINE = False
    checks.AUTOINSTALL = False
    events.events.enabled = False
    for module in (checks, data_utils, plotting):
        module.check_font = _local_font
    trainer.check_amp = _amp_without_download
    original_attempt = downloads.attempt_download_asset

    def attempt_local_asset(file: str | Path, *args: Any, **kwargs: Any) -> str:
        path = Path(str(file).strip())
        local = Path(uutils.SETTINGS["weights_dir"]) / path.name
        if path.exists() or local.exists():
            return original_attempt(file, *args, **kwargs)
        raise OfflineError(f"{file}: file not found and downloads are disabled")

    downloads.attempt_download_asset = attempt_local_asset
    for module in (downloads, data_utils):
        module.safe_download = _refuse_download
    downloads.get_github_assets = _refuse_download
    _CONFIGURED = True
    return ultralytics


def resolve_person_class(names: Mapping[int, str] | Sequence[str], requested: int | str | None = None) -> int:
    """Index of the person class in a detector's class ``names``.

    COCO weights: 'person' (index 0). A single-class fine-tuned detector: its only class, whatever
    its name. ``requested`` (an index or a name) overrides the lookup.
    """
    table = dict(enumerate(names)) if not isinstance(names, Mapping) else {int(k): str(v) for k, v in names.items()}
    if not table:
        raise ValueError("the detector has no class names")
    if requested is not None:
        if isinstance(requested, int) or str(requested).isdigit():
            index = int(requested)
            if index not in table:
                raise ValueError(f"person class {index} is not one of the detector's classes {table}")
            return index
        matches = [i for i, name in table.items() if name.lower() == str(requested).lower()]
        if not matches:
            raise ValueError(f"class name {requested!r} is not one of the detector's classes {table}")
        return matches[0]
    matches = [i for i, name in table.items() if name.strip().lower() in ("person", "people", "human", "pedestrian")]
    if matches:
        return matches[0]
    if len(table) == 1:
        return next(iter(table))
    raise ValueError(f"cannot tell which class is 'person' among {table}; pass person_class=<index or name>")


# --- inference defaults that travel with the weights -------------------------------------------
# A detector's good settings depend on how it was trained (the toy detector: trained at 320 px, scores
# modest, so person AP needs a low threshold). They come, in this order, from the command line, a
# sidecar YAML next to the weights (``<weights stem>.yaml``), the ``train_args`` ultralytics stores in
# the .pt (imgsz only), and the tool's built-in defaults.

SIDECAR_KEYS = {"imgsz": int, "conf": float, "iou": float, "max_det": int, "demo_conf": float}
TRAIN_ARGS_KEYS = ("imgsz",)  # train_args' conf/iou are validation settings, not inference defaults


def sidecar_path(weights: str | Path) -> Path:
    """``checkpoints/x.pt`` -> ``checkpoints/x.yaml``."""
    return Path(weights).with_suffix(".yaml")


def read_sidecar(weights: str | Path) -> dict[str, Any]:
    """The inference defaults in ``<weights stem>.yaml`` ({} without one); unknown keys or bad values are errors."""
    import yaml

    path = sidecar_path(weights)
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping of detector defaults ({', '.join(SIDECAR_KEYS)})")
    out = {}
    for key, value in data.items():
        if key not in SIDECAR_KEYS:
            raise ValueError(f"{path}: unknown key {key!r}; known: {', '.join(SIDECAR_KEYS)}")
        try:
            out[key] = SIDECAR_KEYS[key](value)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: {key}: expected {SIDECAR_KEYS[key].__name__}, got {value!r}") from None
    return out


def read_train_args(weights: str | Path) -> dict[str, Any]:
    """The training arguments an ultralytics checkpoint keeps (``ckpt['train_args']``); {} if it has none."""
    configure_offline()  # unpickling the model imports ultralytics
    import torch

    try:
        ckpt = torch.load(str(weights), map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - not a torch file: PersonDetector says so when it loads it
        LOGGER.debug("%s: no readable train_args (%s)", weights, error)
        return {}
    args = ckpt.get("train_args") if isinstance(ckpt, Mapping) else None
    return dict(args) if isinstance(args, Mapping) else {}


@dataclass(frozen=True)
class DetectorSettings:
    """Resolved inference settings and where each came from ("command line", the sidecar file, ...)."""

    values: dict[str, Any]
    sources: dict[str, str]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def describe(self) -> str:
        return ", ".join(f"{k} {v} ({self.sources[k]})" for k, v in self.values.items())


def detector_settings(weights: str | Path, explicit: Mapping[str, Any], defaults: Mapping[str, Any],
                      sidecar_keys: Mapping[str, str] | None = None) -> DetectorSettings:
    """Settings for ``defaults``' keys: ``explicit`` (not None) > sidecar > ``train_args`` > ``defaults``.

    ``sidecar_keys`` maps a setting to another sidecar key (the demo reads its threshold from
    ``demo_conf``: boxes it draws and classifies, not proposals for an evaluation).
    """
    weights = Path(weights)
    sidecar = read_sidecar(weights)
    train_args: dict[str, Any] | None = None
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, default in defaults.items():
        side_key = (sidecar_keys or {}).get(key, key)
        if explicit.get(key) is not None:
            values[key], sources[key] = explicit[key], "command line"
        elif side_key in sidecar:
            values[key], sources[key] = sidecar[side_key], f"{sidecar_path(weights).name}: {side_key}"
        else:
            if key in TRAIN_ARGS_KEYS and train_args is None:
                train_args = read_train_args(weights)
            trained = (train_args or {}).get(key) if key in TRAIN_ARGS_KEYS else None
            if trained is not None:
                trained = max(trained) if isinstance(trained, (list, tuple)) else trained  # imgsz [h, w]
                values[key], sources[key] = type(default)(trained), f"train_args of {weights.name}"
            else:
                values[key], sources[key] = default, "default"
    return DetectorSettings(values, sources)


def torch_device(device: str | int) -> str:
    """Torch device string of a CLI device: "0" -> "cuda:0", "" -> "cpu"."""
    device = str(device).strip().lower()
    if device.isdigit():
        return f"cuda:{device}"
    return device or "cpu"


class PersonDetector:
    """A YOLO detector restricted to its person class.

    Args:
        weights: ultralytics ``.pt`` file (COCO ``yolov8*.pt`` or a fine-tuned person detector).
        device: "cpu", "0"/"cuda:0", ...
        imgsz: inference size (long side), rounded up to a multiple of the model stride.
        conf: score threshold; iou: NMS IoU threshold; max_det: boxes kept per image.
        person_class: class index or name overriding the lookup by name (see `resolve_person_class`).
        runtime: "torch" (default), or "onnx" / "openvino" to run the network on ONNX Runtime or
            OpenVINO (CPU only; exported once to ``export_cache``, see `detect.runtimes`), or
            "auto" (openvino or onnx on a CPU when installed, else torch; `detect.runtimes.resolve_runtime`).
        runtime_threads: threads of the onnx/openvino network (torch threads are set by the caller).
        export_cache: folder of cached exports (default: `detect.runtimes.default_cache_dir`).
    """

    def __init__(self, weights: str | Path, *, device: str | int = "cpu", imgsz: int = 640, conf: float = 0.1,
                 iou: float = 0.7, max_det: int = 300, person_class: int | str | None = None,
                 runtime: str = "torch", runtime_threads: int = 1, export_cache: str | Path | None = None) -> None:
        from detect.runtimes import check_runtime, load_network, resolve_runtime

        if runtime != "auto":
            check_runtime(runtime)  # an unknown name or a missing package fails before any loading
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"detector weights not found: {weights} (see checkpoints/README.md)")
        if weights.suffix != ".pt":
            raise ValueError(f"{weights}: expected an ultralytics .pt checkpoint")
        if not 0.0 <= conf <= 1.0:
            raise ValueError(f"conf must be in [0, 1], got {conf}")
        configure_offline()
        import torch
        from ultralytics import YOLO
        from ultralytics.nn.autobackend import AutoBackend
        from ultralytics.utils.checks import check_imgsz

        self.weights = weights
        self.device = torch_device(device)
        if runtime not in ("torch", "auto") and self.device != "cpu":
            raise ValueError(f"runtime {runtime!r} runs on the CPU only; use runtime 'torch' on {self.device}")
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        self.yolo = YOLO(str(weights), task="detect")
        if self.yolo.task != "detect":
            raise ValueError(f"{weights}: a '{self.yolo.task}' model, expected a detection model")
        self.names: dict[int, str] = dict(self.yolo.names)
        self.person_index = resolve_person_class(self.names, person_class)
        self.stride = int(max(self.yolo.model.stride))
        self.imgsz = int(check_imgsz(imgsz, stride=self.stride, max_dim=1))
        # Same backend the ultralytics predictor builds (fused Conv+BN), built once.
        self.backend = AutoBackend(model=deepcopy(self.yolo.model), device=self.device, fuse=True, verbose=False)
        self.backend.eval()
        # oneDNN convolutions run a few % faster on NHWC tensors, and the letterboxed frames are
        # NHWC already (no transpose copy). Accelerators keep the default layout: one simple path.
        self.channels_last = self.device == "cpu"
        if self.channels_last:
            self.backend.to(memory_format=torch.channels_last)
        self.end2end = bool(getattr(self.backend, "end2end", False))
        self.degenerate_dropped = 0  # boxes with no area once clipped to the image (untrained models make them)
        self.runtime = resolve_runtime(runtime, self.device, self.end2end)
        self.network = None  # the onnx/openvino network; None: the torch backend runs
        if self.runtime != "torch":
            if self.end2end:
                raise ValueError(f"{weights}: an end-to-end (NMS-free) model; runtime {self.runtime!r} supports "
                                 "raw-prediction models (YOLOv8/11 style) only, use runtime 'torch'")
            self.network = load_network(self.runtime, weights, runtime_threads, export_cache, self.imgsz)

    def __repr__(self) -> str:
        return (f"PersonDetector({self.weights.name}, person_class={self.person_index} "
                f"'{self.names[self.person_index]}', imgsz={self.imgsz}, conf={self.conf}, device={self.device}, "
                f"runtime={self.runtime})")

    def replica(self, threads: int | None = None) -> "PersonDetector":
        """An independent copy for another inference thread: same settings, its own model copy.

        The copy shares nothing mutable with ``self`` (ultralytics' Detect head caches anchors per
        input shape; `degenerate_dropped` counts per replica). Costs one copy of the weights.
        ``threads``: the copy's onnx/openvino network threads (default: as ``self``); the torch
        runtime's threads are set by the thread that runs the copy.
        """
        twin = copy(self)
        twin.degenerate_dropped = 0
        if self.network is not None:
            twin.network = self.network.replica(threads or self.network.threads)
        else:
            twin.backend = deepcopy(self.backend)
        return twin

    # --- fast path -------------------------------------------------------------------------
    def letterbox(self, image_bgr: np.ndarray) -> np.ndarray:
        """Letterbox one BGR uint8 image ``[H, W, 3]`` to the model's input ``[h, w, 3]`` RGB uint8.

        Thread-safe (no shared state): meant to run in the decoding thread. The minimum-rectangle
        padding matches what ``model(image)`` does for a single image, so boxes are identical.
        """
        from ultralytics.data.augment import LetterBox

        if image_bgr is None or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"expected a BGR image [H, W, 3], got {None if image_bgr is None else image_bgr.shape}")
        boxed = LetterBox(self.imgsz, auto=True, stride=self.stride)(image=image_bgr)
        return np.ascontiguousarray(boxed[..., ::-1])

    def detect_letterboxed(self, batch: Sequence[np.ndarray], orig_shapes: Sequence[tuple[int, int]]) -> list[Boxes]:
        """Person boxes for a batch of letterboxed images (all of one shape ``[h, w, 3]`` RGB uint8).

        ``orig_shapes``: ``(H, W)`` of each original image. Returns per image `Boxes` in normalised
        xyxy clipped to [0, 1], scores sorted in descending order.
        """
        import torch
        from ultralytics.utils import nms, ops

        if len(batch) != len(orig_shapes):
            raise ValueError(f"{len(batch)} images but {len(orig_shapes)} shapes")
        if not batch:
            return []
        with torch.inference_mode():
            preds = self._forward(np.stack(batch))
            input_hw = batch[0].shape[:2]
            kept = nms.non_max_suppression(preds, self.conf, self.iou, classes=[self.person_index],
                                           max_det=self.max_det, end2end=self.end2end)
            out = []
            for det, (height, width) in zip(kept, orig_shapes):
                xyxy = ops.scale_boxes(input_hw, det[:, :4].clone(), (height, width))
                out.append(self._to_boxes(xyxy, det[:, 4], width, height))
        return out

    def _forward(self, stacked: np.ndarray) -> Any:
        """Raw predictions (torch tensor ``[B, 4 + classes, anchors]``) of letterboxed ``[B, h, w, 3]`` uint8."""
        import torch

        if self.network is not None:
            images = np.ascontiguousarray(stacked.transpose(0, 3, 1, 2), dtype=np.float32)  # [B, 3, h, w]
            np.divide(images, 255, out=images)  # the same rounding as the torch path's div_(255)
            return torch.from_numpy(self.network(images))
        tensor = torch.from_numpy(stacked).to(self.device).permute(0, 3, 1, 2)  # [B, 3, h, w] NHWC memory
        if not self.channels_last:
            tensor = tensor.contiguous()
        tensor = tensor.half() if self.backend.fp16 else tensor.float()  # keeps the memory format
        return self.backend(tensor.div_(255))

    def detect(self, images_bgr: Sequence[np.ndarray]) -> list[Boxes]:
        """Convenience: letterbox and detect a list of BGR images (grouped by letterboxed shape)."""
        boxed = [self.letterbox(image) for image in images_bgr]
        out: list[Boxes | None] = [None] * len(boxed)
        for shape in {b.shape for b in boxed}:
            idx = [i for i, b in enumerate(boxed) if b.shape == shape]
            for i, boxes in zip(idx, self.detect_letterboxed([boxed[i] for i in idx],
                                                             [images_bgr[i].shape[:2] for i in idx])):
                out[i] = boxes
        return out  # type: ignore[return-value]

    # --- reference path --------------------------------------------------------------------
    def detect_reference(self, image_bgr: np.ndarray) -> Boxes:
        """One ultralytics ``model(image)`` call (the reference system's way); used as an oracle.

        The predictor's set-up (first call) runs ultralytics' ``select_device``, which sets torch's
        thread count to ``min(8, cpu_count - 1)`` (1 on a 2-core machine). The caller's count is
        restored afterwards, so later calls, and everything else in the process, keep it.
        """
        import torch

        threads = torch.get_num_threads()
        try:
            result = self.yolo(image_bgr, conf=self.conf, iou=self.iou, imgsz=self.imgsz, max_det=self.max_det,
                               classes=[self.person_index], device=self.device, verbose=False)[0]
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        height, width = result.orig_shape
        return self._to_boxes(result.boxes.xyxy, result.boxes.conf, width, height)

    def _to_boxes(self, xyxy_pixels: Any, scores: Any, width: int, height: int) -> Boxes:
        """Normalised, clipped, score-sorted boxes; drops (and counts) boxes with no area after clipping."""
        xyxy = xyxy_pixels.float().cpu().numpy().reshape(-1, 4) / np.array([width, height, width, height], np.float32)
        xyxy = xyxy.clip(0.0, 1.0)
        scores = scores.float().cpu().numpy().reshape(-1)
        valid = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        self.degenerate_dropped += int((~valid).sum())
        xyxy, scores = xyxy[valid], scores[valid]
        order = np.argsort(-scores, kind="stable")
        return Boxes(xyxy[order], scores[order])


def build_untrained_detector(path: str | Path, names: Mapping[int, str], cfg: str = "yolov8n.yaml",
                             seed: int = 0) -> Path:
    """Write an ultralytics checkpoint of a randomly initialised detector (tests, smoke runs).

    Default initialisation makes every score identical (activations vanish through the network),
    so weights are re-drawn (He-normal, seeded) and the class logits amplified: scores then vary
    over the image, which makes box ordering and batched-vs-reference comparisons meaningful. The
    box branch is biased towards boxes 4-6 strides wide so boxes have positive area.
    The file is written by ultralytics' own ``Model.save`` so loading it is the real code path.
    """
    configure_offline()
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    yolo = YOLO(cfg, task="detect")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = DetectionModel(dict(yolo.model.yaml), nc=len(names), verbose=False)
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        head = model.model[-1]
        with torch.no_grad():
            person = resolve_person_class(names)
            for branch in head.cv3:  # class-logit convs of the Detect head; person wins the per-box argmax
                branch[-1].weight.mul_(100.0)
                branch[-1].bias.fill_(-4.0)
                branch[-1].bias[person] = -1.0
            for branch in head.cv2:  # box-distribution convs: peak at 2-3 strides per side -> valid boxes
                branch[-1].weight.normal_(0.0, 0.01)
                branch[-1].bias.zero_()
                branch[-1].bias.view(4, head.reg_max)[:, 2:4] = 4.0
    finally:
        torch.random.set_rng_state(generator_state)
    model.names = {int(k): str(v) for k, v in names.items()}
    model.args = {"imgsz": 640, "task": "detect"}
    yolo.model = model
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    yolo.save(str(path))
    return path


def ultralytics_version() -> str:
    return configure_offline().__version__


def export_onnx_with_ultralytics(weights: str | Path, imgsz: int = 640) -> Path:
    """ultralytics' own ONNX export of ``weights`` (offline-configured), written beside ``weights``.

    Dynamic batch, height and width (``imgsz`` only sizes the tracing example), onnxslim-simplified,
    fp32, raw predictions ``[B, 4 + classes, anchors]`` (no NMS in the graph). See `detect.runtimes`.
    """
    configure_offline()
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER as ULTRALYTICS_LOGGER

    level = ULTRALYTICS_LOGGER.level
    ULTRALYTICS_LOGGER.setLevel(logging.WARNING)  # the exporter's banner points at online tools
    try:
        produced = YOLO(str(weights), task="detect").export(format="onnx", dynamic=True, simplify=True, imgsz=imgsz,
                                                            batch=1, device="cpu", half=False, nms=False,
                                                            verbose=False)
    finally:
        ULTRALYTICS_LOGGER.setLevel(level)
    if not produced or not Path(produced).is_file():
        raise RuntimeError(f"ultralytics' ONNX export of {weights} produced no file (see its log above)")
    return Path(produced)


def load_model_yaml(model: str) -> dict:
    """An ultralytics model yaml (e.g. ``yolov8n.yaml``) as a dict, with its ``scale`` key filled in."""
    configure_offline()
    from ultralytics.nn.tasks import guess_model_scale, yaml_model_load

    cfg = dict(yaml_model_load(model))
    cfg["scale"] = cfg.get("scale") or guess_model_scale(model) or "n"
    cfg.pop("yaml_file", None)
    return cfg


def run_training(model: str, **train_args: Any) -> tuple[Path, dict[str, float]]:
    """ultralytics detection training (offline-configured); returns ``(best .pt, final val metrics)``."""
    configure_offline()
    from ultralytics import YOLO

    yolo = YOLO(model, task="detect")
    metrics = yolo.train(**train_args)
    best = Path(yolo.trainer.best if Path(yolo.trainer.best).exists() else yolo.trainer.last)
    return best, {k: float(v) for k, v in getattr(metrics, "results_dict", {}).items()}
