"""Clip-level recognizer: registered backbone -> pooled clip feature -> clip head.

    >>> model = build_recognizer("swin3d_toy", head="multi_head", label_groups={"body": 7, "action": 52})
    >>> logits = model(clips)                  # clips [B, 3, T, H, W] -> {"body": [B, 7], "action": [B, 52]}
    >>> feats = model.forward_features(clips)  # [B, model.feature_dim]
    >>> logits = model.forward_head(feats)
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from stad.models.recognition.heads import CLIP_HEADS, ClipHead, build_clip_head
from stad.models.registry import get_entry


def pooled_features(backbone: nn.Module, clips: torch.Tensor) -> torch.Tensor:
    """clips [B, 3, T, H, W] -> [B, D]: the backbone's ``forward_pooled`` if it has one, else the
    spatio-temporal mean of each of its maps, concatenated in order (SlowFast: [slow, fast], D = sum C_i)."""
    if hasattr(backbone, "forward_pooled"):
        return backbone.forward_pooled(clips)
    return torch.cat([m.mean(dim=tuple(range(2, m.ndim))) for m in backbone(clips)], dim=1)


class Recognizer(nn.Module):
    """Clip classifier over one or more label groups.

    Args:
        backbone: a backbone of :mod:`stad.models` (maps list + ``out_channels``; optionally ``forward_pooled``).
        head: a :class:`ClipHead` on ``sum(backbone.out_channels)`` features.
    """

    def __init__(self, backbone: nn.Module, head: ClipHead):
        super().__init__()
        self.backbone = backbone
        self.head = head
        if head.in_features != self.feature_dim:
            raise ValueError(f"head takes {head.in_features} features, the backbone gives {self.feature_dim}")

    @property
    def feature_dim(self) -> int:
        """D, the size of :meth:`forward_features`' output."""
        return int(sum(self.backbone.out_channels))

    @property
    def label_groups(self) -> dict[str, int]:
        return self.head.num_classes

    def forward_features(self, clips: torch.Tensor) -> torch.Tensor:
        """clips [B, 3, T, H, W] -> pooled clip features [B, D] (e.g. cached for linear probing)."""
        return pooled_features(self.backbone, clips)

    def forward_head(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """features [B, D] -> {group: logits [B, K_group]}."""
        return self.head(features)

    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """clips [B, 3, T, H, W] -> {group: raw logits [B, K_group]}, one entry per label group, in order."""
        return self.forward_head(self.forward_features(clips))


def build_recognizer(backbone: str, backbone_kwargs: Mapping[str, Any] | None = None, head: str = "linear",
                     head_kwargs: Mapping[str, Any] | None = None, *,
                     label_groups: Mapping[str, int]) -> Recognizer:
    """A :class:`Recognizer` from a registered backbone name and a clip head name.

    Args:
        backbone: a registered backbone ('swin3d_t', 'swin3d_b', 'mvit_v2_s', 'r2plus1d_18', 's3d',
            'slowfast_r50', 'vit_base', ...; ``list_models("backbone")``).
        backbone_kwargs: the backbone factory's keyword arguments.
        head: 'linear' (one label group) or 'multi_head' (one Linear per group).
        head_kwargs: the head's keyword arguments (``dropout``, ``init_std``).
        label_groups: ordered {group: number of classes}, e.g. {"action": 11} or {"body": 7, "action": 52}.
    """
    if head not in CLIP_HEADS:  # fail before building a (possibly large) backbone
        build_clip_head(head, 1, label_groups)
    net = get_entry(backbone, "backbone").factory(**dict(backbone_kwargs or {}))
    clip_head = build_clip_head(head, int(sum(net.out_channels)), label_groups, **dict(head_kwargs or {}))
    return Recognizer(net, clip_head)
