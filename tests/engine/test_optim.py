"""LR schedule (ACAR semantics: warm-up base_lr -> warmup_lr, then step or cosine) and optimizers."""

import pytest
import torch

from stad.config import OptimizerConfig, SchedulerConfig
from stad.engine.optim import WarmupLRSchedule, build_optimizer


def _opt():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)


def test_step_schedule_with_warmup():
    cfg = SchedulerConfig(type="step", base_lr=0.008, warmup_lr=0.064, warmup_epochs=1,
                          milestone_epochs=(2.5, 3.0), lr_mults=(0.1, 0.5))
    opt = _opt()
    sched = WarmupLRSchedule(opt, cfg, n_epochs=4, steps_per_epoch=10)
    assert sched.lr_at(0) == pytest.approx(0.008)
    assert sched.lr_at(5) == pytest.approx(0.008 + 0.056 * 0.5)
    assert sched.lr_at(10) == pytest.approx(0.064)
    assert sched.lr_at(24) == pytest.approx(0.064)
    assert sched.lr_at(25) == pytest.approx(0.0064)
    assert sched.lr_at(30) == pytest.approx(0.0032)
    sched.step(25)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0064)


def test_cosine_schedule_reaches_min_lr():
    cfg = SchedulerConfig(type="cosine", base_lr=0.1, warmup_epochs=0, min_lr=0.001)
    sched = WarmupLRSchedule(_opt(), cfg, n_epochs=2, steps_per_epoch=5)
    assert sched.lr_at(0) == pytest.approx(0.1)
    assert sched.lr_at(5) == pytest.approx(0.001 + 0.099 * 0.5)
    assert sched.lr_at(10) == pytest.approx(0.001)
    assert all(sched.lr_at(i) >= sched.lr_at(i + 1) for i in range(10))


def test_schedule_state_round_trip_and_group_scale():
    opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": 0.1},
                           {"params": [torch.nn.Parameter(torch.zeros(1))]}], lr=1.0)
    sched = WarmupLRSchedule(opt, SchedulerConfig(type="constant", base_lr=0.5), 1, 3)
    sched.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.5])
    other = WarmupLRSchedule(opt, SchedulerConfig(type="constant", base_lr=0.5), 1, 3)
    other.load_state_dict(sched.state_dict())
    assert other.last_step == 1


def test_bad_schedule_and_optimizer_names():
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        WarmupLRSchedule(_opt(), SchedulerConfig(type="linear"), 1, 1)
    with pytest.raises(ValueError, match="differ in length"):
        WarmupLRSchedule(_opt(), SchedulerConfig(milestone_epochs=(1,), lr_mults=()), 1, 1)
    with pytest.raises(ValueError, match="unknown optimizer 'Lion'"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimizerConfig(type="Lion"), 0.1)


def test_build_optimizer_types():
    p = [torch.nn.Parameter(torch.zeros(1))]
    sgd = build_optimizer(p, OptimizerConfig("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": "1e-7"}), 0.1)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["weight_decay"] == 1e-7
    adamw = build_optimizer(p, OptimizerConfig("AdamW", {"weight_decay": 0.05}), 0.1)
    assert isinstance(adamw, torch.optim.AdamW)
