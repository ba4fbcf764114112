"""The values of one of our configs that a published config fixes, as they run.

``our_values(path)`` loads a config through ``stad.config.load_config`` and resolves it through the
engine's builders (``build_model`` on the meta device, ``build_transform``, ``temporal_sampling``,
``build_criterion``), then reads each value back from the objects that will run: the SlowFast's stage
depths and lateral layout, the head's layer sizes, the neck's jitter, the transform pipeline's
normalisation. The keys are those of ``tests/fixtures/published_configs/*.json`` (written by
``make_fixtures.py`` there from the upstream files).
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch import nn

from stad.config import Config, load_config
from stad.data import transforms as T
from stad.data.formats.conventions import MULTISPORTS
from stad.engine import builders
from stad.models.losses import AVA_POSE_INDICES, ExclusiveSoftmaxBCELoss, SigmoidBCELoss

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "published_configs"

# pipeline step -> the ACAR-Net name it implements
_STEP_NAMES = {T.ShortSideScale: "Scale", T.RandomHorizontalFlip: "RandomHorizontalFlip", T.ToTensor: "ToTensor",
               T.Normalize: "Normalize", T.CenterCrop: "CenterCrop", T.RandomCrop: "RandomCrop",
               T.CornerCrop: "CornerCrop", T.ColorJitter: "ColorJitter", T.HorizontalFlip: "HorizontalFlip",
               T.RandomShortSideScale: "RandomShortSideScale", T.ScaleJitteringRandomCrop: "ScaleJitteringRandomCrop"}
AVA_FRAME_MAP = "AVA frame-mAP@0.5 (ActivityNet get_ava_performance), every class of the label map"


def load_fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _base(path: str | None) -> str | None:
    return PurePosixPath(str(path)).name if path else None


def capacities(values: tuple[int, ...] | list[int]) -> dict:
    """Same canonical form as the fixtures: {"list": [...]} or {"range": [start, stop, step]}."""
    values = list(values)
    if len(values) > 4 and len({b - a for a, b in zip(values, values[1:])}) == 1:
        return {"range": [values[0], values[-1] + values[1] - values[0], values[1] - values[0]]}
    return {"list": values}


def _plain(value: Any) -> Any:
    """Tuples -> lists, numpy/torch scalars -> Python, so values compare equal to JSON."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _slowfast_values(slowfast: nn.Module) -> dict:
    lateral = slowfast.Tconv1
    conv = lateral if isinstance(lateral, nn.Conv3d) else lateral[0]
    return {"backbone.layers": [len(getattr(slowfast, f"slow_res{i}")) for i in range(1, 5)],
            "backbone.alpha": slowfast.alpha, "backbone.beta": slowfast.beta,
            "backbone.fuse_only_conv": isinstance(lateral, nn.Conv3d),
            "backbone.fuse_kernel_size": conv.kernel_size[0],
            "backbone.slow_full_span": slowfast.slow_full_span, "backbone.frozen_bn": slowfast.frozen_bn,
            "backbone.learnable": all(p.requires_grad for p in slowfast.parameters())}


def _vit_values(vit: nn.Module) -> dict:
    patch, tubelet = vit.patch_embed.patch_size, vit.patch_embed.tubelet_size
    return {"vit.embed_dim": vit.embed_dim, "vit.depth": len(vit.blocks), "vit.num_heads": vit.blocks[0].attn.num_heads,
            "vit.patch_size": patch, "vit.tubelet_size": tubelet, "vit.img_size": vit.grid[1] * patch,
            "vit.num_frames": vit.grid[0] * tubelet, "vit.final_norm": vit.final_norm,
            "vit.learnable": any(p.requires_grad for p in vit.parameters())}


def _fusion_values(fusion: nn.Module) -> dict:
    """How the dual stream's [vit, slow, fast] maps become the head's input, read from the fusion module."""
    from stad.models.fusion import TemporalPoolFusion, ViTAdapterFusion

    if isinstance(fusion, ViTAdapterFusion):
        bn, conv = fusion.vit_bn, fusion.vit_conv
        adapter = (f"BatchNorm3d({bn.num_features}) + Conv3d({conv.in_channels}, {conv.out_channels}, "
                   f"{tuple(conv.kernel_size)}, padding {conv.padding[-1]})")
        return {"fusion.order": ["slow", "fast", "vit"], "fusion.vit_adapter": adapter, "fusion.grid": "slow"}
    assert isinstance(fusion, TemporalPoolFusion), type(fusion)
    return {"fusion.order": ["vit", "slow", "fast"], "fusion.vit_adapter": None,  # the ViT map as it is
            "fusion.grid": "largest" if fusion.output_size is None else list(fusion.output_size)}


def _head_values(head: nn.Module) -> dict:
    from stad.models.heads import ACARHead, LinearHead

    dropout = head.dp.p if getattr(head, "dp", None) is not None else 0.0
    if isinstance(head, LinearHead):
        return {"head.type": "linear", "head.width": head.fc.in_features, "head.roi_spatial": head.roi_size,
                "head.num_classes": head.fc.out_features, "head.dropout": dropout, "head.bias": head.fc.bias is not None}
    assert isinstance(head, ACARHead), type(head)
    hr2o = head.hr2o[0]
    return {"head.type": "acar", "head.width": head.conv_reduce.in_channels, "head.roi_spatial": head.roi_size,
            "head.num_classes": head.fc2.out_features, "head.dropout": dropout, "head.bias": head.fc2.bias is not None,
            "head.reduce_dim": head.conv_reduce.out_channels, "head.hidden_dim": head.conv1.out_channels,
            "head.downsample": "max2x2" if isinstance(head.downsample, nn.MaxPool2d) else "none",
            "head.depth": len(head.hr2o), "head.kernel_size": hr2o.conv_q.kernel_size[0],
            "head.mlp_1x1": hr2o.conv.kernel_size[0] == 1, "head.relation_dropout": hr2o.dp.p,
            "head.relative_position": head.position is not None}


def _loss_values(config: Config) -> dict:
    criterion, _ = builders.build_criterion(config)
    if isinstance(criterion, ExclusiveSoftmaxBCELoss):
        exclusive = criterion.exclusive.tolist()
        return {"loss.pose_softmax": True if exclusive == list(AVA_POSE_INDICES) else f"exclusive {exclusive}"}
    assert isinstance(criterion, SigmoidBCELoss), type(criterion)
    return {"loss.pose_softmax": False}


def _split_values(name: str, split: Any) -> dict:
    transform = builders.build_transform(split.augmentation, train=name == "train")
    recipe = transform.sample(360, 480, np.random.default_rng(0))
    scales = [s.size for s in transform.steps if isinstance(s, T.ShortSideScale)]
    frames, step = builders.temporal_sampling(split.augmentation)
    return {f"{name}.spatial": [_STEP_NAMES[type(s)] for s in transform.steps],
            f"{name}.scale": _plain(scales[0]) if len(scales) == 1 else _plain(scales),
            f"{name}.flip": any(isinstance(s, T.RandomHorizontalFlip) for s in transform.steps),
            f"{name}.norm_value": recipe.norm_value, f"{name}.mean": list(recipe.mean), f"{name}.std": list(recipe.std),
            f"{name}.temporal.frames": frames, f"{name}.temporal.step": step, f"{name}.temporal.span": frames * step,
            f"{name}.batch_size": split.batch_size, f"{name}.annotation": _base(split.annotation_path)}


def our_values(path: str | Path) -> dict:
    """Every compared value of our config at ``path`` (see the module docstring)."""
    config = load_config(path)
    with torch.device("meta"):
        model = builders.build_model(config)
    backbone = model.backbone
    slowfast, vit = getattr(backbone, "slowfast", backbone), getattr(backbone, "vit", None)
    v: dict[str, Any] = {"evaluate": config.evaluate, "model.freeze_bn": config.model.freeze_bn,
                         "backbone.arch": config.model.backbone.arch, **_slowfast_values(slowfast),
                         "backbone.pretrain": _base(config.model.backbone.pretrain and config.model.backbone.pretrain.path),
                         "fusion.order": ["slow", "fast"]}
    if vit is not None:
        sub = config.model.backbone.subbackbone
        v.update(_vit_values(vit), **{"vit.pretrain": _base(sub and sub.path)})
        v.update(_fusion_values(model.fusion))
    neck = config.model.neck.kwargs
    v.update({"neck.type": config.model.neck.type, "neck.bbox_jitter.num": (neck.get("bbox_jitter") or {}).get("num", 1),
              "neck.bbox_jitter.scale": model.neck.jitter_scale, "neck.num_classes": config.num_classes,
              "neck.multi_class": neck.get("multi_class", True)})
    v.update(_head_values(model.head))
    v.update(_loss_values(config))
    for name, split in (("train", config.train), ("val", config.val)):
        if split is not None and not (name == "train" and config.evaluate):
            v.update(_split_values(name, split))
    em = config.val.eval_mAP if config.val is not None else None
    v.update({"eval.labelmap": _base(em and em.labelmap), "eval.groundtruth": _base(em and em.groundtruth),
              "eval.exclusions": _base(em and em.exclusions), "eval.capacities": capacities(config.capacities),
              "eval.metric": AVA_FRAME_MAP,
              "weights": _base(config.resume_path or (config.pretrain and config.pretrain.path))})
    if not config.evaluate:
        tr = config.train
        v.update({"train.n_epochs": tr.n_epochs, "train.grad_clip": tr.grad_clip, "train.optimizer.type": tr.optimizer.type,
                  **{f"train.optimizer.{k}": tr.optimizer.kwargs.get(k) for k in ("momentum", "weight_decay", "nesterov")},
                  "train.scheduler.type": tr.scheduler.type,
                  **{f"train.scheduler.{k}": _plain(getattr(tr.scheduler, k))
                     for k in ("base_lr", "warmup_lr", "warmup_epochs", "milestone_epochs", "lr_mults")}})
    return {k: _plain(x) for k, x in v.items()}


def multisports_convention_values() -> dict:
    """The keyframe and label-map conventions our MultiSports converter writes (stad.data.formats)."""
    from stad.data.formats.multisports import multisports_labelmap

    labelmap = multisports_labelmap({"labels": [f"class {i}" for i in range(66)]})
    ids = list(labelmap.ids)
    return {"labelmap.count": len(ids), "labelmap.first_id": ids[0] if ids == list(range(ids[0], ids[0] + len(ids)))
            else f"non-contiguous {ids}", "keyframe.unit": MULTISPORTS.timestamp_unit,
            "keyframe.first_frame": MULTISPORTS.mid_frame(1)}
