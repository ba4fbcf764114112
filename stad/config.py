"""Experiment configuration: YAML -> frozen dataclasses with strict keys and ``--set`` overrides.

The layout follows ACAR-Net's YAML configs (``evaluate``, ``result_path``, ``model: {backbone, neck,
head}``, ``train: {...}``, ``val: {...}``) so their files load unchanged; project additions
(gradient clipping, accumulation, AMP, capacities, distributed timeouts) are optional keys with
defaults. ``docs/engine.md`` documents every key.

An unknown key is an error that names the file, the dotted key and the closest valid key. Free-form
``kwargs`` mappings are passed to constructors, which reject unknown arguments themselves.

No torch import here: loading a config must be cheap.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import yaml

from stad.io_utils import atomic_write_text


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-7`` (no dot) as a float, as YAML 1.2 and humans do."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and the dotted key."""


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class PathSpec:
    """A weight file to load (ACAR: ``pretrain: {path: ...}``)."""

    path: str
    state_dict_key: str | None = None  # ACAR: take checkpoint[state_dict_key] first
    delete_prefix: str | None = None  # ACAR: drop keys with this prefix
    replace_prefix: str | None = None  # ACAR: rename prefix ...
    replace_to: str = ""  # ... to this


@dataclass(frozen=True)
class TransformSpec:
    """One augmentation step: ``type`` names it, ``kwargs`` are its arguments.

    A LIST of kwargs (val only, as ACAR-Net) makes test-time views: every combination over the
    steps, in ACAR-Net's order, each box's logits averaged over the views (``builders.build_views``).
    """

    type: str
    kwargs: Any = field(default_factory=dict)


@dataclass(frozen=True)
class AugmentationConfig:
    spatial: tuple[TransformSpec, ...] = ()
    temporal: TransformSpec = TransformSpec("TemporalCenterCrop", {"size": 64, "step": 2})


@dataclass(frozen=True)
class OptimizerConfig:
    type: str = "SGD"  # SGD | AdamW | Adam
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SchedulerConfig:
    """Per-iteration LR: linear warm-up from ``base_lr`` to ``warmup_lr``, then step or cosine (ACAR)."""

    type: str = "step"  # step | cosine | constant
    base_lr: float = 0.01
    warmup_lr: float | None = None  # peak LR after warm-up; None = base_lr (no warm-up ramp)
    warmup_epochs: float = 0.0
    milestone_epochs: tuple[float, ...] = ()
    lr_mults: tuple[float, ...] = ()
    min_lr: float = 0.0


@dataclass(frozen=True)
class StreamConfig:
    """One stream of a composite backbone (``model.backbone.vit`` / ``model.backbone.slowfast`` of ``vitsf``)."""

    arch: str  # the stream's registry name (vit_giant, slowfast50 = slowfast_r50, ...)
    kwargs: dict = field(default_factory=dict)  # its factory's arguments
    pretrain: PathSpec | None = None  # its weights (SlowFast: ACAR-Net Kinetics; ViT: VideoMAE / VideoMAEv2)
    learnable: bool = True  # False: no gradients, eval mode while training


@dataclass(frozen=True)
class BackboneConfig:
    arch: str = "slowfast50"
    learnable: bool = True
    pretrain: PathSpec | None = None
    kwargs: dict = field(default_factory=dict)
    subbackbone: PathSpec | None = None  # CW "VITSF": the ViT stream's weights
    sub_arch: str | None = None  # project key: the ViT stream's architecture (default vit_giant)
    sub_kwargs: dict = field(default_factory=dict)
    sub_learnable: bool = True  # project key: False freezes the ViT stream (the CW reference does)
    # project keys: a composite backbone chosen by name (arch: vitsf) with one section per stream;
    # the ACAR/CW spelling above (arch: slowfast50 + sub_arch / subbackbone) maps onto the same model
    vit: StreamConfig | None = None
    slowfast: StreamConfig | None = None

    def __post_init__(self) -> None:
        if self.vit is None and self.slowfast is None:
            return
        legacy = [k for k, given in (("sub_arch", self.sub_arch is not None), ("sub_kwargs", bool(self.sub_kwargs)),
                                     ("subbackbone", self.subbackbone is not None),
                                     ("sub_learnable", not self.sub_learnable), ("pretrain", self.pretrain is not None))
                  if given]
        if legacy:
            raise ConfigError(f"{legacy[0]} is the ACAR/CW spelling of a stream; with the stream sections "
                              "model.backbone.vit / model.backbone.slowfast state it there (arch, kwargs, pretrain, "
                              "learnable)")


@dataclass(frozen=True)
class ModuleConfig:
    type: str
    kwargs: dict = field(default_factory=dict)


FINETUNE_MODES = ("full", "linear_probe", "partial", "lora")  # stad.models.freeze.set_trainable's modes


@dataclass(frozen=True)
class LoRAConfig:
    """``model.finetune.lora``: adapters on every nn.Linear whose name ends with one of ``targets``."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("attn.qkv", "attn.proj")


@dataclass(frozen=True)
class FinetuneConfig:
    """``model.finetune``: which parameters train and at which learning rate (docs/engine.md).

    ``full`` (default): everything the backbone keys leave learnable, one parameter group (as before).
    ``linear_probe``: the head only. ``partial``: the head + the last ``last_blocks`` ViT blocks (and the
    ViT's final norm) and SlowFast stages. ``lora``: the head + LoRA adapters (``lora``) on the ViT.
    ``layer_decay`` (VideoMAE: 0.75): ViT layer ``i`` of ``n`` learns at ``decay ** (n + 1 - i)`` of the LR;
    ``backbone_lr_scale`` scales every backbone LR; ``no_decay_norm_bias``: no weight decay on norms,
    biases and position embeddings.
    """

    mode: str = "full"
    last_blocks: int = 1
    lora: LoRAConfig = LoRAConfig()
    layer_decay: float | None = None
    backbone_lr_scale: float = 1.0
    no_decay_norm_bias: bool = False

    def __post_init__(self) -> None:
        if self.mode not in FINETUNE_MODES:
            close = difflib.get_close_matches(self.mode, FINETUNE_MODES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown mode {self.mode!r}{hint} (choose from {', '.join(FINETUNE_MODES)})")
        if self.last_blocks < 1:
            raise ConfigError(f"last_blocks must be >= 1, got {self.last_blocks}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ConfigError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.backbone_lr_scale < 0:
            raise ConfigError(f"backbone_lr_scale must be >= 0, got {self.backbone_lr_scale}")
        if self.lora != LoRAConfig() and self.mode != "lora":
            raise ConfigError(f"lora is only used with mode 'lora', not {self.mode!r}")
        if self.last_blocks != 1 and self.mode != "partial":
            raise ConfigError(f"last_blocks is only used with mode 'partial', not {self.mode!r}")
        if self.lora.rank < 1:
            raise ConfigError(f"lora.rank must be >= 1, got {self.lora.rank}")

    @property
    def param_groups(self) -> bool:
        """Whether the optimizer gets per-part groups (else one group of every trainable parameter, as before)."""
        return self.layer_decay is not None or self.backbone_lr_scale != 1.0 or self.no_decay_norm_bias


@dataclass(frozen=True)
class ModelConfig:
    freeze_bn: bool = True
    backbone: BackboneConfig = BackboneConfig()
    neck: ModuleConfig = ModuleConfig("basic")
    head: ModuleConfig = ModuleConfig("acar")
    kwargs: dict = field(default_factory=dict)  # project key: more build_action_model arguments
    # project key: a registered model preset (stad.models.presets: acar_slowfast_r50_ava, ...) supplies the
    # model; backbone / neck / head / kwargs then stay unset (freeze_bn and finetune still apply)
    preset: str | None = None
    finetune: FinetuneConfig = FinetuneConfig()  # project key: full | linear_probe | partial | lora

    def __post_init__(self) -> None:
        if self.preset is None:
            return
        defaults = {"backbone": BackboneConfig(), "neck": ModuleConfig("basic"), "head": ModuleConfig("acar"),
                    "kwargs": {}}
        given = [k for k, v in defaults.items() if getattr(self, k) != v]
        if given:
            raise ConfigError(f"preset {self.preset!r} supplies the whole model; remove model.{given[0]} (or drop "
                              "the preset and state the model)")


@dataclass(frozen=True)
class LossConfig:
    type: str = "ava_criterion"
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EvalMapConfig:
    labelmap: str
    groundtruth: str
    exclusions: str | None = None
    capacities: tuple[int, ...] = (50,)
    ignore_keys_without_gt: bool = False


def _auto_threads() -> Any:
    """The ``decode_threads`` field: default null (auto); ``auto`` in YAML reads as null."""
    return field(default=None, metadata={"auto": None})


def _check_decode_threads(value: int | None) -> None:
    if value is not None and value < 0:
        raise ConfigError(f"decode_threads: must be auto/null (min(4, CPU count)), 0 or 1 (decode inline) "
                          f"or a thread count > 1, got {value}")


AMP_CHOICES = ("off", "bf16", "fp16", "auto")


def _amp_field(default: str) -> Any:
    """The ``amp`` fields: a choice of AMP_CHOICES; the boolean of older configs maps true -> auto
    (the device's default: fp16 on CUDA, off on the CPU, as ``amp: True`` always meant), false -> off.
    YAML reads a bare ``off`` as false, so it lands on ``off`` too."""
    return field(default=default, metadata={"bool": {True: "auto", False: "off"}})


def _check_amp(value: str, where: str) -> None:
    if value not in AMP_CHOICES:
        raise ConfigError(f"{where}: expected one of {', '.join(AMP_CHOICES)} (or true/false), got {value!r}")


@dataclass(frozen=True)
class SplitConfig:
    """What the ``train`` and ``val`` sections share: where the clips are and how they are read."""

    root_path: str
    annotation_path: str
    batch_size: int = 1  # clips per process per micro-step
    augmentation: AugmentationConfig = AugmentationConfig()
    workers: int = 0
    video_root: str | None = None
    min_score: float = 0.0  # drop proposal boxes below this detector score (best box kept)
    cache_mb: float = 0.0  # per-worker LRU of decoded + resized frames (MB; 0 = off): later epochs skip decoding
    decode_threads: int | None = _auto_threads()  # decode threads (auto/null: min(4, CPUs); 0/1: inline)

    def __post_init__(self) -> None:
        _check_decode_threads(self.decode_threads)


@dataclass(frozen=True)
class TrainConfig(SplitConfig):
    n_epochs: int = 1
    val_freq: int = 1
    save_freq: int = 1
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    accumulate_steps: int = 1  # micro-batches per optimizer step
    grad_clip: float | None = None  # max global grad L2 norm
    amp: str = _amp_field("auto")  # off | bf16 | fp16 | auto (fp16 on CUDA, off on CPU); YAML true/false: auto/off
    drop_last: bool = True
    save_every_iters: int = 0  # project: also checkpoint every N optimizer steps, mid-epoch (0 = epoch ends only)
    keep_last: int = 2  # project: mid-epoch checkpoints kept (the newest K); epoch checkpoints follow save_freq

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_amp(self.amp, "amp")
        if self.save_every_iters < 0:
            raise ConfigError(f"save_every_iters: must be >= 0 (0 = off), got {self.save_every_iters}")
        if self.keep_last < 1:
            raise ConfigError(f"keep_last: must be >= 1, got {self.keep_last}")


@dataclass(frozen=True)
class ValConfig(SplitConfig):
    with_label: bool = False
    eval_mAP: EvalMapConfig | None = None
    amp: str = _amp_field("off")  # project: autocast while predicting (off | bf16 | fp16 | auto); YAML true/false: auto/off

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_amp(self.amp, "amp")


TASKS = ("detection", "recognition")
LIST_FORMATS = ("videos", "frames")  # MMAction2 list files: `video_path label...` / `frame_dir total_frames label...`
SAMPLING_TYPES = ("dense", "uniform")
VIEW_AVERAGES = ("prob", "logit")


def _choice(value: str, choices: Sequence[str], what: str) -> None:
    """A ConfigError with a did-you-mean when ``value`` is not one of ``choices``."""
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown {what} {value!r}{hint} (choose from {', '.join(choices)})")


@dataclass(frozen=True)
class SamplingConfig:
    """``recognition.sampling``: which frames of a video make one clip (docs/engine.md, *Recognition*).

    ``dense`` (SlowFast-style): ``clip_len`` frames ``frame_interval`` apart from a random start when
    training, from evenly spread starts at test time. ``uniform`` (TSN-style): the video cut into
    ``clip_len`` equal segments, one frame per segment (random in it when training, its centre at test).
    """

    type: str = "dense"
    clip_len: int = 8
    frame_interval: int = 2  # dense only

    def __post_init__(self) -> None:
        _choice(self.type, SAMPLING_TYPES, "sampling type")
        if self.clip_len < 1 or self.frame_interval < 1:
            raise ConfigError(f"clip_len and frame_interval must be >= 1, got {self.clip_len}, {self.frame_interval}")
        if self.type == "uniform" and self.frame_interval != 1:
            raise ConfigError("frame_interval is only used with sampling type 'dense' (uniform: one frame per segment)")


@dataclass(frozen=True)
class ProbeConfig:
    """``recognition.probe``: the cached-feature linear probe (``model.finetune.mode: linear_probe``).

    ``cache_features: true``: the frozen backbone's clip features are computed once (train: the test-time
    pipeline's first clip and crop; val: every view) and stored under ``cache_dir`` keyed by the backbone
    weights, the list files, the sampling and the transforms; training then fits the head on them.
    """

    cache_features: bool = False
    cache_dir: str | None = None  # default: <result_path>/feature_cache


@dataclass(frozen=True)
class RecognitionConfig:
    """``recognition``: clip-level action recognition on MMAction2-style list files (``task: recognition``).

    ``label_groups``: head name -> class count, in the order each line states its labels (one head:
    ``{action: 11}``; MA-52 style: ``{body: 7, action: 52}``). ``multi_label``: one group, any number of
    labels per line (sigmoid + BCE, scored by mAP). ``class_names``: group -> text file, one name a line.
    """

    label_groups: dict = field(default_factory=dict)
    list_format: str = "videos"
    multi_label: bool = False
    class_names: dict = field(default_factory=dict)
    filename_tmpl: str = "img_%05d.jpg"  # frames: file of frame n (printf style)
    start_index: int = 1  # frames: number of the first frame file
    sampling: SamplingConfig = SamplingConfig()
    test_clips: int = 1  # N clips per video at evaluation (x M crops from val.augmentation lists)
    average: str = "prob"  # views averaged as probabilities (MMAction2 'prob') or logits
    probe: ProbeConfig = ProbeConfig()

    def __post_init__(self) -> None:
        if not self.label_groups:
            raise ConfigError("label_groups: give each head's class count, e.g. {action: 11}")
        for name, count in self.label_groups.items():
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ConfigError(f"label_groups.{name}: expected a class count >= 1, got {count!r}")
        unknown = sorted(set(self.class_names) - set(self.label_groups))
        if unknown:
            raise ConfigError(f"class_names.{unknown[0]}: not a label group (groups: {', '.join(self.label_groups)})")
        _choice(self.list_format, LIST_FORMATS, "list_format")
        _choice(self.average, VIEW_AVERAGES, "average")
        if self.multi_label and len(self.label_groups) != 1:
            raise ConfigError("multi_label takes exactly one label group (each line lists any number of its labels)")
        if self.test_clips < 1:
            raise ConfigError(f"test_clips must be >= 1, got {self.test_clips}")
        if "%" not in self.filename_tmpl:
            raise ConfigError(f"filename_tmpl must hold a printf field for the frame number, got {self.filename_tmpl!r}")


@dataclass(frozen=True)
class CudnnConfig:
    deterministic: bool = False
    benchmark: bool = False


@dataclass(frozen=True)
class DistConfig:
    timeout_s: float = 600.0  # bound on any collective wait (init, barrier, all_reduce)
    find_unused_parameters: bool = False


@dataclass(frozen=True)
class Config:
    model: ModelConfig
    val: ValConfig | None = None
    train: TrainConfig | None = None
    loss: LossConfig = LossConfig()
    evaluate: bool = False
    result_path: str = "runs/default"
    manual_seed: int = 1
    print_freq: int = 20
    resume_path: str | None = None  # ACAR: weights (+ optimizer state when training) to start from
    pretrain: PathSpec | None = None  # ACAR: whole-model weights, non-strict
    cap_min: int | None = None  # CW adaptation: capacity sweep range(cap_min, cap_max, cap_step)
    cap_max: int | None = None
    cap_step: int = 1
    cudnn: CudnnConfig = CudnnConfig()
    dist: DistConfig = DistConfig()
    # project key: run weights whose stored/inferred preprocessing differs from this config's (logged as a
    # WARNING listing the fields); without it such a mismatch is an error (engine.builders.check_preprocessing)
    preprocessing_override: bool = False
    task: str = "detection"  # project key: detection (boxes, AVA frame-mAP) | recognition (clip labels)
    recognition: RecognitionConfig | None = None  # project key: the recognition task's data and labels

    def __post_init__(self) -> None:
        _choice(self.task, TASKS, "task")
        if (self.task == "recognition") != (self.recognition is not None):
            raise ConfigError("task: recognition needs a 'recognition' section (label_groups, list_format, "
                              "sampling ...)" if self.task == "recognition" else
                              "a 'recognition' section is only read with task: recognition")
        if not self.evaluate and self.train is None:
            raise ConfigError("a training config (evaluate: False) needs a 'train' section")
        if self.evaluate and self.val is None:
            raise ConfigError("an evaluation config (evaluate: True) needs a 'val' section")
        if (self.cap_min is None) != (self.cap_max is None):
            raise ConfigError("cap_min and cap_max go together")

    @property
    def capacities(self) -> tuple[int, ...]:
        """Capacities for the evaluator: the CW sweep if given, else ``val.eval_mAP.capacities``."""
        if self.cap_min is not None and self.cap_max is not None:
            return tuple(range(self.cap_min, self.cap_max, self.cap_step))
        if self.val is not None and self.val.eval_mAP is not None:
            return self.val.eval_mAP.capacities
        return (50,)

    @property
    def num_classes(self) -> int:
        """Class count, from ``model.head.kwargs.num_classes`` (ACAR) or ``neck.kwargs.num_classes``, or the
        ``model.preset``'s; recognition: the classes of all label groups together."""
        if self.recognition is not None:
            return sum(int(k) for k in self.recognition.label_groups.values())
        if self.model.preset is not None:
            from stad.models.presets import get_preset  # imports torch: only for a config naming a preset

            try:
                return get_preset(self.model.preset).preprocessing.num_classes
            except KeyError as err:
                raise ConfigError(f"model.preset: {err.args[0]}") from None
        for kwargs in (self.model.head.kwargs, self.model.neck.kwargs):
            if "num_classes" in kwargs:
                return int(kwargs["num_classes"])
        raise ConfigError("model.head.kwargs.num_classes is required")


# --------------------------------------------------------------------------- loading


def _strip_none(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for ``X | None``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _convert(value: Any, tp: Any, where: str) -> Any:
    inner, optional = _strip_none(tp)
    if value is None:
        if optional or inner is Any:
            return None
        raise ConfigError(f"{where}: must not be empty (expected {getattr(inner, '__name__', inner)})")
    if dataclasses.is_dataclass(inner):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return _build(inner, value, where)
    origin = typing.get_origin(inner)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]  # a scalar where a list is expected: one element
        elem = typing.get_args(inner)[0]
        return tuple(_convert(v, elem, f"{where}[{i}]") for i, v in enumerate(value))
    if inner is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if inner is Any:
        return value
    return _convert_scalar(value, inner, where)


def _convert_scalar(value: Any, tp: type, where: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-7" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value).strip()
    raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{where}." if where else ""
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(f"unknown key '{prefix}{key}'{hint}")
    kwargs = {}
    for name, spec in fields.items():
        if name in data:
            value = data[name]
            if value == "auto" and "auto" in spec.metadata:  # a field whose automatic choice is spelt otherwise
                value = spec.metadata["auto"]
            if isinstance(value, bool) and "bool" in spec.metadata:  # a choice that used to be a boolean
                value = spec.metadata["bool"][value]
            kwargs[name] = _convert(value, hints[name], f"{prefix}{name}")
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{prefix}{name}'")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where or 'config'}: {err}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.n_epochs=3'`` -> (['train', 'n_epochs'], 3); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.n_epochs=3")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text!r}: empty key")
    return parts, yaml_load(raw) if raw.strip() else None


def _child(node: Any, part: str, where: str) -> Any:
    """``node[part]`` for a mapping key or a list index; missing mapping keys become ``{}``."""
    if isinstance(node, list):
        if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
            raise ConfigError(f"--set: '{where}' has {len(node)} items; '{part}' is not an index")
        return node[int(part)]
    if node.get(part) is None:
        node[part] = {}
    return node[part]


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """A copy of ``data`` with each ``a.b=c`` override applied (``a.0.b``: list item 0).

    Missing intermediate mappings are created; the strict schema check rejects unknown keys later.
    """
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            node = _child(node, part, ".".join(parts[:i]) or "<top>")
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"--set {text!r}: '{'.'.join(parts[:i + 1])}' is not a mapping or list")
        last = parts[-1]
        if isinstance(node, list):
            _child(node, last, ".".join(parts[:-1]))  # validates the index
            node[int(last)] = value
        else:
            node[last] = value
    return data


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Build a `Config`; errors are prefixed with ``source``."""
    try:
        return _build(Config, data or {}, "")
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config, apply ``--set`` overrides and validate it strictly."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return config_from_dict(apply_overrides(data, overrides), str(path))


def config_to_dict(config: Any) -> Any:
    """Plain YAML-able data (tuples become lists); ``config_from_dict`` inverts it."""
    if dataclasses.is_dataclass(config):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, Mapping):
        return {k: config_to_dict(v) for k, v in config.items()}
    return config


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config (every default filled in) as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
