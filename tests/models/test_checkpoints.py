"""Strict loading of official layouts (manifests dumped from the official code, see fixtures README).

Big models are built on the meta device and loaded with shape-only meta tensors: every key and
shape is checked by ``load_state_dict(strict=True)`` without allocating real weights.
"""
import pytest
import torch

from tests.models.models_testutils import load_manifest, meta_state_dict, random_state_dict
from stad.models import build_action_model, create_model
from stad.models.checkpoints import (filter_acar_detector, filter_acar_head, filter_acar_slowfast,
                                     filter_videomae, load_checkpoint, unwrap_checkpoint)
from stad.models.heads import ACARHead, LinearHead

pytestmark = pytest.mark.filterwarnings("ignore:.*meta parameter")

ACAR = {
    "acar_ava_slowfast_r50_hr2o": ("slowfast_r50", "acar", {}),
    "acar_ava_slowfast_r101_hr2o_depth1": ("slowfast_r101", "acar", {"depth": 1, "mlp_1x1": True}),
    "acar_ava_slowfast_r50_linear": ("slowfast_r50", "linear", {}),
}


@pytest.mark.parametrize("manifest_name", sorted(ACAR))
def test_acar_full_model_loads_strictly_into_detector(manifest_name):
    backbone, head, head_kwargs = ACAR[manifest_name]
    checkpoint = {"state_dict": meta_state_dict(load_manifest(manifest_name)), "epoch": 6}
    with torch.device("meta"):
        model = build_action_model(backbone, head, 60, head_kwargs=head_kwargs)
    model.load_state_dict(filter_acar_detector(checkpoint), strict=True)
    with torch.device("meta"):
        model.backbone.load_state_dict(filter_acar_slowfast(checkpoint), strict=True)
        model.head.load_state_dict(filter_acar_head(checkpoint), strict=True)


def test_acar_kinetics_backbone_layout_loads():
    """ACAR-Net pretrained/ files hold bare SlowFast keys (no module./backbone. prefixes)."""
    entries = load_manifest("acar_ava_slowfast_r101_hr2o_depth1")
    bare = {k[len("module.backbone.module."):]: v for k, v in meta_state_dict(entries).items()
            if k.startswith("module.backbone.module.")}
    with torch.device("meta"):
        model = create_model("slowfast_r101")
    model.load_state_dict(filter_acar_slowfast(bare), strict=True)
    model.load_state_dict(filter_acar_slowfast({"state_dict": bare}), strict=True)


def test_mismatched_config_is_rejected():
    """R50 checkpoint into an R101 network (or wrong lateral layout) must fail loudly."""
    checkpoint = meta_state_dict(load_manifest("acar_ava_slowfast_r50_hr2o"))
    with torch.device("meta"):
        r101 = create_model("slowfast_r101")
        r50_conv_laterals = create_model("slowfast_r50", fuse_only_conv=True)
    with pytest.raises(RuntimeError):
        r101.load_state_dict(filter_acar_slowfast(checkpoint), strict=True)
    with pytest.raises(RuntimeError):
        r50_conv_laterals.load_state_dict(filter_acar_slowfast(checkpoint), strict=True)
    with pytest.raises(KeyError, match="missing"):
        load_checkpoint(ACARHead(2304, 60, depth=1), filter_acar_head(
            {k: torch.zeros(v.shape) for k, v in checkpoint.items() if k.startswith("module.head.")}))


def test_acar_head_real_values_roundtrip():
    """Values (not only shapes) go to the right parameters."""
    manifest = load_manifest("acar_head_tiny_depth2")
    weights = random_state_dict(manifest, seed=3)
    head = ACARHead(48, 6, reduce_dim=32, hidden_dim=16, depth=2)
    head.load_state_dict(filter_acar_head({"module.head.module." + k: v for k, v in weights.items()}))
    assert torch.equal(head.hr2o[1].conv_k.weight, weights["hr2o.1.conv_k.weight"])
    assert torch.equal(head.fc2.weight, weights["fc2.weight"])
    linear = LinearHead(48, 6)
    linear.load_state_dict(filter_acar_head({"module.head.module.fc.weight": torch.ones(6, 48)}))


VIDEOMAE = [
    ("videomae_vit_base_finetune_k400", "vit_base", "module"),
    ("videomae_vit_base_pretrain", "vit_base", "model"),
    ("videomaev2_vit_base_finetune_k710", "vit_base", "module"),
    ("videomaev2_vit_giant_finetune_k710", "vit_giant", "model"),
    ("videomaev2_vit_giant_pretrain", "vit_giant", "model"),
]


@pytest.mark.parametrize("manifest_name,model_name,wrap", VIDEOMAE)
def test_videomae_checkpoints_load_strictly(manifest_name, model_name, wrap):
    weights = meta_state_dict(load_manifest(manifest_name))
    with torch.device("meta"):
        model = create_model(model_name)
    filtered = filter_videomae({wrap: weights, "epoch": 1}, model)
    model.load_state_dict(filtered, strict=True)
    assert not any(k.startswith(("head.", "decoder.", "encoder", "fc_norm", "mask_token")) for k in filtered)


def test_videomae_ddp_and_compile_prefixes():
    weights = random_state_dict(load_manifest("videomae_vit_tiny_golden"))
    model = create_model("vit_tiny", img_size=32, num_frames=4)
    wrapped = {"model": {f"_orig_mod.module.{k}": v for k, v in weights.items()}}
    model.load_state_dict(filter_videomae(wrapped, model), strict=True)
    assert torch.equal(model.norm.weight, weights["fc_norm.weight"])


def test_videomae_learned_pos_embed_is_resampled_to_model_grid():
    weights = random_state_dict(load_manifest("videomaev2_vit_tiny_golden"))  # grid (2, 2, 2), patch 14
    model = create_model("vit_tiny", patch_size=14, img_size=56, num_frames=4, learned_pos_embed=True,
                         mlp_ratio=48 / 11)
    model.load_state_dict(filter_videomae(weights, model), strict=True)
    assert model.pos_embed.shape == (1, 2 * 4 * 4, 64)
    fixed = create_model("vit_tiny", patch_size=14, img_size=28, num_frames=4, mlp_ratio=48 / 11)
    fixed.load_state_dict(filter_videomae(weights, fixed), strict=True)  # learned table dropped


def test_unwrap_checkpoint_prefers_known_keys():
    inner = {"a.weight": torch.zeros(1)}
    assert unwrap_checkpoint({"state_dict": inner, "optimizer": {}}) == inner
    assert unwrap_checkpoint({"module": inner}) == inner
    assert unwrap_checkpoint(inner) == inner
