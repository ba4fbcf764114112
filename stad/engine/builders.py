"""Config -> objects: the model, the loss, datasets and transforms, weights to start from.

This is the only engine module that knows the names used in configs (ACAR-Net's ``slowfast50``,
``Scale``, ``TemporalCenterCrop`` ...) and how they map onto stad.models and stad.data.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from torch import nn

from stad.config import AugmentationConfig, Config, ConfigError, PathSpec, TrainConfig, ValConfig
from stad.engine import checkpoint as ckpt
from stad.structures import LabelMap

# ACAR-Net / CW adaptation backbone names -> our registry names
ARCH_ALIASES = {"slowfast50": "slowfast_r50", "slowfast101": "slowfast_r101"}
DUAL_STREAM = "vitsf"
DEFAULT_SUB_ARCH = "vit_giant"


# --------------------------------------------------------------------------- model


def _is_slowfast(name: str) -> bool:
    return name.startswith("slowfast")


def _head_kwargs(config: Config) -> dict:
    """ACAR head kwargs -> ours: ``roi_spatial`` is ``roi_size``; ``width`` is checked after building."""
    renames = {"roi_spatial": "roi_size"}
    return {renames.get(k, k): v for k, v in config.model.head.kwargs.items() if k not in ("num_classes", "width")}


def _jitter_scale(config: Config) -> float:
    if config.model.neck.type != "basic":
        raise ConfigError(f"model.neck.type: only 'basic' (ACAR-Net's RoI neck) exists, got {config.model.neck.type!r}")
    neck = dict(config.model.neck.kwargs)
    if neck.pop("multi_class", True) is not True:
        raise ConfigError("model.neck.kwargs.multi_class: only multi-label (True) is supported")
    jitter = neck.pop("bbox_jitter", None) or {}
    neck.pop("num_classes", None)
    scale = float(neck.pop("jitter_scale", jitter.get("scale", 0.0)))
    if neck:
        raise ConfigError(f"model.neck.kwargs: unknown keys {sorted(neck)} (known: bbox_jitter, jitter_scale, "
                          f"num_classes, multi_class)")
    return scale


def model_kwargs(config: Config) -> dict:
    """Arguments of ``stad.models.build_action_model`` from the ACAR-style ``model`` section."""
    model = config.model
    arch = ARCH_ALIASES.get(model.backbone.arch, model.backbone.arch)
    backbone_kwargs = dict(model.backbone.kwargs)
    if model.freeze_bn and _is_slowfast(arch):
        backbone_kwargs.setdefault("frozen_bn", True)
    kwargs: dict[str, Any] = {"head": model.head.type, "head_kwargs": _head_kwargs(config),
                              "jitter_scale": _jitter_scale(config), **model.kwargs}
    if model.backbone.subbackbone is not None or model.backbone.sub_arch is not None:
        # the CW "VITSF" layout: backbone = the SlowFast stream, subbackbone = the ViT stream
        kwargs.update(backbone=DUAL_STREAM, slowfast=arch, slowfast_kwargs=backbone_kwargs,
                      vit=model.backbone.sub_arch or DEFAULT_SUB_ARCH, vit_kwargs=dict(model.backbone.sub_kwargs))
    else:
        kwargs.update(backbone=arch, backbone_kwargs=backbone_kwargs)
    return kwargs


def build_model(config: Config) -> nn.Module:
    """The action model: ``forward(clips [B,3,T,H,W], boxes list[[N_i,4]]) -> logits [sum N_i, K]``."""
    from stad.models import build_action_model

    model = build_action_model(num_classes=config.num_classes, **model_kwargs(config))
    width = config.model.head.kwargs.get("width")
    in_channels = sum(model.backbone.out_channels)
    if width is not None and int(width) != in_channels:
        raise ConfigError(f"model.head.kwargs.width is {width} but the backbone gives {in_channels} channels")
    if not config.model.backbone.learnable:
        model.backbone.requires_grad_(False)
    if not config.model.backbone.sub_learnable:
        _vit_stream(model).requires_grad_(False)
    return model


def _vit_stream(model: nn.Module) -> nn.Module:
    vit = getattr(ckpt.unwrap(model).backbone, "vit", None)
    if vit is None:
        raise ConfigError("model.backbone.sub_learnable / subbackbone: the model has no ViT stream")
    return vit


def frozen_modules(model: nn.Module, config: Config) -> list[nn.Module]:
    """Modules that stay in eval mode while training: the backbone when ``learnable: False``."""
    if not config.model.backbone.learnable:
        return [ckpt.unwrap(model).backbone]
    return [] if config.model.backbone.sub_learnable else [_vit_stream(model)]


def _read_weights(spec: PathSpec) -> dict:
    """The state dict of ``spec.path`` after ACAR's optional key edits (state_dict_key, prefixes)."""
    state = ckpt.read_checkpoint(spec.path)
    if spec.state_dict_key:
        state = state[spec.state_dict_key]
    if spec.delete_prefix:
        state = {k: v for k, v in state.items() if not k.startswith(spec.delete_prefix)}
    if spec.replace_prefix is not None:
        state = {(spec.replace_to + k[len(spec.replace_prefix):] if k.startswith(spec.replace_prefix) else k): v
                 for k, v in state.items()}
    return state


def filter_cw_vitsf(state_dict: dict) -> dict:
    """The CW reference system's full model -> our dual-stream detector.

    Its ``AVA_backbone`` holds the SlowFast as ``backbone.module`` and the VideoMAEv2 ViT as
    ``backbone.submodule``; the head is ``head.module`` (all under DDP's ``module.``).
    """
    from stad.models.checkpoints import filter_videomae

    sd = ckpt.strip_prefix(state_dict)
    parts = {"backbone.module.": "backbone.slowfast.", "head.module.": "head."}
    out = {parts[p] + k[len(p):]: v for k, v in sd.items() for p in parts if k.startswith(p)}
    vit = {k[len("backbone.submodule."):]: v for k, v in sd.items() if k.startswith("backbone.submodule.")}
    if not vit:
        raise KeyError("not a CW VITSF checkpoint (no backbone.submodule.* keys)")
    out.update({f"backbone.vit.{k}": v for k, v in filter_videomae(vit).items()})
    return out


def load_weights(model: nn.Module, checkpoint: dict, strict: bool = True) -> list[str]:
    """Load a whole-model checkpoint: ours, ACAR-Net's AVA layout or the CW reference's VITSF layout."""
    from stad.models.checkpoints import filter_acar_detector, unwrap_checkpoint

    state = unwrap_checkpoint(checkpoint, ("state_dict", "model"))
    return ckpt.load_model_weights(model, state, strict=strict,
                                   filters=(lambda sd: filter_acar_detector({"state_dict": sd}), filter_cw_vitsf))


def _load_stream(module: nn.Module, state: dict, what: str, path: str, logger: logging.Logger) -> None:
    result = ckpt.unwrap(module).load_state_dict(state, strict=False)
    loaded = len(state) - len(result.unexpected_keys)
    if loaded == 0:
        raise RuntimeError(f"{what}: no key of {path} matches the model (e.g. {sorted(state)[:3]})")
    logger.info("%s: loaded %d tensors from %s (%d model keys left at init, %d file keys unused)", what, loaded,
                path, len(result.missing_keys), len(result.unexpected_keys))


def load_initial_weights(model: nn.Module, config: Config, logger: logging.Logger) -> None:
    """Pretrained weights named in the config, through the model's official-layout filters.

    ``model.backbone.pretrain``: ACAR-Net SlowFast (Kinetics) -> the SlowFast stream;
    ``model.backbone.subbackbone``: VideoMAE/VideoMAEv2 -> the ViT stream; ``pretrain``: a whole model.
    """
    from stad.models.checkpoints import filter_acar_slowfast, filter_videomae

    backbone = config.model.backbone
    streams = model.backbone
    if backbone.pretrain is not None:
        slowfast = getattr(streams, "slowfast", streams)
        state = filter_acar_slowfast(_read_weights(backbone.pretrain))
        _load_stream(slowfast, state, "model.backbone.pretrain", backbone.pretrain.path, logger)
    if backbone.subbackbone is not None:
        vit = _vit_stream(model)
        state = filter_videomae(_read_weights(backbone.subbackbone), vit)
        _load_stream(vit, state, "model.backbone.subbackbone", backbone.subbackbone.path, logger)
    if config.pretrain is not None:
        missing = load_weights(model, _read_weights(config.pretrain), strict=False)
        logger.info("pretrain: loaded %s (%d keys left at init)", config.pretrain.path, len(missing))


# --------------------------------------------------------------------------- loss


def build_criterion(config: Config) -> tuple[nn.Module, Callable]:
    """(criterion(logits, targets) -> mean loss, activation(logits) -> scores) from ``loss``.

    ACAR's ``ava_criterion(pose_softmax)`` maps to the models' pose-softmax or sigmoid BCE; the
    models' own names ('bce', 'pose_softmax') are accepted too.
    """
    from stad.models.losses import build_loss

    kwargs = dict(config.loss.kwargs)
    name = config.loss.type
    if name == "ava_criterion":
        name = "pose_softmax" if kwargs.pop("pose_softmax", False) else "bce"
    try:
        criterion = build_loss(name, **kwargs)
    except (KeyError, TypeError) as err:
        raise ConfigError(f"loss: {err}") from None
    return criterion, criterion.activation


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
    """A ``ClipDataset`` over ``split.annotation_path`` with frames under ``split.root_path``
    (decoded-frame cache of ``split.cache_mb`` MB per process, ``split.decode_threads`` decoding threads)."""
    from stad.data.dataset import ClipDataset

    clip_len, stride = temporal_sampling(split.augmentation)
    return ClipDataset(split.annotation_path, frames_root=split.root_path, video_root=split.video_root,
                       clip_len=clip_len, frame_stride=stride, transform=build_transform(split.augmentation, train),
                       num_classes=config.num_classes, min_score=split.min_score, cache_mb=split.cache_mb,
                       decode_threads=split.decode_threads)


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
