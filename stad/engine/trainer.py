"""One training epoch under DDP: gradient accumulation, box-normalised loss, AMP (bf16 / fp16), clipping.

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

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(setting: str | bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting on ``device`` (None: float32 throughout).

    ``off``: None. ``auto`` (= the old ``amp: True``): fp16 on CUDA, off elsewhere. ``bf16``: on the
    CPU and on GPUs that support it. ``fp16``: CUDA only (with a GradScaler when training).
    """
    if setting is True:
        setting = "auto"
    if setting in (None, False, "off"):
        return None
    if setting == "auto":
        return torch.float16 if device.type == "cuda" else None
    if setting not in AMP_DTYPES:
        raise ValueError(f"amp: expected off, bf16, fp16 or auto, got {setting!r}")
    if setting == "fp16" and device.type != "cuda":
        raise ValueError(f"amp: fp16 needs a CUDA device (this rank runs on {device}); use bf16 on the CPU")
    if setting == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"amp: bf16 is not supported by {torch.cuda.get_device_name(device)}; use fp16")
    return AMP_DTYPES[setting]


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """``torch.autocast`` in ``dtype`` on ``device``; a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


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
                 amp: str | bool | None = None, frozen: Sequence[nn.Module] = ()) -> None:
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
        self.amp_dtype = amp_dtype(amp, ctx.device)  # None: float32
        self.params = [p for p in model.parameters() if p.requires_grad]

    def _micro_loss(self, batch: Any, n_total: float) -> torch.Tensor:
        with autocast(self.ctx.device, self.amp_dtype):
            logits = forward_batch(self.model, batch)  # with each clip's size before padding
        n_local = logits.shape[0]
        if n_local == 0:
            # no boxes here but some elsewhere: a zero loss over every parameter keeps DDP's
            # gradient all-reduce in step with the other ranks
            return sum(p.sum() for p in self.params) * 0.0 + logits.sum() * 0.0
        targets = torch.cat(list(batch.targets)).to(logits.device, torch.float32)
        loss = self.criterion(logits.float(), targets)
        return loss * (n_local * self.ctx.world_size / n_total)

    def count(self, batch: Any) -> int:
        """What the loss is normalised by in ``batch``: its boxes (a recognition trainer: its clips)."""
        return int(sum(len(b) for b in batch.boxes))

    def step(self, micro_batches: Sequence[Any], step_index: int) -> StepResult | None:
        """One optimizer step over ``micro_batches`` (already on the device). None if no rank has boxes."""
        lr = self.schedule.step(step_index)
        n_local = sum(self.count(batch) for batch in micro_batches)
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
                    on_step: Callable[[int, StepResult], None] | None = None, start_step: int = 0,
                    totals: tuple[float, int] = (0.0, 0), on_start: Callable[[], None] | None = None,
                    after_step: Callable[[int, tuple[float, int]], None] | None = None) -> float:
        """Train one epoch (1-based ``epoch``); returns the box-weighted mean loss over its steps.

        Resuming mid-epoch: ``loader`` yields the batches from ``start_step`` on (the sampler skips the
        rest), ``totals`` is the (loss x boxes, boxes) sum of the steps before, and ``on_start`` runs once
        the loader's iterator exists (which draws from torch's RNG), to restore the checkpoint's RNG state.
        ``after_step(steps_done_in_epoch, totals)`` runs after every step (mid-epoch checkpoints).
        """
        set_train_mode(self.model, self.freeze_bn, self.frozen)
        batches = iter(loader)
        if on_start is not None:
            on_start()
        total, boxes = totals
        if progress is not None and start_step:
            progress.update(start_step)
        for s in range(start_step, steps_per_epoch):
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
            if after_step is not None:
                after_step(s + 1, (total, boxes))
        return total / max(boxes, 1)


def steps_per_epoch(n_batches: int, accumulate_steps: int) -> int:
    """Optimizer steps per epoch: whole accumulation windows only."""
    return n_batches // max(1, accumulate_steps)
