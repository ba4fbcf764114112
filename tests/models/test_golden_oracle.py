"""Our modules vs the official code, run as an oracle on the same random weights and inputs.

The goldens (tests/fixtures/manifests/golden/*.pt) were produced by the scripts in
tests/fixtures/manifests/oracle_scripts/ from ACAR-Net, VideoMAE and VideoMAEv2; the weights are
rebuilt here from the manifests with the same seeded generator.
"""
import pytest
import torch

from tests.models.models_testutils import MANIFEST_DIR, load_manifest, random_state_dict
from stad.models.checkpoints import filter_acar_head, filter_acar_slowfast, filter_videomae
from stad.models.heads import ACARHead, LinearHead
from stad.models.neck import RoINeck
from stad.models.fusion import TemporalPoolFusion
from stad.models.slowfast import SlowFast
from stad.models.vit import VisionTransformer3D

GOLDEN = MANIFEST_DIR / "golden"
TOL = dict(atol=1e-5, rtol=1e-5)


def _golden(name):
    return torch.load(GOLDEN / f"{name}.pt", weights_only=False)


@pytest.mark.parametrize("name", ["acar_slowfast_layers1111", "acar_slowfast_layers1111_convlateral"])
def test_slowfast_matches_acar_official(name):
    """BN+ReLU laterals k7 with full-span slow frames (ACAR R50) and conv-only laterals k5 (R101)."""
    gold = _golden(name)
    model = SlowFast((1, 1, 1, 1), **gold["kwargs"]).eval()
    weights = random_state_dict(load_manifest(name), seed=gold["seed_weights"])
    model.load_state_dict(filter_acar_slowfast(weights), strict=True)
    clip = torch.randn(*gold["input_shape"], generator=torch.Generator().manual_seed(gold["input_seed"]))
    assert torch.allclose(clip.sum(), gold["input_sum"])
    with torch.no_grad():
        slow, fast = model(clip)
    scale = gold["slow"].abs().max()
    assert slow.shape == gold["slow"].shape and fast.shape == gold["fast"].shape
    assert torch.allclose(slow / scale, gold["slow"] / scale, **TOL)
    assert torch.allclose(fast / gold["fast"].abs().max(), gold["fast"] / gold["fast"].abs().max(), **TOL)


def _head_inputs(gold):
    g = torch.Generator().manual_seed(gold["features_seed"])
    feats = [torch.randn(3, 40, 2, 8, 8, generator=g), torch.randn(3, 8, 8, 8, 8, generator=g)]
    for f, s in zip(feats, gold["features_sums"]):
        assert torch.allclose(f.sum(), s)
    fused = TemporalPoolFusion()(feats)
    return fused, RoINeck().eval()(gold["boxes"])


def _acar_kwargs(k):
    return dict(roi_size=k["roi_spatial"], reduce_dim=k["reduce_dim"], hidden_dim=k["hidden_dim"], depth=k["depth"],
                mlp_1x1=k.get("mlp_1x1", False))


def test_acar_head_matches_official_depth2_and_depth1():
    for name in ("acar_head_tiny_depth2", "acar_head_tiny_depth1_mlp1x1"):
        gold = _golden(name)
        k = gold["kwargs"]
        head = ACARHead(k["width"], k["num_classes"], **_acar_kwargs(k)).eval()
        weights = random_state_dict(load_manifest(name), seed=gold["seed_weights"])
        # wrap like a released checkpoint to exercise the filter
        head.load_state_dict(filter_acar_head({"state_dict": {f"module.head.module.{n}": v for n, v in weights.items()}}))
        fused, rois = _head_inputs(gold)
        with torch.no_grad():
            out = head(fused, rois)
        assert out.shape == gold["outputs"].shape == (5, 6)
        assert torch.allclose(out, gold["outputs"], **TOL), (name, (out - gold["outputs"]).abs().max())


def test_linear_head_matches_official():
    gold = _golden("acar_linear_tiny")
    k = gold["kwargs"]
    head = LinearHead(k["width"], k["num_classes"], roi_size=k["roi_spatial"]).eval()
    head.load_state_dict(random_state_dict(load_manifest("acar_linear_tiny"), seed=0), strict=True)
    fused, rois = _head_inputs(gold)
    with torch.no_grad():
        assert torch.allclose(head(fused, rois), gold["outputs"], **TOL)


def _vit_from_official_kwargs(k):
    return VisionTransformer3D(img_size=k["img_size"], num_frames=k["all_frames"], patch_size=k["patch_size"],
                               embed_dim=k["embed_dim"], depth=k["depth"], num_heads=k["num_heads"],
                               mlp_ratio=k["mlp_ratio"], qkv_bias=k["qkv_bias"],
                               learned_pos_embed=k["use_learnable_pos_emb"]).eval()


def test_vit_matches_videomae_and_videomaev2_official():
    for name in ("videomae_vit_tiny_golden", "videomaev2_vit_tiny_golden"):
        gold = _golden(name)
        model = _vit_from_official_kwargs(gold["kwargs"])
        weights = random_state_dict(load_manifest(name), seed=gold["seed_weights"])
        model.load_state_dict(filter_videomae({"module": weights}, model), strict=True)
        clip = torch.randn(*gold["input_shape"], generator=torch.Generator().manual_seed(gold["input_seed"]))
        assert torch.allclose(clip.sum(), gold["input_sum"])
        with torch.no_grad():
            tokens, grid = model.forward_tokens(clip)
            (fmap,) = model(clip)
        assert torch.allclose(tokens, gold["tokens_normed"], **TOL), (name, (tokens - gold["tokens_normed"]).abs().max())
        assert fmap.shape == (1, gold["kwargs"]["embed_dim"]) + grid
        assert torch.allclose(fmap.flatten(2).transpose(1, 2), gold["tokens_normed"], **TOL)


def test_cw_reference_full_model_matches_official():
    """The Chaotic World reference system's whole eval forward (SlowFast [1,1,1,1] + VideoMAEv2 ViT -> head with
    BN_vit/conv_auto, [slow, fast, vit] on the slow grid -> HR2O), its weights loaded through filter_cw_vitsf.
    Its code fixes 1408 ViT channels and a 16x16x16 token grid, so the tiny ViT keeps those (patch 4 on 64x64,
    32 frames); the SlowFast grid is 4x4, so the adapted 14x14 ViT map is adaptively pooled onto it."""
    from stad.models.checkpoints import filter_cw_vitsf
    from stad.models.action_model import ActionDetector
    from stad.models.fusion import DualStreamBackbone, ViTAdapterFusion

    gold = _golden("cw_reference_vitsf_tiny")
    manifest = load_manifest("cw_reference_vitsf_tiny")
    k, v, s = (manifest["notes"][n] for n in ("head_kwargs", "vit_kwargs", "slowfast_kwargs"))
    vit = VisionTransformer3D(img_size=v["img_size"], num_frames=v["all_frames"], patch_size=v["patch_size"],
                              tubelet_size=v["tubelet_size"], embed_dim=v["embed_dim"], depth=v["depth"],
                              num_heads=v["num_heads"], mlp_ratio=v["mlp_ratio"], final_norm=False)
    model = ActionDetector(DualStreamBackbone(vit, SlowFast((1, 1, 1, 1), frozen_bn=True, **s)),
                           ACARHead(k["width"], k["num_classes"], **_acar_kwargs({**k, "roi_spatial": 7})),
                           fusion=ViTAdapterFusion(v["embed_dim"])).eval()
    model.load_state_dict(filter_cw_vitsf({"state_dict": random_state_dict(manifest, seed=gold["seed_weights"])}),
                          strict=True)
    clip = torch.randn(*gold["input_shape"], generator=torch.Generator().manual_seed(gold["input_seed"]))
    assert torch.allclose(clip.sum(), gold["input_sum"])
    with torch.no_grad():
        vit_map, slow, fast = model.backbone(clip)
        for name, ours in (("vit", vit_map), ("slow", slow), ("fast", fast)):
            assert ours.shape == gold["feature_shapes"][name], name
            assert torch.allclose(ours.double().sum(), gold["feature_sums"][name], rtol=1e-5), name
        out = model.forward_head(model.fusion([vit_map, slow, fast]), gold["boxes"])
    assert out.shape == gold["outputs"].shape == (5, 7)
    assert torch.allclose(out, gold["outputs"], **TOL), (out - gold["outputs"]).abs().max()  # measured 2.1e-7
