"""Linear head: RoIAlign + max-pool on the fused map, dropout, one linear layer (ACAR baseline)."""
from __future__ import annotations

import torch
import torch.nn as nn

from stad.models.heads.common import connect_empty, roi_features, roi_maps_traced
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


    def forward_one_clip(self, feature_map: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits of ONE clip for tracing / export: feature_map [1, C, H, W], boxes [N, 4] -> [N, K]."""
        if self.training:
            raise RuntimeError("forward_one_clip is the eval-mode (export) path; call .eval() first")
        rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], dim=1)
        return self.fc(roi_maps_traced(feature_map, rois, self.roi_size).amax((2, 3)))

@register_model("linear", kind="head")
def linear(*, in_channels: int, num_classes: int, **kwargs) -> LinearHead:
    """ACAR-Net's baseline head (RoIAlign + max -> FC), also the linear probe; keyword arguments: :class:`LinearHead`'s."""
    return LinearHead(in_channels, num_classes, **kwargs)
