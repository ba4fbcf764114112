"""The whole action model as one traceable graph: one clip and N boxes -> logits, N dynamic (>= 0).

    >>> net = SingleClipActionModel(model).eval()      # model: an ActionDetector (stad.models.action_model)
    >>> logits = net(clip, boxes)                       # clip [1, 3, T, H, W], boxes [N, 4] normalised xyxy -> [N, K]

:class:`SingleClipActionModel` runs backbone(s) -> fusion -> RoIAlign -> head exactly like
``ActionDetector.forward`` on a batch of one clip (same float operations; the heads'
``forward_one_clip`` avoids the Python-side shape logic of the batched path: no per-clip box counts, no
padded HR2O layout, no branch on N), so ``torch.onnx.export`` / ``torch.jit.trace`` record one graph
valid for any number of boxes, zero included. The clip shape is fixed at export (the preset fixes the
resize; a video gives clips of one shape); a batch of B clips runs as B calls
(``stad.engine.action_runtimes``).

Writing the files (ONNX, OpenVINO IR, TorchScript) and their metadata: ``stad.engine.action_export``.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class SingleClipActionModel(nn.Module):
    """``ActionDetector`` for one unpadded clip: forward(clip [1, 3, T, H, W], boxes [N, 4]) -> logits [N, K].

    Eval mode only (dropout off, no box jitter; the ACAR head folds its last HR2O conv into the pool).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if not hasattr(model.head, "forward_one_clip"):
            raise TypeError(f"{type(model.head).__name__} has no forward_one_clip: cannot export it")
        self.model = model

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def forward(self, clip: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_features(clip)
        return self.model.head.forward_one_clip(features, boxes.to(features.dtype))
