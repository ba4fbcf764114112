"""Check every free-form ``kwargs`` mapping of a config against the signature it is passed to.

Runs in the launching process before any worker starts, so ``--set model.head.kwargs.depht=2``
is one clear ``ConfigError`` with a did-you-mean instead of a ``TypeError`` traceback from every
rank. Targets are resolved exactly as the builders resolve them (``builders.model_kwargs``, the
model registry, the loss and transform tables), so the check cannot drift from what runs.
"""
from __future__ import annotations

import difflib
import inspect
import typing
from typing import Any, Callable, Iterable, Mapping

from stad.config import AugmentationConfig, Config, ConfigError


def accepted_names(target: Callable) -> set[str] | None:
    """Keyword names ``target`` accepts; None when it takes arbitrary ``**kwargs``.

    A factory whose own signature is only ``**kwargs`` but whose return annotation is a class (the
    registry's ``slowfast_r50(**kwargs) -> SlowFast``) accepts that class's constructor arguments.
    """
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: cannot check
        return None
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        return names
    returned = _return_class(target)
    if returned is None or returned is target:
        return None
    inner = accepted_names(returned)
    return None if inner is None else names | inner


def _return_class(target: Callable) -> type | None:
    try:
        hint = typing.get_type_hints(target).get("return")
    except Exception:  # noqa: BLE001 - unresolvable annotations: treat as unknown
        return None
    return hint if isinstance(hint, type) else None


def check_kwargs(where: str, target: Callable, kwargs: Mapping[str, Any], reserved: Iterable[str] = ()) -> None:
    """Raise `ConfigError` naming ``where.<key>`` for a key ``target`` does not take (did-you-mean).

    ``reserved``: names the builder itself passes (e.g. ``in_channels``); giving them is an error too.
    """
    allowed = accepted_names(target)
    if allowed is None:
        return
    allowed -= set(reserved)
    for key in kwargs:
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
        hint = f"; did you mean '{where}.{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(allowed))}"
        name = getattr(target, "__name__", repr(target))
        returned = _return_class(target)
        if returned is not None and returned is not target and accepted_names(returned) is not None \
                and key not in (accepted_names(returned) or ()):
            name = f"{name} -> {returned.__name__}"  # a factory forwarding its kwargs to this class
        raise ConfigError(f"unknown key '{where}.{key}' ({name} does not take it){hint}")


def check_config(config: Config) -> None:
    """Every kwargs mapping of ``config``: model, loss, optimizer and augmentation steps."""
    if getattr(config, "task", "detection") == "recognition":
        from stad.engine.recognition import check_model

        check_model(config)  # the recognizer builds; its loss is fixed (docs/engine.md, Recognition)
    else:
        _check_model(config)
        _check_loss(config)
    for name, split in (("train", config.train), ("val", config.val)):
        if split is not None:
            _check_augmentation(f"{name}.augmentation", split.augmentation)
    if config.train is not None:
        import torch.optim

        optimizer = getattr(torch.optim, config.train.optimizer.type, None)
        if not isinstance(optimizer, type):
            raise ConfigError(f"train.optimizer.type: unknown optimizer {config.train.optimizer.type!r} "
                              "(a torch.optim class such as SGD, AdamW, Adam)")
        check_kwargs("train.optimizer.kwargs", optimizer, config.train.optimizer.kwargs, reserved=("params", "lr"))


def check_weight_files(config: Config) -> None:
    """Every ``pretrain.path`` the config names is a file on this rank's disk. Checked by each rank at
    start-up (after the cross-rank storage check), not at load time, so configs naming weights that
    another stage will write still load; data files are the preflight's (`stad.data.validate`)."""
    from pathlib import Path

    from stad.engine.storage import needed_inputs

    for key, path in needed_inputs(config).items():
        if key.endswith("pretrain.path") and not Path(path).is_file():
            raise ConfigError(f"{key}: weights file not found: {path}")


def _entry(where: str, name: str, kind: str) -> Callable:
    from stad.models.registry import get_entry

    try:
        return get_entry(name, kind).factory
    except (KeyError, ValueError) as error:
        raise ConfigError(f"{where}: {error.args[0]}") from None


def _check_model(config: Config) -> None:
    from stad.engine import builders
    from stad.models.action_model import build_action_model

    if config.model.preset is not None:
        _check_preset(config)
    else:
        kwargs = builders.model_kwargs(config)
        head = _entry("model.head.type", kwargs["head"], "head")
        check_kwargs("model.head.kwargs", head, kwargs["head_kwargs"], reserved=("in_channels", "num_classes"))
        backbone = builders.resolve_backbone(config)
        streams = [(n, s) for n, s in backbone.streams.items()]
        check_kwargs("model.kwargs", build_action_model, config.model.kwargs,
                     reserved=("backbone", "head", "num_classes", "head_kwargs", "backbone_kwargs",
                               *(a for n, _ in streams for a in (n, f"{n}_kwargs"))))
        factory = _entry("model.backbone.arch", backbone.arch, "backbone")
        takes = accepted_names(factory)
        for name, stream in streams:
            section = stream.where.rsplit(".", 1)[0]
            if takes is not None and not {name, f"{name}_kwargs"} <= takes:
                raise ConfigError(f"{section}: backbone {backbone.arch!r} has no {name!r} stream (set "
                                  "model.backbone.arch to a composite backbone such as 'vitsf')")
            check_kwargs(stream.where, _entry(f"{section}.arch", stream.arch, "backbone"), stream.kwargs)
        check_kwargs("model.backbone.kwargs", factory, backbone.kwargs,
                     reserved=[a for n, _ in streams for a in (n, f"{n}_kwargs")])
    if config.model.finetune.mode == "lora":
        _check_lora(config)


def _check_preset(config: Config) -> None:
    """A ``model.preset`` exists, and the config's test-time preprocessing is the preset's (unless
    ``preprocessing_override``: then logged where the weights are loaded)."""
    from stad.engine import builders
    from stad.models.presets import get_preset

    builders.model_spec(config)  # an unknown name: ConfigError with a did-you-mean
    preset = get_preset(config.model.preset)
    builders.check_preprocessing(config, preset, f"model.preset {preset.name}")


def _check_lora(config: Config) -> None:
    """LoRA targets must exist: build the model on the meta device (no memory) and apply the adapters."""
    import torch

    from stad.engine import builders

    with torch.device("meta"):
        builders.build_model(config)


def _check_loss(config: Config) -> None:
    from stad.models import losses

    kwargs = dict(config.loss.kwargs)
    name = config.loss.type
    if name == "ava_criterion":
        name = "pose_softmax" if kwargs.pop("pose_softmax", False) else "bce"
    table = {"bce": losses.SigmoidBCELoss, "pose_softmax": losses.ExclusiveSoftmaxBCELoss}
    if name not in table:
        raise ConfigError(f"loss.type: unknown loss {config.loss.type!r}; choose from "
                          f"{sorted(table) + ['ava_criterion']}")
    check_kwargs("loss.kwargs", table[name], kwargs)


def _check_augmentation(where: str, aug: AugmentationConfig) -> None:
    from stad.data.transforms import STEPS

    for i, spec in enumerate(aug.spatial):
        if spec.type not in STEPS:
            close = difflib.get_close_matches(spec.type, list(STEPS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(STEPS)}"
            raise ConfigError(f"{where}.spatial[{i}].type: unknown transform {spec.type!r}{hint}")
        views = spec.kwargs if isinstance(spec.kwargs, list) else [spec.kwargs]
        for view in views:
            if not isinstance(view, Mapping):
                raise ConfigError(f"{where}.spatial[{i}].kwargs: expected a mapping or a list of mappings, "
                                  f"got {view!r}")
            check_kwargs(f"{where}.spatial[{i}].kwargs", STEPS[spec.type], view)
    if aug.temporal.type == "TemporalCenterCrop":
        unknown = set(aug.temporal.kwargs) - {"size", "step"}
        if unknown:
            raise ConfigError(f"unknown key '{where}.temporal.kwargs.{sorted(unknown)[0]}' "
                              "(TemporalCenterCrop takes size, step)")
