"""Model presets: the preprocessing that travels with the weights (timm's ``pretrained_cfg``).

A :class:`ModelPreset` names a model (a registered detector factory, or ``build_action_model``
arguments) and the :class:`Preprocessing` its weights were trained with: pixel scale and
normalisation, resize rule, clip length / frame stride / frame rate, activation and label map.
Every checkpoint the engine writes stores one (``checkpoint["preset"]``); ACAR-Net model-zoo and
Chaotic World reference files are recognised from their key layout by :func:`infer_preset`.

    >>> preset = get_preset("acar_slowfast_r50_ava")
    >>> preset.preprocessing.spatial_spec()     # ACAR-style steps -> stad.data.transforms.from_acar_spec
    [('Scale', {'resize': 256}), ('ToTensor', {'norm_value': 255.0}), ('Normalize', {...})]
    >>> preset, reason = infer_preset(torch.load("AVA_SLOWFAST_R101_ACAR_HR2O_DEPTH1.pth.tar"))

The transform itself is built by the data layer from :meth:`Preprocessing.spatial_spec` (one
implementation of Scale / ToTensor / Normalize); the clip sampling is ``clip_len`` frames
``frame_stride`` apart at ``fps`` (``TemporalCenterCrop(clip_len * frame_stride, frame_stride)``).
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Mapping

from stad.models.ava_labels import ava_v22_labelmap
from stad.structures import LabelMap

ACTIVATIONS = ("pose_softmax", "sigmoid")
ACTION_MODEL = "build_action_model"  # ModelPreset.model: kwargs go to stad.models.build_action_model
AVA_POSE_INDICES = tuple(range(13))  # AVA's 13 mutually exclusive pose classes (first 13 of the 60)


class UnknownLayoutError(ValueError):
    """A weight file whose key layout matches no known preset; the message lists the known layouts."""


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _size(value: Any) -> int | tuple[int, int] | None:
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if len(value) == 1:
        return int(value[0])
    return tuple(int(v) for v in value)  # type: ignore[return-value]


@dataclass(frozen=True)
class Preprocessing:
    """What the weights expect around them; everything a transform, a sampler and a CSV writer need.

    Args:
        num_classes: K, the model's outputs.
        mean, std, norm_value: pixels (RGB) become ``(x / norm_value - mean) / std``.
        resize: short side in pixels (ACAR ``Scale(resize=256)``), or an exact ``(width, height)``;
            ``None`` keeps the frames' size.
        crop: centre crop after resizing (ACAR ``CenterCrop(size)``: an int or ``(height, width)``).
        clip_len, frame_stride: ``clip_len`` frames, ``frame_stride`` source frames apart, centred on
            the keyframe (ACAR ``TemporalCenterCrop(size=clip_len * frame_stride, step=frame_stride)``).
        fps: frame rate the clips were sampled at (``None``: unknown).
        activation: ``'pose_softmax'`` (softmax over ``exclusive``, sigmoid elsewhere) or ``'sigmoid'``.
        exclusive: output indices of the softmax group (``pose_softmax`` only).
        label_ids, label_names: output index -> dataset class id and name (empty: unknown).
    """

    num_classes: int
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    norm_value: float = 255.0
    resize: int | tuple[int, int] | None = 256
    crop: int | tuple[int, int] | None = None
    clip_len: int = 32
    frame_stride: int = 2
    fps: float | None = 30.0
    activation: str = "sigmoid"
    exclusive: tuple[int, ...] = ()
    label_ids: tuple[int, ...] = ()
    label_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen: normalise types
        set_("mean", _floats(self.mean))
        set_("std", _floats(self.std))
        set_("norm_value", float(self.norm_value))
        set_("resize", _size(self.resize))
        set_("crop", _size(self.crop))
        set_("exclusive", tuple(int(i) for i in self.exclusive))
        set_("label_ids", tuple(int(i) for i in self.label_ids))
        set_("label_names", tuple(str(n) for n in self.label_names))
        set_("fps", None if self.fps is None else float(self.fps))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {self.mean} / {self.std}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.activation == "sigmoid" and self.exclusive:
            raise ValueError("exclusive classes need activation 'pose_softmax'")
        if self.activation == "pose_softmax" and (len(self.exclusive) < 2 or max(self.exclusive) >= self.num_classes):
            raise ValueError(f"pose_softmax needs >= 2 exclusive indices below {self.num_classes}, got {self.exclusive}")
        if self.label_ids and len(self.label_ids) != self.num_classes:
            raise ValueError(f"{len(self.label_ids)} label ids for {self.num_classes} classes")
        if self.label_names and len(self.label_names) != len(self.label_ids):
            raise ValueError("label_names and label_ids differ in length")
        if self.clip_len < 1 or self.frame_stride < 1:
            raise ValueError(f"clip_len and frame_stride must be >= 1, got {self.clip_len}, {self.frame_stride}")

    # ---- what the data layer and the engine build from it

    def spatial_spec(self) -> list[tuple[str, dict]]:
        """ACAR-style test-time steps for ``stad.data.transforms.from_acar_spec`` (``builders.build_transform``)."""
        steps: list[tuple[str, dict]] = []
        if self.resize is not None:
            steps.append(("Scale", {"resize": self.resize if isinstance(self.resize, int) else list(self.resize)}))
        if self.crop is not None:
            steps.append(("CenterCrop", {"size": self.crop if isinstance(self.crop, int) else list(self.crop)}))
        steps.append(("ToTensor", {"norm_value": self.norm_value}))
        steps.append(("Normalize", {"mean": list(self.mean), "std": list(self.std)}))
        return steps

    def temporal_spec(self) -> tuple[str, dict]:
        """ACAR's ``TemporalCenterCrop(size, step)`` giving ``clip_len`` frames ``frame_stride`` apart."""
        return "TemporalCenterCrop", {"size": self.clip_len * self.frame_stride, "step": self.frame_stride}

    @property
    def labelmap(self) -> LabelMap:
        """Output index -> class id and name; numbered ``1..K`` (names "class i") when unknown."""
        if self.label_ids:
            names = self.label_names or tuple(f"class {i}" for i in self.label_ids)
            return LabelMap(self.label_ids, names)
        return LabelMap(tuple(range(1, self.num_classes + 1)),
                        tuple(f"class {i}" for i in range(1, self.num_classes + 1)))

    def activation_fn(self) -> Callable:
        """``logits [N, K] -> scores``: the loss's activation (pose softmax or sigmoid)."""
        from stad.models.losses import build_loss

        loss = build_loss("pose_softmax", exclusive=self.exclusive) if self.activation == "pose_softmax" \
            else build_loss("bce")
        return loss.activation

    # ---- comparison and storage

    def differences(self, other: "Preprocessing") -> list[tuple[str, Any, Any]]:
        """``[(field, self's value, other's value)]`` where the two disagree.

        Unknown values (``fps`` None, empty label map) match anything; label names are not compared
        (ids decide what a CSV means); floats are equal to a relative 1e-6.
        """
        out = []
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "label_names" or (f.name in ("fps", "label_ids") and (not a or not b)):
                continue
            if f.name == "exclusive" and self.activation != other.activation:
                continue  # reported as the activation
            if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and \
                    all(isinstance(x, float) for x in a + b):
                same = all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9) for x, y in zip(a, b))
            elif isinstance(a, float) and isinstance(b, float):
                same = math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
            else:
                same = a == b
            if not same:
                out.append((f.name, a, b))
        return out

    def to_dict(self) -> dict:
        """Plain Python values (lists, not tuples): safe to store in a checkpoint or a YAML file."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preprocessing":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"preprocessing: unknown fields {unknown} (known: {sorted(known)})")
        return cls(**dict(data))


@dataclass(frozen=True)
class ModelPreset:
    """A model and its preprocessing.

    ``model`` is a registered detector (``stad.models.create_model``) or :data:`ACTION_MODEL`
    (``model_kwargs`` are then ``build_action_model`` arguments, as ``engine.builders.model_kwargs``
    writes them); ``layout`` names the weight-file key layout it is recognised by.
    """

    name: str
    model: str
    preprocessing: Preprocessing
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    layout: str = ""
    description: str = ""

    def build_model(self):
        """A freshly initialised model of this preset (load the weights into it with strict=True)."""
        from stad.models.action_model import build_action_model
        from stad.models.registry import create_model

        kwargs = {"num_classes": self.preprocessing.num_classes, **dict(self.model_kwargs)}
        if self.model == ACTION_MODEL:
            return build_action_model(**kwargs)
        return create_model(self.model, **kwargs)

    def to_dict(self) -> dict:
        return {"name": self.name, "model": self.model, "model_kwargs": dict(self.model_kwargs),
                "layout": self.layout, "description": self.description,
                "preprocessing": self.preprocessing.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelPreset":
        data = dict(data)
        pre = data.pop("preprocessing")
        return cls(preprocessing=pre if isinstance(pre, Preprocessing) else Preprocessing.from_dict(pre), **data)


# --------------------------------------------------------------------------- registry

_PRESETS: dict[str, Callable[[], ModelPreset]] = {}
_CACHE: dict[str, ModelPreset] = {}


def register_preset(name: str) -> Callable:
    """Decorator registering a zero-argument factory returning the :class:`ModelPreset` ``name``."""

    def decorator(factory: Callable[[], ModelPreset]) -> Callable[[], ModelPreset]:
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} is already registered")
        _PRESETS[name] = factory
        return factory

    return decorator


def list_presets() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str) -> ModelPreset:
    """The registered preset ``name``; an unknown name fails with a "did you mean" hint."""
    if name not in _PRESETS:
        close = difflib.get_close_matches(name, _PRESETS, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown preset {name!r}{hint} (known: {', '.join(list_presets())})")
    if name not in _CACHE:
        preset = _PRESETS[name]()
        if preset.name != name:
            raise ValueError(f"preset factory {name!r} returned a preset named {preset.name!r}")
        _CACHE[name] = preset
    return _CACHE[name]


def _ava_r50() -> Preprocessing:
    """ACAR-Net configs/AVA/SLOWFAST_R50_*.yaml (d684203): Scale 256, ToTensor 255, mean 0.45, std 0.225,
    TemporalCenterCrop(64, 2) = 32 frames 2 apart at AVA's 30 fps, pose softmax over 0..12."""
    labels = ava_v22_labelmap()
    return Preprocessing(num_classes=60, mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225), norm_value=255.0,
                         resize=256, clip_len=32, frame_stride=2, fps=30.0, activation="pose_softmax",
                         exclusive=AVA_POSE_INDICES, label_ids=labels.ids, label_names=labels.names)


def _ava_r101() -> Preprocessing:
    """ACAR-Net configs/AVA/*R101*.yaml and AVA-Kinetics/evalAVA_*R101*.yaml: the R50 recipe with pixels in
    0..255 (ToTensor norm_value 1) and per-channel Kinetics mean/std."""
    return replace(_ava_r50(), norm_value=1.0, mean=(110.63666788, 103.16065604, 96.29023126),
                   std=(38.7568578, 37.88248729, 40.02898126))


ACAR_ZOO = "acar_model_zoo"  # {"state_dict": {"module.backbone.module.*", "module.head.module.*"}, ...}
CW_VITSF = "cw_vitsf"  # the CW reference: module.backbone.module (SlowFast), .submodule (ViT), module.head.module


@register_preset("acar_slowfast_r50_ava")
def _acar_slowfast_r50_ava() -> ModelPreset:
    return ModelPreset("acar_slowfast_r50_ava", "acar_slowfast_r50", _ava_r50(), layout=ACAR_ZOO,
                       description="ACAR-Net AVA v2.2 SlowFast-R50 + HR2O (AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar)")


@register_preset("acar_slowfast_r101_ava")
def _acar_slowfast_r101_ava() -> ModelPreset:
    return ModelPreset("acar_slowfast_r101_ava", "acar_slowfast_r101", _ava_r101(), layout=ACAR_ZOO,
                       description="ACAR-Net AVA v2.2 SlowFast-R101 + HR2O depth 1 "
                                   "(AVA_SLOWFAST_R101_ACAR_HR2O_DEPTH1.pth.tar)")


@register_preset("acar_slowfast_r101_ava_kinetics")
def _acar_slowfast_r101_ava_kinetics() -> ModelPreset:
    return ModelPreset("acar_slowfast_r101_ava_kinetics", "acar_slowfast_r101", _ava_r101(), layout=ACAR_ZOO,
                       description="ACAR-Net AVA-Kinetics SlowFast-R101 + HR2O depth 1, evaluated on AVA "
                                   "(AVA-Kinetics_SLOWFAST_R101_ACAR_HR2O_DEPTH1.pth.tar; same keys and "
                                   "preprocessing as acar_slowfast_r101_ava)")


@register_preset("linear_slowfast_r50_ava")
def _linear_slowfast_r50_ava() -> ModelPreset:
    return ModelPreset("linear_slowfast_r50_ava", "linear_slowfast_r50", _ava_r50(), layout=ACAR_ZOO,
                       description="ACAR-Net AVA v2.2 SlowFast-R50 baseline, linear head (SLOWFAST_R50_baseline)")


@register_preset("cw_vitsf_acar")
def _cw_vitsf_acar() -> ModelPreset:
    """configs/chaotic_world/eval_VITSF_ACAR_HR2O_CW.yaml: ViT-g (all 32 frames) + SlowFast-R50 -> ACAR head."""
    # The reference trained and evaluates with ACAR's ava_criterion(pose_softmax=True): a softmax over
    # outputs 0..12 although CW's classes are not AVA's poses (the _sigmoid configs drop it).
    pre = Preprocessing(num_classes=50, resize=(224, 224), clip_len=32, frame_stride=2, fps=25.0,
                        activation="pose_softmax", exclusive=AVA_POSE_INDICES, label_ids=tuple(range(1, 51)))
    kwargs = {"backbone": "vitsf", "head": "acar", "vit": "vit_giant",
              "vit_kwargs": {"img_size": 224, "num_frames": 32, "final_norm": False}, "fusion": "cw_reference",
              "slowfast": "slowfast_r50", "slowfast_kwargs": {"alpha": 4, "beta": 0.125, "fuse_only_conv": False,
                                                              "fuse_kernel_size": 7, "slow_full_span": True,
                                                              "frozen_bn": True},
              "head_kwargs": {"roi_size": 7, "depth": 2}, "jitter_scale": 0.075}
    return ModelPreset("cw_vitsf_acar", ACTION_MODEL, pre, kwargs, layout=CW_VITSF,
                       description="Chaotic World reference: VideoMAEv2 ViT-g + SlowFast-R50 -> ACAR HR2O, 50 classes "
                                   "(SFR50_VITG_ACAR_CWtrain_ckpt_11.pth.tar; class names: the CW list_action.pbtxt)")


@register_preset("toy_acar_vitsf_tiny")
def _toy_acar_vitsf_tiny() -> ModelPreset:
    """configs/toy/demo_acar.yaml (what `make demo` trains): 160x120 clips of 8 frames 4 apart, classes 1..11.

    The class names belong to the toy data (``stad.data.toy.actions``), which a model preset does not
    import; the checkpoints of a toy run store them (their preset comes from the run's config).
    """
    pre = Preprocessing(num_classes=11, resize=(160, 120), clip_len=8, frame_stride=4, fps=30.0,
                        activation="pose_softmax", exclusive=(0, 1, 2), label_ids=tuple(range(1, 12)))
    kwargs = {"backbone": "vitsf", "head": "acar", "vit": "vit_tiny", "vit_kwargs": {"img_size": 112, "num_frames": 8},
              "slowfast": "slowfast_tiny", "slowfast_kwargs": {}, "vit_frame_stride": 1,
              "head_kwargs": {"roi_size": 7, "reduce_dim": 64, "hidden_dim": 64, "depth": 2, "downsample": "none",
                              "relative_position": True, "position_gate": True},
              "jitter_scale": 0.05}
    return ModelPreset("toy_acar_vitsf_tiny", ACTION_MODEL, pre, kwargs, layout="stad",
                       description="the toy demo's tiny dual-stream ACAR model (make demo; toy-actors classes)")


# --------------------------------------------------------------------------- layouts

KNOWN_LAYOUTS = {
    "acar_slowfast_r50_ava": "ACAR-Net model zoo, SlowFast-R50 (6 res3 blocks, conv+BN laterals) + ACAR head, "
                             "2 HR2O layers, 60 classes",
    "acar_slowfast_r101_ava": "ACAR-Net model zoo, SlowFast-R101 (23 res3 blocks, conv laterals) + ACAR head, "
                              "1 HR2O layer, 60 classes (also acar_slowfast_r101_ava_kinetics: same keys)",
    "linear_slowfast_r50_ava": "ACAR-Net model zoo, SlowFast-R50 + linear head (fc), 60 classes",
    "cw_vitsf_acar": "Chaotic World reference, backbone.module (SlowFast-R50) + backbone.submodule "
                     "(VideoMAEv2 ViT-g) + head.module (ACAR), 50 classes",
    "(any)": "a checkpoint written by this project's engine (its preset is stored in it)",
}


def known_layouts_text() -> str:
    return "; ".join(f"{name}: {text}" for name, text in KNOWN_LAYOUTS.items())


def _indices(keys: Any, prefix: str) -> set[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return {int(m.group(1)) for k in keys if (m := pattern.match(k))}


def _unknown(what: str) -> UnknownLayoutError:
    return UnknownLayoutError(f"unknown weight layout: {what}. Known layouts: {known_layouts_text()}")


def infer_preset(checkpoint: Mapping) -> tuple[ModelPreset, str]:
    """The preset of a foreign whole-model file, recognised from its keys and shapes, and why.

    ACAR-Net model zoo: R50 vs R101 from the number of ``slow_res3`` blocks (6 / 23) and the lateral
    convolutions (conv+BN, kernel 7 / conv only, kernel 5); ACAR vs linear head from ``hr2o.*`` /
    ``fc.*``. Chaotic World reference: ``backbone.submodule.*``. Anything else raises
    :class:`UnknownLayoutError` listing the known layouts.
    """
    from stad.models.checkpoints import strip_prefix, unwrap_checkpoint

    sd = strip_prefix(unwrap_checkpoint(checkpoint, ("state_dict", "model", "module")), "module.")
    keys = list(sd)
    if not keys:
        raise _unknown("no weights in the file")
    backbone = {k[len("backbone.module."):]: v for k, v in sd.items() if k.startswith("backbone.module.")}
    head = {k[len("head.module."):]: v for k, v in sd.items() if k.startswith("head.module.")}
    if any(k.startswith("backbone.submodule.") for k in keys) and backbone and head:
        blocks = len(_indices(keys, "backbone.submodule.blocks."))
        classes = int(head["fc2.weight"].shape[0]) if "fc2.weight" in head else None
        if classes != 50:
            raise _unknown(f"a CW-style VITSF file with {classes} classes (the reference has 50)")
        return get_preset("cw_vitsf_acar"), (f"keys backbone.module.* + backbone.submodule.* ({blocks} ViT blocks) + "
                                             "head.module.*: the Chaotic World reference VITSF layout")
    if backbone and head:
        res3 = len(_indices(backbone, "slow_res3."))
        depth = {6: 50, 23: 101}.get(res3)
        lateral = backbone.get("Tconv1.0.weight", backbone.get("Tconv1.weight"))
        lateral_text = ("conv+BN laterals" if "Tconv1.1.weight" in backbone else "conv laterals") + \
            (f", kernel {int(lateral.shape[2])}" if lateral is not None and lateral.dim() == 5 else "")
        if "fc.weight" in head and not any(k.startswith("hr2o.") for k in head):
            kind, classes, hr2o = "linear", int(head["fc.weight"].shape[0]), 0
        elif "fc2.weight" in head:
            kind, classes, hr2o = "acar", int(head["fc2.weight"].shape[0]), len(_indices(head, "hr2o."))
        else:
            raise _unknown(f"an ACAR-Net-style file whose head has neither fc.* nor hr2o.*/fc2.* keys "
                           f"(e.g. {sorted(head)[:4]})")
        name = {(50, "acar", 2): "acar_slowfast_r50_ava", (101, "acar", 1): "acar_slowfast_r101_ava",
                (50, "linear", 0): "linear_slowfast_r50_ava"}.get((depth, kind, hr2o))
        found = (f"SlowFast with {res3} slow_res3 blocks ({'R' + str(depth) if depth else 'neither R50 nor R101'}), "
                 f"{lateral_text}, {kind} head" + (f" with {hr2o} HR2O layers" if kind == "acar" else "") +
                 f", {classes} classes")
        if name is None or classes != 60:
            raise _unknown(f"an ACAR-Net model-zoo-style file with {found}")
        return get_preset(name), f"ACAR-Net model-zoo keys: {found}"
    if any(k.startswith(("blocks.", "patch_embed.", "encoder.blocks.")) for k in keys):
        raise _unknown("a VideoMAE ViT backbone (patch_embed/blocks keys), not a whole action model; load it as "
                       "model.backbone.subbackbone of a config (stad.models.checkpoints.filter_videomae)")
    if any(k.startswith(("fast_conv1.", "slow_conv1.", "slow_res1.")) for k in keys):
        raise _unknown("a bare SlowFast backbone (ACAR-Net pretrained/ layout), not a whole action model; load it "
                       "as model.backbone.pretrain of a config")
    raise _unknown(f"{len(keys)} keys such as {sorted(keys)[:4]}")
