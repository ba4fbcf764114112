"""Linear head: RoIAlign + max-pool on the fused map, dropout, one linear layer (ACAR baseline)."""
from __future__ import annotations

import torch
import torch.nn as nn

from stad.models.heads.common import connect_empty, roi_features
from stad.models.neck import RoIBatch
from stad.models.registry import register_model


class LinearHead(nn.Module):
    """Args: in_channels (C of the fused map), num_classes, roi_size, dropout, bias (ACAR: False)."""

    def __init__(self, in_channels: int, num_classes: int, *, roi_size: int = 7, dropout: float = 0.0,
                 bias: bool = False):
        super().__init__()
        self.roi_size = roi_size
        self.num_classes = num_classes
        self.fc = nn.Linear(in_channels, num_classes, bias=bias)
        self.dp = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, feature_map: torch.Tensor, rois: RoIBatch) -> torch.Tensor:
        """feature_map [B, C, H, W], rois -> logits [N, K]."""
        pooled = roi_features(feature_map, rois.rois, self.roi_size)  # [N, C]
        if self.dp is not None:
            pooled = self.dp(pooled)
        logits = self.fc(pooled)
        if len(rois) == 0:
            logits = connect_empty(logits, feature_map, self)
        return logits


@register_model("linear", kind="head")
def linear(*, in_channels: int, num_classes: int, **kwargs) -> LinearHead:
    """ACAR-Net's baseline head (RoIAlign + max -> FC), also the linear probe; keyword arguments: :class:`LinearHead`'s."""
    return LinearHead(in_channels, num_classes, **kwargs)
