"""Batch `ClipSample`s with a variable number of boxes per clip (zero included) into a `ClipBatch`.

Built for DataLoader workers: the uint8 clips are stacked straight into shared memory, and a batch
crossing the process boundary pickles its per-clip box tensors as a few concatenated numpy arrays
(inline bytes) instead of one shared-memory segment - and one file-descriptor handshake - per small
tensor (the handshakes' cost: bench/RESULTS.md, data loading).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np
import torch

from stad.data.dataset import ClipSample, MultiViewSample
from stad.data.transforms import Normalization


def _move(value: object, device: torch.device | str, non_blocking: bool) -> object:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
        return [v.to(device, non_blocking=non_blocking) for v in value]
    return value


@dataclass(frozen=True)
class ClipBatch:
    """B clips and their boxes.

    Attributes:
        pixels: the clips as stored: RGB ``uint8 [B, 3, T, H, W]`` awaiting ``norm`` (or float).
        boxes: per clip ``[N_i, 4]`` normalised xyxy in the (transformed, padded) clip frame.
        targets: per clip multi-hot ``[N_i, K]`` float.
        box_scores: per clip detector scores ``[N_i]`` (1 for ground truth).
        keys: ``(video, timestamp)`` per clip.
        person_ids: per clip ``[N_i]`` int64 (-1 unknown).
        orig_boxes: per clip ``[N_i, 4]`` normalised xyxy in the original frame (write these out).
        orig_sizes: ``(height, width)`` of each original video frame.
        norm: normalisation still to apply to ``pixels`` (None: ``pixels`` is final).
        sizes: ``(height, width)`` of each clip before padding (None: no clip is padded).
        clips (property): float ``[B, 3, T, H, W]`` normalised RGB, computed on first access on
            ``pixels``' device - after ``.to(device)`` the uint8 batch is moved and normalised there;
            the padded region of each clip is exactly 0 after normalisation (ACAR-Net's ``batch_pad``).
        valid_fractions (property): the model's ``sizes`` argument, see there.
    """

    pixels: torch.Tensor
    boxes: list[torch.Tensor]
    targets: list[torch.Tensor]
    box_scores: list[torch.Tensor]
    keys: list[tuple[str, int]]
    person_ids: list[torch.Tensor]
    orig_boxes: list[torch.Tensor]
    orig_sizes: list[tuple[int, int]]
    norm: Normalization | None = None
    sizes: list[tuple[int, int]] | None = None

    @property
    def clips(self) -> torch.Tensor:
        if self.norm is None:
            return self.pixels
        cached = self.__dict__.get("_clips")
        if cached is None:
            cached = _zero_padding(self.norm.apply(self.pixels), self.sizes)
            object.__setattr__(self, "_clips", cached)
        return cached

    @property
    def valid_fractions(self) -> list[tuple[float, float]] | None:
        """Per clip ``(height, width)`` before padding as fractions of the padded tensor, computed as
        ACAR-Net does (``1 / (padded / original)``), or None when no clip is padded: pass it to the
        model as ``sizes``."""
        if self.sizes is None:
            return None
        height, width = self.pixels.shape[-2:]
        if all((h, w) == (height, width) for h, w in self.sizes):
            return None
        return [(1.0 / (height / h), 1.0 / (width / w)) for h, w in self.sizes]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def num_boxes(self) -> list[int]:
        return [len(b) for b in self.boxes]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "ClipBatch":
        """A new batch with every tensor on ``device``."""
        return replace(self, **{f.name: _move(getattr(self, f.name), device, non_blocking) for f in fields(self)})

    def pin_memory(self) -> "ClipBatch":
        """Page-locked copy (DataLoader(pin_memory=True) calls this on custom batch types)."""
        pinned = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                pinned[f.name] = value.pin_memory()
            elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
                pinned[f.name] = [v.pin_memory() for v in value]
        return replace(self, **pinned)

    def boxes_pixels(self) -> list[torch.Tensor]:
        """Per clip boxes ``[N_i, 4]`` in pixels of the clip tensor (``x * W``, ``y * H``)."""
        h, w = self.pixels.shape[-2:]
        return [b * b.new_tensor([w, h, w, h]) for b in self.boxes]

    def flat_targets(self) -> torch.Tensor:
        """All targets ``[sum N_i, K]`` in box order (matches the model's RoI order)."""
        k = self.targets[0].shape[1] if self.targets else 0
        return torch.cat(self.targets) if self.targets else torch.zeros(0, k)

    def __reduce__(self) -> tuple:
        """Pickle per-clip tensor lists as concatenated numpy arrays + counts (see module doc)."""
        lists = {name: _pack(getattr(self, name)) for name in _PER_CLIP}
        return _unpack_batch, (self.pixels, lists, self.num_boxes, self.keys, self.orig_sizes, self.norm, self.sizes)


_PER_CLIP = ("boxes", "targets", "box_scores", "person_ids", "orig_boxes")


def _pack(tensors: list[torch.Tensor]) -> tuple[np.ndarray, tuple[int, ...], torch.dtype] | list[torch.Tensor]:
    """Concatenate CPU tensors (same trailing shape) into one numpy array; others stay as they are."""
    if not tensors or any(t.device.type != "cpu" or t.requires_grad for t in tensors):
        return tensors
    if len({(t.dtype, t.shape[1:]) for t in tensors}) != 1 or tensors[0].dtype == torch.bfloat16:
        return tensors
    return torch.cat(tensors).numpy(), tuple(tensors[0].shape[1:]), tensors[0].dtype


def _unpack(packed: object, counts: list[int]) -> list[torch.Tensor]:
    if isinstance(packed, list):
        return packed
    array, trailing, dtype = packed  # type: ignore[misc]
    flat = torch.from_numpy(array).reshape(-1, *trailing).to(dtype)
    return list(torch.split(flat, counts))


def _unpack_batch(pixels: torch.Tensor, lists: dict, counts: list[int], keys: list, orig_sizes: list,
                  norm: Normalization | None, sizes: list | None = None) -> ClipBatch:
    return ClipBatch(pixels=pixels, keys=keys, orig_sizes=orig_sizes, norm=norm, sizes=sizes,
                     **{name: _unpack(lists[name], counts) for name in _PER_CLIP})


def _zero_padding(clips: torch.Tensor, sizes: list[tuple[int, int]] | None) -> torch.Tensor:
    """Set each clip's padded region (right of ``w``, below ``h``) of ``[B, 3, T, H, W]`` to 0, in place."""
    if sizes is None:
        return clips
    height, width = clips.shape[-2:]
    for i, (h, w) in enumerate(sizes):
        if h < height:
            clips[i, ..., h:, :] = 0
        if w < width:
            clips[i, ..., w:] = 0
    return clips


def _pad_to(clip: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Zero-pad ``[3, T, h, w]`` at the bottom/right to ``[3, T, height, width]``."""
    h, w = clip.shape[-2:]
    if (h, w) == (height, width):
        return clip
    return torch.nn.functional.pad(clip, (0, width - w, 0, height - h))


_STAGING: list[np.ndarray] = []  # per worker process: a reused page-faulted buffer for one batch


def _stack(clips: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``; inside a DataLoader worker into a new shared-memory segment (sent to the main
    process without a copy, as torch's default collate does). The segment is filled with one
    ``pwrite`` from a reused staging buffer instead of through its fresh mapping: same bytes, but no
    page fault per 4 KB page in the worker (~4 µs each on the project's VM)."""
    if torch.utils.data.get_worker_info() is None:
        return torch.stack(clips)
    first = clips[0]
    nbytes = len(clips) * first.numel() * first.element_size()
    storage = first.untyped_storage()._new_shared(nbytes)
    out = first.new_empty(0).set_(storage).view(len(clips), *first.shape)
    if torch.multiprocessing.get_sharing_strategy() != "file_descriptor":
        return torch.stack(clips, out=out)
    try:
        fd = storage._share_fd_cpu_()[0]
    except (AttributeError, RuntimeError):  # torch internals changed: fill through the mapping
        return torch.stack(clips, out=out)
    if not _STAGING or _STAGING[0].nbytes < nbytes:
        _STAGING[:] = [np.empty(nbytes, np.uint8)]
    staging = _STAGING[0][:nbytes]
    torch.stack(clips, out=torch.from_numpy(staging).view(first.dtype).view(len(clips), *first.shape))
    view, done = memoryview(staging), 0
    while done < nbytes:
        done += os.pwrite(fd, view[done:], done)
    return out


@dataclass(frozen=True)
class MultiViewBatch:
    """B keyframes through V test-time views (ACAR-Net's multi-view evaluation).

    Attributes:
        views: one `ClipBatch` per view, each padded on its own (as ACAR-Net's multi-crop loader);
            every view holds all the keyframes' boxes, in the same order.
        keep: per view, per clip bool ``[N_i]`` numpy: the box is scored in that view.
    The keyframe-level fields (``keys``, ``boxes``, ``orig_boxes``, ``targets``, ...) are view 0's.
    """

    views: tuple[ClipBatch, ...]
    keep: tuple[list[np.ndarray], ...]

    def __len__(self) -> int:
        return len(self.views[0])

    def __getattr__(self, name: str) -> object:
        if name in ("keys", "boxes", "orig_boxes", "targets", "box_scores", "person_ids", "orig_sizes",
                    "num_boxes", "flat_targets"):
            return getattr(self.views[0], name)
        raise AttributeError(name)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "MultiViewBatch":
        return MultiViewBatch(tuple(v.to(device, non_blocking) for v in self.views), self.keep)

    def pin_memory(self) -> "MultiViewBatch":
        return MultiViewBatch(tuple(v.pin_memory() for v in self.views), self.keep)


def collate_views(samples: Sequence[MultiViewSample]) -> MultiViewBatch:
    """`MultiViewSample`s (same number of views) -> one `MultiViewBatch`: view by view `collate_clips`."""
    counts = {len(s.views) for s in samples}
    if len(counts) != 1:
        raise ValueError(f"collate_views: samples have different numbers of views {sorted(counts)}")
    views = tuple(collate_clips([s.views[v] for s in samples]) for v in range(counts.pop()))
    keep = tuple([np.asarray(s.keep[v], bool) for s in samples] for v in range(len(views)))
    return MultiViewBatch(views, keep)


def collate_clips(samples: Sequence[ClipSample | MultiViewSample]) -> ClipBatch | MultiViewBatch:
    """Stack clips and keep per-clip box lists (`MultiViewSample`s: `collate_views`).

    Clips of different spatial size (videos of different aspect ratio after a short-side scale)
    are padded at the bottom/right to the largest; their boxes are rescaled so they stay
    normalised to the padded tensor (ACAR's ``pad_ratios``, folded into the boxes). The uint8
    pixels are padded with 0 and ``ClipBatch.clips`` sets the padded region to 0 again after
    normalisation, so the model sees ACAR-Net's ``batch_pad`` (normalise, then pad with 0). Each
    clip's size before padding is kept in ``ClipBatch.sizes``.
    """
    if not samples:
        raise ValueError("collate_clips: empty batch")
    if isinstance(samples[0], MultiViewSample):
        return collate_views(samples)  # type: ignore[arg-type]
    if len({(tuple(s.pixels.shape[:2]), s.pixels.dtype, s.norm) for s in samples}) != 1:
        raise ValueError("collate_clips: clips differ in channels/length/dtype/normalisation: "
                         f"{[(tuple(s.pixels.shape), s.pixels.dtype) for s in samples]}")
    height = max(s.pixels.shape[-2] for s in samples)
    width = max(s.pixels.shape[-1] for s in samples)
    boxes = []
    for s in samples:
        h, w = s.pixels.shape[-2:]
        boxes.append(s.boxes if (h, w) == (height, width) else s.boxes * s.boxes.new_tensor(
            [w / width, h / height, w / width, h / height]))
    return ClipBatch(pixels=_stack([_pad_to(s.pixels, height, width) for s in samples]), boxes=boxes,
                     targets=[s.targets for s in samples], box_scores=[s.box_scores for s in samples],
                     keys=[s.key for s in samples], person_ids=[s.person_ids for s in samples],
                     orig_boxes=[s.orig_boxes for s in samples], orig_sizes=[s.orig_size for s in samples],
                     norm=samples[0].norm, sizes=[(int(s.pixels.shape[-2]), int(s.pixels.shape[-1])) for s in samples])
