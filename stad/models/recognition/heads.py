"""Clip-level classification heads: pooled clip feature [B, D] -> {label group: logits [B, K_group]}.

* ``linear``: I3D-style (MMAction2 ``I3DHead``): dropout, then one Linear, for exactly one label group.
* ``multi_head``: dropout, then one Linear per label group (MA-52: ``{"body": 7, "action": 52}``).

Both keep the Linear of group ``g`` at ``fc.<g>`` (state-dict keys ``head.fc.<g>.weight``/``bias`` in a
recognizer) and initialise it like I3DHead (normal, std ``init_std``; zero bias).
"""
from __future__ import annotations

import difflib
from typing import Callable, Mapping

import torch
import torch.nn as nn


def check_label_groups(label_groups: Mapping[str, int]) -> dict[str, int]:
    """``label_groups`` as a dict after checking names (non-empty, no '.') and sizes (int >= 1)."""
    if not label_groups:
        raise ValueError("label_groups is empty: give at least one group, e.g. {'action': 11}")
    out = {}
    for name, size in dict(label_groups).items():
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"label group name {name!r} must be a non-empty string without '.'")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"label group {name!r} needs a class count >= 1, got {size!r}")
        out[name] = size
    return out


class ClipHead(nn.Module):
    """Dropout, then one Linear per label group.

    Args:
        in_features: D, the pooled clip feature size.
        label_groups: ordered {group name: number of classes}.
        dropout: dropout on the pooled feature (I3D: 0.5).
        init_std: std of the normal initialisation of the weights (I3DHead: 0.01).
    """

    def __init__(self, in_features: int, label_groups: Mapping[str, int], *, dropout: float = 0.5,
                 init_std: float = 0.01):
        super().__init__()
        self.label_groups = check_label_groups(label_groups)
        self.in_features = in_features
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.ModuleDict({g: nn.Linear(in_features, k) for g, k in self.label_groups.items()})
        for layer in self.fc.values():
            nn.init.normal_(layer.weight, std=init_std)
            nn.init.zeros_(layer.bias)

    @property
    def num_classes(self) -> dict[str, int]:
        return dict(self.label_groups)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """features [B, D] -> {group: logits [B, K_group]} in the order of ``label_groups``."""
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise ValueError(f"clip head expects features [B, {self.in_features}], got {tuple(features.shape)}")
        x = self.dropout(features)
        return {g: layer(x) for g, layer in self.fc.items()}


def linear_head(in_features: int, label_groups: Mapping[str, int], **kwargs) -> ClipHead:
    """I3D-style linear head (dropout + Linear) for exactly one label group."""
    groups = check_label_groups(label_groups)
    if len(groups) != 1:
        raise ValueError(f"head 'linear' takes exactly one label group, got {len(groups)} ({list(groups)}); "
                         "use head 'multi_head' for several")
    return ClipHead(in_features, groups, **kwargs)


def multi_head(in_features: int, label_groups: Mapping[str, int], **kwargs) -> ClipHead:
    """One Linear per label group after a shared dropout (MA-52: body 7 + action 52)."""
    return ClipHead(in_features, label_groups, **kwargs)


CLIP_HEADS: dict[str, Callable[..., ClipHead]] = {"linear": linear_head, "multi_head": multi_head}


def build_clip_head(name: str, in_features: int, label_groups: Mapping[str, int], **kwargs) -> ClipHead:
    """The clip head ``name`` ('linear', 'multi_head'); an unknown name raises KeyError with a hint."""
    if name not in CLIP_HEADS:
        close = difflib.get_close_matches(name, list(CLIP_HEADS), n=2)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown recognition head {name!r}{hint} (choose from {', '.join(CLIP_HEADS)})")
    return CLIP_HEADS[name](in_features, label_groups, **kwargs)
