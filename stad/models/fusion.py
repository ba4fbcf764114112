"""Dual-stream backbone ("VITSF") and the fusions that turn its maps into the one map the heads use.

Every backbone returns a list of 5-D maps ``[B, C_i, T_i, H_i, W_i]``. :class:`TemporalPoolFusion`
averages each over time, resizes them to one spatial grid and concatenates the channels, giving
the ``[B, sum C_i, H, W]`` map the RoI heads work on (ACAR-Net does the same inside its head).
:class:`ViTAdapterFusion` is the Chaotic World reference system's variant (BatchNorm + valid 3x3
convolution on the ViT map, [slow, fast, vit] on the SlowFast grid). ``build_fusion(name, ...)``.
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
        size = self._vit_size(int(vit_clip.shape[-2]), int(vit_clip.shape[-1]))  # ints while tracing too
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


class ViTAdapterFusion(nn.Module):
    """The Chaotic World reference system's fusion (the first step of its ACAR head), ``"cw_reference"``.

    Input: DualStreamBackbone's ``[vit, slow, fast]``. The ViT map goes through a BatchNorm3d
    (``vit_bn``) and a ``(1, k, k)`` Conv3d without padding (``vit_conv``; k = 3 turns ViT-g's 16x16
    cells at 224x224 into 14x14, SlowFast's grid there). Then every map is adaptively average-pooled
    to ``(1, H, W)`` of the first SlowFast map (over all of time, and onto its spatial grid), and the
    channels are concatenated as ``[slow, fast, vit]``: ``[B, C_slow + C_fast + C_vit, H, W]``.

    The reference keeps these two layers in its head (``head.BN_vit``, ``head.conv_auto``);
    :func:`stad.models.checkpoints.filter_cw_vitsf` maps them here. They are trained with the head:
    ``vit_bn.freeze_with_backbone`` is False, so the engine's ``freeze_bn`` (which the reference
    applies to its backbone only) leaves this BatchNorm in training mode.

    Args:
        vit_channels: channels of the ViT map (1408 for ViT-g).
        kernel_size: spatial kernel of ``vit_conv`` (the reference: 3).
    """

    def __init__(self, vit_channels: int, kernel_size: int = 3):
        super().__init__()
        self.vit_bn = nn.BatchNorm3d(vit_channels)
        self.vit_bn.freeze_with_backbone = False
        self.vit_conv = nn.Conv3d(vit_channels, vit_channels, kernel_size=(1, kernel_size, kernel_size))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """[vit [B,Cv,Tv,Hv,Wv], slow [B,Cs,Ts,H,W], fast, ...] -> [B, Cs + Cf + ... + Cv, H, W]."""
        if len(features) < 2 or any(f.ndim != 5 for f in features):
            raise ValueError("ViTAdapterFusion needs [vit, slow, fast, ...] 5-D maps (DualStreamBackbone's output)")
        vit, *others = features
        maps = others + [self.vit_conv(self.vit_bn(vit))]
        height, width = others[0].shape[-2:]
        return torch.cat([F.adaptive_avg_pool3d(m, (1, height, width)).squeeze(2) for m in maps], dim=1)


# name -> (factory(backbone, output_size) -> fusion); chosen by build_action_model(fusion=...)
def _temporal_pool(backbone: nn.Module, output_size: tuple[int, int] | None) -> nn.Module:
    return TemporalPoolFusion(output_size)


def _cw_reference(backbone: nn.Module, output_size: tuple[int, int] | None) -> nn.Module:
    if not isinstance(backbone, DualStreamBackbone):
        raise ValueError("fusion 'cw_reference' adapts the ViT map of a dual-stream backbone ('vitsf'); "
                         f"got {type(backbone).__name__}")
    if output_size is not None:
        raise ValueError("fusion 'cw_reference' fuses on the SlowFast grid; fusion_size must be None")
    return ViTAdapterFusion(backbone.vit.out_channels[0])


FUSIONS = {"temporal_pool": _temporal_pool, "cw_reference": _cw_reference}


def build_fusion(name: str, backbone: nn.Module, output_size: tuple[int, int] | None = None) -> nn.Module:
    """A fusion by name: ``temporal_pool`` (default, :class:`TemporalPoolFusion`) or ``cw_reference``
    (:class:`ViTAdapterFusion`, the Chaotic World reference's [slow, fast, adapted ViT] on the slow grid)."""
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; choose from {sorted(FUSIONS)}")
    return FUSIONS[name](backbone, output_size)
