"""RoI preparation: per-clip proposal boxes -> one RoI tensor for the whole batch.

Boxes are normalised xyxy; the heads scale them to feature-map coordinates. At training time
each box may be jittered (ACAR-Net: every coordinate moves by U(-s, s) x box size); at test time
all boxes are kept unchanged. Clips without boxes simply contribute no RoI.

Padded batches: clips of different size are padded at the right/bottom to the batch's largest
(:func:`stad.data.collate.collate_clips`); each clip's size before padding, as a fraction of the
padded tensor (ACAR-Net's ``sizes_before_padding``), travels on the :class:`RoIBatch` so a head can
limit a clip's context to its own pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn


@dataclass(frozen=True)
class RoIBatch:
    """All RoIs of a batch of clips.

    Attributes:
        rois: [N, 5] float, rows (clip index, x1, y1, x2, y2) with normalised coordinates.
        counts: number of RoIs of each clip (len == number of clips), sum == N.
        sizes: per clip ``(height, width)`` before padding as fractions of the padded tensor
            (ACAR-Net's ``sizes_before_padding``, there ordered width, height); None: no padding.
    """

    rois: torch.Tensor
    counts: tuple[int, ...]
    sizes: tuple[tuple[float, float], ...] | None = None

    def context_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Per clip the ``(h, w)`` cells of an ``height x width`` map that hold the clip's own pixels:
        ACAR-Net's ``ceil(H * frac_h), ceil(W * frac_w)`` (the full map without ``sizes``)."""
        if self.sizes is None:
            return [(height, width)] * self.num_clips
        return [(min(height, math.ceil(height * fh)), min(width, math.ceil(width * fw))) for fh, fw in self.sizes]

    def select_clips(self, clips: Sequence[int]) -> tuple["RoIBatch", torch.Tensor]:
        """The RoIs of ``clips`` (ascending) as a batch of ``len(clips)`` clips, renumbered 0.., and
        their rows ``[n] long`` in this batch."""
        starts = [0]
        for count in self.counts:
            starts.append(starts[-1] + count)
        rows = [torch.arange(starts[c], starts[c + 1]) for c in clips]
        index = torch.cat(rows).to(self.rois.device) if rows else torch.zeros(0, dtype=torch.long)
        counts = tuple(self.counts[c] for c in clips)
        column = torch.repeat_interleave(torch.arange(len(clips), device=self.rois.device),
                                         torch.tensor(counts, device=self.rois.device))
        rois = torch.cat([column[:, None].to(self.rois.dtype), self.rois[index, 1:]], dim=1)
        sizes = None if self.sizes is None else tuple(self.sizes[c] for c in clips)
        return RoIBatch(rois, counts, sizes), index

    @property
    def num_clips(self) -> int:
        return len(self.counts)

    @property
    def clip_index(self) -> torch.Tensor:
        """[N] long: clip of each RoI."""
        return self.rois[:, 0].long()

    def __len__(self) -> int:
        return int(self.rois.shape[0])


class RoINeck(nn.Module):
    """Turns ``boxes: list[Tensor[N_i, 4]]`` into a :class:`RoIBatch`.

    Args:
        jitter_scale: max relative shift of each coordinate at training time (0 = off;
            ACAR-Net uses 0.075).
        min_size: boxes are kept at least this wide/high (normalised) after jitter.
    """

    def __init__(self, jitter_scale: float = 0.0, min_size: float = 1e-3):
        super().__init__()
        self.jitter_scale = jitter_scale
        self.min_size = min_size

    def jitter(self, boxes: torch.Tensor) -> torch.Tensor:
        """[N, 4] -> [N, 4] jittered copy, clipped to [0, 1], never degenerate."""
        size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
        noise = (torch.rand_like(boxes) * 2 - 1) * self.jitter_scale
        out = (boxes + noise * size).clamp(0.0, 1.0)
        x1 = torch.minimum(out[:, 0], out[:, 2] - self.min_size).clamp(min=0.0)
        y1 = torch.minimum(out[:, 1], out[:, 3] - self.min_size).clamp(min=0.0)
        x2 = torch.maximum(out[:, 2], x1 + self.min_size)
        y2 = torch.maximum(out[:, 3], y1 + self.min_size)
        return torch.stack([x1, y1, x2, y2], dim=1)

    def forward(self, boxes: list[torch.Tensor], reference: torch.Tensor | None = None,
                sizes: Sequence[Sequence[float]] | None = None) -> RoIBatch:
        """boxes: per clip [N_i, 4] normalised xyxy -> RoIBatch (rois on the boxes' device).

        ``reference`` (e.g. the feature map) supplies dtype/device when every clip is empty.
        ``sizes``: per clip ``(height, width)`` before padding as fractions of the padded clip, in
        (0, 1] (None: no clip is padded).
        """
        rows, counts = [], []
        for index, clip_boxes in enumerate(boxes):
            clip_boxes = torch.as_tensor(clip_boxes)
            if clip_boxes.numel() and (clip_boxes.ndim != 2 or clip_boxes.shape[1] != 4):
                raise ValueError(f"boxes[{index}] must be [N, 4] xyxy, got {tuple(clip_boxes.shape)}")
            clip_boxes = clip_boxes.reshape(-1, 4)
            if self.training and self.jitter_scale > 0 and len(clip_boxes):
                clip_boxes = self.jitter(clip_boxes)
            column = torch.full((len(clip_boxes), 1), float(index), dtype=clip_boxes.dtype, device=clip_boxes.device)
            rows.append(torch.cat([column, clip_boxes], dim=1))
            counts.append(len(clip_boxes))
        if rows:
            rois = torch.cat(rows).detach()
        elif reference is not None:
            rois = reference.new_zeros(0, 5)
        else:
            rois = torch.zeros(0, 5)
        if reference is not None:
            rois = rois.to(dtype=reference.dtype)  # dtype only: the engine owns devices
        return RoIBatch(rois, tuple(counts), _check_sizes(sizes, len(boxes)))


def _check_sizes(sizes: Sequence[Sequence[float]] | None, num_clips: int) -> tuple[tuple[float, float], ...] | None:
    """Validated per-clip ``(frac_h, frac_w)`` tuples of Python floats, or None (unpadded)."""
    if sizes is None:
        return None
    if isinstance(sizes, torch.Tensor):
        sizes = sizes.tolist()
    out = tuple((float(h), float(w)) for h, w in sizes)
    if len(out) != num_clips:
        raise ValueError(f"sizes has {len(out)} entries for {num_clips} clips")
    if any(not (0.0 < f <= 1.0) for pair in out for f in pair):
        raise ValueError(f"sizes must be fractions in (0, 1] of the padded clip, got {out}")
    return out
