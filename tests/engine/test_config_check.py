"""Every kwargs mapping of a config is checked against its target's signature when the config loads."""
from pathlib import Path

import pytest

from stad.config import ConfigError, load_config
from stad.engine.config_check import accepted_names, check_config, check_kwargs

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "configs" / "toy" / "demo_acar.yaml"
SHIPPED = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_shipped_config_passes(path):
    check_config(load_config(path))


@pytest.mark.parametrize("override, message", [
    ("model.head.kwargs.depht=2", "'model.head.kwargs.depht' (acar -> ACARHead does not take it); did you mean "
                                  "'model.head.kwargs.depth'?"),
    ("model.backbone.kwargs.alpah=4", "'model.backbone.kwargs.alpah' (slowfast_tiny -> SlowFast does not take it); did you mean "
                                      "'model.backbone.kwargs.alpha'?"),
    ("model.backbone.sub_kwargs.num_frame=8", "did you mean 'model.backbone.sub_kwargs.num_frames'?"),
    ("model.kwargs.vit_frame_strid=1", "did you mean 'model.kwargs.vit_frame_stride'?"),
    ("loss.kwargs.exclusiv=[0]", "did you mean 'loss.kwargs.exclusive'?"),
    ("train.optimizer.kwargs.weight_decy=0.1", "did you mean 'train.optimizer.kwargs.weight_decay'?"),
    ("train.optimizer.type=AdamWW", "unknown optimizer 'AdamWW'"),
    ("val.augmentation.spatial.0.kwargs.resiz=120", "did you mean 'val.augmentation.spatial[0].kwargs.resize'?"),
    ("val.augmentation.spatial.0.type=Scal", "unknown transform 'Scal'; did you mean 'Scale'?"),
    ("val.augmentation.temporal.kwargs.stpe=2", "'val.augmentation.temporal.kwargs.stpe'"),
    ("model.head.type=acr", "unknown head 'acr'; did you mean 'acar'?"),
    ("model.head.type=vit_tiny", "'vit_tiny' is a backbone, not a head"),
    ("model.backbone.arch=slowfst_tiny", "model.backbone.arch: unknown backbone 'slowfst_tiny'; did you mean"),
    ("model.head.kwargs.in_channels=3", "unknown key 'model.head.kwargs.in_channels'"),  # the builder sets it
])
def test_a_typo_in_any_kwargs_is_a_config_error_naming_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        check_config(load_config(TOY, [override]))
    assert message in str(info.value)


def test_a_list_of_views_is_checked_view_by_view():
    views = "val.augmentation.spatial.0.kwargs=[{resize: 120}, {resize: 96, interpolaton: 1}]"
    with pytest.raises(ConfigError, match="interpolaton"):
        check_config(load_config(TOY, [views]))


def test_accepted_names_follows_a_factory_to_the_class_it_returns():
    from stad.models.slowfast import slowfast_r50

    names = accepted_names(slowfast_r50)
    assert {"alpha", "beta", "fuse_kernel_size", "frozen_bn"} <= names
    assert accepted_names(lambda **kwargs: None) is None  # cannot be checked: accepted as is

    def target(a, *, b=1):
        return a

    check_kwargs("x", target, {"a": 1, "b": 2})
    with pytest.raises(ConfigError, match=r"unknown key 'x.c' \(target does not take it\); valid keys: a, b"):
        check_kwargs("x", target, {"c": 1})


def test_a_missing_weights_file_is_a_config_error_naming_its_key_before_any_model_is_built(tmp_path, monkeypatch):
    from stad.engine import runner
    from stad.engine.config_check import check_weight_files
    from stad.engine.distributed import DistContext
    from stad.engine.storage import run_checked

    recognition = ROOT / "configs" / "toy" / "recognition_finetune.yaml"
    missing = tmp_path / "absent.pth"
    config = load_config(recognition, [f"model.backbone.pretrain.path={missing}"])
    check_config(config)  # loads: the file may be written by an earlier stage
    with pytest.raises(ConfigError, match=f"model.backbone.pretrain.path: weights file not found: {missing}"):
        check_weight_files(config)

    ran = []
    monkeypatch.setattr(runner, "run", lambda *args: ran.append(args))
    with pytest.raises(ConfigError, match="model.backbone.pretrain.path"):
        run_checked(DistContext(), config)
    assert ran == []  # stopped before the runner built anything

    missing.write_bytes(b"")  # present: the loader, not this check, judges its contents
    run_checked(DistContext(), config)
    assert len(ran) == 1
    whole = load_config(ROOT / "configs" / "toy" / "demo_linear.yaml", [f"pretrain.path={tmp_path / 'none.pth'}"])
    with pytest.raises(ConfigError, match=r"^pretrain.path: weights file not found"):
        check_weight_files(whole)
