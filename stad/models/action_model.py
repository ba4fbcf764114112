"""The full action detector: backbone(s) -> fusion -> RoI neck -> head, and its builders.

    >>> model = build_action_model("vitsf", "acar", num_classes=5, vit="vit_tiny", slowfast="slowfast_tiny")
    >>> logits = model(clips, boxes)   # clips [B, 3, T, H, W], boxes list of [N_i, 4] -> [sum N_i, K]
    >>> logits = model(batch.clips, batch.boxes, sizes=batch.valid_fractions)   # a padded ClipBatch
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from stad.models.fusion import DualStreamBackbone, TemporalPoolFusion, build_fusion
from stad.models.neck import RoIBatch, RoINeck
from stad.models.registry import create_model, get_entry, register_model


class ActionDetector(nn.Module):
    """Classifies actions of the given person boxes in each clip.

    Args:
        backbone: module mapping clips [B, 3, T, H, W] to a list of [B, C_i, T_i, H_i, W_i]
            maps and exposing ``out_channels``.
        head: RoI head ``head(feature_map [B, C, H, W], rois: RoIBatch) -> [N, K]``.
        neck: RoI preparation (default: RoINeck without jitter).
        fusion: list of maps -> one [B, C, H, W] map (default: TemporalPoolFusion()).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, *, neck: RoINeck | None = None,
                 fusion: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.fusion = fusion if fusion is not None else TemporalPoolFusion()
        self.neck = neck if neck is not None else RoINeck()
        self.head = head

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def forward_features(self, clips: torch.Tensor) -> torch.Tensor:
        """clips [B, 3, T, H, W] -> fused feature map [B, C, H', W']."""
        return self.fusion(self.backbone(clips))

    def forward_head(self, features: torch.Tensor, boxes: list[torch.Tensor],
                     sizes: Sequence[Sequence[float]] | None = None) -> torch.Tensor:
        """features [B, C, H', W'], boxes: B tensors [N_i, 4] normalised xyxy -> logits [sum N_i, K].

        ``sizes``: per clip ``(height, width)`` before padding as fractions of the padded clip
        (``ClipBatch.valid_fractions``; ACAR-Net's ``sizes_before_padding``); None: unpadded.
        """
        if len(boxes) != features.shape[0]:
            raise ValueError(f"{len(boxes)} box lists for a batch of {features.shape[0]} clips")
        rois: RoIBatch = self.neck(boxes, reference=features, sizes=sizes)
        # (no box in the whole batch: the heads keep features and so the backbone in the graph, for DDP)
        return self.head(features, rois)

    def forward(self, clips: torch.Tensor, boxes: list[torch.Tensor],
                sizes: Sequence[Sequence[float]] | None = None) -> torch.Tensor:
        """Raw logits [sum_i N_i, K], rows in the order of the input boxes; ``sizes`` as in
        :meth:`forward_head` (the ACAR head then reads each clip's context from its own pixels only)."""
        return self.forward_head(self.forward_features(clips), boxes, sizes)


@register_model("vitsf", kind="backbone")
def vitsf(*, vit: str = "vit_base", slowfast: str = "slowfast_r50", vit_kwargs: dict[str, Any] | None = None,
          slowfast_kwargs: dict[str, Any] | None = None, vit_frame_stride: int = 1,
          vit_input_size: tuple[int, int] | None = None) -> DualStreamBackbone:
    """Dual stream: a registered ViT and a registered SlowFast on the same clip -> [vit, slow, fast] maps."""
    return DualStreamBackbone(create_model(vit, **(vit_kwargs or {})),
                              create_model(slowfast, **(slowfast_kwargs or {})), vit_frame_stride, vit_input_size)


def _registered(name: str, kind: str):
    return get_entry(name, kind).factory


def build_backbone(name: str, **kwargs) -> nn.Module:
    """The registered backbone ``name`` built with ``kwargs`` (``vitsf``: ``vit``, ``slowfast``, ``vit_kwargs``,
    ``slowfast_kwargs``, ``vit_frame_stride``, ``vit_input_size``, like any other backbone's arguments)."""
    return _registered(name, "backbone")(**kwargs)


def build_head(name: str, in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    """The registered head ``name`` ('acar', 'linear') on ``in_channels`` fused channels with K outputs."""
    return _registered(name, "head")(in_channels=in_channels, num_classes=num_classes, **kwargs)


TINY_ACAR_HEAD = dict(reduce_dim=64, hidden_dim=32, depth=1)


def build_action_model(backbone: str, head: str, num_classes: int, *,
                       backbone_kwargs: dict[str, Any] | None = None, head_kwargs: dict[str, Any] | None = None,
                       vit: str | None = None, slowfast: str | None = None,
                       vit_kwargs: dict[str, Any] | None = None, slowfast_kwargs: dict[str, Any] | None = None,
                       vit_frame_stride: int | None = None, vit_input_size: tuple[int, int] | None = None,
                       jitter_scale: float = 0.0,
                       fusion_size: tuple[int, int] | None = None, fusion: str = "temporal_pool") -> ActionDetector:
    """Build an :class:`ActionDetector`: registered backbone -> fusion -> RoI neck -> registered head.

    Args:
        backbone: a registered backbone name ('slowfast_r50', 'vit_base', 'vitsf', ...; ``list_models("backbone")``).
        head: a registered head name ('acar', 'linear'; ``list_models("head")``).
        num_classes: K.
        backbone_kwargs: the backbone factory's arguments.
        vit, slowfast, vit_kwargs, slowfast_kwargs, vit_frame_stride, vit_input_size: the same, spelt flat
            (the layout presets and checkpoints store for the dual-stream ``vitsf``): those given (not None)
            join ``backbone_kwargs`` and go to the backbone factory like its other arguments (a backbone
            that does not take them raises ``TypeError``).
        head_kwargs: the head factory's arguments (``in_channels`` is derived from the backbone).
        jitter_scale: training-time box jitter (ACAR-Net: 0.075).
        fusion_size: (H, W) of the fused grid (default: the largest backbone grid).
        fusion: 'temporal_pool' (default: average over time, resize to one grid, concatenate in the
            backbone's order) or 'cw_reference' (dual stream only: the Chaotic World reference system's
            BatchNorm + valid 3x3 conv on the ViT map, [slow, fast, vit] on the SlowFast grid;
            ``stad.models.fusion.ViTAdapterFusion``).
    """
    flat = {k: v for k, v in dict(vit=vit, slowfast=slowfast, vit_kwargs=vit_kwargs, slowfast_kwargs=slowfast_kwargs,
                                  vit_frame_stride=vit_frame_stride, vit_input_size=vit_input_size).items()
            if v is not None}
    both = sorted(set(flat) & set(backbone_kwargs or {}))
    if both:
        raise ValueError(f"backbone arguments {both} given both flat and in backbone_kwargs")
    _registered(head, "head")  # an unknown head fails before the (possibly large) backbone is built
    net = build_backbone(backbone, **flat, **(backbone_kwargs or {}))
    in_channels = sum(net.out_channels)
    head_module = build_head(head, in_channels, num_classes, **(head_kwargs or {}))
    return ActionDetector(net, head_module, neck=RoINeck(jitter_scale=jitter_scale),
                          fusion=build_fusion(fusion, net, fusion_size))


# ---- detector presets ------------------------------------------------------------------------

@register_model(kind="detector")
def acar_slowfast_r50(num_classes: int = 60, **kwargs) -> ActionDetector:
    """ACAR-Net AVA R50: SlowFast-R50 (frozen BN) + ACAR head (HR2O depth 2), box jitter 0.075."""
    return build_action_model("slowfast_r50", "acar", num_classes, jitter_scale=kwargs.pop("jitter_scale", 0.075),
                              backbone_kwargs={"frozen_bn": True, **(kwargs.pop("backbone_kwargs", None) or {})},
                              head_kwargs=kwargs.pop("head_kwargs", None), **kwargs)


@register_model(kind="detector")
def acar_slowfast_r101(num_classes: int = 60, **kwargs) -> ActionDetector:
    """ACAR-Net AVA R101: SlowFast-R101 (frozen BN) + ACAR head (HR2O depth 1, 1x1 MLP)."""
    head_kwargs = {"depth": 1, "mlp_1x1": True, **(kwargs.pop("head_kwargs", None) or {})}
    return build_action_model("slowfast_r101", "acar", num_classes, jitter_scale=kwargs.pop("jitter_scale", 0.075),
                              backbone_kwargs={"frozen_bn": True, **(kwargs.pop("backbone_kwargs", None) or {})},
                              head_kwargs=head_kwargs, **kwargs)


@register_model(kind="detector")
def linear_slowfast_r50(num_classes: int = 60, **kwargs) -> ActionDetector:
    """ACAR-Net's AVA R50 baseline: SlowFast-R50 + linear head."""
    return build_action_model("slowfast_r50", "linear", num_classes, jitter_scale=kwargs.pop("jitter_scale", 0.075),
                              backbone_kwargs={"frozen_bn": True, **(kwargs.pop("backbone_kwargs", None) or {})},
                              **kwargs)


@register_model(kind="detector")
def acar_vitsf_base(num_classes: int = 60, **kwargs) -> ActionDetector:
    """VITSF: VideoMAE ViT-B (every 2nd frame) + SlowFast-R50 -> ACAR head."""
    kwargs.setdefault("vit_frame_stride", 2)
    return build_action_model("vitsf", "acar", num_classes, vit="vit_base", slowfast="slowfast_r50", **kwargs)


@register_model(kind="detector")
def acar_vitsf_tiny(num_classes: int = 5, **kwargs) -> ActionDetector:
    """Tiny VITSF (vit_tiny + slowfast_tiny + small ACAR head) for the CPU toy demo."""
    head_kwargs = {**TINY_ACAR_HEAD, **(kwargs.pop("head_kwargs", None) or {})}
    return build_action_model("vitsf", "acar", num_classes, vit="vit_tiny", slowfast="slowfast_tiny",
                              head_kwargs=head_kwargs, **kwargs)
