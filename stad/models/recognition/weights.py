"""Load recognition weights from any supported layout into a :class:`Recognizer` (or a bare backbone).

Layouts (detected from the keys; manifests under tests/fixtures/manifests/, made by running the
official code):

* ``ours``: ``backbone.*`` + ``head.fc.<group>.*`` (a Recognizer's own state dict, or a training
  checkpoint holding it under ``model``/``state_dict``).
* ``videoswin``: the original Video Swin repository (SwinTransformer/Video-Swin-Transformer, an
  MMAction2 0.x fork) and ``mmaction2``: MMAction2 1.x ``Recognizer3D`` + ``SwinTransformer3D``
  (the Kinetics Swin-B weights, MA-52's released weights): ``{"state_dict": ...}`` with
  ``backbone.layers.<s>.blocks.<j>.*``, ``backbone.layers.<s>.downsample.*``, ``backbone.norm.*``
  (1.x: ``backbone.norm3.*``), ``cls_head.fc_cls.*``; also a bare backbone (no ``backbone.``).
* ``swin2d``: an image Swin (ImageNet, ``{"model": ...}`` with 4-D ``patch_embed.proj.weight``), inflated
  as MMAction2 does for ``pretrained2d`` (:func:`inflate_swin2d`): how the Video Swin models start.
* ``torchvision``: a torchvision video classifier's state dict (``swin3d_*``, ``mvit_v2_s``,
  ``r2plus1d_18``, ``s3d``), classifier included.
* ``videomae`` / ``acar``: VideoMAE(v2) ViT and ACAR-Net SlowFast files through
  :func:`stad.models.checkpoints.filter_videomae` / :func:`~stad.models.checkpoints.filter_acar_slowfast`.

A checkpoint classifier (``cls_head.fc_cls``, torchvision's ``head``/``fc``/``classifier.1``) goes to
the label group whose class count matches it; when none does (e.g. Kinetics-400 weights for an
11-class task) it is left out and reported, and the model keeps its fresh head.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from stad.models.checkpoints import StateDict, filter_acar_slowfast, filter_videomae, strip_prefix, unwrap_checkpoint
from stad.models.recognition.swin import Swin3D
from stad.models.recognition.video_nets import MViTBackbone, S3DBackbone, VideoResNetBackbone
from stad.models.slowfast import SlowFast
from stad.models.vit import VisionTransformer3D

# torchvision classifier keys per backbone class (weight and bias share the prefix)
_TV_CLASSIFIER = {Swin3D: "head.", VideoResNetBackbone: "fc.", S3DBackbone: "classifier.1.", MViTBackbone: "head.1."}
# Video Swin MLP: original fc1/fc2 -> torchvision MLP Sequential indices
_SWIN_MLP = {"mlp.fc1.": "mlp.0.", "mlp.fc2.": "mlp.3."}


@dataclass
class LoadReport:
    """What :func:`load_recognition_weights` did: the layout it detected, the head group it filled
    (None: none), the checkpoint classifier keys it left out, and the non-strict leftovers (``missing``:
    model keys left at their init, ``unexpected``: checkpoint keys after renaming, both in the model's
    names, e.g. ``backbone.blocks.3.attn.qkv.weight`` for a recognizer)."""

    layout: str
    head_group: str | None = None
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


class CheckpointLayoutError(KeyError):
    """The checkpoint's keys do not fit the model (names the file and the keys)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _read(source: str | os.PathLike | Mapping) -> tuple[StateDict, str]:
    if isinstance(source, Mapping):
        return unwrap_checkpoint(source, ("state_dict", "model", "module")), "<state dict>"
    checkpoint = torch.load(os.fspath(source), map_location="cpu", weights_only=False)
    return unwrap_checkpoint(checkpoint, ("state_dict", "model", "module")), os.fspath(source)


def _split(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """(backbone, head or None) of a Recognizer or a bare backbone."""
    if hasattr(model, "backbone") and hasattr(model, "head"):
        return model.backbone, model.head
    return model, None


def detect_layout(state_dict: Mapping[str, torch.Tensor], backbone: nn.Module) -> str:
    """'ours', 'videoswin', 'mmaction2', 'swin2d', 'torchvision', 'videomae' or 'acar' (module docstring)."""
    keys = list(state_dict)
    if isinstance(backbone, SlowFast) and any(k.startswith("backbone.module.") for k in keys):
        return "acar"  # ACAR-Net's AVA model (DDP-wrapped backbone)
    if any(k.startswith("head.fc.") for k in keys) or (keys and all(k.startswith(("backbone.", "head.")) for k in keys)
                                                       and not any(".layers." in k for k in keys)):
        return "ours"
    bare = strip_prefix(state_dict, "backbone.")
    if getattr(bare.get("patch_embed.proj.weight"), "ndim", 0) == 4 and any(k.startswith("layers.") for k in bare):
        return "swin2d"
    if any(k.startswith("cls_head.") for k in keys) or any(k.startswith("layers.") for k in bare):
        return "mmaction2" if any(k.startswith("norm3.") for k in bare) else "videoswin"
    if isinstance(backbone, VisionTransformer3D):
        return "videomae"
    if isinstance(backbone, SlowFast):
        return "acar"
    return "torchvision"


def _swin_rename(key: str, names: list[tuple[str, str]], official: bool) -> str:
    """One Video Swin key (torchvision or original naming) -> our flat ``blocks.<i>`` naming."""
    for index, (tv_name, orig_name) in enumerate(names):
        prefix = (orig_name if official else tv_name) + "."
        if key.startswith(prefix):
            rest = key[len(prefix):]
            if official:
                rest = next((new + rest[len(old):] for old, new in _SWIN_MLP.items() if rest.startswith(old)), rest)
            return f"blocks.{index}.{rest}"
    if official and key.startswith("norm3."):
        return "norm." + key[len("norm3."):]
    return key


def _backbone_and_classifier(sd: StateDict, layout: str, backbone: nn.Module) -> tuple[StateDict, StateDict]:
    """(backbone state dict in our naming, classifier {'weight', 'bias'} or {})."""
    if layout in ("videoswin", "mmaction2"):
        if not isinstance(backbone, Swin3D):
            raise CheckpointLayoutError(f"an MMAction2-style recognizer checkpoint ({layout}: backbone.* / "
                                        "cls_head.*): only Video Swin backbones are mapped from it (swin3d_*), "
                                        f"the model has a {type(backbone).__name__}")
        head = {k[len("cls_head.fc_cls."):]: v for k, v in sd.items() if k.startswith("cls_head.fc_cls.")}
        body = {k: v for k, v in strip_prefix(sd, "backbone.").items()
                if not k.startswith(("cls_head.", "data_preprocessor."))}
        return {_swin_rename(k, backbone.block_names, True): v for k, v in body.items()}, head
    if layout == "swin2d":
        if not isinstance(backbone, Swin3D):
            raise CheckpointLayoutError("a 2D Swin checkpoint inflates into a swin3d backbone, "
                                        f"not {type(backbone).__name__}")
        head = {k[len("head."):]: v for k, v in sd.items() if k.startswith("head.")}
        body = inflate_swin2d({k: v for k, v in sd.items() if not k.startswith("head.")}, backbone)
        return {_swin_rename(k, backbone.block_names, True): v for k, v in body.items()}, head
    if layout == "videomae":
        return filter_videomae(sd, backbone), {}
    if layout == "acar":
        return filter_acar_slowfast(sd), {}
    prefix = next((p for cls, p in _TV_CLASSIFIER.items() if isinstance(backbone, cls)), None)
    if prefix is None:
        raise CheckpointLayoutError(f"no torchvision layout for a {type(backbone).__name__} backbone")
    head = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    body = {k: v for k, v in sd.items() if not k.startswith(prefix)}
    if isinstance(backbone, Swin3D):
        body = {_swin_rename(k, backbone.block_names, False): v for k, v in body.items()}
    return body, head


def inflate_swin2d(state_dict: Mapping[str, torch.Tensor], backbone: Swin3D) -> StateDict:
    """An image Swin (ImageNet; original Swin naming) inflated to ``backbone``'s 3D shapes, as MMAction2's
    ``SwinTransformer3D.inflate_weights`` does for ``pretrained2d``: the patch kernel [C, 3, P, P] repeated
    over the P_t frames of a patch and divided by P_t; each relative position bias table
    [(2W-1)^2, heads] resized bicubically to the 3D window's (2W_h-1) x (2W_w-1) grid if it differs, then
    repeated for every one of the 2W_t-1 temporal offsets; ``relative_position_index`` / ``attn_mask``
    buffers dropped (rebuilt). Keys keep the 2D names (``layers.<s>.blocks.<j>.*``)."""
    patch_t = backbone.patch_embed.tuple_patch_size[0]
    wd, wh, ww = backbone.blocks[0].attn.window_size
    out: StateDict = {}
    for key, value in state_dict.items():
        if key.endswith(("relative_position_index", "attn_mask")):
            continue
        if key == "patch_embed.proj.weight":
            value = value.unsqueeze(2).repeat(1, 1, patch_t, 1, 1) / patch_t
        elif key.endswith("relative_position_bias_table"):
            side, heads = math.isqrt(value.shape[0]), value.shape[1]
            if (side, side) != (2 * wh - 1, 2 * ww - 1):
                grid = value.permute(1, 0).reshape(1, heads, side, side)
                grid = F.interpolate(grid, size=(2 * wh - 1, 2 * ww - 1), mode="bicubic")
                value = grid.reshape(heads, -1).permute(1, 0)
            value = value.repeat(2 * wd - 1, 1)
        out[key] = value
    return out


def _classifier_group(classifier: StateDict, head: nn.Module | None) -> str | None:
    """The label group whose Linear has the classifier's shape (a 1x1x1 conv weight counts as Linear)."""
    if head is None or "weight" not in classifier:
        return None
    weight = classifier["weight"].flatten(1)
    fits = [g for g, fc in head.fc.items() if tuple(fc.weight.shape) == tuple(weight.shape)]
    return fits[0] if len(fits) == 1 else None


def _check_fit(target: nn.Module, sd: StateDict, origin: str, layout: str, strict: bool,
               prefix: str = "") -> tuple[list, list]:
    """Raise :class:`CheckpointLayoutError` on shape mismatches, and (strict) on missing or unexpected
    keys; returns (missing, unexpected), named ``prefix + key`` (the recognizer's names when ``target`` is
    its backbone). A missing Swin ``relative_position_index`` (a constant) is fine."""
    own = target.state_dict()
    mismatched = [f"{prefix}{k} {tuple(v.shape)} vs ours {tuple(own[k].shape)}" for k, v in sd.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [prefix + k for k in own if k not in sd and not k.endswith("relative_position_index")]
    unexpected = [prefix + k for k in sd if k not in own]
    what = f"{origin}: {layout} checkpoint into {type(target).__name__}"
    if mismatched:
        raise CheckpointLayoutError(f"{what}: {len(mismatched)} shape mismatches: {mismatched[:8]}")
    if strict and (missing or unexpected):
        raise CheckpointLayoutError(f"{what} (keys after renaming to the model's names): missing {len(missing)} "
                                    f"{missing[:8]}, unexpected {len(unexpected)} {unexpected[:8]}")
    return missing, unexpected


def load_recognition_weights(model: nn.Module, source: str | os.PathLike | Mapping, *, strict: bool = True,
                             layout: str | None = None) -> LoadReport:
    """Load ``source`` (a file or a state dict, possibly nested under ``state_dict``/``model``/``module``)
    into ``model`` (a :class:`~stad.models.recognition.Recognizer` or a bare backbone).

    The layout is detected (:func:`detect_layout`) unless given. ``strict``: every model key except
    the head's must be filled (the head too for layout 'ours') and no checkpoint key may be left
    over; a classifier that fits no label group is skipped and reported either way. Raises
    :class:`CheckpointLayoutError` naming the file and the missing / unexpected / mismatched keys.
    """
    sd, origin = _read(source)
    for prefix in ("_orig_mod.", "module."):
        sd = strip_prefix(sd, prefix)
    backbone, head = _split(model)
    layout = layout or detect_layout(sd, backbone)
    if layout == "ours":
        target = model if head is not None else backbone
        sd = sd if head is not None else strip_prefix(sd, "backbone.")
        missing, unexpected = _check_fit(target, sd, origin, layout, strict)
        target.load_state_dict(sd, strict=False)
        return LoadReport(layout, missing=missing, unexpected=unexpected)
    body, classifier = _backbone_and_classifier(sd, layout, backbone)
    missing, unexpected = _check_fit(backbone, body, origin, layout, strict, "backbone." if head is not None else "")
    backbone.load_state_dict(body, strict=False)
    group = _classifier_group(classifier, head)
    if group is not None:
        fc = head.fc[group]
        with torch.no_grad():
            fc.weight.copy_(classifier["weight"].reshape(fc.weight.shape))
            fc.bias.copy_(classifier["bias"])
    skipped = [] if group is not None else sorted(f"classifier.{k}" for k in classifier)
    return LoadReport(layout, head_group=group, skipped=skipped, missing=missing, unexpected=unexpected)
