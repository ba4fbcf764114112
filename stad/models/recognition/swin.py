"""torchvision video classifiers as backbones: Video Swin (``swin3d_t/s/b``), MViTv2-S, R(2+1)D-18 and S3D.

Each wrapper keeps torchvision's own modules (built with ``weights=None``: nothing is downloaded)
without the classifier, and follows the backbone convention of :mod:`stad.models`:

    >>> net = create_model("swin3d_t")
    >>> maps = net(clips)                  # clips [B, 3, T, H, W] -> [map [B, C, T', H', W']]
    >>> pooled = net.forward_pooled(clips) # [B, C], the feature torchvision's classifier reads
    >>> net.out_channels, net.feature_stride

so that they serve clip-level recognition (:mod:`stad.models.recognition`) and, through the RoI
neck, detection (``build_action_model("swin3d_t", "linear", K)``).

Video Swin keeps its blocks and patch-merging layers in one flat ``blocks`` list (torchvision:
``features.<stage>.<block>`` and ``features.<odd>``), so that :mod:`stad.models.freeze` sees them like
ViT blocks (partial fine-tuning, layer-wise LR decay); :func:`swin_block_names` maps the indices
to torchvision's and the original Video Swin names (checkpoint filters in
:mod:`stad.models.recognition.weights`).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
from torchvision.models import video as tv_video
from torchvision.models.swin_transformer import SwinTransformerBlock
from torchvision.models.video.swin_transformer import (ShiftedWindowAttention3d, SwinTransformer3d,
                                                       _get_window_and_shift_size, shifted_window_attention_3d)

from stad.models.lora import LoRALinear
from stad.models.recognition.video_nets import MapBackbone, check_clip
from stad.models.registry import register_model


def _weight(linear: nn.Linear) -> torch.Tensor:
    """The weight a Linear applies, LoRA update included (LoRALinear; its dropout is not applied here)."""
    if isinstance(linear, LoRALinear):
        return linear.weight + linear.scaling * (linear.lora_b @ linear.lora_a)
    return linear.weight


class WindowAttention3d(ShiftedWindowAttention3d):
    """torchvision's shifted-window attention, reading ``qkv``/``proj`` through :func:`_weight`.

    torchvision passes ``self.qkv.weight`` to a functional attention, which would bypass a LoRA
    adapter put on ``attn.qkv`` / ``attn.proj`` (:func:`stad.models.lora.apply_lora`); same parameters,
    same result without LoRA. x [B, T, H, W, C] -> [B, T, H, W, C].
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, t, h, w, _ = x.shape
        window_size, shift_size = _get_window_and_shift_size(
            list(self.shift_size), [t, h, w], list(self.window_size))
        return shifted_window_attention_3d(
            x, _weight(self.qkv), _weight(self.proj), self.get_relative_position_bias(window_size), window_size,
            self.num_heads, shift_size=shift_size, attention_dropout=self.attention_dropout, dropout=self.dropout,
            qkv_bias=self.qkv.bias, proj_bias=self.proj.bias, training=self.training)


def _swin_block(*args: Any, attn_layer: Callable | None = None, **kwargs: Any) -> nn.Module:
    """torchvision's SwinTransformerBlock with :class:`WindowAttention3d` (the ``block`` argument)."""
    return SwinTransformerBlock(*args, attn_layer=WindowAttention3d, **kwargs)


def swin_block_names(depths: Sequence[int]) -> list[tuple[str, str]]:
    """For each entry of the flat ``blocks`` list: (torchvision name, original Video Swin name).

    >>> swin_block_names([2, 1])
    [('features.0.0', 'layers.0.blocks.0'), ('features.0.1', 'layers.0.blocks.1'),
     ('features.1', 'layers.0.downsample'), ('features.2.0', 'layers.1.blocks.0')]
    """
    names = []
    for stage, depth in enumerate(depths):
        names += [(f"features.{2 * stage}.{j}", f"layers.{stage}.blocks.{j}") for j in range(depth)]
        if stage < len(depths) - 1:
            names.append((f"features.{2 * stage + 1}", f"layers.{stage}.downsample"))
    return names


class Swin3D(MapBackbone):
    """Video Swin: torchvision ``SwinTransformer3d`` without ``avgpool``/``head``.

    forward: clip [B, 3, T, H, W] -> [map [B, C, T/2, H/32, W/32]] (C = 8 * embed_dim, after the final
    LayerNorm, as torchvision and the original I3D head pool it).
    """

    def __init__(self, net: SwinTransformer3d, depths: Sequence[int]):
        super().__init__()
        self.patch_embed, self.pos_drop, self.norm = net.patch_embed, net.pos_drop, net.norm
        flat = [m for stage in net.features for m in (stage if isinstance(stage, nn.Sequential) else [stage])]
        self.blocks = nn.ModuleList(flat)
        self.depths = tuple(depths)
        self.block_names = swin_block_names(depths)
        if len(self.block_names) != len(self.blocks):
            raise ValueError(f"depths {depths} do not describe the {len(self.blocks)} Swin layers")
        self.out_channels = [net.num_features]
        self.feature_stride = 4 * 2 ** (len(depths) - 1)

    def forward_features(self, clip: torch.Tensor) -> torch.Tensor:
        """clip [B, 3, T, H, W] -> normed map [B, C, T', H', W']."""
        x = self.pos_drop(self.patch_embed(check_clip(clip, "Swin3D")))  # [B, T', H', W', C]
        for block in self.blocks:
            x = block(x)
        return self.norm(x).permute(0, 4, 1, 2, 3)


def _swin(builder: Callable[..., SwinTransformer3d], depths: Sequence[int], **kwargs: Any) -> Swin3D:
    return Swin3D(builder(weights=None, block=_swin_block, **kwargs), depths)


# depths of torchvision's swin3d_t / _s / _b (torchvision.models.video.swin_transformer)
SWIN_DEPTHS = {"swin3d_t": (2, 2, 6, 2), "swin3d_s": (2, 2, 18, 2), "swin3d_b": (2, 2, 18, 2)}


def _swin_factory(name: str) -> Callable[..., Swin3D]:
    def factory(**kwargs: Any) -> Swin3D:
        return _swin(getattr(tv_video, name), SWIN_DEPTHS[name], **kwargs)

    factory.__name__ = name
    factory.__doc__ = (f"Video Swin {name[-1].upper()} (torchvision {name}, weights=None; kwargs: mlp_ratio, dropout, "
                       "attention_dropout, ...): maps [B, C, T/2, H/32, W/32].")
    return factory


for _name in SWIN_DEPTHS:
    register_model(_name, kind="backbone")(_swin_factory(_name))


@register_model(kind="backbone")
def swin3d_toy(*, embed_dim: int = 16, depths: Sequence[int] = (1, 1, 2, 1), num_heads: Sequence[int] = (1, 2, 2, 4),
               window_size: Sequence[int] = (2, 4, 4), patch_size: Sequence[int] = (2, 4, 4),
               stochastic_depth_prob: float = 0.0, **kwargs: Any) -> Swin3D:
    """Tiny Video Swin (torchvision SwinTransformer3d, embed 16) for CPU tests and the toy set."""
    net = SwinTransformer3d(patch_size=list(patch_size), embed_dim=embed_dim, depths=list(depths),
                            num_heads=list(num_heads), window_size=list(window_size),
                            stochastic_depth_prob=stochastic_depth_prob, block=_swin_block, **kwargs)
    return Swin3D(net, depths)
