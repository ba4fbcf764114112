"""LoRA adapters for the ViT attention projections (``attn.qkv``, ``attn.proj``).

Load the official weights first, then :func:`apply_lora`: the wrapped layers keep their
``weight``/``bias`` names (LoRALinear subclasses nn.Linear), so the state dict only gains
``lora_a``/``lora_b``/``lora_scaling`` entries. :func:`merge_lora` folds the adapters back into plain
Linears; :func:`merge_lora_state` does the same on a state dict.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F


class LoRALinear(nn.Linear):
    """y = x W^T + b + (alpha / rank) * dropout(x) A^T B^T with A [r, in], B [out, r] (B starts at 0)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rank: int = 8,
                 alpha: float = 16.0, dropout: float = 0.0, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.rank, self.scaling = rank, alpha / rank
        # in the state dict too, so that a file of adapters can be folded without the config (merge_lora_state)
        self.register_buffer("lora_scaling", torch.tensor(float(self.scaling), device=device), persistent=True)
        self.lora_a = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=dtype))
        self.lora_b = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> "LoRALinear":
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype, **kwargs)
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.weight.requires_grad_(linear.weight.requires_grad)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_a), self.lora_b)
        return super().forward(x) + self.scaling * update

    def merged(self) -> nn.Linear:
        linear = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.weight + self.scaling * self.lora_b @ self.lora_a)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear


def apply_lora(model: nn.Module, *, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
               targets: Iterable[str] = ("attn.qkv", "attn.proj"), freeze_base: bool = True) -> list[str]:
    """Replace every nn.Linear whose qualified name ends with one of ``targets`` by a LoRALinear.

    With ``freeze_base`` the wrapped layers' own weight/bias stop receiving gradients (the rest
    of the model is left as is; see :mod:`stad.models.freeze`). Returns the replaced names.
    """
    targets = tuple(targets)
    replaced = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and not isinstance(module, LoRALinear) and name.endswith(targets):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            layer = LoRALinear.from_linear(module, rank=rank, alpha=alpha, dropout=dropout)
            if freeze_base:
                layer.weight.requires_grad_(False)
                if layer.bias is not None:
                    layer.bias.requires_grad_(False)
            setattr(parent, child, layer)
            replaced.append(name)
    if not replaced:
        raise ValueError(f"no nn.Linear named *{targets} found for LoRA")
    return replaced


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRALinear into a plain nn.Linear in place; returns how many were merged."""
    count = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.merged())
            count += 1
    return count


def merge_lora_state(state_dict: dict) -> dict:
    """A state dict with every adapter (``X.lora_a``, ``X.lora_b``, ``X.lora_scaling``) folded into ``X.weight``:
    the keys of the model without LoRA (what :func:`merge_lora` gives), e.g. to load a LoRA fine-tuned
    checkpoint into a freshly built model for inference."""
    out = dict(state_dict)
    for key in [k for k in state_dict if k.endswith(".lora_a")]:
        prefix = key[: -len("lora_a")]
        if prefix + "lora_scaling" not in state_dict:
            raise KeyError(f"{prefix}lora_scaling: the adapter's scale is not in the state dict")
        a, b = out.pop(prefix + "lora_a"), out.pop(prefix + "lora_b")
        scaling = out.pop(prefix + "lora_scaling")
        out[prefix + "weight"] = out[prefix + "weight"] + scaling.to(b.dtype) * (b @ a)
    return out


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if n.endswith(("lora_a", "lora_b"))]
