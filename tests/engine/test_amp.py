"""Mixed precision as a config choice: ``amp: off|bf16|fp16|auto`` (true/false of older YAMLs), bf16 on the CPU.

bf16 runs here on the CPU: one training step of the toy ACAR model, and its predictions on the tiny
toy set stay within BF16_SCORE_TOL of float32's.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stad.config import ConfigError, load_config
from stad.engine import builders, checkpoint as ckpt
from stad.engine.distributed import DistContext
from stad.engine.optim import WarmupLRSchedule, build_optimizer
from stad.engine.predictor import predict_shard
from stad.engine.trainer import Trainer, amp_dtype, autocast
from tests.engine.test_main_e2e import ROOT, _data_overrides, toy  # noqa: F401 (fixture)

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)
DEMO = ROOT / "configs" / "toy" / "demo_acar.yaml"
# max |score_bf16 - score_fp32| over every box x class (sigmoid / pose-softmax scores in [0, 1]) of this
# freshly initialised model on the tiny toy val set: measured 4.2e-4. The trained demo model (larger
# logits) on the small toy val set: max 0.051, mean 8.6e-4, mAP 0.9049 vs 0.9063 (docs/engine.md, *Mixed precision*)
BF16_SCORE_TOL = 5e-3


@pytest.mark.parametrize("text, train, val", [("true", "auto", "auto"), ("false", "off", "off"), ("off", "off", "off"),
                                              ("bf16", "bf16", "bf16"), ("fp16", "fp16", "fp16")])
def test_amp_keys_and_old_booleans(text, train, val):
    config = load_config(DEMO, [f"train.amp={text}", f"val.amp={text}"])
    assert (config.train.amp, config.val.amp) == (train, val)


def test_amp_defaults_and_errors():
    config = load_config(DEMO)
    assert (config.train.amp, config.val.amp) == ("auto", "off")  # = today's: fp16 on CUDA, fp32 on CPU
    with pytest.raises(ConfigError, match="amp: expected one of off, bf16, fp16, auto"):
        load_config(DEMO, ["train.amp=fp8"])


def test_amp_dtype_follows_the_device():
    assert amp_dtype("off", CPU) is None and amp_dtype(False, CPU) is None
    assert amp_dtype("auto", CPU) is None and amp_dtype(True, CPU) is None  # the old CUDA-only amp: True
    assert amp_dtype("auto", CUDA) is torch.float16 and amp_dtype("fp16", CUDA) is torch.float16
    assert amp_dtype("bf16", CPU) is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        amp_dtype("fp16", CPU)


def _tiny_config(toy, tmp_path, *extra):
    from tests.engine.test_main_e2e import NO_RANDOMNESS, TOY_CONFIG

    return load_config(TOY_CONFIG, _data_overrides(toy, tmp_path) + NO_RANDOMNESS + ["val.batch_size=2", *extra])


def _scores(model, config, dtype):
    dataset = builders.build_dataset(config, config.val, train=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=builders.collate)
    _, activation = builders.build_criterion(config)
    with autocast(CPU, dtype):
        shard = predict_shard(model, loader, list(range(len(dataset))), activation, CPU, config.num_classes)
    return shard.predictions.scores


def test_bf16_predictions_close_to_fp32_on_cpu(toy, tmp_path):
    config = _tiny_config(toy, tmp_path)
    ckpt.seed_everything(0)
    model = builders.build_model(config).eval()
    fp32, bf16 = _scores(model, config, None), _scores(model, config, torch.bfloat16)
    assert fp32.dtype == bf16.dtype == np.float32 and fp32.shape == bf16.shape and len(fp32)
    diff = float(np.abs(fp32 - bf16).max())
    print(f"bf16 vs fp32: max |score difference| {diff:.4g} over {fp32.size} scores")
    assert 0 < diff <= BF16_SCORE_TOL  # > 0: autocast really ran in bf16


def test_one_bf16_training_step_on_cpu(toy, tmp_path):
    config = _tiny_config(toy, tmp_path, "train.amp=bf16", "train.batch_size=2")
    dataset = builders.build_dataset(config, config.train, train=True)
    batch = builders.collate([dataset[0], dataset[1]])
    criterion, _ = builders.build_criterion(config)
    results = {}
    for amp in ("off", "bf16"):
        ckpt.seed_everything(0)
        model = builders.build_model(config)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        optimizer = build_optimizer(model.parameters(), config.train.optimizer, 1e-3)
        schedule = WarmupLRSchedule(optimizer, config.train.scheduler, 1, 1)
        scaler = torch.amp.GradScaler("cpu", enabled=False)  # bf16 needs no loss scaling
        trainer = Trainer(DistContext(), model, criterion, optimizer, schedule, scaler, freeze_bn=False, amp=amp)
        assert trainer.amp_dtype is (None if amp == "off" else torch.bfloat16)
        result = trainer.step([batch], 0)
        assert result is not None and np.isfinite(result.loss)
        moved = sum(not torch.equal(v, start[k]) for k, v in model.state_dict().items())
        assert moved > 10
        assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32
        results[amp] = result.loss
    assert results["bf16"] != results["off"]
    assert abs(results["bf16"] - results["off"]) < 0.05 * abs(results["off"])


def test_fp16_steps_with_a_grad_scaler_skip_overflows(toy, tmp_path):
    """The fp16 path (CUDA in real runs) exercised on the CPU, which autocasts to float16 as well: the loss is
    scaled, gradients are unscaled before clipping, and a step whose scaled gradients overflow is skipped
    (weights unchanged) while the scale backs off; the next step trains."""
    config = _tiny_config(toy, tmp_path, "train.batch_size=2")
    dataset = builders.build_dataset(config, config.train, train=True)
    batch = builders.collate([dataset[0], dataset[1]])
    criterion, _ = builders.build_criterion(config)
    ckpt.seed_everything(0)
    model = builders.build_model(config)
    optimizer = build_optimizer(model.parameters(), config.train.optimizer, 1e-3)
    schedule = WarmupLRSchedule(optimizer, config.train.scheduler, 1, 4)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 120, enabled=True)  # overflows float32 gradients too
    trainer = Trainer(DistContext(), model, criterion, optimizer, schedule, scaler, freeze_bn=False, grad_clip=5.0)
    trainer.amp_dtype = torch.float16  # amp_dtype("fp16") insists on CUDA; the step itself does not care
    start = {k: v.clone() for k, v in model.named_parameters()}
    trainer.step([batch], 0)
    assert all(torch.equal(v, start[k]) for k, v in model.named_parameters())  # skipped: inf gradients
    assert scaler.get_scale() == 2.0 ** 119  # backed off by the default factor 0.5
    scaler.update(2.0 ** 8)  # a sane scale
    result = trainer.step([batch], 1)
    assert result is not None and np.isfinite(result.loss)
    assert sum(not torch.equal(v, start[k]) for k, v in model.named_parameters()) > 10
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert scaler.state_dict()["scale"] == 2.0 ** 8  # what the checkpoint stores and a resume restores
