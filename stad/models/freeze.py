"""Freezing presets and optimizer parameter groups (linear probe, partial fine-tune, LoRA).

    set_trainable(model, "linear_probe")            # only the head learns
    set_trainable(model, "partial", last_blocks=2)  # head + last 2 ViT blocks / SlowFast stages
    groups = param_groups(model, lr=1e-3, weight_decay=1e-4, backbone_lr_scale=0.1)
    optimizer = torch.optim.AdamW(groups)
"""
from __future__ import annotations

import re

import torch.nn as nn

MODES = ("full", "linear_probe", "partial", "lora", "frozen")


def _block_id(name: str) -> tuple[str, int] | None:
    """('vit', i) for ViT block i, ('slowfast', stage) for SlowFast res stage; None otherwise."""
    match = re.search(r"(?:^|\.)blocks\.(\d+)\.", name)
    if match:
        return "vit", int(match.group(1))
    match = re.search(r"(?:^|\.)(?:slow|fast)_res(\d)\.|(?:^|\.)Tconv(\d)\.", name)
    if match:
        return "slowfast", int(match.group(1) or match.group(2))
    return None


def _vit_depth(model: nn.Module) -> int:
    """Number of ViT blocks in ``model`` (0 without a ViT)."""
    return 1 + max((b[1] for n, _ in model.named_parameters() if (b := _block_id(n)) and b[0] == "vit"), default=-1)


def set_trainable(model: nn.Module, mode: str = "full", *, last_blocks: int = 1) -> list[str]:
    """Set ``requires_grad`` per mode on an ActionDetector; returns the trainable names.

    * full: everything; frozen: nothing; linear_probe: ``head.*`` only;
    * partial: head + the last ``last_blocks`` ViT blocks (and the final ViT norm) and the
      last ``last_blocks`` SlowFast stages (with their laterals);
    * lora: head + LoRA adapters (apply :func:`stad.models.lora.apply_lora` first).
    """
    if mode not in MODES:
        raise ValueError(f"unknown freezing mode {mode!r}; choose from {MODES}")
    depth = {"vit": _vit_depth(model), "slowfast": 4}
    for name, param in model.named_parameters():
        in_head = name.startswith("head.")
        if mode in ("full", "frozen"):
            trainable = mode == "full"
        elif mode == "linear_probe":
            trainable = in_head
        elif mode == "lora":
            trainable = in_head or name.endswith(("lora_a", "lora_b"))
        else:
            block = _block_id(name)
            late = block is not None and block[1] >= depth[block[0]] - last_blocks + (block[0] == "slowfast")
            vit_norm = bool(re.search(r"(?:^|\.)vit\.norm\.|^backbone\.norm\.", name))
            trainable = in_head or late or vit_norm
        param.requires_grad_(trainable)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim <= 1 or name.endswith(("pos_embed", "q_bias", "v_bias"))


def vit_layer_id(name: str, num_blocks: int) -> int | None:
    """VideoMAE's layer index for layer-wise LR decay: 0 = patch/pos embedding, i+1 = block i,
    num_blocks+1 = final norm; None for parameters outside a ViT."""
    if re.search(r"(?:^|\.)(patch_embed\.|pos_embed$)", name) and "slowfast" not in name:
        return 0
    block = _block_id(name)
    if block and block[0] == "vit":
        return block[1] + 1
    if re.search(r"(?:^|\.)vit\.norm\.|^backbone\.norm\.|^norm\.", name):
        return num_blocks + 1
    return None


def param_groups(model: nn.Module, *, lr: float, weight_decay: float = 0.0, backbone_lr_scale: float = 1.0,
                 no_decay_norm_bias: bool = True, vit_layer_decay: float | None = None) -> list[dict]:
    """Optimizer groups over trainable parameters: {backbone, head} x {decay, no decay} [x ViT layer].

    Norm weights, biases and position embeddings get no weight decay when ``no_decay_norm_bias``.
    ``vit_layer_decay`` (e.g. 0.75, VideoMAE fine-tuning) scales the LR of ViT layer ``i`` by
    ``decay ** (num_blocks + 1 - i)`` on top of ``backbone_lr_scale``. Each group carries a
    ``name`` for logging; empty groups are omitted.
    """
    num_blocks = _vit_depth(model)
    groups: dict[tuple[str, bool, int | None], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = "head" if name.startswith("head.") else "backbone"
        decay = not (no_decay_norm_bias and _no_decay(name, param))
        layer = vit_layer_id(name, num_blocks) if (vit_layer_decay and part == "backbone") else None
        groups.setdefault((part, decay, layer), []).append(param)
    out = []
    for (part, decay, layer), params in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or -1)):
        scale = backbone_lr_scale if part == "backbone" else 1.0
        if layer is not None:
            scale *= vit_layer_decay ** (num_blocks + 1 - layer)
        suffix = "" if layer is None else f"_vit_layer{layer}"
        out.append({"name": f"{part}_{'decay' if decay else 'no_decay'}{suffix}", "params": params,
                    "lr": lr * scale, "weight_decay": weight_decay if decay else 0.0})
    return out
