"""Config loading: ACAR-style keys, strict unknown keys with suggestions, overrides, round trip."""
from pathlib import Path

import pytest
import yaml

from stad.config import (Config, ConfigError, apply_overrides, config_from_dict, config_to_dict, load_config,
                         save_config)

ROOT = Path(__file__).resolve().parents[1]

ACAR_STYLE = """
evaluate: False
result_path: experiments/x
manual_seed: 1
print_freq: 20
model:
    freeze_bn: True
    backbone:
        arch: slowfast50
        learnable: True
        pretrain:
            path: pretrained/SLOWFAST_R50_K400.pth.tar
        kwargs: {alpha: 4, beta: 0.125}
    neck:
        type: basic
        kwargs: {bbox_jitter: {num: 1, scale: 0.075}, num_classes: 60, multi_class: True}
    head:
        type: acar
        kwargs: {width: 2304, roi_spatial: 7, num_classes: 60, depth: 2}
loss:
    type: ava_criterion
    kwargs: {pose_softmax: True}
train:
    root_path: data
    annotation_path: annotations/train.pkl
    batch_size: 1
    augmentation:
        spatial:
          - type: Scale
            kwargs: {resize: 256}
          - type: RandomHorizontalFlip
        temporal: {type: TemporalCenterCrop, kwargs: {size: 64, step: 2}}
    n_epochs: 5
    val_freq: 1
    save_freq: 1
    optimizer: {type: SGD, kwargs: {momentum: 0.9, weight_decay: 1e-7, nesterov: True}}
    scheduler: {type: step, milestone_epochs: [4.6, 4.8], lr_mults: [0.1, 0.1], base_lr: 0.008,
                warmup_lr: 0.064, warmup_epochs: 1}
val:
    root_path: data
    annotation_path: annotations/val.pkl
    batch_size: 1
    with_label: False
    eval_mAP:
        labelmap: annotations/labelmap.pbtxt
        groundtruth: annotations/val.csv
        exclusions: annotations/excl.csv
"""


@pytest.fixture
def acar_yaml(tmp_path):
    path = tmp_path / "acar.yaml"
    path.write_text(ACAR_STYLE)
    return path


def test_acar_style_config_loads(acar_yaml):
    cfg = load_config(acar_yaml)
    assert isinstance(cfg, Config)
    assert cfg.model.backbone.arch == "slowfast50"
    assert cfg.model.backbone.pretrain.path == "pretrained/SLOWFAST_R50_K400.pth.tar"
    assert cfg.train.scheduler.milestone_epochs == (4.6, 4.8)
    assert cfg.train.optimizer.kwargs["weight_decay"] == 1e-7
    assert cfg.train.augmentation.spatial[1].type == "RandomHorizontalFlip"
    assert cfg.train.augmentation.spatial[1].kwargs == {}
    assert cfg.num_classes == 60
    assert cfg.capacities == (50,)
    with pytest.raises(AttributeError):
        cfg.manual_seed = 3  # frozen


def test_unknown_key_suggests_closest(acar_yaml):
    text = ACAR_STYLE.replace("    n_epochs: 5", "    n_epoch: 5")
    acar_yaml.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(acar_yaml)
    message = str(err.value)
    assert str(acar_yaml) in message
    assert "unknown key 'train.n_epoch'" in message
    assert "did you mean 'train.n_epochs'" in message


def test_unknown_nested_key_and_top_level(tmp_path):
    data = yaml.safe_load(ACAR_STYLE)
    data["model"]["backbone"]["archh"] = "x"
    with pytest.raises(ConfigError, match=r"model\.backbone\.archh'; did you mean 'model\.backbone\.arch'"):
        config_from_dict(data)
    data = yaml.safe_load(ACAR_STYLE)
    data["manual_sead"] = 3
    with pytest.raises(ConfigError, match="did you mean 'manual_seed'"):
        config_from_dict(data)


def test_wrong_type_names_key():
    data = yaml.safe_load(ACAR_STYLE)
    data["train"]["batch_size"] = "three"
    with pytest.raises(ConfigError, match=r"train\.batch_size: expected int, got str 'three'"):
        config_from_dict(data)


def test_missing_required_key():
    data = yaml.safe_load(ACAR_STYLE)
    del data["train"]["annotation_path"]
    with pytest.raises(ConfigError, match="missing required key 'train.annotation_path'"):
        config_from_dict(data)


def test_overrides(acar_yaml):
    cfg = load_config(acar_yaml, ["train.n_epochs=3", "train.scheduler.type=cosine", "manual_seed=7",
                                  "train.scheduler.milestone_epochs=[1, 2]", "val.eval_mAP.capacities=[10, 50]"])
    assert cfg.train.n_epochs == 3
    assert cfg.train.scheduler.type == "cosine"
    assert cfg.manual_seed == 7
    assert cfg.train.scheduler.milestone_epochs == (1.0, 2.0)
    assert cfg.capacities == (10, 50)
    with pytest.raises(ConfigError, match="did you mean 'train.n_epochs'"):
        load_config(acar_yaml, ["train.n_epoc=3"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(acar_yaml, ["train.n_epochs"])


def test_apply_overrides_does_not_mutate_input():
    data = {"a": {"b": 1}}
    out = apply_overrides(data, ["a.b=2", "c.d=x"])
    assert data == {"a": {"b": 1}}
    assert out == {"a": {"b": 2}, "c": {"d": "x"}}


def test_save_and_reload_round_trip(acar_yaml, tmp_path):
    cfg = load_config(acar_yaml)
    save_config(cfg, tmp_path / "out" / "config.yaml")
    again = load_config(tmp_path / "out" / "config.yaml")
    assert again == cfg
    assert config_to_dict(again)["train"]["scheduler"]["lr_mults"] == [0.1, 0.1]


def test_eval_config_needs_no_train_section():
    data = yaml.safe_load(ACAR_STYLE)
    del data["train"]
    data["evaluate"] = True
    assert config_from_dict(data).train is None
    data["evaluate"] = False
    with pytest.raises(ConfigError, match="needs a 'train' section"):
        config_from_dict(data)


def test_cw_capacity_sweep_keys():
    data = yaml.safe_load(ACAR_STYLE)
    data.update(cap_min=50, cap_max=60, cap_step=5)
    assert config_from_dict(data).capacities == (50, 55)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.num_classes > 0


def test_override_list_items(acar_yaml):
    cfg = load_config(acar_yaml, ["train.augmentation.spatial.0.kwargs.resize=[160, 128]"])
    assert cfg.train.augmentation.spatial[0].kwargs == {"resize": [160, 128]}
    with pytest.raises(ConfigError, match="has 2 items; '5' is not an index"):
        load_config(acar_yaml, ["train.augmentation.spatial.5.type=Scale"])
    with pytest.raises(ConfigError, match="is not a mapping or list"):
        load_config(acar_yaml, ["manual_seed.x=1"])


def test_data_cache_mb_key(acar_yaml):
    cfg = load_config(acar_yaml)
    assert cfg.train.cache_mb == 0.0 and cfg.val.cache_mb == 0.0  # off unless asked for
    cfg = load_config(acar_yaml, ["train.cache_mb=256", "val.cache_mb=64.5"])
    assert cfg.train.cache_mb == 256.0 and cfg.val.cache_mb == 64.5
    with pytest.raises(ConfigError, match=r"did you mean 'train\.cache_mb'"):
        load_config(acar_yaml, ["train.cache_m=256"])
