"""One inference path from a video file to typed per-keyframe predictions (detectron2's DefaultPredictor).

    predictor = Predictor.from_weights("runs/demo/acar/checkpoints/last.pth", batch_size=4)
    info = probe_video("clip.mp4")
    plans = predictor.plan(info, every=1)                     # keyframes every second and their clips
    for p in predictor.stream(info, plans, boxes_for):        # ONE decoding pass, keyframes in batches
        p.key, p.boxes, p.scores                              # ("clip", 3), Boxes [N], float32 [N, K]

A `Predictor` holds a model and the `Preprocessing` its weights expect (`stad.models.presets`): the
test-time transform (or several test-time views), clip length / frame stride / frame rate, activation
and label map. The video is decoded once (`stad.data.video.iter_video_frames`); only the frames some
pending keyframe still needs are kept (`stad.engine.streaming`, which live streams use too). Each keyframe becomes a sample through the data layer's
`sample_from_frames` (the code `ClipDataset` builds its samples with), samples are batched with
`collate_clips` (the training / evaluation collate: padded batches pass each clip's size) and scored by
`stad.engine.predictor.score_batch`, the function `main.py` evaluation (`predict_shard`) scores with:
one path from pixels and boxes to scores.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from stad.data.collate import collate_clips
from stad.data.dataset import ClipSample, MultiViewSample, sample_from_frames
from stad.data.video import VideoInfo, iter_video_frames
from stad.engine.predictor import BatchScores, score_batch
from stad.structures import Boxes, LabelMap

LOGGER = logging.getLogger(__name__)
DEFAULT_MODEL_FPS = 30.0  # clip sampling rate when neither the caller nor the preset gives one


class InferenceError(RuntimeError):
    """Weights or a video that cannot be used for inference; the message names the file."""


@dataclass(frozen=True)
class KeyframePlan:
    """One keyframe: its timestamp (s, integer), time in the file (s), frame index and clip frame indices.

    ``frame`` and ``clip`` (int64 ``[T]``) are 0-based decoding-order indices (``VideoFileSource``
    frame ``n`` is index ``n - 1``).
    """

    timestamp: int
    time: float
    frame: int
    clip: np.ndarray

    @property
    def last_frame(self) -> int:
        """The last frame index this keyframe needs (its clip's or its own)."""
        return max(int(self.clip.max()), self.frame)


def plan_keyframes(info: VideoInfo, clip_len: int, stride: int, model_fps: float, every: int = 1,
                   timestamps: Sequence[int] | None = None, video_start: float = 0.0) -> list[KeyframePlan]:
    """Keyframes every ``every`` s (or at ``timestamps``, shifted by ``video_start``) with their clips.

    Clip frame i of a keyframe at time s is the frame nearest to ``s + (i - T//2) * stride / model_fps``
    (the training sampler's ``mid + stride * (i - T//2)`` at the model's frame rate), clamped to the
    video; at ``model_fps`` equal to the video's rate this is `stad.data.video.clip_indices` exactly.
    Keyframes outside the video are skipped (logged).
    """
    fps, last = float(info.fps), info.num_frames - 1
    if timestamps is None:
        timestamps = range(0, int(np.floor(last / fps)) + 1, max(1, int(every)))
    offsets = (np.arange(clip_len) - clip_len // 2) * stride / model_fps
    plans = []
    for t in timestamps:
        time = float(t) - video_start
        frame = int(round(time * fps))
        if not 0 <= frame <= last:
            LOGGER.warning("%s: keyframe %s (%.2f s) is outside the video (%.2f s): skipped", info.path, t, time,
                           info.duration)
            continue
        clip = np.clip(np.round((time + offsets) * fps), 0, last).astype(np.int64)
        plans.append(KeyframePlan(int(t), time, frame, clip))
    return plans


@dataclass(frozen=True)
class KeyframePrediction:
    """The scores of one keyframe's boxes.

    Attributes:
        video: video id; plan: the keyframe (timestamp, time, frame indices).
        boxes: the N scored boxes, normalised xyxy in the source frame (scores, ids as given).
        scores: float32 ``[N, K]`` class scores (the preset's activation), row i for box i.
    """

    video: str
    plan: KeyframePlan
    boxes: Boxes
    scores: np.ndarray

    @property
    def key(self) -> tuple[str, int]:
        return self.video, self.plan.timestamp


def weights_preset_for(state: dict, source: str, config: str | Path | Any | None = None,
                       logger: logging.Logger = LOGGER) -> Any:
    """The `ModelPreset` to run the weights ``state`` with.

    Without ``config``: the weights' own (`builders.weights_preset`: stored, derived from a stored config,
    or inferred from the key layout; the reason is logged). With ``config`` (a path or a loaded `Config`):
    the config's (`builders.preset_from_config`, label map as a run of it writes them), checked against the
    weights' by `builders.check_preprocessing`; what the config leaves unknown comes from the weights: the
    frame rate, and the label map when the config's files are absent and the class counts agree.
    """
    from stad.config import load_config
    from stad.engine import builders

    if config is None:
        preset, reason = builders.weights_preset(state, source)
        logger.info("model preset: %s", reason)
        return preset
    config = load_config(config) if isinstance(config, (str, Path)) else config
    preset = builders.preset_from_config(config)
    stored, reason = builders.weights_preset(state, source, required=False)
    if stored is None:
        logger.warning("%s: preprocessing not checked against the weights (%s)", source, reason)
        return preset
    builders.check_preprocessing(config, stored, reason, logger)
    pre, theirs = preset.preprocessing, stored.preprocessing
    if not pre.label_ids and theirs.label_ids and theirs.num_classes == pre.num_classes:
        pre = replace(pre, label_ids=theirs.label_ids, label_names=theirs.label_names)
    return replace(preset, preprocessing=replace(pre, fps=pre.fps or theirs.fps))


BoxSource = Callable[[KeyframePlan, np.ndarray], Boxes]  # (keyframe, its BGR frame [H, W, 3]) -> person boxes


class Predictor:
    """A model with its preprocessing: decoded frames + boxes -> keyframe batches -> typed predictions.

    Args:
        model: an action detector ``model(clips [B,3,T,H,W], boxes [N_i,4] per clip, sizes=...) -> [sum N_i, K]``.
        preprocessing: `stad.models.presets.Preprocessing` of its weights (transform, clip sampling,
            activation, label map).
        views: test-time views (`stad.data.transforms.Compose` each; several = ACAR-Net's multi-view
            evaluation, logits averaged); default: the preprocessing's one transform.
        device: where the model runs; batch_size: keyframes per forward (B).
        view_threshold: ACAR-Net's ``aug_threshold`` for several views.
        runtime: "torch" (default: the eager model), "onnx", "openvino" (the whole model exported once per
            clip shape, one clip per call) or "auto" (on a CPU the fastest of those measured on the first
            clip, the choice cached; torch when measuring is not possible): `stad.engine.action_runtimes`.
        runtime_cache: folder of the exports and of auto's choice (default: `action_runtimes.default_cache_dir`);
        runtime_stem: their file-name prefix; runtime_threads: threads of ONNX Runtime / OpenVINO (default torch's).
    """

    def __init__(self, model: nn.Module, preprocessing: Any, *, views: Sequence[Any] | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 4, view_threshold: float = 0.0,
                 runtime: str = "torch", runtime_cache: str | Path | None = None, runtime_stem: str = "action",
                 runtime_threads: int | None = None) -> None:
        from stad.engine.action_runtimes import wrap_model
        from stad.engine.builders import transform_from_preprocessing

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.model = wrap_model(model.to(self.device).eval(), runtime, self.device, cache_dir=runtime_cache,
                                stem=runtime_stem, threads=runtime_threads)
        self.preprocessing = preprocessing
        self.views = list(views) if views else [transform_from_preprocessing(preprocessing)]
        self.activation: Callable = preprocessing.activation_fn()
        self.labelmap: LabelMap = preprocessing.labelmap
        self.batch_size, self.view_threshold = int(batch_size), float(view_threshold)

    @property
    def num_classes(self) -> int:
        return int(self.preprocessing.num_classes)

    @property
    def runtime(self) -> str:
        """What scores the clips: "torch", "onnx", "openvino", or "auto" until its first clip decides."""
        return getattr(self.model, "chosen", None) or getattr(self.model, "runtime", None) or "torch"

    @classmethod
    def from_preset(cls, preset: Any, state: dict, **kwargs: Any) -> "Predictor":
        """The preset's model with the weights ``state`` (a checkpoint dict or a state dict; strict load)."""
        from stad.engine.builders import load_weights

        model = preset.build_model()
        load_weights(model, state, strict=True)
        return cls(model, preset.preprocessing, **kwargs)

    @classmethod
    def from_weights(cls, weights: str | Path, config: str | Path | Any | None = None,
                     logger: logging.Logger = LOGGER, **kwargs: Any) -> "Predictor":
        """From a weight file alone (its preset: stored in a checkpoint of ours, or inferred from an
        ACAR-Net / CW reference file's keys), or built from ``config`` and checked against the weights'
        preset (`weights_preset_for`). Raises `InferenceError`, `ConfigError` or `UnknownLayoutError`."""
        from stad.engine.checkpoint import read_checkpoint

        weights = Path(weights)
        if not weights.is_file():
            raise InferenceError(f"{weights}: weights not found (an ACAR-Net model-zoo .pth.tar or a checkpoint of "
                                 "main.py, e.g. runs/<run>/checkpoints/last.pth)")
        try:
            state = read_checkpoint(weights)
        except RuntimeError as error:
            raise InferenceError(str(error)) from None
        preset = weights_preset_for(state, str(weights), config, logger)
        if kwargs.get("runtime", "torch") != "torch":  # exports go beside the weights, named after them
            from stad.engine.action_runtimes import default_cache_dir

            kwargs.setdefault("runtime_cache", default_cache_dir(weights))
            kwargs.setdefault("runtime_stem", weights.stem)
        from stad.engine.action_runtimes import ActionRuntimeError

        try:
            predictor = cls.from_preset(preset, state, **kwargs)
        except ActionRuntimeError as error:
            raise InferenceError(str(error)) from None
        except (RuntimeError, KeyError, ValueError) as error:
            raise InferenceError(f"{weights} does not fit the model of its preset "
                                 f"{preset.name or '(from a config)'}: {error}") from None
        predictor.describe(preset.name or "from the config", logger)
        return predictor

    def describe(self, name: str, logger: logging.Logger = LOGGER) -> None:
        """Log the model's classes and preprocessing."""
        pre, names = self.preprocessing, self.labelmap.names
        logger.info("action model: %s, %d classes (%s ... %s), clips of %d frames %d apart at %s fps, resize %s, "
                    "norm %s mean %s std %s, %s, batches of %d keyframes, runtime %s", name, pre.num_classes, names[0],
                    names[-1], pre.clip_len, pre.frame_stride, pre.fps or "unknown", pre.resize, pre.norm_value,
                    list(pre.mean), list(pre.std), pre.activation, self.batch_size, self.runtime)

    def plan(self, info: VideoInfo, every: int = 1, timestamps: Sequence[int] | None = None,
             video_start: float = 0.0, model_fps: float | None = None) -> list[KeyframePlan]:
        """`plan_keyframes` with this model's clip length and stride, at ``model_fps`` (default: the
        preset's frame rate, else `DEFAULT_MODEL_FPS`)."""
        fps = model_fps or self.preprocessing.fps or DEFAULT_MODEL_FPS
        return plan_keyframes(info, self.preprocessing.clip_len, self.preprocessing.frame_stride, fps, every,
                              timestamps, video_start)

    def sample(self, frames_bgr: Sequence[np.ndarray], key: tuple[str, int],
               boxes: Boxes) -> ClipSample | MultiViewSample:
        """One keyframe's sample from its T decoded BGR frames ``[H, W, 3]`` and N normalised boxes."""
        return sample_from_frames(frames_bgr, key, boxes, self.num_classes, self.views, self.view_threshold)

    def score(self, samples: Sequence[ClipSample | MultiViewSample]) -> BatchScores:
        """One batch: `collate_clips` then `score_batch` (rows ``[sum M_i, K]``, clip by clip)."""
        batch = collate_clips(list(samples)).to(self.device)
        return score_batch(self.model, batch, self.activation)

    def predict_clip(self, frames_bgr: Sequence[np.ndarray], boxes: Boxes, key: tuple[str, int] = ("clip", 0)
                     ) -> np.ndarray:
        """Scores ``[N, K]`` of ``boxes`` in one clip of T BGR frames (batch of one; boxes no view keeps: absent)."""
        if not len(boxes):
            return np.zeros((0, self.num_classes), np.float32)
        return self.score([self.sample(frames_bgr, key, boxes)]).scores

    def stream(self, info: VideoInfo, plans: Sequence[KeyframePlan], boxes_for: BoxSource,
               on_frame: Callable[[int, np.ndarray], None] | None = None) -> Iterator[KeyframePrediction]:
        """Predictions for ``plans`` in plan order, from one decoding pass over ``info.path``.

        ``boxes_for(plan, keyframe_bgr)`` gives each keyframe's persons when its clip is complete;
        ``on_frame(index, frame_bgr)`` sees every decoded frame first (e.g. to draw and encode it). A
        keyframe is scored when ``batch_size`` keyframes are ready (and at the end of the video).
        """
        from stad.engine.streaming import StreamEngine

        engine = StreamEngine(self, info.video_id, boxes_for, float(info.fps), name=str(info.path))
        yield from engine.run(iter_video_frames(info.path), plans, finite=True, on_frame=on_frame)

    def __call__(self, info: VideoInfo, boxes_for: BoxSource, **plan_kwargs: Any) -> list[KeyframePrediction]:
        """All keyframes of the video (``plan_kwargs``: `plan`'s), in time order."""
        return list(self.stream(info, self.plan(info, **plan_kwargs), boxes_for))
