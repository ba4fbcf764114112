"""The Chaotic World reference system's model variant: ViTAdapterFusion (its head's BN_vit + conv_auto and
[slow, fast, vit] on the slow grid), the ViT without final norm, filter_cw_vitsf, and how the engine uses them.
The golden comparison with the reference's own forward is in test_golden_oracle.py."""
import pytest
import torch
import torch.nn.functional as F

from stad.engine import builders
from stad.engine.trainer import set_train_mode
from stad.models import build_action_model
from stad.models.checkpoints import filter_cw_vitsf
from stad.models.fusion import TemporalPoolFusion, ViTAdapterFusion, build_fusion
from stad.models.presets import get_preset
from stad.models.vit import VisionTransformer3D
from tests.models.models_testutils import load_manifest, meta_state_dict

pytestmark = pytest.mark.filterwarnings("ignore:.*meta parameter")
TINY = dict(vit="vit_tiny", slowfast="slowfast_tiny", head_kwargs=dict(reduce_dim=16, hidden_dim=8, depth=1))


def _tiny(fusion="cw_reference"):
    torch.manual_seed(0)
    return build_action_model("vitsf", "acar", 3, vit_kwargs={"final_norm": False}, fusion=fusion, **TINY)


def test_fusion_adapts_the_vit_map_and_concatenates_slow_fast_vit_on_the_slow_grid():
    torch.manual_seed(0)
    fusion = ViTAdapterFusion(6).eval()
    fusion.vit_bn.running_mean.uniform_(-1, 1)
    fusion.vit_bn.running_var.uniform_(0.5, 2)
    vit, slow, fast = torch.randn(2, 6, 4, 9, 9), torch.randn(2, 5, 2, 4, 4), torch.randn(2, 3, 8, 4, 4)
    out = fusion([vit, slow, fast])
    assert out.shape == (2, 5 + 3 + 6, 4, 4)
    assert torch.allclose(out[:, :5], slow.mean(2), atol=1e-6)
    assert torch.allclose(out[:, 5:8], fast.mean(2), atol=1e-6)
    adapted = fusion.vit_conv(fusion.vit_bn(vit))  # 9x9 -> 7x7, then adaptive average onto 4x4
    assert adapted.shape[-2:] == (7, 7)
    assert torch.allclose(out[:, 8:], F.adaptive_avg_pool2d(adapted.mean(2), (4, 4)), atol=1e-5)


def test_default_model_is_unchanged_and_the_variant_adds_only_the_adapter():
    default, variant = build_action_model("vitsf", "acar", 3, **TINY), _tiny()
    assert isinstance(default.fusion, TemporalPoolFusion) and not any(k.startswith("fusion.") for k in default.state_dict())
    extra = set(variant.state_dict()) - set(default.state_dict())
    assert extra == {f"fusion.vit_bn.{n}" for n in ("weight", "bias", "running_mean", "running_var",
                                                    "num_batches_tracked")} | {"fusion.vit_conv.weight",
                                                                               "fusion.vit_conv.bias"}
    assert set(default.state_dict()) - set(variant.state_dict()) == {"backbone.vit.norm.weight", "backbone.vit.norm.bias"}
    clips, boxes = torch.randn(2, 3, 8, 112, 112), [torch.tensor([[0.1, 0.2, 0.6, 0.9]]), torch.zeros(0, 4)]
    assert variant.eval()(clips, boxes).shape == (1, 3)


def test_vit_without_final_norm_returns_the_last_block_tokens():
    torch.manual_seed(0)
    normed = VisionTransformer3D(img_size=32, num_frames=4, embed_dim=32, depth=1, num_heads=2).eval()
    raw = VisionTransformer3D(img_size=32, num_frames=4, embed_dim=32, depth=1, num_heads=2, final_norm=False).eval()
    raw.load_state_dict({k: v for k, v in normed.state_dict().items() if not k.startswith("norm.")}, strict=True)
    clip = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        tokens, _ = raw.forward_tokens(clip)
        assert torch.allclose(normed.norm(tokens), normed.forward_tokens(clip)[0], atol=1e-6)


def test_build_fusion_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match="choose from"):
        build_action_model("vitsf", "acar", 3, fusion="concat", **TINY)
    with pytest.raises(ValueError, match="dual-stream"):
        build_action_model("slowfast_tiny", "acar", 3, fusion="cw_reference", head_kwargs=TINY["head_kwargs"])
    with pytest.raises(ValueError, match="fusion_size"):
        build_fusion("cw_reference", _tiny().backbone, (4, 4))


def test_freeze_bn_leaves_the_adapter_batchnorm_training_as_the_reference():
    """The reference's freeze_bn puts its backbone's BatchNorms in eval mode only; BN_vit is in its head."""
    model = _tiny()
    set_train_mode(model, freeze_bn=True)
    assert model.fusion.vit_bn.training
    assert not any(m.training for m in model.backbone.slowfast.modules() if isinstance(m, torch.nn.BatchNorm3d))
    set_train_mode(model, freeze_bn=True, frozen=[model.backbone])
    assert model.fusion.vit_bn.training and not model.backbone.training


def test_filter_maps_every_reference_key_one_to_one():
    released = meta_state_dict(load_manifest("cw_reference_vitsf"))
    out = filter_cw_vitsf({"state_dict": released, "epoch": 11})
    dropped = {k for k in released if k.startswith(("module.backbone.submodule.head.", "module.backbone.submodule.fc_norm."))}
    assert dropped == {f"module.backbone.submodule.{p}.{n}" for p in ("head", "fc_norm") for n in ("weight", "bias")}
    assert len(out) == len(released) - len(dropped)
    assert {k for k in out if k.startswith("fusion.")} == {
        "fusion.vit_bn.weight", "fusion.vit_bn.bias", "fusion.vit_bn.running_mean", "fusion.vit_bn.running_var",
        "fusion.vit_bn.num_batches_tracked", "fusion.vit_conv.weight", "fusion.vit_conv.bias"}
    assert out["fusion.vit_conv.weight"].shape == (1408, 1408, 1, 3, 3)
    assert out["head.conv_reduce.weight"].shape == (1024, 3712, 1, 1)  # [slow, fast, vit] as the fusion gives
    assert not any("BN_vit" in k or "conv_auto" in k or "submodule" in k for k in out)
    assert filter_cw_vitsf({k[len("module."):]: v for k, v in released.items()}).keys() == out.keys()  # no DDP prefix
    with pytest.raises(KeyError, match="Chaotic World"):
        filter_cw_vitsf({"state_dict": {"module.backbone.module.fast_conv1.weight": torch.zeros(1)}})


def test_preset_builds_the_released_layout():
    """The demo path: weights_preset infers cw_vitsf_acar from the file, builds it, loads it strictly."""
    released = {"state_dict": meta_state_dict(load_manifest("cw_reference_vitsf"))}
    with torch.device("meta"):
        model = get_preset("cw_vitsf_acar").build_model()
    assert builders.load_weights(model, released, strict=True) == []


def test_released_file_into_a_model_not_built_as_the_reference_says_what_to_set():
    released = {"state_dict": meta_state_dict(load_manifest("cw_reference_vitsf"))}
    kwargs = dict(get_preset("cw_vitsf_acar").model_kwargs)
    kwargs.pop("fusion")  # and the ViT with its final norm: the model as it was before the reference variant
    kwargs["vit_kwargs"] = {k: v for k, v in kwargs["vit_kwargs"].items() if k != "final_norm"}
    with torch.device("meta"):
        model = build_action_model(num_classes=50, **kwargs)
    with pytest.raises(RuntimeError, match=r"fusion: cw_reference.*") as err:
        builders.load_weights(model, released, strict=True)
    assert "fusion.vit_bn.weight" in str(err.value) and "backbone.vit.norm.weight" in str(err.value)
