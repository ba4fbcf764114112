"""Clip-level recognizers (issue 18): build_recognizer, backbones, heads, fine-tuning modes, detection use."""
import pytest
import torch
import torch.nn as nn
from torchvision.models import video as tv_video

from stad.models import build_action_model, list_models
from stad.models.freeze import param_groups, set_trainable
from stad.models.lora import apply_lora, lora_parameters
from stad.models.recognition import build_recognizer, load_recognition_weights
from stad.models.recognition.video_nets import MVIT_TOY_BLOCKS

CLIP = (2, 3, 8, 64, 64)


def _clip(shape=CLIP, seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch, shape, dim, grid", [
    ("swin3d_toy", CLIP, 128, (4, 2, 2)),
    ("mvit_toy", (2, 3, 4, 64, 64), 32, (2, 8, 8)),
    ("slowfast_tiny", CLIP, 256 + 64, None),
    ("vit_tiny", CLIP, 64, (4, 4, 4)),
])
def test_recognizer_outputs_one_entry_per_group(arch, shape, dim, grid):
    model = build_recognizer(arch, head="multi_head", head_kwargs={"dropout": 0.5},
                             label_groups={"body": 7, "action": 52}).eval()
    clips = _clip(shape)
    with torch.no_grad():
        logits = model(clips)
        feats = model.forward_features(clips)
        again = model.forward_head(feats)
        maps = model.backbone(clips)
    assert list(logits) == ["body", "action"]
    assert logits["body"].shape == (2, 7) and logits["action"].shape == (2, 52)
    assert model.feature_dim == dim and feats.shape == (2, dim)
    for group in logits:
        torch.testing.assert_close(logits[group], again[group])
    if grid is not None:
        assert tuple(maps[0].shape) == (2, dim, *grid)


def test_new_backbones_are_registered():
    names = set(list_models("backbone"))
    assert {"swin3d_t", "swin3d_s", "swin3d_b", "swin3d_toy", "mvit_v2_s", "mvit_toy", "r2plus1d_18",
            "s3d"} <= names


@pytest.mark.parametrize("arch, channels, stride", [("swin3d_b", 1024, 32), ("mvit_v2_s", 768, 32),
                                                     ("r2plus1d_18", 512, 16), ("s3d", 1024, 32)])
def test_full_size_backbones_build(arch, channels, stride):
    with torch.device("meta"):
        model = build_recognizer(arch, label_groups={"action": 400})
    assert model.feature_dim == channels and model.backbone.feature_stride == stride


def _copy_classifier(model, weight: torch.Tensor, bias: torch.Tensor) -> None:
    with torch.no_grad():
        model.head.fc["action"].weight.copy_(weight.flatten(1))
        model.head.fc["action"].bias.copy_(bias)


@pytest.mark.parametrize("arch, reference, shape", [
    ("swin3d_toy", lambda: tv_video.SwinTransformer3d([2, 4, 4], 16, [1, 1, 2, 1], [1, 2, 2, 4], [2, 4, 4],
                                                      stochastic_depth_prob=0.0, num_classes=6), CLIP),
    ("r2plus1d_18", lambda: tv_video.r2plus1d_18(num_classes=6), (1, 3, 8, 32, 32)),
    ("mvit_toy", None, (2, 3, 4, 64, 64)),
])
def test_torchvision_layout_gives_torchvision_logits(arch, reference, shape):
    model = build_recognizer(arch, label_groups={"action": 6}).eval()
    if reference is None:  # mvit_toy: torchvision's MViT with the same settings plus its head
        ref = build_recognizer("mvit_toy", label_groups={"action": 6}).backbone
        net = tv_video.mvit.MViT((64, 64), 4, list(MVIT_TOY_BLOCKS), residual_pool=True,
                                 residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True,
                                 stochastic_depth_prob=0.0, num_classes=6)
        assert set(ref.state_dict()) <= set(net.state_dict())
    else:
        net = reference()
    net.eval()
    report = load_recognition_weights(model, net.state_dict())
    assert (report.layout, report.head_group, report.missing, report.unexpected) == ("torchvision", "action", [], [])
    clips = _clip(shape)
    with torch.no_grad():
        torch.testing.assert_close(model(clips)["action"], net(clips), atol=1e-5, rtol=1e-5)


def test_unknown_names_and_bad_label_groups():
    with pytest.raises(KeyError, match="did you mean 'swin3d_t'"):
        build_recognizer("swin3d_tt", label_groups={"action": 3})
    with pytest.raises(KeyError, match="did you mean 'multi_head'"):
        build_recognizer("swin3d_toy", head="multihead", label_groups={"action": 3})
    with pytest.raises(ValueError, match="exactly one label group.*multi_head"):
        build_recognizer("swin3d_toy", head="linear", label_groups={"body": 7, "action": 52})
    for groups in ({}, {"action": 0}, {"a.b": 3}, {"action": 2.5}):
        with pytest.raises(ValueError):
            build_recognizer("swin3d_toy", label_groups=groups)
    model = build_recognizer("swin3d_toy", label_groups={"action": 3})
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        model(torch.zeros(1, 8, 3, 64, 64))
    with pytest.raises(ValueError, match=r"features \[B, 128\]"):
        model.forward_head(torch.zeros(2, 64))
    mvit = build_recognizer("mvit_toy", label_groups={"action": 3})
    with pytest.raises(ValueError, match="T, H, W = \\(4, 64, 64\\)"):
        mvit(torch.zeros(1, 3, 8, 64, 64))


def test_partial_finetuning_and_layer_decay_see_swin_blocks():
    model = build_recognizer("swin3d_toy", label_groups={"action": 3})  # depths 1-1-2-1: 5 blocks + 3 merges
    assert len(model.backbone.blocks) == 8
    trainable = set(set_trainable(model, "partial", last_blocks=2))
    assert any(n.startswith("backbone.blocks.7.") for n in trainable)
    assert any(n.startswith("backbone.blocks.6.") for n in trainable)
    assert not any(n.startswith(("backbone.blocks.5.", "backbone.patch_embed.")) for n in trainable)
    assert {"backbone.norm.weight", "head.fc.action.weight"} <= trainable
    assert set(set_trainable(model, "linear_probe")) == {"head.fc.action.weight", "head.fc.action.bias"}
    set_trainable(model, "full")
    groups = param_groups(model, lr=1.0, vit_layer_decay=0.5)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["backbone_decay_vit_layer8"] == pytest.approx(0.5)   # the last block
    assert lrs["backbone_decay_vit_layer0"] == pytest.approx(0.5 ** 9)  # patch embedding
    assert lrs["head_decay"] == 1.0


def test_lora_reaches_swin_attention():
    model = build_recognizer("swin3d_toy", label_groups={"action": 3}).eval()
    clips = _clip()
    with torch.no_grad():
        before = model(clips)["action"]
    replaced = apply_lora(model, rank=2)
    assert "backbone.blocks.0.attn.qkv" in replaced and "backbone.blocks.0.attn.proj" in replaced
    with torch.no_grad():
        torch.testing.assert_close(model(clips)["action"], before)  # B = 0: same function
        for p in lora_parameters(model):
            if p.shape[1] == 2:  # lora_b
                p.normal_(std=0.1)
        assert (model(clips)["action"] - before).abs().max() > 1e-4
    set_trainable(model, "lora")
    model(clips)["action"].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_parameters(model))


@pytest.mark.parametrize("arch, shape", [("swin3d_toy", (2, 3, 8, 64, 64)), ("mvit_toy", (2, 3, 4, 64, 64)),
                                         ("r2plus1d_18", (2, 3, 8, 64, 64))])
def test_recognition_backbones_detect_through_the_roi_neck(arch, shape):
    model = build_action_model(arch, "linear", 5).eval()
    boxes = [torch.tensor([[0.1, 0.1, 0.6, 0.9], [0.4, 0.2, 0.9, 0.8]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]])]
    with torch.no_grad():
        logits = model(_clip(shape), boxes)
    assert logits.shape == (3, 5) and torch.isfinite(logits).all()


def test_slowfast_recognizer_pools_both_pathways():
    model = build_recognizer("slowfast_tiny", label_groups={"action": 4}).eval()
    clips = _clip()
    with torch.no_grad():
        slow, fast = model.backbone(clips)
        expected = torch.cat([slow.mean(dim=(2, 3, 4)), fast.mean(dim=(2, 3, 4))], dim=1)
        torch.testing.assert_close(model.forward_features(clips), expected)
    assert isinstance(model.head.dropout, nn.Dropout) and model.head.dropout.p == 0.5
