"""Recognition checkpoints (issue 18): official Video Swin / MMAction2 layouts -> torchvision's swin3d.

Parity: tests/fixtures/manifests/golden/{videoswin,mmaction2}_swin_tiny_golden.pt hold the official
backbones' outputs (run by oracle_scripts/dump_videoswin.py) on weights rebuilt here from the
manifests; ours, loaded through :func:`load_recognition_weights`, must give the same maps.
Full-size layouts are checked on the meta device (shapes and key sets only).
"""
import pytest
import torch

from stad.models.recognition import CheckpointLayoutError, build_recognizer, load_recognition_weights
from tests.models.models_testutils import MANIFEST_DIR, load_manifest, meta_state_dict, random_state_dict

pytestmark = pytest.mark.filterwarnings("ignore:.*meta parameter")

TINY = dict(depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))  # swin3d_toy at the golden's size


def _golden_inputs(golden: dict):
    for name, spec in golden["inputs"].items():
        clip = torch.randn(spec["shape"], generator=torch.Generator().manual_seed(spec["seed"]))
        assert float(clip.sum()) == pytest.approx(spec["sum"], abs=1e-3)
        yield name, clip, spec


def _official_weights(name: str) -> dict:
    """The golden's random weights (seed 0), without the constant relative_position_index buffers."""
    weights = random_state_dict(load_manifest(name), seed=0)
    return {k: v for k, v in weights.items() if not k.endswith("relative_position_index")}


@pytest.mark.parametrize("name, layout", [("videoswin_swin_tiny_golden", "videoswin"),
                                          ("mmaction2_swin_tiny_golden", "mmaction2")])
def test_official_swin_matches_oracle(name, layout):
    golden = torch.load(MANIFEST_DIR / "golden" / f"{name}.pt")
    weights = _official_weights(name)
    classifier = {"cls_head.fc_cls.weight": torch.randn(5, 128), "cls_head.fc_cls.bias": torch.randn(5)}
    checkpoint = {"meta": {}, "state_dict": {**{f"backbone.{k}": v for k, v in weights.items()}, **classifier}}
    model = build_recognizer("swin3d_toy", TINY, "multi_head", label_groups={"body": 3, "action": 5}).eval()
    report = load_recognition_weights(model, checkpoint)
    assert (report.layout, report.head_group, report.missing, report.unexpected) == (layout, "action", [], [])
    for _, clip, spec in _golden_inputs(golden):
        with torch.no_grad():
            fmap = model.backbone.forward_features(clip)
            pooled = model.forward_features(clip)
            logits = model.forward_head(pooled)
        assert fmap.shape == spec["map"].shape
        assert float(spec["map"].abs().mean()) > 0.1  # a real signal, not zeros
        torch.testing.assert_close(fmap, spec["map"], atol=1e-5, rtol=0)
        torch.testing.assert_close(pooled, spec["pooled"], atol=1e-5, rtol=0)
        expected = spec["pooled"] @ classifier["cls_head.fc_cls.weight"].T + classifier["cls_head.fc_cls.bias"]
        torch.testing.assert_close(logits["action"], expected, atol=1e-4, rtol=0)


def test_other_weights_do_not_match_oracle():
    """The comparison above can fail: other random weights give another map."""
    golden = torch.load(MANIFEST_DIR / "golden" / "videoswin_swin_tiny_golden.pt")
    weights = {f"backbone.{k}": v for k, v in _official_weights("videoswin_swin_tiny_golden").items()}
    weights["backbone.layers.1.blocks.1.mlp.fc1.weight"] = weights["backbone.layers.1.blocks.1.mlp.fc1.weight"] * 2
    model = build_recognizer("swin3d_toy", TINY, label_groups={"action": 5}).eval()
    load_recognition_weights(model, weights)
    _, clip, spec = next(_golden_inputs(golden))
    with torch.no_grad():
        assert (model.backbone.forward_features(clip) - spec["map"]).abs().max() > 1e-2


@pytest.mark.parametrize("manifest, arch", [
    ("videoswin_swin_t_k400", "swin3d_t"), ("videoswin_swin_b_k400", "swin3d_b"),
    ("mmaction2_swin_tiny_k400", "swin3d_t"), ("mmaction2_swin_small_k400", "swin3d_s"),
    ("mmaction2_swin_base_k400", "swin3d_b")])
def test_released_layouts_load_strictly(manifest, arch):
    checkpoint = {"meta": {"epoch": 30}, "state_dict": meta_state_dict(load_manifest(manifest))}
    with torch.device("meta"):
        kinetics = build_recognizer(arch, label_groups={"action": 400})
        ours = build_recognizer(arch, head="multi_head", label_groups={"body": 7, "action": 52})
    report = load_recognition_weights(kinetics, checkpoint)
    assert (report.head_group, report.skipped, report.missing, report.unexpected) == ("action", [], [], [])
    report = load_recognition_weights(ours, checkpoint)  # Kinetics classifier: no group of 400 classes
    assert report.head_group is None and report.skipped == ["classifier.bias", "classifier.weight"]


def test_missing_keys_are_listed_with_the_file(tmp_path):
    weights = {f"backbone.{k}": v for k, v in _official_weights("videoswin_swin_tiny_golden").items()}
    del weights["backbone.layers.2.blocks.0.attn.qkv.weight"]
    weights["backbone.extra.weight"] = torch.zeros(1)
    path = tmp_path / "swin.pth"
    torch.save({"state_dict": weights}, path)
    model = build_recognizer("swin3d_toy", TINY, label_groups={"action": 5})
    with pytest.raises(CheckpointLayoutError) as err:
        load_recognition_weights(model, path)
    message = str(err.value)
    assert str(path) in message and "videoswin" in message
    assert "backbone.blocks.6.attn.qkv.weight" in message and "backbone.extra.weight" in message
    report = load_recognition_weights(model, path, strict=False)
    assert report.missing == ["backbone.blocks.6.attn.qkv.weight"] and report.unexpected == ["backbone.extra.weight"]


def test_wrong_size_and_wrong_backbone_are_rejected():
    checkpoint = meta_state_dict(load_manifest("videoswin_swin_b_k400"))
    with torch.device("meta"):
        tiny = build_recognizer("swin3d_t", label_groups={"action": 400})
        resnet = build_recognizer("r2plus1d_18", label_groups={"action": 400})
    with pytest.raises(CheckpointLayoutError, match="shape mismatches"):
        load_recognition_weights(tiny, checkpoint)
    with pytest.raises(CheckpointLayoutError, match="only Video Swin backbones"):
        load_recognition_weights(resnet, checkpoint)


def test_own_checkpoint_roundtrip_with_ddp_prefix(tmp_path):
    source = build_recognizer("swin3d_toy", head="multi_head", label_groups={"body": 3, "action": 5})
    target = build_recognizer("swin3d_toy", head="multi_head", label_groups={"body": 3, "action": 5})
    path = tmp_path / "ours.pth"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, path)
    assert load_recognition_weights(target, path).layout == "ours"
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key
    fewer = build_recognizer("swin3d_toy", label_groups={"action": 5})
    with pytest.raises(CheckpointLayoutError, match="unexpected"):
        load_recognition_weights(fewer, path)


def test_acar_and_videomae_files_load_into_recognizers():
    acar = {"state_dict": meta_state_dict(load_manifest("acar_ava_slowfast_r50_hr2o")), "epoch": 6}
    videomae = {"module": meta_state_dict(load_manifest("videomae_vit_base_finetune_k400"))}
    with torch.device("meta"):
        slowfast = build_recognizer("slowfast_r50", label_groups={"action": 60})
        vit = build_recognizer("vit_base", label_groups={"action": 400})
    report = load_recognition_weights(slowfast, acar)
    assert (report.layout, report.missing, report.unexpected) == ("acar", [], [])
    report = load_recognition_weights(vit, videomae)
    assert (report.layout, report.missing, report.unexpected) == ("videomae", [], [])


def test_imagenet_swin_inflates_like_mmaction2():
    """golden/mmaction2_swin_inflated_tiny_golden.pt: MMAction2's SwinTransformer3D(pretrained2d=True)
    inflating the official image Swin (window 3: its 5x5 bias tables resized to 7x7) then running."""
    golden = torch.load(MANIFEST_DIR / "golden" / "mmaction2_swin_inflated_tiny_golden.pt")
    weights = random_state_dict(load_manifest("swin2d_tiny_golden"), seed=0)
    weights = {k: v for k, v in weights.items() if not k.endswith(("relative_position_index", "attn_mask"))}
    model = build_recognizer("swin3d_toy", TINY, label_groups={"action": 10}).eval()
    report = load_recognition_weights(model, {"model": weights})
    assert (report.layout, report.head_group, report.missing, report.unexpected) == ("swin2d", "action", [], [])
    for _, clip, spec in _golden_inputs(golden):
        with torch.no_grad():
            torch.testing.assert_close(model.backbone.forward_features(clip), spec["map"], atol=1e-5, rtol=0)
