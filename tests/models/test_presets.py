"""Model presets: registry, round trip, the shipped AVA label map, and layout inference from official keys."""
import pytest
import torch

from stad.data.transforms import Normalize, ShortSideScale, ToTensor, from_acar_spec
from stad.models.ava_labels import ava_v22_labelmap
from stad.models.checkpoints import filter_acar_detector
from stad.models.presets import (KNOWN_LAYOUTS, ModelPreset, Preprocessing, UnknownLayoutError, get_preset,
                                 infer_preset, list_presets)
from tests.models.models_testutils import load_manifest, meta_state_dict

pytestmark = pytest.mark.filterwarnings("ignore:.*meta parameter")

MANIFESTS = {
    "acar_ava_slowfast_r50_hr2o": "acar_slowfast_r50_ava",
    "acar_ava_slowfast_r101_hr2o_depth1": "acar_slowfast_r101_ava",
    "acar_ava_slowfast_r50_linear": "linear_slowfast_r50_ava",
}


def model_zoo_file(manifest: str) -> dict:
    """What torch.load gives for an ACAR-Net model-zoo file (shape-only tensors)."""
    return {"state_dict": meta_state_dict(load_manifest(manifest)), "optimizer": {}, "scheduler": {}}


def test_registry_lists_the_presets_and_suggests_names():
    assert {"acar_slowfast_r50_ava", "acar_slowfast_r101_ava", "acar_slowfast_r101_ava_kinetics",
            "linear_slowfast_r50_ava", "cw_vitsf_acar", "toy_acar_vitsf_tiny"} <= set(list_presets())
    with pytest.raises(KeyError, match="did you mean 'acar_slowfast_r50_ava'"):
        get_preset("acar_slowfast_r50_av")


@pytest.mark.parametrize("name", list_presets())
def test_preset_round_trips_through_a_plain_dict(name):
    preset = get_preset(name)
    data = preset.to_dict()
    assert ModelPreset.from_dict(data) == preset
    assert Preprocessing.from_dict(data["preprocessing"]) == preset.preprocessing
    assert all(not isinstance(v, tuple) for v in data["preprocessing"].values())  # storable as YAML / torch


def test_published_acar_preprocessing():
    r50, r101 = get_preset("acar_slowfast_r50_ava").preprocessing, get_preset("acar_slowfast_r101_ava").preprocessing
    assert (r50.norm_value, r50.mean, r50.std) == (255.0, (0.45,) * 3, (0.225,) * 3)
    assert (r101.norm_value, r101.mean, r101.std) == (1.0, (110.63666788, 103.16065604, 96.29023126),
                                                      (38.7568578, 37.88248729, 40.02898126))
    for pre in (r50, r101):
        assert (pre.resize, pre.clip_len, pre.frame_stride, pre.fps) == (256, 32, 2, 30.0)
        assert pre.temporal_spec() == ("TemporalCenterCrop", {"size": 64, "step": 2})
        assert pre.activation == "pose_softmax" and pre.exclusive == tuple(range(13))
    assert get_preset("acar_slowfast_r101_ava_kinetics").preprocessing == r101
    assert {f for f, _, _ in r50.differences(r101)} == {"norm_value", "mean", "std"}


def test_spatial_spec_builds_the_data_layers_transform():
    pre = get_preset("acar_slowfast_r101_ava").preprocessing
    compose = from_acar_spec(pre.spatial_spec(), train=False)
    assert compose.steps == (ShortSideScale(256), ToTensor(1.0), Normalize(pre.mean, pre.std))
    recipe = compose.sample(240, 320)
    assert recipe.geometry.out == (341, 256) and recipe.norm_value == 1.0 and recipe.mean == pre.mean


def test_ava_label_map_ships_with_the_package(tmp_path):
    labels = ava_v22_labelmap()
    assert len(labels) == 60 and len(set(labels.ids)) == 60
    assert labels.ids[:13] == (1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)  # the 13 pose classes
    assert (labels.ids[0], labels.names[0]) == (1, "bend/bow (at the waist)")
    assert (labels.ids[-1], labels.names[-1]) == (80, "watch (a person)")
    assert dict(zip(labels.ids, labels.names))[79] == "talk to (e.g., self, a person, a group)"
    pre = get_preset("acar_slowfast_r50_ava").preprocessing
    assert pre.labelmap.ids == labels.ids and pre.labelmap.names == labels.names
    # as a pbtxt (official dialect) the evaluator and the data layer read it back unchanged
    from stad.data.formats.labelmap import read_labelmap, write_labelmap

    write_labelmap(labels, tmp_path / "ava.pbtxt")
    assert read_labelmap(tmp_path / "ava.pbtxt") == labels
    assert labels.label_types[12:14] == ("PERSON_MOVEMENT", "OBJECT_MANIPULATION")


def test_pose_softmax_activation():
    pre = get_preset("acar_slowfast_r50_ava").preprocessing
    scores = pre.activation_fn()(torch.randn(4, 60))
    assert torch.allclose(scores[:, :13].sum(1), torch.ones(4), atol=1e-5)
    # the CW reference kept ACAR's pose softmax over outputs 0..12 of its 50 classes
    cw = get_preset("cw_vitsf_acar").preprocessing.activation_fn()
    logits = torch.randn(2, 50)
    assert torch.allclose(cw(logits)[:, :13].sum(1), torch.ones(2), atol=1e-5)
    assert torch.allclose(cw(logits)[:, 13:], torch.sigmoid(logits[:, 13:]))
    sigmoid = get_preset("linear_slowfast_r50_ava").preprocessing  # AVA presets all use the pose softmax
    assert sigmoid.activation == "pose_softmax"


@pytest.mark.parametrize("manifest", sorted(MANIFESTS))
def test_infer_preset_from_acar_model_zoo_keys(manifest):
    preset, reason = infer_preset(model_zoo_file(manifest))
    assert preset.name == MANIFESTS[manifest]
    assert ("23 slow_res3 blocks (R101)" if "r101" in manifest else "6 slow_res3 blocks (R50)") in reason
    # the inferred preset's model takes the file strictly
    with torch.device("meta"):
        model = preset.build_model()
    model.load_state_dict(filter_acar_detector(model_zoo_file(manifest)), strict=True)


def test_infer_preset_cw_reference_layout():
    sd = {"module.backbone.module.slow_conv1.weight": torch.empty(64, 3, 1, 7, 7, device="meta"),
          "module.backbone.submodule.blocks.0.attn.qkv.weight": torch.empty(3, 1, device="meta"),
          "module.head.module.fc2.weight": torch.empty(50, 1024, device="meta")}
    preset, reason = infer_preset({"state_dict": sd})
    assert preset.name == "cw_vitsf_acar" and "Chaotic World" in reason


def test_unknown_layouts_are_clear_errors_listing_the_known_ones():
    with pytest.raises(UnknownLayoutError) as info:
        infer_preset({"state_dict": {"conv.weight": torch.zeros(1)}})
    for name in KNOWN_LAYOUTS:
        assert name in str(info.value)
    # an ACAR-style file fine-tuned to another class count is not an AVA preset
    sd = dict(meta_state_dict(load_manifest("acar_ava_slowfast_r50_linear")))
    sd["module.head.module.fc.weight"] = torch.empty(11, 2304, device="meta")
    with pytest.raises(UnknownLayoutError, match="11 classes"):
        infer_preset({"state_dict": sd})
    with pytest.raises(UnknownLayoutError, match="VideoMAE ViT backbone"):
        infer_preset({"model": {"patch_embed.proj.weight": torch.zeros(1), "blocks.0.norm1.weight": torch.zeros(1)}})
    bare = {k[len("module.backbone.module."):]: v for k, v in model_zoo_file("acar_ava_slowfast_r50_hr2o")[
        "state_dict"].items() if k.startswith("module.backbone.module.")}
    with pytest.raises(UnknownLayoutError, match="bare SlowFast backbone"):
        infer_preset(bare)


def test_preprocessing_validation_and_differences():
    with pytest.raises(ValueError, match="activation"):
        Preprocessing(num_classes=3, activation="softmax")
    with pytest.raises(ValueError, match="label ids"):
        Preprocessing(num_classes=3, label_ids=(1, 2))
    a = Preprocessing(num_classes=3, fps=None, label_ids=())
    b = Preprocessing(num_classes=3, fps=25.0, label_ids=(1, 2, 3), mean=(0.45, 0.45, 0.4500000001))
    assert a.differences(b) == []  # unknown fps / label map match anything; floats to 1e-6
    c = Preprocessing(num_classes=3, clip_len=8, resize=(160, 120))
    assert [f for f, _, _ in a.differences(c)] == ["resize", "clip_len"]
    assert Preprocessing(num_classes=2).labelmap.names == ("class 1", "class 2")


def test_infer_preset_on_the_released_cw_reference_keys():
    """The Chaotic World reference's released file (manifest of its keys): preset inferred, loads strictly."""
    from stad.models.checkpoints import filter_cw_vitsf

    checkpoint = {"state_dict": meta_state_dict(load_manifest("cw_reference_vitsf"))}
    preset, reason = infer_preset(checkpoint)
    assert preset.name == "cw_vitsf_acar" and "40 ViT blocks" in reason
    with torch.device("meta"):
        model = preset.build_model()
    model.load_state_dict(filter_cw_vitsf(checkpoint), strict=True)
