"""One training epoch under DDP: gradient accumulation, box-normalised loss, AMP, clipping.

The loss of a step is the mean over every box of every rank and every accumulated micro-batch
(ACAR-Net normalises by the boxes on all ranks): each rank scales its micro-batch mean by
``n_local * world_size / n_total`` because DDP averages gradients over ranks. So one step with
B clips on each of W ranks equals one step with W*B clips on one rank.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from stad.engine.distributed import DistContext, all_reduce_sum
from stad.engine.predictor import forward_batch

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits [N,K], targets [N,K]) -> mean


def set_train_mode(model: nn.Module, freeze_bn: bool, frozen: Sequence[nn.Module] = ()) -> None:
    """``model.train()``, keeping BatchNorm layers (``freeze_bn``) and ``frozen`` modules in eval mode.

    A frozen backbone must not update BatchNorm statistics or apply dropout either. A BatchNorm
    marked ``freeze_with_backbone = False`` (a head-side layer, e.g. the CW reference fusion's
    ``vit_bn``, which the reference trains with the head) is left in training mode.
    """
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and getattr(module, "freeze_with_backbone", True):
                module.eval()
    for module in frozen:
        module.eval()


@dataclass
class StepResult:
    loss: float  # mean loss over all boxes of all ranks
    n_boxes: int  # boxes on all ranks in this step
    lr: float


class Trainer:
    """Runs optimizer steps on ``model`` (DDP-wrapped or plain) with a box-normalised loss."""

    def __init__(self, ctx: DistContext, model: nn.Module, criterion: Criterion,
                 optimizer: torch.optim.Optimizer, schedule: Any, scaler: torch.amp.GradScaler, *,
                 freeze_bn: bool = True, accumulate_steps: int = 1, grad_clip: float | None = None,
                 amp: bool = False, frozen: Sequence[nn.Module] = ()) -> None:
        self.ctx = ctx
        self.model = model
        self.criterion = criterion
        self.optimizer = optimizer
        self.schedule = schedule
        self.scaler = scaler
        self.freeze_bn = freeze_bn
        self.frozen = tuple(frozen)
        self.accumulate_steps = max(1, accumulate_steps)
        self.grad_clip = grad_clip
        self.amp = amp and ctx.device.type == "cuda"
        self.params = [p for p in model.parameters() if p.requires_grad]

    def _micro_loss(self, batch: Any, n_total: float) -> torch.Tensor:
        with torch.autocast(self.ctx.device.type, enabled=self.amp):
            logits = forward_batch(self.model, batch)  # with each clip's size before padding
        n_local = logits.shape[0]
        if n_local == 0:
            # no boxes here but some elsewhere: a zero loss over every parameter keeps DDP's
            # gradient all-reduce in step with the other ranks
            return sum(p.sum() for p in self.params) * 0.0 + logits.sum() * 0.0
        targets = torch.cat(list(batch.targets)).to(logits.device, torch.float32)
        loss = self.criterion(logits.float(), targets)
        return loss * (n_local * self.ctx.world_size / n_total)

    def step(self, micro_batches: Sequence[Any], step_index: int) -> StepResult | None:
        """One optimizer step over ``micro_batches`` (already on the device). None if no rank has boxes."""
        lr = self.schedule.step(step_index)
        n_local = sum(int(sum(len(b) for b in batch.boxes)) for batch in micro_batches)
        n_total = float(all_reduce_sum(self.ctx, n_local))
        if n_total == 0:
            return None  # all ranks agree: nothing to learn from
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), dtype=torch.float64)
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.model, "no_sync") else self.model.no_sync()
            with sync:
                loss = self._micro_loss(batch, n_total)
                self.scaler.scale(loss).backward()
            loss_sum += loss.detach().double().cpu()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        mean_loss = float(all_reduce_sum(self.ctx, loss_sum)) / self.ctx.world_size
        return StepResult(mean_loss, int(n_total), lr)

    def train_epoch(self, epoch: int, loader: Any, steps_per_epoch: int, *, progress: Any = None,
                    on_step: Callable[[int, StepResult], None] | None = None) -> float:
        """Train one epoch (1-based ``epoch``); returns the box-weighted mean loss over its steps."""
        set_train_mode(self.model, self.freeze_bn, self.frozen)
        batches = iter(loader)
        total, boxes = 0.0, 0
        for s in range(steps_per_epoch):
            micro = [next(batches).to(self.ctx.device) for _ in range(self.accumulate_steps)]
            result = self.step(micro, (epoch - 1) * steps_per_epoch + s)
            if result is not None:
                total += result.loss * result.n_boxes
                boxes += result.n_boxes
                if on_step is not None:
                    on_step((epoch - 1) * steps_per_epoch + s + 1, result)
            if progress is not None:
                progress.update(1)
                if result is not None:
                    progress.set_postfix(loss=f"{result.loss:.4f}", lr=f"{result.lr:.2e}")
        return total / max(boxes, 1)


def steps_per_epoch(n_batches: int, accumulate_steps: int) -> int:
    """Optimizer steps per epoch: whole accumulation windows only."""
    return n_batches // max(1, accumulate_steps)
