"""Multi-label action losses: ``loss_fn(logits [N, K], targets [N, K]) -> scalar``.

* :class:`SigmoidBCELoss` — independent sigmoid per class.
* :class:`ExclusiveSoftmaxBCELoss` — softmax over a set of mutually exclusive classes (AVA's 13
  pose classes) and sigmoid for the others, BCE on the resulting probabilities; the same
  criterion as ACAR-Net's ``ava_pose_softmax_criterion``, computed in log space for stability.

Both accept optional per-class weights and expose ``activation(logits) -> probabilities`` for
inference. With N == 0 they return a zero that is still connected to ``logits``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# In the 60-class AVA subset (ava_action_list_v2.x_for_activitynet), indices 0..12 are poses.
AVA_POSE_INDICES: tuple[int, ...] = tuple(range(13))
_LOG_CLAMP = -100.0  # same floor as torch.nn.functional.binary_cross_entropy


def _check(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.ndim != 2 or logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must both be [N, K]")


def _weighted_mean(elementwise: torch.Tensor, class_weights: torch.Tensor | None) -> torch.Tensor:
    if elementwise.numel() == 0:
        return elementwise.sum() * 0.0
    if class_weights is not None:
        if class_weights.numel() != elementwise.shape[1]:
            raise ValueError(f"class_weights has {class_weights.numel()} entries for {elementwise.shape[1]} classes")
        elementwise = elementwise * class_weights.to(elementwise)
    return elementwise.mean()


class SigmoidBCELoss(nn.Module):
    """Mean sigmoid BCE over all N x K entries, optionally weighted per class ([K])."""

    def __init__(self, class_weights: Sequence[float] | torch.Tensor | None = None):
        super().__init__()
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check(logits, targets)
        loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
        return _weighted_mean(loss, self.class_weights)

    @staticmethod
    def activation(logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid()


class ExclusiveSoftmaxBCELoss(nn.Module):
    """Softmax over ``exclusive`` class indices, sigmoid elsewhere, BCE on probabilities.

    Args:
        exclusive: indices of mutually exclusive classes (default: AVA's 13 pose classes).
        class_weights: optional [K] weights.
    """

    def __init__(self, exclusive: Sequence[int] = AVA_POSE_INDICES,
                 class_weights: Sequence[float] | torch.Tensor | None = None):
        super().__init__()
        if len(exclusive) < 2 or len(set(exclusive)) != len(exclusive):
            raise ValueError(f"exclusive must list >= 2 distinct class indices, got {exclusive}")
        self.register_buffer("exclusive", torch.as_tensor(list(exclusive), dtype=torch.long), persistent=False)
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def _masks(self, num_classes: int, device: torch.device) -> torch.Tensor:
        if int(self.exclusive.max()) >= num_classes:
            raise ValueError(f"exclusive index {int(self.exclusive.max())} >= number of classes {num_classes}")
        mask = torch.zeros(num_classes, dtype=torch.bool, device=device)
        mask[self.exclusive.to(device)] = True
        return mask

    def log_probs(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p and log(1 - p) for every entry, [N, K] each."""
        mask = self._masks(logits.shape[1], logits.device)
        softmax_logits = logits.masked_fill(~mask, float("-inf"))
        log_p = torch.where(mask, F.log_softmax(softmax_logits, dim=1), F.logsigmoid(logits))
        log_1mp_sigmoid = F.logsigmoid(-logits)
        log_1mp_softmax = torch.log(-torch.expm1(log_p.clamp(max=-1e-7)))
        log_1mp = torch.where(mask, log_1mp_softmax, log_1mp_sigmoid)
        return log_p.clamp(min=_LOG_CLAMP), log_1mp.clamp(min=_LOG_CLAMP)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check(logits, targets)
        if logits.shape[0] == 0:
            return logits.sum() * 0.0
        log_p, log_1mp = self.log_probs(logits)
        targets = targets.to(logits.dtype)
        loss = -(targets * log_p + (1 - targets) * log_1mp)
        return _weighted_mean(loss, self.class_weights)

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities [N, K]: softmax over the exclusive set, sigmoid elsewhere."""
        if logits.shape[0] == 0:
            return logits.sigmoid()
        return self.log_probs(logits)[0].exp()


def build_loss(name: str = "bce", **kwargs) -> nn.Module:
    """'bce' -> SigmoidBCELoss, 'pose_softmax' -> ExclusiveSoftmaxBCELoss (kwargs forwarded)."""
    losses = {"bce": SigmoidBCELoss, "pose_softmax": ExclusiveSoftmaxBCELoss}
    if name not in losses:
        raise KeyError(f"unknown loss {name!r}; choose from {sorted(losses)}")
    return losses[name](**kwargs)


def sigmoid_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Functional form of :class:`SigmoidBCELoss` (no class weights)."""
    return SigmoidBCELoss()(logits, targets)


def pose_softmax_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Functional form of :class:`ExclusiveSoftmaxBCELoss` with AVA's 13 pose classes."""
    return ExclusiveSoftmaxBCELoss(AVA_POSE_INDICES).to(logits.device)(logits, targets)
