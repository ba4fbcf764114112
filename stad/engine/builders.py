"""Config -> objects: the model, the loss, datasets and transforms, weights to start from.

This is the only engine module that knows the names used in configs (ACAR-Net's ``slowfast50``,
``Scale``, ``TemporalCenterCrop`` ...) and how they map onto stad.models and stad.data.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from stad.config import AugmentationConfig, Config, ConfigError, PathSpec, TrainConfig, ValConfig
from stad.engine import checkpoint as ckpt
from stad.structures import LabelMap

ACTION_MODEL = "build_action_model"  # = stad.models.presets.ACTION_MODEL (stad.models is imported lazily here)

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
    jitter = dict(neck.pop("bbox_jitter", None) or {})
    if sorted(set(jitter) - {"num", "scale"}):
        raise ConfigError(f"model.neck.kwargs.bbox_jitter: unknown keys {sorted(set(jitter) - {'num', 'scale'})} "
                          f"(known: num, scale)")
    if int(jitter.get("num", 1)) != 1:
        raise ConfigError(f"model.neck.kwargs.bbox_jitter.num: only 1 (one jittered copy of each box, ACAR-Net's "
                          f"setting) is supported, got {jitter['num']}")
    classes = neck.pop("num_classes", None)
    if classes is not None and int(classes) != config.num_classes:
        raise ConfigError(f"model.neck.kwargs.num_classes is {classes} but model.head.kwargs.num_classes is "
                          f"{config.num_classes}")
    scale = float(neck.pop("jitter_scale", jitter.get("scale", 0.0)))
    if neck:
        raise ConfigError(f"model.neck.kwargs: unknown keys {sorted(neck)} (known: bbox_jitter, jitter_scale, "
                          f"num_classes, multi_class)")
    return scale


@dataclass(frozen=True)
class Stream:
    """One resolved backbone stream: registry name, factory kwargs, weights, trainability; ``where`` / ``pretrain_key``:
    the YAML keys of its kwargs and its weights (either spelling)."""

    arch: str
    kwargs: dict
    pretrain: PathSpec | None
    learnable: bool
    where: str
    pretrain_key: str


@dataclass(frozen=True)
class Backbone:
    """The backbone a ``model.backbone`` section resolves to, in either spelling (docs/engine.md).

    ``arch``: the registry name; ``kwargs``: its factory's own arguments; ``streams``: a composite backbone's
    streams by argument name (``vitsf``: ``vit`` and ``slowfast``, passed as ``<name>=arch``,
    ``<name>_kwargs=kwargs``); empty for a single backbone, whose weights are ``pretrain``.
    """

    arch: str
    kwargs: dict
    pretrain: PathSpec | None = None
    streams: dict = field(default_factory=dict)
    where: str = "model.backbone"


def _stream_kwargs(arch: str, kwargs: dict, freeze_bn: bool) -> dict:
    kwargs = dict(kwargs)
    if freeze_bn and _is_slowfast(arch):
        kwargs.setdefault("frozen_bn", True)
    return kwargs


def resolve_backbone(config: Config) -> Backbone:
    """``model.backbone`` -> :class:`Backbone`.

    * by name: ``arch: vitsf`` (any registered backbone) with stream sections ``vit: {arch, kwargs, pretrain,
      learnable}`` / ``slowfast: {...}``; ``kwargs`` are the composite's own (``vit_frame_stride``, ...);
    * ACAR-Net / CW spelling: ``arch: slowfast50`` (+ ``kwargs``, ``pretrain``) is a single SlowFast; adding
      ``sub_arch`` and/or ``subbackbone`` (+ ``sub_kwargs``, ``sub_learnable``) makes it the dual stream
      ``vitsf`` with that SlowFast and a ViT (``sub_arch``, default vit_giant) - the same model as by name.
    ``model.freeze_bn`` adds ``frozen_bn=True`` to every SlowFast stream's kwargs unless they set it.
    """
    spec, freeze_bn = config.model.backbone, config.model.freeze_bn
    where = "model.backbone"
    if spec.vit is not None or spec.slowfast is not None:  # by name, one section per stream
        streams = {}
        for name in ("vit", "slowfast"):
            stream = getattr(spec, name)
            if stream is not None:
                arch = ARCH_ALIASES.get(stream.arch, stream.arch)
                streams[name] = Stream(arch, _stream_kwargs(arch, stream.kwargs, freeze_bn), stream.pretrain,
                                       stream.learnable, f"{where}.{name}.kwargs", f"{where}.{name}.pretrain")
        return Backbone(ARCH_ALIASES.get(spec.arch, spec.arch), dict(spec.kwargs), None, streams)
    arch = ARCH_ALIASES.get(spec.arch, spec.arch)
    if spec.subbackbone is None and spec.sub_arch is None:
        return Backbone(arch, _stream_kwargs(arch, spec.kwargs, freeze_bn), spec.pretrain)
    # the CW "VITSF" spelling: backbone = the SlowFast stream, subbackbone / sub_arch = the ViT stream
    return Backbone(DUAL_STREAM, {}, None, {
        "vit": Stream(spec.sub_arch or DEFAULT_SUB_ARCH, dict(spec.sub_kwargs), spec.subbackbone, spec.sub_learnable,
                      f"{where}.sub_kwargs", f"{where}.subbackbone"),
        "slowfast": Stream(arch, _stream_kwargs(arch, spec.kwargs, freeze_bn), spec.pretrain, True,
                           f"{where}.kwargs", f"{where}.pretrain")})


# build_action_model's flat spelling of the dual stream's arguments (what presets and checkpoints store)
_FLAT_BACKBONE_ARGS = ("vit", "slowfast", "vit_kwargs", "slowfast_kwargs", "vit_frame_stride", "vit_input_size")


def model_kwargs(config: Config) -> dict:
    """Arguments of ``stad.models.build_action_model`` from the ``model`` section (either backbone spelling,
    or a ``model.preset`` of ``build_action_model`` kind)."""
    model = config.model
    if model.preset is not None:
        name, kwargs = model_spec(config)
        if name != ACTION_MODEL:
            raise ConfigError(f"model.preset {model.preset!r} is the registered model {name!r}, not "
                              "build_action_model arguments (use builders.model_spec)")
        return kwargs
    kwargs: dict[str, Any] = {"head": model.head.type, "head_kwargs": _head_kwargs(config),
                              "jitter_scale": _jitter_scale(config), **model.kwargs}
    backbone = resolve_backbone(config)
    if not backbone.streams:
        kwargs.update(backbone=backbone.arch, backbone_kwargs=backbone.kwargs)
        return kwargs
    kwargs["backbone"] = backbone.arch
    for name, stream in backbone.streams.items():
        kwargs.update({name: stream.arch, f"{name}_kwargs": dict(stream.kwargs)})
    own = {k: v for k, v in backbone.kwargs.items() if k not in _FLAT_BACKBONE_ARGS}
    for key, value in backbone.kwargs.items():
        if key in _FLAT_BACKBONE_ARGS:
            if key in model.kwargs:
                raise ConfigError(f"model.backbone.kwargs.{key} and model.kwargs.{key}: give it once "
                                  "(model.backbone.kwargs)")
            kwargs[key] = value
    if own:
        kwargs["backbone_kwargs"] = own
    return kwargs


def model_spec(config: Config) -> tuple[str, dict]:
    """``(model, kwargs)``: ``stad.models.presets.ACTION_MODEL`` with ``build_action_model`` arguments, or a
    registered detector's name and its arguments (a ``model.preset`` such as ``acar_slowfast_r50_ava``)."""
    from stad.models.presets import get_preset

    if config.model.preset is None:
        return ACTION_MODEL, model_kwargs(config)
    try:
        preset = get_preset(config.model.preset)
    except KeyError as err:
        raise ConfigError(f"model.preset: {err.args[0]}") from None
    return preset.model, dict(preset.model_kwargs)


def build_model(config: Config) -> nn.Module:
    """The action model: ``forward(clips [B,3,T,H,W], boxes list[[N_i,4]]) -> logits [sum N_i, K]``, with the
    backbone's ``learnable`` flags and ``model.finetune`` applied (which parameters train)."""
    from stad.models import build_action_model, create_model

    name, kwargs = model_spec(config)
    if name == ACTION_MODEL:
        model = build_action_model(num_classes=config.num_classes, **kwargs)
    else:
        model = create_model(name, num_classes=config.num_classes, **kwargs)
    width = config.model.head.kwargs.get("width")
    in_channels = sum(model.backbone.out_channels)
    if width is not None and int(width) != in_channels:
        raise ConfigError(f"model.head.kwargs.width is {width} but the backbone gives {in_channels} channels")
    apply_finetune(model, config)
    return model


def _streams(config: Config) -> dict:
    return {} if config.model.preset is not None else resolve_backbone(config).streams


def _stream_module(model: nn.Module, name: str, where: str) -> nn.Module:
    module = getattr(ckpt.unwrap(model).backbone, name, None)
    if module is None:
        raise ConfigError(f"{where.rsplit('.', 1)[0]}: the model has no {name} stream")
    return module


def apply_finetune(model: nn.Module, config: Config) -> list[str]:
    """``requires_grad`` per the backbone's ``learnable`` flags and ``model.finetune`` (``stad.models.freeze``,
    ``stad.models.lora``); returns the trainable parameter names. ``full`` changes nothing else."""
    from stad.models.freeze import set_trainable
    from stad.models.lora import apply_lora

    finetune = config.model.finetune
    if finetune.mode == "lora":
        lora = finetune.lora
        try:
            apply_lora(model, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout, targets=lora.targets)
        except ValueError as err:
            raise ConfigError(f"model.finetune.lora: {err}") from None
    if finetune.mode != "full":
        set_trainable(model, finetune.mode, last_blocks=finetune.last_blocks)
    if not config.model.backbone.learnable:
        model.backbone.requires_grad_(False)
    for name, stream in _streams(config).items():
        if not stream.learnable:
            _stream_module(model, name, stream.where).requires_grad_(False)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def frozen_modules(model: nn.Module, config: Config) -> list[nn.Module]:
    """Modules that stay in eval mode while training: the backbone when ``learnable: False`` or in a linear
    probe (``model.finetune.mode: linear_probe``), else each stream with ``learnable: False``."""
    if not config.model.backbone.learnable or config.model.finetune.mode == "linear_probe":
        return [ckpt.unwrap(model).backbone]
    return [_stream_module(model, name, stream.where) for name, stream in _streams(config).items()
            if not stream.learnable]


def optimizer_params(model: nn.Module, config: Config) -> list:
    """What the optimizer gets: every trainable parameter in one group (default, as ACAR-Net), or with
    ``model.finetune`` ``layer_decay`` / ``backbone_lr_scale`` / ``no_decay_norm_bias`` the groups of
    ``stad.models.freeze.param_groups`` ({backbone, head} x {decay, no decay} [x ViT layer]), each with an
    ``lr_scale`` the schedule multiplies its LR by."""
    finetune = config.model.finetune
    if not finetune.param_groups:
        return [p for p in model.parameters() if p.requires_grad]
    from stad.models.freeze import param_groups

    groups = param_groups(ckpt.unwrap(model), lr=1.0, weight_decay=0.0, backbone_lr_scale=finetune.backbone_lr_scale,
                          no_decay_norm_bias=finetune.no_decay_norm_bias, vit_layer_decay=finetune.layer_decay)
    for group in groups:
        group["lr_scale"] = group.pop("lr")
        if group["name"].split("_")[1] == "decay" or not finetune.no_decay_norm_bias:
            del group["weight_decay"]  # the optimizer's own weight_decay (train.optimizer.kwargs)
    return groups


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


_LORA_KEYS = ("lora_a", "lora_b", "lora_scaling")


def load_weights(model: nn.Module, checkpoint: dict, strict: bool = True) -> list[str]:
    """Load a whole-model checkpoint: ours, ACAR-Net's AVA layout or the CW reference's VITSF layout
    (``stad.models.checkpoints.filter_cw_vitsf``; the model must be built as that reference:
    ``model.kwargs.fusion: cw_reference``, ``sub_kwargs.final_norm: false``).

    LoRA (``model.finetune.mode: lora``): a file without adapters loads into a model with them (they keep
    their identity start); a file with adapters loads into a model without them folded
    (``stad.models.lora.merge_lora_state``), e.g. a LoRA run's checkpoint into its preset's model."""
    from stad.models.checkpoints import filter_acar_detector, filter_cw_vitsf, strip_prefix, unwrap_checkpoint

    state = unwrap_checkpoint(checkpoint, ("state_dict", "model"))
    filters = (lambda sd: filter_acar_detector({"state_dict": sd}), filter_cw_vitsf)
    adapters = {k: v for k, v in ckpt.unwrap(model).state_dict().items() if k.endswith(_LORA_KEYS)}
    if not adapters and any(str(k).endswith(_LORA_KEYS) for k in state):
        from stad.models.lora import merge_lora_state

        state = merge_lora_state(strip_prefix(state, "module."))  # a LoRA fine-tuned file into the plain model: folded
    if adapters and not any(str(k).endswith(_LORA_KEYS) for k in state):
        # weights of the model before LoRA (model.finetune.mode: lora): its adapters keep their start (B = 0, identity)
        def with_adapters(sd: dict) -> dict:
            return {**adapters, **sd}

        def through(fn: Callable) -> Callable:  # a layout filter sees the file's keys only
            return lambda sd: with_adapters(fn({k: v for k, v in sd.items() if k not in adapters}))

        state = with_adapters(strip_prefix(state, "module."))
        filters = tuple(through(fn) for fn in filters)
    try:
        return ckpt.load_model_weights(model, state, strict=strict, filters=filters)
    except RuntimeError:
        _explain_cw_mismatch(model, state)
        raise


def _explain_cw_mismatch(model: nn.Module, state: dict) -> None:
    """A CW reference file that does not fit the model: name the keys after the filter, and the config keys."""
    from stad.models.checkpoints import filter_cw_vitsf

    try:
        filtered = filter_cw_vitsf(state)
    except KeyError:
        return  # not that layout
    own = set(ckpt.unwrap(model).state_dict())
    missing, unexpected = sorted(own - set(filtered)), sorted(set(filtered) - own)
    raise RuntimeError(f"the Chaotic World reference checkpoint does not fit the model: after filter_cw_vitsf "
                       f"missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)}). "
                       "Build it as the reference (model.kwargs.fusion: cw_reference, model.backbone.sub_arch: "
                       "vit_giant, sub_kwargs {img_size: 224, num_frames: 32, final_norm: false}; "
                       "configs/chaotic_world/eval_VITSF_ACAR_HR2O_CW.yaml)") from None


def _load_stream(module: nn.Module, state: dict, what: str, path: str, logger: logging.Logger) -> None:
    result = ckpt.unwrap(module).load_state_dict(state, strict=False)
    loaded = len(state) - len(result.unexpected_keys)
    if loaded == 0:
        raise RuntimeError(f"{what}: no key of {path} matches the model (e.g. {sorted(state)[:3]})")
    logger.info("%s: loaded %d tensors from %s (%d model keys left at init, %d file keys unused)", what, loaded,
                path, len(result.missing_keys), len(result.unexpected_keys))


def load_initial_weights(model: nn.Module, config: Config, logger: logging.Logger) -> None:
    """Pretrained weights named in the config, through the model's official-layout filters.

    A SlowFast (``model.backbone.pretrain``, ``model.backbone.slowfast.pretrain``): ACAR-Net Kinetics weights via
    ``filter_acar_slowfast``; a ViT (``model.backbone.subbackbone``, ``model.backbone.vit.pretrain``): VideoMAE /
    VideoMAEv2 via ``filter_videomae``; ``pretrain``: a whole model.
    """
    from stad.models.checkpoints import filter_acar_slowfast, filter_videomae

    def load(module: nn.Module, arch: str, spec: PathSpec, what: str) -> None:
        state = _read_weights(spec)
        state = filter_videomae(state, ckpt.unwrap(module)) if arch.startswith("vit") else filter_acar_slowfast(state)
        _load_stream(module, state, what, spec.path, logger)

    if config.model.preset is None:
        backbone = resolve_backbone(config)
        if backbone.pretrain is not None:
            load(ckpt.unwrap(model).backbone, backbone.arch, backbone.pretrain, "model.backbone.pretrain")
        for name, stream in backbone.streams.items():
            if stream.pretrain is not None:
                load(_stream_module(model, name, stream.where), stream.arch, stream.pretrain, stream.pretrain_key)
    if config.pretrain is not None:
        missing = load_weights(model, _read_weights(config.pretrain), strict=False)
        logger.info("pretrain: loaded %s (%d keys left at init)", config.pretrain.path, len(missing))


# --------------------------------------------------------------------------- presets: weights + preprocessing
# One comparison of "the config's preprocessing" with "the weights' preprocessing", used by main.py
# (resume_path / evaluation) and by the demo. See stad.models.presets and docs/engine.md.

# Preprocessing field -> where a config states it (for error messages)
_PREPROCESSING_KEYS = {
    "num_classes": "model.head.kwargs.num_classes",
    "resize": "{split}.augmentation.spatial Scale.resize",
    "crop": "{split}.augmentation.spatial CenterCrop.size",
    "norm_value": "{split}.augmentation.spatial ToTensor.norm_value",
    "mean": "{split}.augmentation.spatial Normalize.mean",
    "std": "{split}.augmentation.spatial Normalize.std",
    "clip_len": "{split}.augmentation.temporal (TemporalCenterCrop size // step: frames)",
    "frame_stride": "{split}.augmentation.temporal TemporalCenterCrop.step",
    "fps": "frame rate",
    "activation": "loss (pose softmax or sigmoid)",
    "exclusive": "loss: pose-softmax class indices",
    "label_ids": "val.eval_mAP.labelmap (class ids)",
}


def _eval_split(config: Config) -> tuple[str, TrainConfig | ValConfig]:
    if config.val is not None:
        return "val", config.val
    if config.train is None:
        raise ConfigError("the config has neither a val nor a train section: no preprocessing to read")
    return "train", config.train


_ANNOTATION_FACTS: dict[tuple, tuple] = {}  # (path, mtime, size) -> (frame rate, idx_to_class): read once


def _annotation_facts(path: str | None) -> tuple[float | None, list] | None:
    """(frame rate if all elements share one, class table) of the ACAR pickle at ``path``; None if absent."""
    import os

    from stad.data.formats.acar_pkl import load_acar_object

    try:
        stat = os.stat(path) if path else None
    except OSError:
        stat = None
    if stat is None:
        return None
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _ANNOTATION_FACTS:
        try:
            elements, classes = load_acar_object(path)
            rates = {float(e["frame_rate"]) for e in elements}
        except (TypeError, KeyError, ValueError):  # FormatError is a ValueError; the preflight reports it
            return None
        _ANNOTATION_FACTS[key] = (rates.pop() if len(rates) == 1 else None, list(classes or []))
    return _ANNOTATION_FACTS[key]


def annotation_fps(config: Config) -> float | None:
    """The frame rate of the split's annotation pickle (its elements' ``frame_rate``), if it has exactly one."""
    _, split = _eval_split(config)
    facts = _annotation_facts(split.annotation_path)
    return facts[0] if facts else None


def labelmap_from_config(config: Config, table: LabelMap | None = None) -> LabelMap | None:
    """Output index -> class id/name as a run of ``config`` writes them; ``None`` when no file says.

    The ids are the annotation's class table (``table``, else the val/train pickle's): output ``i``
    is ``idx_to_class[i]`` because the pickle's labels index it. Names come from the evaluation label
    map when it holds those ids (ACAR pickles often carry ids only). Without a table of K classes the
    evaluation label map alone decides, when it has K classes.
    """
    from pathlib import Path

    from stad.data.formats.acar_pkl import labelmap_from_classes
    from stad.data.formats.labelmap import read_labelmap

    k = config.num_classes
    if table is None:
        for split in (config.val, config.train):
            facts = _annotation_facts(split.annotation_path) if split is not None else None
            if facts is not None and facts[1] and len(facts[1]) == k:
                table = labelmap_from_classes(facts[1])
                break
    val = config.val
    named = (read_labelmap(val.eval_mAP.labelmap) if val is not None and val.eval_mAP is not None
             and Path(val.eval_mAP.labelmap).is_file() else None)
    if table is not None and len(table) == k:
        if named is not None and set(table.ids) <= set(named.ids):
            return _in_order(named, table.ids)
        return table
    return named if named is not None and len(named) == k else None


def _in_order(labelmap: LabelMap, ids: tuple[int, ...]) -> LabelMap:
    """``labelmap``'s entries for ``ids``, in that order."""
    row = {class_id: i for i, class_id in enumerate(labelmap.ids)}
    types = tuple(labelmap.label_types[row[c]] for c in ids) if labelmap.label_types else ()
    return LabelMap(tuple(ids), tuple(labelmap.names[row[c]] for c in ids), types)


def preprocessing_from_config(config: Config, labels: bool = True) -> Any:
    """The test-time :class:`stad.models.presets.Preprocessing` a config states (val section, else train):
    its spatial steps, temporal crop, loss activation, class count and (``labels``: reading the files the
    config names) the label map and the annotation pickle's frame rate."""
    from stad.data import transforms
    from stad.models.losses import ExclusiveSoftmaxBCELoss
    from stad.models.presets import Preprocessing

    name, split = _eval_split(config)
    values: dict[str, Any] = {"resize": None, "crop": None, "norm_value": 255.0, "mean": (0.0, 0.0, 0.0),
                              "std": (1.0, 1.0, 1.0)}
    pipeline = build_transform(split.augmentation, train=False)
    if getattr(pipeline, "steps", None) is None and isinstance(pipeline, (list, tuple)) and pipeline:
        pipeline = pipeline[0]  # test-time views: the first (un-augmented) view states the preprocessing
    steps = getattr(pipeline, "steps", None)
    if steps is None:
        raise ConfigError(f"{name}.augmentation: cannot read the steps of the test-time pipeline {pipeline!r}")
    for step in steps:
        if isinstance(step, transforms.ShortSideScale) and step.max_ratio is None:
            values["resize"] = step.size
        elif isinstance(step, transforms.CenterCrop):
            values["crop"] = step.size
        elif isinstance(step, transforms.CornerCrop) and step.crop_position == "c":
            values["crop"] = step.size  # the same window as CenterCrop(size)
        elif isinstance(step, transforms.ToTensor):
            values["norm_value"] = step.norm_value
        elif isinstance(step, transforms.Normalize):
            values.update(mean=step.mean, std=step.std)
        else:
            raise ConfigError(f"{name}.augmentation.spatial: test-time step {step} cannot be stated as a preset's "
                              "preprocessing (Scale, CenterCrop, ToTensor, Normalize)")
    clip_len, stride = temporal_sampling(split.augmentation)
    criterion, _ = build_criterion(config)
    exclusive = tuple(int(i) for i in criterion.exclusive.tolist()) \
        if isinstance(criterion, ExclusiveSoftmaxBCELoss) else ()
    table = labelmap_from_config(config) if labels else None
    try:
        return Preprocessing(num_classes=config.num_classes, clip_len=clip_len, frame_stride=stride,
                             fps=annotation_fps(config) if labels else None,
                             activation="pose_softmax" if exclusive else "sigmoid", exclusive=exclusive,
                             label_ids=table.ids if table else (), label_names=table.names if table else (), **values)
    except ValueError as err:
        raise ConfigError(f"preprocessing of the config: {err}") from None


def preset_from_config(config: Config, name: str = "") -> Any:
    """A :class:`stad.models.presets.ModelPreset` for a run of ``config``: its model (``model_spec``) and the
    config's test-time preprocessing. Stored in every checkpoint the engine writes."""
    from stad.models.presets import ModelPreset

    model, kwargs = model_spec(config)  # build_action_model arguments, or a model.preset's registered detector
    return ModelPreset(name or config.model.preset or "", model, preprocessing_from_config(config), kwargs,
                       layout="stad", description="written by stad.engine from its run config")


def transform_from_preprocessing(preprocessing: Any) -> Any:
    """The data layer's test-time pipeline for a preset's preprocessing (the same code as ``build_transform``)."""
    from stad.data import transforms

    return transforms.from_acar_spec(preprocessing.spatial_spec(), train=False)


def weights_preset(checkpoint: dict, source: str = "weights", required: bool = True) -> tuple[Any, str]:
    """(preset, how it was found) of a whole-model weight file.

    In order: the preset stored in a checkpoint of ours; a checkpoint of ours written before presets:
    derived from its stored config; a foreign file: inferred from its key layout
    (`stad.models.presets.infer_preset`: ACAR-Net model zoo R50 / R101 / linear, CW reference).
    An unknown layout raises `UnknownLayoutError` listing the known ones, or gives ``(None, reason)``
    when not ``required``.
    """
    from stad.config import config_from_dict
    from stad.models.presets import UnknownLayoutError, infer_preset

    preset = ckpt.checkpoint_preset(checkpoint)
    if preset is not None:
        return preset, f"the preset stored in {source}" + (f" ({preset.name})" if preset.name else "")
    stored = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    if isinstance(stored, dict):
        try:
            return preset_from_config(config_from_dict(stored, f"{source} (stored config)")), \
                f"the config stored in {source} (a checkpoint written before presets)"
        except ConfigError as err:
            if required:
                raise ConfigError(f"{source}: its stored config no longer loads ({err})") from None
            return None, f"{source}: its stored config no longer loads ({err})"
    try:
        preset, reason = infer_preset(checkpoint)
    except UnknownLayoutError as err:
        if required:
            raise UnknownLayoutError(f"{source}: {err}") from None
        return None, f"{source}: {err}"
    return preset, f"{preset.name}, inferred from the key layout of {source} ({reason})"


def check_preprocessing(config: Config, preset: Any, reason: str, logger: logging.Logger | None = None) -> list:
    """Compare the config's test-time preprocessing with the weights' ``preset``.

    A difference (normalisation, resize, clip sampling, activation, class count or ids) is a
    `ConfigError` naming every differing field with the config's and the weights' values, unless the
    config sets ``preprocessing_override: true``: then a WARNING lists them and the config wins.
    Returns the differences ``[(field, config value, weights value)]``.
    """
    split, _ = _eval_split(config)
    try:
        ours = preprocessing_from_config(config)
    except ConfigError as err:  # e.g. a test-time step a preset cannot state: nothing to compare
        if logger is not None:
            logger.warning("preprocessing not checked against the weights (%s): %s", reason, err)
        return []
    diffs = ours.differences(preset.preprocessing)
    if not diffs:
        if logger is not None:
            logger.info("preprocessing of the config matches the weights (%s)", reason)
        return []

    def show(value: Any) -> str:
        if isinstance(value, tuple) and len(value) > 6:
            return f"[{', '.join(map(str, value[:6]))}, ... ({len(value)})]"
        return str(list(value)) if isinstance(value, tuple) else str(value)

    lines = [f"  {_PREPROCESSING_KEYS.get(f, f).format(split=split)}: config {show(a)} vs weights {show(b)}"
             for f, a, b in diffs]
    if getattr(config, "preprocessing_override", False):
        if logger is not None:
            logger.warning("preprocessing_override: evaluating with the config's preprocessing, which differs from "
                           "the weights' (%s) in %d field(s):\n%s", reason, len(diffs), "\n".join(lines))
        return diffs
    raise ConfigError(f"the config's preprocessing disagrees with the weights' ({reason}):\n" + "\n".join(lines) +
                      "\nFix the config (the weights' values are right for them), or set "
                      "`preprocessing_override: true` (or --set preprocessing_override=true) to run anyway")


def load_checked_weights(model: nn.Module, checkpoint: dict, config: Config, logger: logging.Logger,
                         source: str = "weights") -> list[str]:
    """`check_preprocessing` against the file's preset (`weights_preset`), then `load_weights` strictly.

    A file whose layout is unknown and which stores no preset is loaded unchecked (logged): the strict
    load still fails on any key mismatch.
    """
    preset, reason = weights_preset(checkpoint, source, required=False)
    if preset is None:
        logger.warning("%s carries no preset and its layout is not a known one: preprocessing not checked", source)
    else:
        check_preprocessing(config, preset, reason, logger)
    return load_weights(model, checkpoint.get("state_dict", checkpoint), strict=True)


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


def build_views(aug: AugmentationConfig, train: bool) -> list:
    """The data layer's pipelines, one per test-time view: a spatial step whose ``kwargs`` is a LIST
    gives one choice per entry, the views are all combinations in ACAR-Net's order
    (`stad.data.transforms.acar_views`). A list in a training split is a ConfigError."""
    from stad.data import transforms

    try:
        return transforms.acar_views([(s.type, s.kwargs) for s in aug.spatial], train=train)
    except ValueError as err:
        raise ConfigError(f"{'train' if train else 'val'}.{err}") from None


def build_transform(aug: AugmentationConfig, train: bool) -> Any:
    """The data layer's transform pipeline from ACAR-style spatial steps (with test-time views: the
    first view; `build_views` gives them all)."""
    return build_views(aug, train)[0]


def build_dataset(config: Config, split: TrainConfig | ValConfig, train: bool) -> Any:
    """A ``ClipDataset`` over ``split.annotation_path`` with frames under ``split.root_path``
    (decoded-frame cache of ``split.cache_mb`` MB per process, ``split.decode_threads`` decoding threads).
    Test-time views (lists of kwargs in val): one `MultiViewSample` per keyframe (`build_views`)."""
    from stad.data.dataset import ClipDataset

    clip_len, stride = temporal_sampling(split.augmentation)
    views = build_views(split.augmentation, train)
    return ClipDataset(split.annotation_path, frames_root=split.root_path, video_root=split.video_root,
                       clip_len=clip_len, frame_stride=stride, transform=views[0], views=views,
                       num_classes=config.num_classes, min_score=split.min_score, cache_mb=split.cache_mb,
                       decode_threads=split.decode_threads)


def collate(samples: list) -> Any:
    from stad.data.collate import collate_clips

    return collate_clips(samples)


def labelmap(dataset: Any, config: Config) -> LabelMap:
    """Output index -> dataset class id for the predictions CSV (`labelmap_from_config` with the
    dataset's own table), else ids 1..K."""
    table = getattr(dataset, "labelmap", None)
    found = labelmap_from_config(config, table if isinstance(table, LabelMap) else None)
    if found is not None:
        return found
    return LabelMap(tuple(range(1, config.num_classes + 1)), tuple(str(i) for i in range(1, config.num_classes + 1)))


def preflight(config: Config, logger: logging.Logger) -> None:
    """The data layer's validator on every split this run reads (fails fast on mAP-0 mistakes)."""
    from stad.data.validate import validate_config

    validate_config(config, logger=logger)
