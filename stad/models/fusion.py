"""Dual-stream backbone ("VITSF") and the temporal-pool-and-concat fusion used before the heads.

Every backbone returns a list of 5-D maps ``[B, C_i, T_i, H_i, W_i]``. :class:`TemporalPoolFusion`
averages each over time, resizes them to one spatial grid and concatenates the channels, giving
the ``[B, sum C_i, H, W]`` map the RoI heads work on (ACAR-Net does the same inside its head).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DualStreamBackbone(nn.Module):
    """Runs a ViT and a SlowFast on the same clip and returns all their maps: [vit, slow, fast].

    Args:
        vit: a VisionTransformer3D (or any backbone returning a list of maps).
        slowfast: a SlowFast backbone.
        vit_frame_stride: the ViT sees ``clip[:, :, ::vit_frame_stride]`` (e.g. 2 to give a
            16-frame ViT the even frames of a 32-frame SlowFast clip).
        vit_input_size: (H, W) the ViT's frames are resized to (bilinear). ``None``: keep the
            clip's size, or resize to the nearest multiple of the ViT patch when it is not one
            (e.g. 256x341 -> 252x336 for patch 14).
    """

    def __init__(self, vit: nn.Module, slowfast: nn.Module, vit_frame_stride: int = 1,
                 vit_input_size: tuple[int, int] | None = None):
        super().__init__()
        self.vit = vit
        self.slowfast = slowfast
        self.vit_frame_stride = vit_frame_stride
        self.vit_input_size = tuple(vit_input_size) if vit_input_size is not None else None
        self.out_channels = list(vit.out_channels) + list(slowfast.out_channels)
        self.feature_stride = max(vit.feature_stride, slowfast.feature_stride)

    def forward(self, clip: torch.Tensor) -> list[torch.Tensor]:
        """clip [B, 3, T, H, W] -> [vit [B, Cv, ...], slow [B, Cs, ...], fast [B, Cf, ...]]."""
        vit_clip = clip[:, :, :: self.vit_frame_stride] if self.vit_frame_stride > 1 else clip
        size = self._vit_size(vit_clip.shape[-2], vit_clip.shape[-1])
        if size != tuple(vit_clip.shape[-2:]):
            vit_clip = F.interpolate(vit_clip, size=(vit_clip.shape[2],) + size, mode="trilinear", align_corners=False)
        return list(self.vit(vit_clip)) + list(self.slowfast(clip))

    def _vit_size(self, height: int, width: int) -> tuple[int, int]:
        if self.vit_input_size is not None:
            return self.vit_input_size
        patch = self.vit.feature_stride
        return tuple(max(patch, round(side / patch) * patch) for side in (height, width))


class TemporalPoolFusion(nn.Module):
    """Average each map over time, resize to a common grid, concatenate channels.

    Args:
        output_size: (H, W) of the fused grid; ``None`` = the largest grid among the inputs.
        mode: interpolation mode for maps whose grid differs ('bilinear' or 'nearest').
    """

    def __init__(self, output_size: tuple[int, int] | None = None, mode: str = "bilinear"):
        super().__init__()
        self.output_size = output_size
        self.mode = mode

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """list of [B, C_i, T_i, H_i, W_i] -> [B, sum C_i, H, W]."""
        if not features:
            raise ValueError("TemporalPoolFusion needs at least one feature map")
        pooled = [f.mean(dim=2) if f.ndim == 5 else f for f in features]
        size = self.output_size or max((p.shape[-2], p.shape[-1]) for p in pooled)
        size = tuple(size)
        resized = []
        for p in pooled:
            if tuple(p.shape[-2:]) != size:
                extra = {"align_corners": False} if self.mode in ("bilinear", "bicubic") else {}
                p = F.interpolate(p, size=size, mode=self.mode, **extra)
            resized.append(p)
        return resized[0] if len(resized) == 1 else torch.cat(resized, dim=1)
