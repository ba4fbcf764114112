"""torchvision's MViTv2-S, R(2+1)D-18 and S3D as backbones (``weights=None``; no download).

Each keeps torchvision's modules under their torchvision names without the classifier, so a
torchvision state dict loads after dropping the classifier keys. forward: clip [B, 3, T, H, W] ->
[map [B, C, T', H', W']]; ``forward_pooled``: [B, C], the feature torchvision's classifier reads;
``out_channels`` and ``feature_stride`` as the other backbones (usable through the RoI neck).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
from torchvision.models import video as tv_video
from torchvision.models.video.mvit import MSBlockConfig, MViT

from stad.models.registry import register_model


def check_clip(clip: torch.Tensor, who: str) -> torch.Tensor:
    if clip.ndim != 5 or clip.shape[1] != 3:
        raise ValueError(f"{who} expects clips [B, 3, T, H, W], got {tuple(clip.shape)}")
    return clip


class MapBackbone(nn.Module):
    """Common part: ``forward`` = [forward_features]; ``forward_pooled`` = spatio-temporal mean."""

    out_channels: list[int]
    feature_stride: int

    def forward_features(self, clip: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, clip: torch.Tensor) -> list[torch.Tensor]:
        return [self.forward_features(clip)]

    def forward_pooled(self, clip: torch.Tensor) -> torch.Tensor:
        """clip [B, 3, T, H, W] -> [B, C] (mean over T', H', W')."""
        return self.forward_features(clip).mean(dim=(2, 3, 4))


class VideoResNetBackbone(MapBackbone):
    """torchvision VideoResNet (R(2+1)D, R3D, MC3) trunk: ``stem``, ``layer1..4``.

    forward_features: [B, 3, T, H, W] -> [B, 512, T/8, H/16, W/16] (layer4; torchvision averages it).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.stem = net.stem
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = [net.fc.in_features]
        self.feature_stride = 16

    def forward_features(self, clip: torch.Tensor) -> torch.Tensor:
        x = self.stem(check_clip(clip, "VideoResNet"))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class S3DBackbone(MapBackbone):
    """torchvision S3D ``features``: [B, 3, T, H, W] -> [B, 1024, T/8, H/32, W/32].

    ``forward_pooled`` is the global mean; torchvision's classifier averages 2x7x7 windows (stride 1)
    and then the window scores, which equals the global mean only on its 16x224x224 input
    (a 2x7x7 map): other sizes weigh border positions less there.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.features = net.features
        self.out_channels = [net.classifier[1].in_channels]
        self.feature_stride = 32

    def forward_features(self, clip: torch.Tensor) -> torch.Tensor:
        return self.features(check_clip(clip, "S3D"))


class MViTBackbone(MapBackbone):
    """torchvision MViT trunk (``conv_proj``, ``pos_encoding``, ``blocks``, ``norm``), fixed input size.

    forward_features: [B, 3, T, H, W] -> the normed patch tokens as [B, C, T/2, H/32, W/32] (class token
    dropped); forward_pooled: the normed class token [B, C], which torchvision's head reads. The
    input must have the size the model was built for (its relative positions are sized so).
    """

    def __init__(self, net: MViT):
        super().__init__()
        self.conv_proj, self.pos_encoding = net.conv_proj, net.pos_encoding
        self.blocks, self.norm = net.blocks, net.norm
        self.out_channels = [net.norm.normalized_shape[0]]
        self.input_size = (self.pos_encoding.temporal_size * net.conv_proj.stride[0],
                           *(s * st for s, st in zip(self.pos_encoding.spatial_size, net.conv_proj.stride[1:])))
        self.feature_stride = net.conv_proj.stride[1] * self._grid_stride(net)

    @staticmethod
    def _grid_stride(net: MViT) -> int:
        stride = 1
        for block in net.blocks:
            pool = block.attn.pool_q
            if pool is not None and pool.pool is not None:
                stride *= pool.pool.stride[-1]
        return stride

    def _tokens(self, clip: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """clip -> normed tokens [B, 1 + T'H'W', C] (class token first) and the grid (T', H', W')."""
        check_clip(clip, "MViT")
        if tuple(clip.shape[2:]) != self.input_size:
            raise ValueError(f"this MViT takes clips of T, H, W = {self.input_size}, got {tuple(clip.shape[2:])}")
        x = self.pos_encoding(self.conv_proj(clip).flatten(2).transpose(1, 2))
        thw = (self.pos_encoding.temporal_size,) + tuple(self.pos_encoding.spatial_size)
        for block in self.blocks:
            x, thw = block(x, thw)
        return self.norm(x), tuple(thw)

    def forward_features(self, clip: torch.Tensor) -> torch.Tensor:
        tokens, thw = self._tokens(clip)
        b, _, c = tokens.shape
        return tokens[:, 1:].transpose(1, 2).reshape(b, c, *thw)

    def forward_pooled(self, clip: torch.Tensor) -> torch.Tensor:
        return self._tokens(clip)[0][:, 0]


@register_model(kind="backbone")
def r2plus1d_18(**kwargs: Any) -> VideoResNetBackbone:
    """R(2+1)D-18 (torchvision r2plus1d_18, weights=None): maps [B, 512, T/8, H/16, W/16]."""
    return VideoResNetBackbone(tv_video.r2plus1d_18(weights=None, **kwargs))


@register_model(kind="backbone")
def s3d(**kwargs: Any) -> S3DBackbone:
    """S3D (torchvision s3d, weights=None): maps [B, 1024, T/8, H/32, W/32]."""
    return S3DBackbone(tv_video.s3d(weights=None, **kwargs))


@register_model(kind="backbone")
def mvit_v2_s(**kwargs: Any) -> MViTBackbone:
    """MViTv2-S (torchvision mvit_v2_s, weights=None), input 16x224x224 only: maps [B, 768, 8, 7, 7]."""
    return MViTBackbone(tv_video.mvit_v2_s(weights=None, **kwargs))


# mvit_toy: two blocks of widths 16 -> 32 -> 32 (heads 1, 2), the second one halving H and W
MVIT_TOY_BLOCKS = (MSBlockConfig(1, 16, 32, [3, 3, 3], [3, 3, 3], [1, 1, 1], [1, 4, 4]),
                   MSBlockConfig(2, 32, 32, [3, 3, 3], [3, 3, 3], [1, 2, 2], [1, 2, 2]))


@register_model(kind="backbone")
def mvit_toy(*, spatial_size: Sequence[int] = (64, 64), temporal_size: int = 4, **kwargs: Any) -> MViTBackbone:
    """Tiny MViTv2 (torchvision MViT class, two stages of width 16/32, MViTv2-S's block options) for CPU tests."""
    net = MViT(spatial_size=tuple(spatial_size), temporal_size=temporal_size, block_setting=list(MVIT_TOY_BLOCKS),
               residual_pool=True, residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True,
               stochastic_depth_prob=kwargs.pop("stochastic_depth_prob", 0.0), **kwargs)
    return MViTBackbone(net)
