"""Checkpoint filters: map official state dicts onto this package's modules (load with strict=True).

Official layouts (manifests under tests/fixtures/manifests/, produced by running the official code):

* ACAR-Net model_zoo (AVA-trained): ``{"state_dict": {...}}`` saved from
  ``DistributedDataParallel(AVA_model)``: ``module.backbone.module.<slowfast>``,
  ``module.head.module.<head>`` (the neck has no parameters).
* ACAR-Net ``pretrained/`` (Kinetics backbones): plain SlowFast keys (``fast_conv1.weight`` ...),
  possibly inside ``state_dict``.
* VideoMAE / VideoMAEv2 fine-tuned: ``{"model" or "module": {...}}`` with ``patch_embed.*``,
  ``blocks.*``, ``fc_norm.*``, ``head.*`` (plus ``pos_embed`` when learned); pretrained:
  ``encoder.*`` (+ ``decoder.*``, ``encoder_to_decoder.*``, ``mask_token``).
* Chaotic World reference system (VITSF): ``module.backbone.module.<slowfast>``,
  ``module.backbone.submodule.<VideoMAEv2 ViT>``, ``module.head.module.<ACAR head + BN_vit, conv_auto>``.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn as nn

from stad.models.vit import VisionTransformer3D, resample_pos_embed

StateDict = dict[str, torch.Tensor]


def unwrap_checkpoint(checkpoint: Mapping, keys: tuple[str, ...] = ("state_dict", "model", "module")) -> StateDict:
    """Return the weights dict from a checkpoint that may nest it under one of ``keys``."""
    for key in keys:
        value = checkpoint.get(key) if isinstance(checkpoint, Mapping) else None
        if isinstance(value, Mapping) and value and all(isinstance(k, str) for k in value):
            return dict(value)
    return dict(checkpoint)


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """Remove ``prefix`` from every key that has it; other keys are kept unchanged."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def _select(state_dict: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _acar_parts(checkpoint: Mapping) -> tuple[StateDict, StateDict]:
    """(backbone, head) state dicts from any ACAR-Net checkpoint layout."""
    sd = strip_prefix(unwrap_checkpoint(checkpoint, ("state_dict",)), "module.")
    if any(k.startswith(("backbone.", "head.")) for k in sd):
        return _select(sd, "backbone.module."), _select(sd, "head.module.")
    return sd, {}  # a bare backbone (ACAR-Net pretrained/ files)


def filter_acar_slowfast(checkpoint: Mapping) -> StateDict:
    """ACAR-Net full-model or backbone checkpoint -> state dict of :class:`~stad.models.slowfast.SlowFast`."""
    backbone, _ = _acar_parts(checkpoint)
    if not backbone:
        raise KeyError("no SlowFast weights found (expected 'module.backbone.module.*' or bare SlowFast keys)")
    return backbone


def filter_acar_head(checkpoint: Mapping) -> StateDict:
    """ACAR-Net full-model checkpoint -> state dict of :class:`~stad.models.heads.ACARHead` / ``LinearHead``."""
    _, head = _acar_parts(checkpoint)
    if not head:
        raise KeyError("no head weights found (expected 'module.head.module.*')")
    return head


def filter_acar_detector(checkpoint: Mapping) -> StateDict:
    """ACAR-Net AVA model -> state dict of a SlowFast :class:`~stad.models.action_model.ActionDetector`."""
    backbone, head = _acar_parts(checkpoint)
    return {**{f"backbone.{k}": v for k, v in backbone.items()}, **{f"head.{k}": v for k, v in head.items()}}


_VIDEOMAE_DROP = ("head.", "decoder.", "encoder_to_decoder.", "mask_token", "norm_pix")


def _infer_grid(num_tokens: int, num_frames_tokens: int) -> tuple[int, int, int]:
    side = math.isqrt(num_tokens // num_frames_tokens)
    if side * side * num_frames_tokens != num_tokens:
        raise ValueError(f"cannot infer a square token grid from {num_tokens} tokens and T'={num_frames_tokens}")
    return num_frames_tokens, side, side


def filter_videomae(checkpoint: Mapping, model: nn.Module | None = None) -> StateDict:
    """VideoMAE / VideoMAEv2 fine-tuned or pretrained checkpoint -> :class:`VisionTransformer3D` keys.

    Unwraps ``model``/``module``, strips ``_orig_mod.``, DDP ``module.``, ``encoder.``/``backbone.``;
    drops the classifier and the MAE decoder; renames ``fc_norm`` to ``norm``. With ``model``
    given, a learned ``pos_embed`` is resampled to the model's grid (assuming the checkpoint's
    temporal token count equals the model's unless the token count says otherwise) and a
    ``pos_embed`` is dropped when the model uses the fixed sin-cos table.
    """
    sd = unwrap_checkpoint(checkpoint, ("model", "module", "state_dict"))
    for prefix in ("_orig_mod.", "module.", "backbone.", "encoder."):
        sd = strip_prefix(sd, prefix)
    out: StateDict = {}
    for key, value in sd.items():
        if key.startswith(_VIDEOMAE_DROP):
            continue
        if key.startswith("fc_norm."):
            key = "norm." + key[len("fc_norm."):]
        out[key] = value
    if model is not None and "pos_embed" in out:
        vit = model if isinstance(model, VisionTransformer3D) else None
        if vit is not None and not vit.learned_pos_embed:
            del out["pos_embed"]
        elif vit is not None and out["pos_embed"].shape != vit.pos_embed.shape:
            old_grid = _infer_grid(out["pos_embed"].shape[1], vit.grid[0])
            out["pos_embed"] = resample_pos_embed(out["pos_embed"], old_grid, vit.grid)
    return out


# The CW reference's head.module.* keys that belong to our fusion (stad.models.fusion.ViTAdapterFusion)
_CW_FUSION = {"BN_vit.": "fusion.vit_bn.", "conv_auto.": "fusion.vit_conv."}
# ViT keys its forward never uses: the K710/80-class classifier and fc_norm (it returns the last block's
# tokens as they are); our ViT stream is built without them (final_norm=False)
_CW_VIT_UNUSED = ("head.", "fc_norm.", "norm.")


def filter_cw_vitsf(checkpoint: Mapping) -> StateDict:
    """Chaotic World reference system (github.com/jfightyr/SlowFast-Meet-ViT) full model -> our dual-stream
    :class:`~stad.models.action_model.ActionDetector` built with ``fusion="cw_reference"`` and a ViT with
    ``final_norm=False`` (configs/chaotic_world/*.yaml).

    Its ``AVA_model`` (saved from DDP, ``module.`` prefix, possibly inside ``state_dict``):

    * ``backbone.module.*`` (ACAR-Net SlowFast) -> ``backbone.slowfast.*``;
    * ``backbone.submodule.*`` (VideoMAEv2 ViT-g) -> ``backbone.vit.*`` through :func:`filter_videomae`;
      its classifier ``head.*`` and ``fc_norm.*`` are dropped (the reference's forward never applies them);
    * ``head.module.BN_vit.*`` / ``head.module.conv_auto.*`` -> ``fusion.vit_bn.*`` / ``fusion.vit_conv.*``;
    * ``head.module.*`` -> ``head.*`` (ACAR head; ``conv_reduce`` reads [slow, fast, vit] channels as our
      cw_reference fusion concatenates them, so no permutation is needed).

    Keys outside these prefixes are kept unchanged, so a strict load names them.
    """
    sd = strip_prefix(unwrap_checkpoint(checkpoint, ("state_dict",)), "module.")
    vit = {k[len("backbone.submodule."):]: v for k, v in sd.items() if k.startswith("backbone.submodule.")}
    if not vit:
        raise KeyError("not a Chaotic World VITSF checkpoint (no backbone.submodule.* keys)")
    out: StateDict = {}
    for key, value in sd.items():
        if key.startswith("backbone.submodule."):
            continue
        if key.startswith("backbone.module."):
            out["backbone.slowfast." + key[len("backbone.module."):]] = value
        elif key.startswith("head.module."):
            rest = key[len("head.module."):]
            fused = next((new + rest[len(old):] for old, new in _CW_FUSION.items() if rest.startswith(old)), None)
            out[fused or "head." + rest] = value
        else:
            out[key] = value
    vit = {k: v for k, v in vit.items() if not k.startswith(_CW_VIT_UNUSED)}
    out.update({f"backbone.vit.{k}": v for k, v in filter_videomae(vit).items()})
    return out


def load_checkpoint(module: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True):
    """``module.load_state_dict`` with an error listing missing/unexpected keys (first few)."""
    result = module.load_state_dict(state_dict, strict=False)
    if strict and (result.missing_keys or result.unexpected_keys):
        raise KeyError(f"{type(module).__name__}: missing {result.missing_keys[:8]} "
                       f"({len(result.missing_keys)}), unexpected {result.unexpected_keys[:8]} "
                       f"({len(result.unexpected_keys)})")
    return result
