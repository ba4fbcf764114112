"""Config -> model/loss mapping and official-layout weight loading (state dicts built here)."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml

from stad.config import ConfigError, config_from_dict, load_config
from stad.engine import builders, checkpoint

ROOT = Path(__file__).resolve().parents[2]
LOG = logging.getLogger("test")


def _toy(overrides=()):
    return load_config(ROOT / "configs" / "toy" / "vitsf_acar_train.yaml", list(overrides))


def test_acar_ava_config_maps_to_slowfast_r50():
    cfg = load_config(ROOT / "configs" / "ava" / "SLOWFAST_R50_ACAR_HR2O.yaml")
    kwargs = builders.model_kwargs(cfg)
    assert kwargs["backbone"] == "slowfast_r50" and kwargs["head"] == "acar"
    assert kwargs["backbone_kwargs"] == {"alpha": 4, "beta": 0.125, "fuse_only_conv": False, "fuse_kernel_size": 7,
                                         "slow_full_span": True, "frozen_bn": True}
    assert kwargs["head_kwargs"] == {"roi_size": 7, "depth": 2}
    assert kwargs["jitter_scale"] == 0.075


def test_cw_config_maps_to_dual_stream():
    cfg = load_config(ROOT / "configs" / "chaotic_world" / "VITSF_ACAR_HR2O_CW_train.yaml")
    kwargs = builders.model_kwargs(cfg)
    assert (kwargs["backbone"], kwargs["slowfast"], kwargs["vit"]) == ("vitsf", "slowfast_r50", "vit_giant")
    assert kwargs["vit_kwargs"] == {"img_size": 224, "num_frames": 32, "final_norm": False}
    assert kwargs["fusion"] == "cw_reference" and "vit_frame_stride" not in kwargs
    with torch.device("meta"):  # ViT-g + R50 without allocating 4 GB
        model = builders.build_model(cfg)
    assert sum(model.backbone.out_channels) == 3712 == cfg.model.head.kwargs["width"]
    assert type(model.fusion).__name__ == "ViTAdapterFusion"


def test_width_mismatch_and_unknown_neck_keys_are_errors():
    with pytest.raises(ConfigError, match="width is 100 but the backbone gives"):
        builders.build_model(_toy(["model.head.kwargs.width=100"]))
    with pytest.raises(ConfigError, match=r"unknown keys \['jiter'\]"):
        builders.model_kwargs(_toy(["model.neck.kwargs.jiter=1"]))


def test_learnable_false_freezes_backbone():
    model = builders.build_model(_toy(["model.backbone.learnable=false"]))
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())


def test_criterion_mapping():
    data = yaml.safe_load((ROOT / "configs" / "toy" / "vitsf_acar_train.yaml").read_text())
    logits = torch.tensor([[2.0, 0.0, -1.0] + [0.0] * 8])
    for loss, pose in ((({"type": "ava_criterion", "kwargs": {"pose_softmax": False}}), False),
                       ({"type": "pose_softmax", "kwargs": {"exclusive": [0, 1, 2]}}, True)):
        data["loss"] = loss
        _, activation = builders.build_criterion(config_from_dict(data))
        probs = activation(logits)
        assert probs[0, :3].sum().item() == pytest.approx(1.0) if pose else probs[0, 0] == torch.sigmoid(logits[0, 0])
    data["loss"] = {"type": "focal"}
    with pytest.raises(ConfigError, match="loss"):
        builders.build_criterion(config_from_dict(data))


SINGLE_STREAM = ["model.backbone.sub_arch=null", "model.kwargs={}"]


def _acar_layout_file(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    """A single-stream toy model and its weights saved in ACAR-Net's model-zoo layout."""
    checkpoint.seed_everything(0)
    source = builders.build_model(_toy(SINGLE_STREAM))
    acar = {f"module.{part}.module.{key}": value for part in ("backbone", "head")
            for key, value in getattr(source, part).state_dict().items()}
    path = tmp_path / "AVA_ACAR.pth.tar"
    torch.save({"epoch": 5, "state_dict": acar}, path)
    return source, path


def test_acar_layout_whole_model_checkpoint_loads(tmp_path):
    cfg = _toy(SINGLE_STREAM)
    source, path = _acar_layout_file(tmp_path)
    checkpoint.seed_everything(1)
    target = builders.build_model(cfg)
    builders.load_weights(target, checkpoint.read_checkpoint(path), strict=True)
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key


def test_pretrain_with_an_acar_layout_file_goes_through_its_filter(tmp_path):
    """Top-level ``pretrain`` (non-strict) takes the filtered layout that fills the most tensors."""
    source, path = _acar_layout_file(tmp_path)
    cfg = _toy(SINGLE_STREAM + [f"pretrain.path={path}"])
    checkpoint.seed_everything(1)
    target = builders.build_model(cfg)
    builders.load_initial_weights(target, cfg, LOG)
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key
    with pytest.raises(RuntimeError, match="weights do not match the model"):  # fills nothing: an error
        builders.load_weights(target, {"state_dict": {"foo.weight": torch.zeros(1)}}, strict=False)


def test_pretrained_streams_load_through_filters(tmp_path):
    cfg = _toy()
    checkpoint.seed_everything(0)
    source = builders.build_model(cfg)
    slowfast_file, vit_file = tmp_path / "SLOWFAST_K400.pth.tar", tmp_path / "videomae.pth"
    torch.save({"state_dict": source.backbone.slowfast.state_dict()}, slowfast_file)  # bare SlowFast keys
    torch.save({"module": {f"encoder.{k}": v for k, v in source.backbone.vit.state_dict().items()}}, vit_file)
    cfg = _toy([f"model.backbone.pretrain.path={slowfast_file}", f"model.backbone.subbackbone.path={vit_file}"])
    checkpoint.seed_everything(1)
    target = builders.build_model(cfg)
    builders.load_initial_weights(target, cfg, LOG)
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(value, target.backbone.state_dict()[key]), key
    assert not torch.equal(source.head.fc2.weight, target.head.fc2.weight)  # the head stays at init


def test_weights_that_match_nothing_fail_clearly(tmp_path):
    model = builders.build_model(_toy())
    with pytest.raises(RuntimeError, match="weights do not match the model"):
        builders.load_weights(model, {"state_dict": {"foo.weight": torch.zeros(1)}}, strict=True)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="cannot read checkpoint .*bad.pth"):
        checkpoint.read_checkpoint(bad)


def test_cw_reference_layout_checkpoint_loads(tmp_path):
    """The CW reference system's full model: backbone.module (SlowFast), backbone.submodule (timm ViT),
    head.module (ACAR head with BN_vit / conv_auto) -> a model built with fusion cw_reference, no final ViT norm."""
    cfg = _toy(["model.kwargs.fusion=cw_reference", "model.backbone.sub_kwargs.final_norm=false"])
    checkpoint.seed_everything(0)
    source = builders.build_model(cfg)
    sd = {f"module.backbone.module.{k}": v for k, v in source.backbone.slowfast.state_dict().items()}
    sd.update({f"module.backbone.submodule.{k}": v for k, v in source.backbone.vit.state_dict().items()})
    sd["module.backbone.submodule.fc_norm.weight"] = torch.ones(64)  # never applied by the reference: dropped
    sd["module.backbone.submodule.head.weight"] = torch.zeros(80, 64)  # timm classifier, dropped
    sd.update({f"module.head.module.{k}": v for k, v in source.head.state_dict().items()})
    renames = {"vit_bn.": "BN_vit.", "vit_conv.": "conv_auto."}
    sd.update({f"module.head.module.{renames[k[:k.index('.') + 1]]}{k[k.index('.') + 1:]}": v
               for k, v in source.fusion.state_dict().items()})
    path = tmp_path / "SFR50_VITG_ACAR_CWtrain_ckpt_11.pth.tar"
    torch.save({"epoch": 11, "state_dict": sd}, path)
    checkpoint.seed_everything(1)
    target = builders.build_model(cfg)
    builders.load_weights(target, checkpoint.read_checkpoint(path), strict=True)
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key


def test_sub_learnable_false_freezes_only_the_vit():
    cfg = _toy(["model.backbone.sub_learnable=false"])
    model = builders.build_model(cfg)
    assert not any(p.requires_grad for p in model.backbone.vit.parameters())
    assert all(p.requires_grad for p in model.backbone.slowfast.parameters())
    assert builders.frozen_modules(model, cfg) == [model.backbone.vit]
    assert builders.frozen_modules(model, _toy()) == []


def test_build_dataset_passes_the_frame_cache_size(tmp_path):
    import numpy as np

    from stad.data.formats.acar_pkl import write_acar_pkl
    from stad.structures import Boxes, Keyframe, LabelMap

    ann = tmp_path / "ann.pkl"
    kf = Keyframe("v", 1, Boxes(np.array([[0.1, 0.1, 0.5, 0.9]], np.float32)), ((0,),), 31, 1, 61, "v_%06d.jpg")
    write_acar_pkl(ann, [kf], LabelMap(tuple(range(1, 12)), tuple(str(i) for i in range(1, 12))))
    sets = [f"train.annotation_path={ann}", f"train.root_path={tmp_path}", "model.head.kwargs.num_classes=11"]
    config = _toy(sets)
    assert config.train.cache_mb == 0
    assert builders.build_dataset(config, config.train, train=True).source.cache_bytes_max == 0
    config = _toy(sets + ["train.cache_mb=8"])
    dataset = builders.build_dataset(config, config.train, train=True)
    assert dataset.source.cache_bytes_max == 8 * 2**20


def test_one_label_map_rule_for_csv_ids_and_names(tmp_path):
    """Ids and their order from the annotation's class table (output i = idx_to_class[i]); names from the
    evaluation label map when it holds those ids; the label map alone when there is no table."""
    import pickle

    from stad.data.formats.labelmap import write_labelmap
    from stad.structures import LabelMap

    k = _toy().num_classes
    ids = tuple(range(k + 10, 10, -1))[:k]  # not sorted, not 1..K
    (tmp_path / "val.pkl").write_bytes(pickle.dumps([[], [{"id": i} for i in ids]]))
    everything = LabelMap(tuple(range(1, 40)), tuple(f"action {i}" for i in range(1, 40)))
    write_labelmap(everything, tmp_path / "all.pbtxt")
    cfg = _toy([f"val.annotation_path={tmp_path / 'val.pkl'}", f"val.eval_mAP.labelmap={tmp_path / 'all.pbtxt'}"])
    found = builders.labelmap(object(), cfg)
    assert found.ids == ids and found.names == tuple(f"action {i}" for i in ids)
    assert builders.labelmap_from_config(cfg) == found  # the preset stored in checkpoints says the same
    write_labelmap(LabelMap(tuple(range(1, k + 1)), tuple(f"c{i}" for i in range(1, k + 1))), tmp_path / "k.pbtxt")
    no_table = _toy([f"val.annotation_path={tmp_path / 'none.pkl'}", f"train.annotation_path={tmp_path / 'none.pkl'}",
                     f"val.eval_mAP.labelmap={tmp_path / 'k.pbtxt'}"])
    assert builders.labelmap(object(), no_table).names[0] == "c1"
