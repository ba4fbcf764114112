import pytest
import torch

from stad.models import ActionDetector, build_action_model, create_model, list_models
from stad.models.losses import SigmoidBCELoss

CLIPS = torch.randn(3, 3, 8, 64, 64, generator=torch.Generator().manual_seed(0))
BOXES = [torch.tensor([[0.1, 0.1, 0.5, 0.9], [0.4, 0.2, 0.9, 0.8]]), torch.zeros(0, 4),
         torch.tensor([[0.2, 0.3, 0.6, 0.7]])]
TINY_HEAD = dict(reduce_dim=32, hidden_dim=16, depth=1)


def _tiny(backbone, head="acar", **kw):
    torch.manual_seed(0)
    kwargs = dict(head_kwargs=TINY_HEAD if head == "acar" else None)
    if backbone == "vitsf":  # the dual stream's own arguments: a single-stream backbone does not take them
        kwargs.update(vit="vit_tiny", slowfast="slowfast_tiny")
    kwargs.update(kw)
    return build_action_model(backbone, head, 5, **kwargs)


@pytest.mark.parametrize("backbone", ["slowfast_tiny", "vit_tiny", "vitsf"])
@pytest.mark.parametrize("head", ["acar", "linear"])
def test_forward_shapes_zero_and_one_box_clips(backbone, head):
    model = _tiny(backbone, head).eval()
    with torch.no_grad():
        logits = model(CLIPS, BOXES)
        features = model.forward_features(CLIPS)
        again = model.forward_head(features, BOXES)
    assert logits.shape == (3, 5) and torch.isfinite(logits).all()
    assert torch.allclose(logits, again)
    assert features.shape[:2] == (3, sum(model.backbone.out_channels))


def test_rows_follow_input_box_order_and_clip_independence():
    model = _tiny("vitsf").eval()
    with torch.no_grad():
        full = model(CLIPS, BOXES)
        alone = model(CLIPS[2:], BOXES[2:])
    assert torch.allclose(full[2:], alone, atol=1e-5)  # BN in eval, so no cross-clip coupling


def test_all_clips_empty_gives_empty_logits_and_finite_loss():
    model = _tiny("vitsf").train()
    logits = model(CLIPS, [torch.zeros(0, 4)] * 3)
    assert logits.shape == (0, 5)
    loss = SigmoidBCELoss()(logits, torch.zeros(0, 5))
    loss.backward()
    assert loss.item() == 0.0
    # every parameter is still in the graph (zero gradients): DDP needs no find_unused_parameters
    assert all(p.grad is not None and not p.grad.abs().sum() for p in model.parameters())


def test_gradients_reach_every_trainable_parameter():
    model = _tiny("vitsf", jitter_scale=0.05).train()
    targets = torch.zeros(3, 5)
    targets[0, 1] = targets[2, 4] = 1
    SigmoidBCELoss()(model(CLIPS, BOXES), targets).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing, missing


def test_vitsf_resizes_streams_to_one_grid_and_vit_frame_stride():
    model = _tiny("vitsf", vit_kwargs=dict(patch_size=8), vit_frame_stride=2).eval()
    with torch.no_grad():
        maps = model.backbone(CLIPS)
        fused = model.forward_features(CLIPS)
    assert maps[0].shape[2:] == (2, 8, 8)  # 8 frames / stride 2 / tubelet 2; 64 px / patch 8
    assert maps[1].shape[-2:] == (4, 4)
    assert fused.shape[-2:] == (8, 8)
    assert model(CLIPS, BOXES).shape == (3, 5)


def test_registry_presets_and_errors():
    names = list_models()
    for required in ["slowfast_r50", "slowfast_r101", "slowfast_tiny", "vit_tiny", "vit_small", "vit_base",
                     "vit_large", "vit_huge", "vit_giant", "acar_vitsf_tiny", "acar_slowfast_r50"]:
        assert required in names
    tiny = create_model("acar_vitsf_tiny", num_classes=7)
    assert isinstance(tiny, ActionDetector) and tiny.num_classes == 7
    with torch.device("meta"):
        r101 = create_model("acar_slowfast_r101")
    assert len(r101.head.hr2o) == 1 and r101.backbone.frozen_bn
    with pytest.raises(KeyError, match="did you mean"):
        create_model("slowfast_r5O")
    with pytest.raises(KeyError, match="unknown head"):
        build_action_model("slowfast_tiny", "mlp", 3)
    with pytest.raises(ValueError, match="box lists"):
        _tiny("slowfast_tiny")(CLIPS, BOXES[:2])


def test_tiny_detector_is_small():
    model = create_model("acar_vitsf_tiny")
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


@pytest.mark.parametrize("name", [n for n in list_models("detector") if not n.endswith("_tiny")])
def test_every_big_detector_preset_builds_on_meta(name):
    with torch.device("meta"):
        model = create_model(name, num_classes=80)
    assert isinstance(model, ActionDetector) and model.num_classes == 80
    first = next(m for m in model.head.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert first.weight.shape[1] == sum(model.backbone.out_channels)


def test_vitsf_backbone_via_registry_and_kwarg_errors():
    backbone = create_model("vitsf", vit="vit_tiny", slowfast="slowfast_tiny", vit_frame_stride=2)
    assert backbone.out_channels == [64, 256, 64] and backbone.vit_frame_stride == 2
    with pytest.raises(TypeError, match="alpha"):  # vitsf takes vit_kwargs / slowfast_kwargs, like any factory
        build_action_model("vitsf", "acar", 3, vit="vit_tiny", slowfast="slowfast_tiny", backbone_kwargs={"alpha": 2})
    with pytest.raises(TypeError, match="vit"):  # no backbone but vitsf takes the dual-stream arguments
        build_action_model("slowfast_tiny", "acar", 3, vit="vit_tiny")
    with pytest.raises(ValueError, match="not a head"):
        build_action_model("slowfast_tiny", "vit_tiny", 3)
    with pytest.raises(ValueError, match="not a backbone"):
        build_action_model("acar_vitsf_tiny", "acar", 3)


def test_vitsf_resizes_vit_input_to_patch_multiple_or_given_size():
    model = _tiny("vitsf", vit_kwargs=dict(patch_size=14)).eval()
    clips = torch.randn(1, 3, 8, 64, 85)  # neither side is a multiple of 14
    with torch.no_grad():
        vit_map, slow, _ = model.backbone(clips)
        assert vit_map.shape[-2:] == (5, 6)  # 64 -> 70, 85 -> 84
        assert model(clips, [torch.tensor([[0.1, 0.1, 0.6, 0.9]])]).shape == (1, 5)
    fixed = _tiny("vitsf", vit_input_size=(32, 48)).eval()
    with torch.no_grad():
        assert fixed.backbone(clips)[0].shape[-2:] == (2, 3)
