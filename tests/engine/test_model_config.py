"""The model section built by name: the dual stream by name (and the ACAR/CW spelling onto it), presets from
YAML, and the fine-tuning modes (which parameters train, optimizer groups and LRs, one step, LoRA weights)."""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from stad.config import ConfigError, TrainConfig, ValConfig, config_from_dict
from stad.engine import builders
from stad.engine.config_check import check_config
from stad.engine.distributed import DistContext
from stad.engine.optim import WarmupLRSchedule, build_optimizer
from stad.engine.trainer import Trainer
from stad.models.lora import LoRALinear, merge_lora

ROOT = Path(__file__).resolve().parents[2]
LOG = logging.getLogger("test.model_config")


def _data(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


def _state(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _built(data: dict, seed: int = 0, meta: bool = False):
    config = config_from_dict(data, "test")
    torch.manual_seed(seed)
    if meta:
        with torch.device("meta"):
            return config, builders.build_model(config)
    return config, builders.build_model(config)


def _same_model(a: torch.nn.Module, b: torch.nn.Module, values: bool = True) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(sa[k].shape == sb[k].shape for k in sa)
    if values:
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [(n, p.requires_grad) for n, p in a.named_parameters()] == \
        [(n, p.requires_grad) for n, p in b.named_parameters()]


# --------------------------------------------------------------------------- the dual stream by name


def _demo_by_name() -> dict:
    """configs/toy/demo_acar.yaml with its model stated by name: arch vitsf and one section per stream."""
    data = _data("configs/toy/demo_acar.yaml")
    del data["model"]["kwargs"]
    data["model"]["backbone"] = {"arch": "vitsf", "kwargs": {"vit_frame_stride": 1},
                                 "vit": {"arch": "vit_tiny", "kwargs": {"img_size": 112, "num_frames": 8}},
                                 "slowfast": {"arch": "slowfast_tiny"}}
    return data


def test_demo_model_by_name_is_the_acar_spelling_model():
    """The toy demo's model: same build_action_model arguments, state dict keys, shapes and init (same seed)."""
    acar_cfg, acar = _built(_data("configs/toy/demo_acar.yaml"))
    named_cfg, named = _built(_demo_by_name())
    assert builders.model_kwargs(named_cfg) == builders.model_kwargs(acar_cfg)
    _same_model(named, acar)
    check_config(named_cfg)


def test_cw_model_by_name_is_the_cw_spelling_model():
    """The CW reference recipe (frozen ViT-g, Kinetics SlowFast, VideoMAEv2 weights) in the named spelling."""
    data = _data("configs/chaotic_world/VITSF_ACAR_HR2O_CW_train.yaml")
    old = data["model"]["backbone"]
    named = copy.deepcopy(data)
    named["model"]["backbone"] = {
        "arch": "vitsf",
        "vit": {"arch": old["sub_arch"], "kwargs": old["sub_kwargs"], "pretrain": old["subbackbone"],
                "learnable": old["sub_learnable"]},
        "slowfast": {"arch": old["arch"], "kwargs": old["kwargs"], "pretrain": old["pretrain"]}}
    cw_cfg, cw = _built(data, meta=True)
    named_cfg, by_name = _built(named, meta=True)
    assert builders.model_kwargs(named_cfg) == builders.model_kwargs(cw_cfg)
    _same_model(by_name, cw, values=False)
    a, b = builders.resolve_backbone(cw_cfg), builders.resolve_backbone(named_cfg)
    assert a.arch == b.arch == "vitsf"
    for name in ("vit", "slowfast"):  # same weights, trainability and kwargs per stream
        assert (a.streams[name].arch, a.streams[name].kwargs, a.streams[name].pretrain, a.streams[name].learnable) == \
            (b.streams[name].arch, b.streams[name].kwargs, b.streams[name].pretrain, b.streams[name].learnable)
    assert b.streams["vit"].pretrain_key == "model.backbone.vit.pretrain"
    assert [type(m).__name__ for m in builders.frozen_modules(by_name, named_cfg)] == ["VisionTransformer3D"]
    check_config(named_cfg)


@pytest.mark.parametrize("edit, message", [
    (lambda b: b.update(sub_arch="vit_tiny"), "sub_arch is the ACAR/CW spelling"),
    (lambda b: b.update(pretrain={"path": "x.pth"}), "pretrain is the ACAR/CW spelling"),
    (lambda b: b["vit"].update(kwarg={"img_size": 112}), "unknown key 'model.backbone.vit.kwarg'; did you mean "
                                                         "'model.backbone.vit.kwargs'?"),
])
def test_named_backbone_keys_are_strict(edit, message):
    data = _demo_by_name()
    edit(data["model"]["backbone"])
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, "test")


@pytest.mark.parametrize("edit, message", [
    (lambda b: b["vit"]["kwargs"].update(num_frame=8), "'model.backbone.vit.kwargs.num_frame' (vit_tiny -> "
                                                       "VisionTransformer3D does not take it); did you mean "
                                                       "'model.backbone.vit.kwargs.num_frames'?"),
    (lambda b: b["kwargs"].update(vit_frame_strid=1), "did you mean 'model.backbone.kwargs.vit_frame_stride'?"),
    (lambda b: b["slowfast"].update(arch="slowfast_tiniest"), "model.backbone.slowfast.arch: unknown backbone"),
    (lambda b: b.update(arch="slowfast_tiny"), "model.backbone.vit: backbone 'slowfast_tiny' has no 'vit' stream"),
])
def test_named_backbone_kwargs_are_checked_before_workers(edit, message):
    data = _demo_by_name()
    edit(data["model"]["backbone"])
    with pytest.raises(ConfigError) as info:
        check_config(config_from_dict(data, "test"))
    assert message in str(info.value)


def test_flat_stride_given_twice_is_an_error():
    data = _demo_by_name()
    data["model"]["kwargs"] = {"vit_frame_stride": 2}
    with pytest.raises(ConfigError, match="give it once"):
        builders.model_kwargs(config_from_dict(data, "test"))


# --------------------------------------------------------------------------- presets from YAML


def test_toy_preset_from_yaml_builds_the_demo_model():
    data = _data("configs/toy/demo_acar.yaml")
    demo_cfg, demo = _built(data)
    data["model"] = {"preset": "toy_acar_vitsf_tiny", "freeze_bn": False}
    preset_cfg, preset = _built(data)
    assert preset_cfg.num_classes == 11
    assert builders.model_spec(preset_cfg) == ("build_action_model", builders.model_kwargs(demo_cfg))
    _same_model(preset, demo)
    check_config(preset_cfg)  # the config's val preprocessing is the preset's


def test_detector_preset_from_yaml_builds_the_published_model():
    """``model: {preset: acar_slowfast_r50_ava}`` next to ACAR-Net's R50 eval sections = that config's model."""
    data = _data("configs/ava/eval_SLOWFAST_R50_ACAR_HR2O.yaml")
    explicit_cfg, explicit = _built(data, meta=True)
    data["model"] = {"preset": "acar_slowfast_r50_ava"}
    preset_cfg, preset = _built(data, meta=True)
    _same_model(preset, explicit, values=False)
    assert preset.neck.jitter_scale == explicit.neck.jitter_scale == 0.075
    assert preset.backbone.frozen_bn and explicit.backbone.frozen_bn
    stored = builders.preset_from_config(preset_cfg)  # what its checkpoints carry
    assert (stored.model, stored.preprocessing.num_classes) == ("acar_slowfast_r50", 60)
    check_config(preset_cfg)


def test_preset_preprocessing_is_checked_strictly():
    data = _data("configs/toy/demo_acar.yaml")
    data["model"] = {"preset": "toy_acar_vitsf_tiny", "freeze_bn": False}
    data["val"]["augmentation"]["temporal"]["kwargs"]["step"] = 2
    with pytest.raises(ConfigError, match="TemporalCenterCrop.step: config 2 vs weights 4"):
        check_config(config_from_dict(data, "test"))
    data["preprocessing_override"] = True
    check_config(config_from_dict(data, "test"))


@pytest.mark.parametrize("model, message", [
    ({"preset": "toy_acar_vitsf_tiny", "head": {"type": "linear", "kwargs": {"num_classes": 11}}},
     "preset 'toy_acar_vitsf_tiny' supplies the whole model; remove model.head"),
    ({"preset": "toy_acar_vitsf_tiny", "kwargs": {"vit_frame_stride": 2}}, "remove model.kwargs"),
    ({"preset": "toy_acar_vitsf_tny"}, "model.preset: unknown preset 'toy_acar_vitsf_tny'; did you mean "
                                       "'toy_acar_vitsf_tiny'?"),
])
def test_preset_errors(model, message):
    data = _data("configs/toy/demo_acar.yaml")
    data["model"] = model
    with pytest.raises(ConfigError, match=message):
        check_config(config_from_dict(data, "test"))


# --------------------------------------------------------------------------- shared split base


def test_train_and_val_share_one_base():
    from stad.config import SplitConfig

    assert issubclass(TrainConfig, SplitConfig) and issubclass(ValConfig, SplitConfig)
    shared = {"root_path", "annotation_path", "batch_size", "augmentation", "workers", "video_root", "min_score",
              "cache_mb", "decode_threads"}
    assert shared == set(SplitConfig.__dataclass_fields__)


# --------------------------------------------------------------------------- fine-tuning modes

# the toy demo model at a CPU-test size (64x64 clips of 4 frames)
TINY = {"sub_kwargs": {"img_size": 64, "num_frames": 4}}


def _tiny(finetune: dict | None = None, optimizer: dict | None = None) -> tuple:
    data = _data("configs/toy/demo_acar.yaml")
    data["model"]["backbone"]["sub_kwargs"] = dict(TINY["sub_kwargs"])
    if finetune is not None:
        data["model"]["finetune"] = finetune
    if optimizer is not None:
        data["train"]["optimizer"] = optimizer
    return _built(data)


@dataclass
class Batch:
    clips: torch.Tensor
    boxes: list
    targets: list

    def to(self, device):
        return self


def _batch() -> Batch:
    gen = torch.Generator().manual_seed(1)
    boxes = [torch.tensor([[0.1, 0.1, 0.5, 0.9], [0.5, 0.2, 0.9, 0.8]]), torch.tensor([[0.2, 0.2, 0.7, 0.9]])]
    return Batch(torch.randn(2, 3, 4, 64, 64, generator=gen), boxes,
                 [(torch.rand(len(b), 11, generator=gen) > 0.5).float() for b in boxes])


def _one_step(model, config) -> set[str]:
    """One engine training step (optimizer_params -> build_optimizer -> schedule -> Trainer); the changed names."""
    optimizer = build_optimizer(builders.optimizer_params(model, config), config.train.optimizer,
                                config.train.scheduler.base_lr)
    schedule = WarmupLRSchedule(optimizer, config.train.scheduler, 1, 10)
    criterion, _ = builders.build_criterion(config)
    trainer = Trainer(DistContext(), model, criterion, optimizer, schedule, torch.amp.GradScaler("cpu", enabled=False),
                      freeze_bn=config.model.freeze_bn, frozen=builders.frozen_modules(model, config))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    assert trainer.step([_batch()], 0) is not None
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_full_is_todays_model_and_optimizer():
    config, model = _tiny()
    _, explicit = _tiny({"mode": "full"})
    _same_model(model, explicit)
    params = builders.optimizer_params(model, config)
    assert all(isinstance(p, torch.nn.Parameter) for p in params)  # one group of every parameter, in order
    assert [id(p) for p in params] == [id(p) for p in model.parameters()]
    assert builders.frozen_modules(model, config) == []
    changed = _one_step(model, config)
    assert any(n.startswith("backbone.vit.") for n in changed) and any(n.startswith("head.") for n in changed)


def test_linear_probe_trains_only_the_head():
    config, model = _tiny({"mode": "linear_probe"})
    assert _trainable(model) and all(n.startswith("head.") for n in _trainable(model))
    assert builders.frozen_modules(model, config) == [model.backbone]  # BN statistics stay too
    changed = _one_step(model, config)
    assert changed and changed <= _trainable(model)


def test_partial_trains_the_head_and_the_last_blocks():
    config, model = _tiny({"mode": "partial", "last_blocks": 1})
    trainable = _trainable(model)
    assert "backbone.vit.blocks.1.attn.qkv.weight" in trainable and "backbone.vit.norm.weight" in trainable
    assert "backbone.vit.blocks.0.attn.qkv.weight" not in trainable
    assert "backbone.slowfast.slow_res4.0.conv1.weight" in trainable
    assert "backbone.slowfast.slow_res3.0.conv1.weight" not in trainable
    changed = _one_step(model, config)
    assert changed <= trainable and any(n.startswith("backbone.vit.blocks.1.") for n in changed)


def test_layer_decay_groups_and_learning_rates():
    finetune = {"mode": "full", "layer_decay": 0.5, "backbone_lr_scale": 0.1, "no_decay_norm_bias": True}
    config, model = _tiny(finetune, optimizer={"type": "AdamW", "kwargs": {"weight_decay": 0.05}})
    groups = builders.optimizer_params(model, config)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    optimizer = build_optimizer(groups, config.train.optimizer, config.train.scheduler.base_lr)
    schedule = WarmupLRSchedule(optimizer, config.train.scheduler, 1, 10)
    lr = schedule.step(0)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    vit = model.backbone.vit  # 2 blocks: layers 0 (embedding), 1, 2, 3 (final norm)
    assert lr_of[id(vit.patch_embed.proj.weight)] == pytest.approx(lr * 0.1 * 0.5 ** 3)
    assert lr_of[id(vit.blocks[0].attn.qkv.weight)] == pytest.approx(lr * 0.1 * 0.5 ** 2)
    assert lr_of[id(vit.blocks[1].mlp.fc1.weight)] == pytest.approx(lr * 0.1 * 0.5)
    assert lr_of[id(vit.norm.weight)] == pytest.approx(lr * 0.1)
    assert lr_of[id(model.backbone.slowfast.slow_conv1.weight)] == pytest.approx(lr * 0.1)
    assert lr_of[id(model.head.fc2.weight)] == pytest.approx(lr)
    assert decay_of[id(model.head.fc2.weight)] == 0.05 and decay_of[id(vit.norm.weight)] == 0.0
    # without no_decay_norm_bias every group keeps the optimizer's own weight decay (AdamW's default here)
    config, model = _tiny({"mode": "full", "layer_decay": 0.5}, optimizer={"type": "AdamW"})
    optimizer = build_optimizer(builders.optimizer_params(model, config), config.train.optimizer, 0.1)
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.01}


def test_lora_trains_adapters_and_head_and_its_weights_load_and_merge(tmp_path):
    finetune = {"mode": "lora", "lora": {"rank": 2, "alpha": 4}}
    config, model = _tiny(finetune)
    assert isinstance(model.backbone.vit.blocks[0].attn.qkv, LoRALinear)
    trainable = _trainable(model)
    assert trainable and all(n.startswith("head.") or n.endswith(("lora_a", "lora_b")) for n in trainable)
    # weights of the model before LoRA load strictly: the adapters keep their start (identity)
    plain_config, plain = _tiny()
    builders.load_weights(model, {"state_dict": plain.state_dict()}, strict=True)
    model.eval()
    plain.eval()
    batch = _batch()
    with torch.no_grad():
        assert torch.allclose(model(batch.clips, batch.boxes), plain(batch.clips, batch.boxes), atol=1e-5)
    changed = _one_step(model, config)
    assert changed <= trainable and any(n.endswith("lora_b") for n in changed)
    # a LoRA checkpoint loads strictly into a fresh LoRA model and gives the same outputs
    _, fresh = _tiny(finetune)
    builders.load_weights(fresh, {"state_dict": model.state_dict()}, strict=True)
    model.eval()
    fresh.eval()
    with torch.no_grad():
        out = model(batch.clips, batch.boxes)
        assert torch.equal(fresh(batch.clips, batch.boxes), out)
    # into the model without LoRA (what its checkpoint's preset builds), folded on loading
    _, folded = _tiny()
    builders.load_weights(folded, {"state_dict": model.state_dict()}, strict=True)
    folded.eval()
    with torch.no_grad():
        assert torch.allclose(folded(batch.clips, batch.boxes), out, atol=1e-5)
    # merged, it is the plain model's layout with the adapters folded in
    assert merge_lora(model) == 2 * len(model.backbone.vit.blocks)
    builders.load_weights(plain, {"state_dict": model.state_dict()}, strict=True)
    with torch.no_grad():
        assert torch.allclose(plain(batch.clips, batch.boxes), out, atol=1e-5)


def test_lora_without_targets_is_a_config_error_before_workers():
    data = _data("configs/ava/SLOWFAST_R50_ACAR_HR2O.yaml")  # SlowFast only: no attention projections
    data["model"]["finetune"] = {"mode": "lora"}
    with pytest.raises(ConfigError, match="model.finetune.lora: no nn.Linear named"):
        check_config(config_from_dict(data, "test"))


@pytest.mark.parametrize("finetune, message", [
    ({"mode": "probe"}, "unknown mode 'probe'"),
    ({"mode": "full", "lora": {"rank": 4}}, "lora is only used with mode 'lora'"),
    ({"mode": "lora", "lora": {"rnak": 4}}, "did you mean 'model.finetune.lora.rank'?"),
    ({"mode": "full", "layer_decay": 1.5}, r"layer_decay must be in \(0, 1\]"),
    ({"mode": "linear_probe", "last_blocks": 2}, "last_blocks is only used with mode 'partial'"),
])
def test_finetune_keys_are_strict(finetune, message):
    data = _data("configs/toy/demo_acar.yaml")
    data["model"]["finetune"] = finetune
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, "test")
