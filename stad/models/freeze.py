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


def set_trainable(model: nn.Module, mode: str = "full", *, last_blocks: int = 1) -> list[str]:
    """Set ``requires_grad`` per mode on an ActionDetector; returns the trainable names.

    * full: everything; frozen: nothing; linear_probe: ``head.*`` only;
    * partial: head + the last ``last_blocks`` ViT blocks (and the final ViT norm) and the
      last ``last_blocks`` SlowFast stages (with their laterals);
    * lora: head + LoRA adapters (apply :func:`stad.models.lora.apply_lora` first).
    """
    if mode not in MODES:
        raise ValueError(f"unknown freezing mode {mode!r}; choose from {MODES}")
    depth = {"vit": 0, "slowfast": 4}
    for name, _ in model.named_parameters():
        block = _block_id(name)
        if block and block[0] == "vit":
            depth["vit"] = max(depth["vit"], block[1] + 1)
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


def param_groups(model: nn.Module, *, lr: float, weight_decay: float = 0.0, backbone_lr_scale: float = 1.0,
                 no_decay_norm_bias: bool = True) -> list[dict]:
    """Optimizer groups over trainable parameters: {backbone, head} x {decay, no decay}.

    Norm weights, biases and position embeddings get no weight decay when ``no_decay_norm_bias``.
    Each group carries a ``name`` for logging; empty groups are omitted.
    """
    groups: dict[tuple[str, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = "head" if name.startswith("head.") else "backbone"
        decay = not (no_decay_norm_bias and _no_decay(name, param))
        groups.setdefault((part, decay), []).append(param)
    out = []
    for (part, decay), params in sorted(groups.items()):
        out.append({"name": f"{part}_{'decay' if decay else 'no_decay'}", "params": params,
                    "lr": lr * (backbone_lr_scale if part == "backbone" else 1.0),
                    "weight_decay": weight_decay if decay else 0.0})
    return out
