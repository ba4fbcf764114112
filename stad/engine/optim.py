"""Optimizers and the per-iteration learning-rate schedule (ACAR-Net semantics).

The schedule ramps linearly from ``base_lr`` to ``warmup_lr`` over ``warmup_epochs``, then holds
``warmup_lr`` scaled by the cumulative ``lr_mults`` after each milestone (step) or follows a cosine
from ``warmup_lr`` to ``min_lr`` over the remaining iterations. Milestones are in epochs (floats)
and converted to iterations with the number of optimizer steps per epoch.
"""
from __future__ import annotations

import bisect
import math
from typing import Iterable

import torch

from stad.config import OptimizerConfig, SchedulerConfig

_OPTIMIZERS = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW, "adam": torch.optim.Adam}


def build_optimizer(params: Iterable[torch.nn.Parameter] | list[dict], cfg: OptimizerConfig,
                    lr: float) -> torch.optim.Optimizer:
    """``cfg.type`` (SGD | AdamW | Adam) over ``params`` with ``cfg.kwargs``; the schedule sets the LR."""
    key = cfg.type.lower()
    if key not in _OPTIMIZERS:
        raise ValueError(f"train.optimizer.type: unknown optimizer {cfg.type!r}; choose one of SGD, AdamW, Adam")
    kwargs = {k: float(v) if isinstance(v, str) else v for k, v in cfg.kwargs.items()}
    return _OPTIMIZERS[key](params, lr=lr, **kwargs)


class WarmupLRSchedule:
    """Sets every param group's LR from the iteration number: ``lr = group_scale * f(it)``.

    Groups may carry ``lr_scale`` (e.g. 0.1 for a pretrained backbone); the default is 1.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, n_epochs: int,
                 steps_per_epoch: int) -> None:
        if cfg.type not in ("step", "cosine", "constant"):
            raise ValueError(f"train.scheduler.type: unknown schedule {cfg.type!r}; choose step, cosine or constant")
        if len(cfg.milestone_epochs) != len(cfg.lr_mults):
            raise ValueError("train.scheduler: milestone_epochs and lr_mults differ in length")
        self.optimizer = optimizer
        self.cfg = cfg
        self.total_steps = max(1, n_epochs * steps_per_epoch)
        self.warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
        self.milestones = [int(m * steps_per_epoch) for m in cfg.milestone_epochs]
        if self.milestones != sorted(self.milestones):
            raise ValueError(f"train.scheduler.milestone_epochs must increase, got {cfg.milestone_epochs}")
        self.last_step = -1

    @property
    def peak_lr(self) -> float:
        return self.cfg.base_lr if self.cfg.warmup_lr is None else self.cfg.warmup_lr

    def lr_at(self, step: int) -> float:
        """The unscaled learning rate at optimizer step ``step`` (0-based)."""
        cfg, peak = self.cfg, self.peak_lr
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return cfg.base_lr + (peak - cfg.base_lr) * step / self.warmup_steps
        if cfg.type == "step":
            scale = math.prod(cfg.lr_mults[:bisect.bisect_right(self.milestones, step)])
            return peak * scale
        if cfg.type == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            ratio = min(1.0, (step - self.warmup_steps) / span)
            return cfg.min_lr + (peak - cfg.min_lr) * (1 + math.cos(math.pi * ratio)) / 2
        return peak

    def step(self, step: int | None = None) -> float:
        """Move to ``step`` (default: the next one) and write the LR into the optimizer."""
        self.last_step = self.last_step + 1 if step is None else step
        lr = self.lr_at(self.last_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def state_dict(self) -> dict:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state["last_step"])
