"""SlowFast-ResNet backbone whose parameter names follow ACAR-Net's ``models/backbones/slowfast.py``.

Keeping ACAR-Net's module names (``fast_res1.0.conv1``, ``Tconv2``, ``downsample_bn`` ...) means
its released Kinetics-pretrained backbones and AVA-trained detectors load with ``strict=True``
after only prefix stripping (see :func:`stad.models.checkpoints.filter_acar_slowfast`).

Input is one clip at the *fast* frame rate, ``[B, 3, T, H, W]``; the slow pathway sees every
``alpha``-th frame. Output is ``[slow [B, 32*width, T/alpha, H/16, W/16],
fast [B, 32*int(width*beta), T, H/16, W/16]]`` (res4 is dilated, not strided, as in ACAR-Net).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from stad.models.registry import register_model

EXPANSION = 4


class Bottleneck(nn.Module):
    """ResNet bottleneck: (T,1,1)/1x1 -> 1x3x3 (strided, dilated) -> 1x1, residual add."""

    def __init__(self, in_channels: int, planes: int, *, stride: int = 1, dilation: int = 1,
                 temporal_kernel: int = 1, project: bool = False):
        super().__init__()
        pad_t = temporal_kernel // 2
        self.conv1 = nn.Conv3d(in_channels, planes, (temporal_kernel, 1, 1), padding=(pad_t, 0, 0), bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, (1, 3, 3), stride=(1, stride, stride),
                               padding=(0, dilation, dilation), dilation=(1, dilation, dilation), bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if project:
            # ACAR-Net layout: conv inside a Sequential ("downsample.0"), its BN beside it.
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, planes * EXPANSION, 1, stride=(1, stride, stride), bias=False))
            self.downsample_bn = nn.BatchNorm3d(planes * EXPANSION)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample_bn(self.downsample(x))
        return self.relu(out + shortcut)


def _make_stage(in_channels: int, planes: int, blocks: int, *, stride: int, dilation: int,
                temporal_kernel: int) -> nn.Sequential:
    project = stride != 1 or in_channels != planes * EXPANSION
    layers = [Bottleneck(in_channels, planes, stride=stride, dilation=dilation,
                         temporal_kernel=temporal_kernel, project=project)]
    layers += [Bottleneck(planes * EXPANSION, planes, dilation=dilation, temporal_kernel=temporal_kernel)
               for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class SlowFast(nn.Module):
    """Two-pathway ResNet with fast->slow lateral connections (time-strided convs).

    Args:
        layers: bottleneck blocks per stage, e.g. (3, 4, 6, 3) for R50, (3, 4, 23, 3) for R101.
        alpha: frame-rate ratio fast/slow; the slow pathway takes every alpha-th input frame.
        beta: channel ratio fast/slow.
        tau: slow-pathway temporal stride in *raw video* frames. It does not change the network;
            the data pipeline should feed frames ``tau // alpha`` apart (see ``fast_frame_step``).
        width: stem width of the slow pathway (64 for the standard models).
        fuse_only_conv: lateral = Conv3d alone (ACAR R101) or Conv3d+BN+ReLU (ACAR R50).
        fuse_kernel_size: temporal kernel of the lateral convs.
        slow_full_span: choose slow frames spread over the whole clip (linspace) instead of
            ``[::alpha]`` (ACAR's R50 setting).
        frozen_bn: keep every BatchNorm in eval mode (running stats frozen) while training.
        frozen_bn_affine: additionally stop gradients to the BatchNorm affine parameters.
        zero_init_residual: zero the last BN scale of each block (for training from scratch).
    """

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), *, alpha: int = 8, beta: float = 0.125,
                 tau: int = 16, width: int = 64, fuse_only_conv: bool = True, fuse_kernel_size: int = 5,
                 slow_full_span: bool = False, frozen_bn: bool = False, frozen_bn_affine: bool = False,
                 zero_init_residual: bool = False):
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers must list 4 stage depths, got {layers}")
        self.alpha, self.beta, self.tau = alpha, beta, tau
        self.slow_full_span = slow_full_span
        self.frozen_bn = frozen_bn
        fast_planes = [int(width * 2 ** i * beta) for i in range(4)]
        slow_planes = [width * 2 ** i for i in range(4)]
        if min(fast_planes) < 1:
            raise ValueError(f"width={width} x beta={beta} leaves the fast pathway without channels")

        self.fast_conv1 = nn.Conv3d(3, fast_planes[0], (5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False)
        self.fast_bn1 = nn.BatchNorm3d(fast_planes[0])
        self.fast_relu = nn.ReLU(inplace=True)
        self.fast_maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.slow_conv1 = nn.Conv3d(3, width, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False)
        self.slow_bn1 = nn.BatchNorm3d(width)
        self.slow_relu = nn.ReLU(inplace=True)
        self.slow_maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

        strides, dilations = (1, 2, 2, 1), (1, 1, 1, 2)
        fast_in, slow_in = fast_planes[0], width
        for i in range(4):
            lateral_out = 2 * fast_in
            self.add_module(f"Tconv{i + 1}", self._lateral(fast_in, lateral_out, fuse_only_conv, fuse_kernel_size))
            self.add_module(f"fast_res{i + 1}", _make_stage(
                fast_in, fast_planes[i], layers[i], stride=strides[i], dilation=dilations[i], temporal_kernel=3))
            self.add_module(f"slow_res{i + 1}", _make_stage(
                slow_in + lateral_out, slow_planes[i], layers[i], stride=strides[i], dilation=dilations[i],
                temporal_kernel=1 if i < 2 else 3))
            fast_in, slow_in = fast_planes[i] * EXPANSION, slow_planes[i] * EXPANSION
        self.out_channels = [slow_in, fast_in]
        self.feature_stride = 16
        self._init_weights(zero_init_residual)
        if frozen_bn_affine:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm3d):
                    m.requires_grad_(False)

    def _lateral(self, cin: int, cout: int, only_conv: bool, kernel: int) -> nn.Module:
        conv = nn.Conv3d(cin, cout, (kernel, 1, 1), stride=(self.alpha, 1, 1), padding=(kernel // 2, 0, 0), bias=False)
        if only_conv:
            return conv
        return nn.Sequential(conv, nn.BatchNorm3d(cout), nn.ReLU(inplace=True))

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)

    @property
    def fast_frame_step(self) -> int:
        """Raw-video frame step between consecutive input (fast) frames: ``tau // alpha``."""
        return max(1, self.tau // self.alpha)

    def train(self, mode: bool = True) -> "SlowFast":
        super().train(mode)
        if mode and self.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm3d):
                    m.eval()
        return self

    def slow_frames(self, clip: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] -> [B, 3, T // alpha, H, W] frames for the slow pathway."""
        num_frames = clip.shape[2]
        if num_frames < self.alpha or num_frames % self.alpha:
            raise ValueError(f"SlowFast needs T divisible by alpha={self.alpha}, got T={num_frames}")
        if not self.slow_full_span:
            return clip[:, :, :: self.alpha]
        index = torch.linspace(0, num_frames - 1, num_frames // self.alpha, device=clip.device).long()
        return clip.index_select(2, index)

    def forward(self, clip: torch.Tensor) -> list[torch.Tensor]:
        """clip [B, 3, T, H, W] -> [slow [B, Cs, T/alpha, H/16, W/16], fast [B, Cf, T, H/16, W/16]]."""
        if clip.ndim != 5 or clip.shape[1] != 3:
            raise ValueError(f"SlowFast expects [B, 3, T, H, W], got {tuple(clip.shape)}")
        slow = self.slow_frames(clip)
        fast = self.fast_maxpool(self.fast_relu(self.fast_bn1(self.fast_conv1(clip))))
        slow = self.slow_maxpool(self.slow_relu(self.slow_bn1(self.slow_conv1(slow))))
        for i in range(1, 5):
            lateral = getattr(self, f"Tconv{i}")(fast)
            slow = getattr(self, f"slow_res{i}")(torch.cat([slow, lateral], dim=1))
            fast = getattr(self, f"fast_res{i}")(fast)
        return [slow, fast]


# ACAR-Net's released configurations (configs/AVA/*.yaml): R50 from PySlowFast K400, R101 K700.
ACAR_R50_KWARGS = dict(alpha=4, beta=0.125, fuse_only_conv=False, fuse_kernel_size=7, slow_full_span=True)
ACAR_R101_KWARGS = dict(alpha=4, beta=0.125, fuse_only_conv=True, fuse_kernel_size=5, slow_full_span=False)


@register_model(kind="backbone")
def slowfast_r50(**kwargs) -> SlowFast:
    """SlowFast-R50, defaults = ACAR-Net AVA R50 (alpha 4, beta 1/8, BN laterals k=7, full-span slow)."""
    return SlowFast((3, 4, 6, 3), **{"tau": 16, **ACAR_R50_KWARGS, **kwargs})


@register_model(kind="backbone")
def slowfast_r101(**kwargs) -> SlowFast:
    """SlowFast-R101, defaults = ACAR-Net AVA R101 (alpha 4, beta 1/8, conv-only laterals k=5)."""
    return SlowFast((3, 4, 23, 3), **{"tau": 16, **ACAR_R101_KWARGS, **kwargs})


@register_model(kind="backbone")
def slowfast_tiny(**kwargs) -> SlowFast:
    """Tiny SlowFast (width 8, beta 1/4, one block per stage) for CPU tests and the toy demo."""
    defaults = dict(width=8, beta=0.25, alpha=4, tau=8, fuse_only_conv=False, fuse_kernel_size=5)
    return SlowFast((1, 1, 1, 1), **{**defaults, **kwargs})
