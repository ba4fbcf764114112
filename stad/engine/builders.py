"""Config -> objects: the model, the loss, datasets and transforms, weights to start from.

This is the only engine module that knows the names used in configs (ACAR-Net's ``slowfast50``,
``Scale``, ``TemporalCenterCrop`` ...) and how they map onto stad.models and stad.data.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from stad.config import AugmentationConfig, Config, ConfigError, PathSpec, TrainConfig, ValConfig
from stad.engine import checkpoint as ckpt
from stad.structures import LabelMap

# ACAR-Net / CW adaptation backbone names -> our registry names
ARCH_ALIASES = {"slowfast50": "slowfast_r50", "slowfast101": "slowfast_r101"}
DUAL_STREAM = "vitsf"
DEFAULT_SUB_ARCH = "vit_giant"


def _import(path: str) -> Callable:
    """``'package.module:attr'`` -> the attribute (custom factories named in a config)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


# --------------------------------------------------------------------------- model


def model_kwargs(config: Config) -> dict:
    """Keyword arguments for ``stad.models.build_action_model`` from the ACAR-style model section."""
    model = config.model
    backbone = ARCH_ALIASES.get(model.backbone.arch, model.backbone.arch)
    kwargs: dict[str, Any] = {
        "backbone_kwargs": dict(model.backbone.kwargs),
        "head_kwargs": {k: v for k, v in model.head.kwargs.items() if k != "num_classes"},
        "neck_kwargs": {k: v for k, v in model.neck.kwargs.items() if k != "num_classes"},
        "freeze_bn": model.freeze_bn,
    }
    if model.backbone.subbackbone is not None or model.backbone.sub_arch is not None:
        # CW "VITSF": the configured backbone is the SlowFast stream, the sub-backbone the ViT stream
        kwargs["slowfast"] = backbone
        kwargs["vit"] = model.backbone.sub_arch or DEFAULT_SUB_ARCH
        kwargs["vit_kwargs"] = dict(model.backbone.sub_kwargs)
        backbone = DUAL_STREAM
    kwargs["backbone"] = backbone
    kwargs["head"] = model.head.type
    return kwargs


def build_model(config: Config) -> nn.Module:
    """The action model: ``forward(clips [B,3,T,H,W], boxes list[[N_i,4]]) -> logits [sum N_i, K]``."""
    kwargs = model_kwargs(config)
    if ":" in kwargs["backbone"]:
        model = _import(kwargs.pop("backbone"))(num_classes=config.num_classes, **kwargs)
    else:
        from stad.models import build_action_model

        model = build_action_model(num_classes=config.num_classes, **kwargs)
    if not config.model.backbone.learnable:
        backbone = getattr(model, "backbone", None)
        for param in (backbone.parameters() if backbone is not None else ()):
            param.requires_grad_(False)
    return model


def _checkpoint_filters() -> tuple[Callable, ...]:
    """The model package's official-layout filters (ACAR SlowFast, VideoMAE...), if it provides them."""
    try:
        from stad.models import checkpoints
    except ImportError:
        return ()
    return tuple(getattr(checkpoints, "ENGINE_FILTERS", ()))


def _read_weights(spec: PathSpec) -> dict:
    state = ckpt.read_checkpoint(spec.path)
    if spec.state_dict_key:
        state = state[spec.state_dict_key]
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    elif isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    state = ckpt.strip_prefix(state)
    if spec.delete_prefix:
        state = {k: v for k, v in state.items() if not k.startswith(spec.delete_prefix)}
    if spec.replace_prefix is not None:
        state = {(spec.replace_to + k[len(spec.replace_prefix):] if k.startswith(spec.replace_prefix) else k): v
                 for k, v in state.items()}
    return state


def load_weights(model: nn.Module, state_dict: dict, strict: bool = True) -> list[str]:
    """Load a full-model state dict, trying the model's official-layout filters on mismatch."""
    return ckpt.load_model_weights(model, state_dict, strict=strict, filters=_checkpoint_filters())


def _load_part(module: nn.Module | None, spec: PathSpec, what: str, logger: logging.Logger) -> None:
    if module is None:
        raise ConfigError(f"{what}: the model has no such part to load {spec.path} into")
    missing = ckpt.load_model_weights(module, _read_weights(spec), strict=False, filters=_checkpoint_filters())
    logger.info("loaded %s from %s (%d keys left at init)", what, spec.path, len(missing))


def load_initial_weights(model: nn.Module, config: Config, logger: logging.Logger) -> None:
    """Pretrained weights named in the config (backbone, ViT sub-backbone, whole model)."""
    backbone = config.model.backbone
    if backbone.pretrain is not None:
        part = getattr(model, "slowfast", None) or getattr(model, "backbone", None)
        _load_part(part, backbone.pretrain, "model.backbone.pretrain", logger)
    if backbone.subbackbone is not None:
        _load_part(getattr(model, "vit", None), backbone.subbackbone, "model.backbone.subbackbone", logger)
    if config.pretrain is not None:
        missing = load_weights(model, _read_weights(config.pretrain), strict=False)
        logger.info("loaded pretrain %s (%d keys left at init)", config.pretrain.path, len(missing))


# --------------------------------------------------------------------------- loss


def build_criterion(config: Config) -> tuple[Callable, Callable]:
    """(criterion(logits, targets) -> mean loss, activation(logits) -> scores) from ``loss``."""
    from stad.models import losses

    factory = getattr(losses, config.loss.type, None)
    if factory is None:
        raise ConfigError(f"loss.type: unknown loss {config.loss.type!r}")
    return factory(**config.loss.kwargs)


# --------------------------------------------------------------------------- data


def temporal_sampling(aug: AugmentationConfig) -> tuple[int, int]:
    """(clip_len, frame_stride) from ACAR's ``TemporalCenterCrop(size, step)``: size//step frames."""
    spec = aug.temporal
    if spec.type != "TemporalCenterCrop":
        raise ConfigError(f"augmentation.temporal.type: only TemporalCenterCrop is supported, got {spec.type!r}")
    size, step = int(spec.kwargs.get("size", 64)), int(spec.kwargs.get("step", 2))
    return max(1, size // step), step


def build_transform(aug: AugmentationConfig, train: bool) -> Any:
    """The data layer's transform pipeline from ACAR-style spatial steps."""
    from stad.data import transforms

    return transforms.from_acar_spec([(s.type, s.kwargs) for s in aug.spatial], train=train)


def build_dataset(config: Config, split: TrainConfig | ValConfig, train: bool) -> Any:
    """A ``ClipDataset`` over ``split.annotation_path`` with frames under ``split.root_path``."""
    from stad.data.dataset import ClipDataset

    clip_len, stride = temporal_sampling(split.augmentation)
    return ClipDataset(split.annotation_path, frames_root=split.root_path, video_root=split.video_root,
                       clip_len=clip_len, frame_stride=stride, transform=build_transform(split.augmentation, train),
                       num_classes=config.num_classes)


def collate(samples: list) -> Any:
    from stad.data.collate import collate_clips

    return collate_clips(samples)


def labelmap(dataset: Any, config: Config) -> LabelMap:
    """Output index -> dataset class id: the annotation's table, else the evaluation label map."""
    table = getattr(dataset, "labelmap", None)
    if isinstance(table, LabelMap):
        return table
    if config.val is not None and config.val.eval_mAP is not None:
        from stad.data.formats.labelmap import read_labelmap

        return read_labelmap(config.val.eval_mAP.labelmap)
    return LabelMap(tuple(range(1, config.num_classes + 1)), tuple(str(i) for i in range(1, config.num_classes + 1)))


def preflight(config: Config, logger: logging.Logger) -> None:
    """The data layer's validator on every split this run reads (fails fast on mAP-0 mistakes)."""
    try:
        from stad.data.validate import validate_config
    except ImportError:
        logger.warning("stad.data.validate is not available: preflight skipped")
        return
    validate_config(config, logger=logger)
