"""RoI feature extraction shared by the heads."""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.ops import roi_align


def scale_rois(rois: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[N, 5] (clip, x1, y1, x2, y2) normalised -> same in feature-map pixels (new tensor)."""
    scale = rois.new_tensor([1.0, width, height, width, height])
    return rois.detach() * scale


def roi_maps(feature_map: torch.Tensor, rois: torch.Tensor, roi_size: int = 7) -> torch.Tensor:
    """RoIAlign: [B, C, H, W], [N, 5] (clip, normalised x1, y1, x2, y2) -> [N, C, roi_size, roi_size]."""
    if rois.shape[0] == 0:
        return feature_map.new_zeros(0, feature_map.shape[1], roi_size, roi_size)
    height, width = feature_map.shape[-2:]
    return roi_align(feature_map, scale_rois(rois, height, width), (roi_size, roi_size))


def roi_maps_traced(feature_map: torch.Tensor, rois: torch.Tensor, roi_size: int = 7) -> torch.Tensor:
    """:func:`roi_maps` without the Python branch on an empty ``rois`` (for tracing / export: one
    graph for any N >= 0; RoIAlign of zero RoIs is an empty [0, C, s, s] in every runtime)."""
    height, width = feature_map.shape[-2:]
    return roi_align(feature_map, scale_rois(rois, height, width), (roi_size, roi_size))


def roi_features(feature_map: torch.Tensor, rois: torch.Tensor, roi_size: int = 7) -> torch.Tensor:
    """RoIAlign (roi_size x roi_size) then max over the bins: [B, C, H, W], [N, 5] -> [N, C]."""
    return roi_maps(feature_map, rois, roi_size).amax((2, 3))


def left_right_asymmetry(maps: torch.Tensor) -> torch.Tensor:
    """Max over the left half of each RoI map minus max over the right half: [N, C, s, s] -> [N, C].

    A mirrored clip negates it (up to how mirror-symmetric the features are), so it carries which
    way an actor faces, which the max over the whole box (:func:`roi_features`) mostly loses.
    """
    half = maps.shape[-1] // 2
    return maps[..., :half].amax((2, 3)) - maps[..., -half:].amax((2, 3))


def connect_empty(logits: torch.Tensor, feature_map: torch.Tensor, head: nn.Module) -> torch.Tensor:
    """Empty ``logits`` [0, K] kept in the graph of ``feature_map`` and every head parameter (zero gradients),
    so an all-empty batch still uses every parameter, backbone included (DistributedDataParallel)."""
    return logits + 0.0 * (feature_map.sum() + sum(p.sum() for p in head.parameters()))
