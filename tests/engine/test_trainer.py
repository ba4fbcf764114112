"""Trainer steps in one process: box-normalised loss, accumulation, empty steps, clipping, frozen BN."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from stad.config import SchedulerConfig
from stad.engine.distributed import DistContext
from stad.engine.optim import WarmupLRSchedule
from stad.engine.trainer import Trainer, set_train_mode, steps_per_epoch

K = 3


class BoxModel(nn.Module):
    """logits for each box from its clip's mean value and its coordinates: [sum N_i, K]."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(1)
        self.fc = nn.Linear(5, K)

    def forward(self, clips: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        pooled = self.bn(clips.flatten(1).mean(1, keepdim=True))  # [B, 1]
        rows = [torch.cat([pooled[i].expand(len(b), 1), b], 1) for i, b in enumerate(boxes)]
        return self.fc(torch.cat(rows)) if rows else self.fc.weight.new_zeros(0, K)


@dataclass
class Batch:
    clips: torch.Tensor
    boxes: list[torch.Tensor]
    targets: list[torch.Tensor]

    def to(self, device):
        return self


def _batch(gen: torch.Generator, counts: list[int]) -> Batch:
    return Batch(torch.randn(len(counts), 3, 2, 4, 4, generator=gen),
                 [torch.rand(n, 4, generator=gen) for n in counts],
                 [(torch.rand(n, K, generator=gen) > 0.5).float() for n in counts])


def _merge(a: Batch, b: Batch) -> Batch:
    return Batch(torch.cat([a.clips, b.clips]), a.boxes + b.boxes, a.targets + b.targets)


def _trainer(model: nn.Module, accumulate: int = 1, clip: float | None = None, lr: float = 0.1) -> Trainer:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    schedule = WarmupLRSchedule(opt, SchedulerConfig(type="constant", base_lr=lr), 1, 10)
    return Trainer(DistContext(), model, nn.BCEWithLogitsLoss(), opt, schedule,
                   torch.amp.GradScaler("cpu", enabled=False), freeze_bn=True, accumulate_steps=accumulate,
                   grad_clip=clip)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = BoxModel()
    set_train_mode(model, freeze_bn=True)
    return model


def test_accumulation_equals_one_big_batch_weighted_by_boxes():
    gen = torch.Generator().manual_seed(0)
    first, second = _batch(gen, [1, 4]), _batch(gen, [2, 0])  # unequal box counts per micro-batch
    big, accumulated = _model(), _model()
    result_big = _trainer(big).step([_merge(first, second)], 0)
    result_acc = _trainer(accumulated, accumulate=2).step([first, second], 0)
    assert result_big.n_boxes == result_acc.n_boxes == 7
    assert result_acc.loss == pytest.approx(result_big.loss, rel=1e-6)
    for a, b in zip(big.parameters(), accumulated.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_micro_batch_without_boxes_contributes_zero():
    gen = torch.Generator().manual_seed(1)
    with_boxes, empty = _batch(gen, [3]), _batch(gen, [0, 0])
    alone, with_empty = _model(), _model()
    _trainer(alone).step([with_boxes], 0)
    _trainer(with_empty, accumulate=2).step([empty, with_boxes], 0)
    for a, b in zip(alone.parameters(), with_empty.parameters()):
        torch.testing.assert_close(a, b)


def test_step_without_any_box_is_skipped():
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    assert _trainer(model).step([_batch(torch.Generator().manual_seed(2), [0, 0])], 0) is None
    for a, b in zip(before, model.parameters()):
        assert torch.equal(a, b)


def test_gradient_clipping_bounds_the_update():
    model = _model()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    _trainer(model, clip=1e-3, lr=1.0).step([_batch(torch.Generator().manual_seed(3), [5])], 0)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert 0 < (after - before).norm() <= 1e-3 * (1 + 1e-4)


def test_frozen_bn_keeps_running_stats():
    model = _model()
    assert model.training and not model.bn.training
    stats = model.bn.running_mean.clone()
    _trainer(model).step([_batch(torch.Generator().manual_seed(4), [2, 2])], 0)
    assert torch.equal(stats, model.bn.running_mean)
    set_train_mode(model, freeze_bn=False)
    assert model.bn.training


def test_steps_per_epoch_counts_whole_windows():
    assert steps_per_epoch(17, 1) == 17
    assert steps_per_epoch(17, 4) == 4
    assert steps_per_epoch(3, 4) == 0


def test_frozen_modules_stay_in_eval_mode():
    model = _model()
    set_train_mode(model, freeze_bn=False, frozen=[model.bn])
    assert model.training and model.fc.training and not model.bn.training
