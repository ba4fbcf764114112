"""ACAR head: actor-context relations + high-order relation reasoning (HR2O), batched over clips.

Module names follow ACAR-Net's ``models/heads/acar.py`` so its AVA-trained head weights load with
``strict=True`` (after :func:`stad.models.checkpoints.filter_acar_head`).

Per clip, ACAR-Net tiles every actor feature over the context map, concatenates it with the
context, and runs conv1 (1x1) -> conv2 (3x3) -> max-pool -> HR2O (attention between the actors of
that clip at each position) -> global average pool. Here all clips are processed in one pass:

* conv1 is 1x1 over ``[context, actor]`` so it splits into ``W_ctx * context`` (once per clip)
  plus ``W_act * actor`` (once per box, a vector); the 2R-channel tiled tensor never exists;
* HR2O attends between actors of the same clip in a padded ``[clips * h * w, max_boxes, C]`` layout,
  two batched matmuls with padded keys masked out; clips without boxes are skipped entirely;
* in eval mode the last HR2O output conv is folded into the global average pool (a conv is
  linear, so the mean of its output needs only per-tap sums of its input): one 3x3 conv fewer;
* the per-box 3x3 convolutions (conv2, HR2O's q/k/v and output convs) run in channels-last
  layout through Winograd's F(2x2, 3x3) (:mod:`stad.models.heads.kernels`): 2.25x fewer
  multiply-adds for conv2, 1.7x for the 7x7 HR2O maps, q/k/v sharing one input transform and one
  batched GEMM. The same linear maps, rounded differently (a few 1e-7 relative); heads with fewer
  than 128 channels (the toy demo's) keep ``F.conv2d``.

Optional, not in ACAR-Net (off by default, so official weights load unchanged):
``relative_position=True`` adds :class:`RelativePosition` to conv1's pre-activation, an MLP of each
context position's offset from the actor's box. ACAR-Net's tiled actor feature says nothing about
*where* the actor is, so "a listener 1.5 heights in front of me" must otherwise be inferred from
the context features alone; with the offset, one ReLU can gate a context cell on its place.
``position_gate=True`` also gates that encoding by which way the actor faces (the left-right
asymmetry of its RoI map), so "in front of me" does not depend on the image's left and right.

:func:`acar_per_clip_reference` keeps ACAR-Net's per-clip loop for tests and benchmarks.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from stad.models.heads.common import connect_empty, left_right_asymmetry, roi_maps, roi_maps_traced
from stad.models.heads.kernels import FilterCache, conv1x1, conv3x3
from stad.models.neck import RoIBatch
from stad.models.registry import register_model


def pooled_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Spatial mean of ``conv(x)`` without computing the map: x [N, C, h, w] -> [N, C_out].

    A convolution is linear, so mean_hw(conv(x)) = sum over kernel taps (a, b) of W[:, :, a, b] @ S_ab
    / (h' w'), where S_ab [N, C] sums x over the input rows/columns that tap reaches (zero padding
    excluded). Needs a bias-free, stride-1, undilated, ungrouped conv with zero padding.
    """
    if (conv.bias is not None or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1
            or conv.padding_mode != "zeros" or isinstance(conv.padding, str)):
        raise ValueError(f"pooled_conv needs a bias-free, stride-1, undilated, ungrouped conv with zero "
                         f"padding, got {conv}")
    (k_h, k_w), (p_h, p_w) = conv.kernel_size, conv.padding
    height, width = x.shape[-2:]
    out_h, out_w = height + 2 * p_h - k_h + 1, width + 2 * p_w - k_w + 1
    # reach[a, i] = 1 if input row i is read by kernel row a for some output row (i = o + a - p, 0 <= o < out_h)
    rows = _tap_reach(k_h, height, p_h, out_h, x)  # [k_h, h]
    cols = _tap_reach(k_w, width, p_w, out_w, x)  # [k_w, w]
    # (sizes spelt out, no -1: the same views, valid for N = 0 too, as the export's graph needs)
    tokens = x.permute(0, 2, 3, 1).reshape(x.shape[0], height, width * x.shape[1])  # [N, h, w*C], a view if NHWC
    row_sums = torch.matmul(rows, tokens).view(x.shape[0], k_h, width, x.shape[1])  # [N, k_h, w, C]
    sums = torch.matmul(cols, row_sums).permute(0, 3, 1, 2)  # [N, C, k_h, k_w]
    return F.linear(sums.flatten(1), conv.weight.flatten(1)) / (out_h * out_w)


def _tap_reach(kernel: int, size: int, padding: int, out_size: int, like: torch.Tensor) -> torch.Tensor:
    """[kernel, size] 0/1 matrix (dtype/device of ``like``): which inputs each kernel tap reads."""
    tap, position = torch.arange(kernel, device=like.device), torch.arange(size, device=like.device)
    shift = position[None, :] - tap[:, None] + padding  # output index o = i - a + p
    return ((shift >= 0) & (shift < out_size)).to(like.dtype)


def group_norm_traced(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` for x [N, C, h, w] spelt with reductions (equal to float rounding): the ONNX form of
    ``F.group_norm`` reshapes to ``[N, groups, -1]``, which ONNX Runtime refuses for N = 0."""
    n, channels, height, width = x.shape
    grouped = x.reshape(n, norm.num_groups, channels // norm.num_groups, height, width)
    mean = grouped.mean((2, 3, 4), keepdim=True)
    var = (grouped - mean).square().mean((2, 3, 4), keepdim=True)
    out = ((grouped - mean) / torch.sqrt(var + norm.eps)).reshape(n, channels, height, width)
    if norm.affine:
        out = out * norm.weight[:, None, None] + norm.bias[:, None, None]
    return out


def max_pool_traced(pool: nn.MaxPool2d, x: torch.Tensor) -> torch.Tensor:
    """``pool(x)`` (square kernel, stride, zero-free padding, no dilation) as the maximum of strided
    slices of the -inf padded map: the same values exactly, and elementwise ops only, which OpenVINO
    runs on zero boxes (its MaxPool refuses a batch of 0)."""
    kernel, stride, padding = (v if isinstance(v, int) else v[0] for v in (pool.kernel_size, pool.stride, pool.padding))
    if pool.dilation not in (1, (1, 1)) or pool.ceil_mode:
        raise ValueError(f"max_pool_traced: unsupported {pool}")
    height, width = x.shape[-2:]
    out_h, out_w = (height + 2 * padding - kernel) // stride + 1, (width + 2 * padding - kernel) // stride + 1
    padded = F.pad(x, (padding,) * 4, value=float("-inf"))
    out = None
    for a in range(kernel):
        for b in range(kernel):
            tap = padded[:, :, a:a + stride * (out_h - 1) + 1:stride, b:b + stride * (out_w - 1) + 1:stride]
            out = tap if out is None else torch.maximum(out, tap)
    return out


class PaddedLayout:
    """Index bookkeeping to move per-RoI maps [N, C, h, w] to padded per-clip token sets and back.

    The padded layout is [rows * h * w, M, C]: for every clip with at least one RoI (a row) and every
    position, the M (= most RoIs in a clip) actor vectors, so attention between the actors of each
    clip at each position is one batched matmul. RoIs must be grouped by clip in clip order (as
    :class:`~stad.models.neck.RoINeck` produces them).
    """

    def __init__(self, counts: tuple[int, ...], device: torch.device):
        nonempty = [c for c in counts if c > 0]
        self.num_rows = len(nonempty)
        self.width = max(nonempty, default=0)
        counts_t = torch.tensor(nonempty, dtype=torch.long, device=device)
        self.row = torch.repeat_interleave(torch.arange(self.num_rows, device=device), counts_t)  # [N]
        starts = torch.cumsum(counts_t, 0) - counts_t
        self.slot = torch.arange(int(counts_t.sum()), device=device) - starts[self.row]  # [N]
        self.valid = torch.zeros(self.num_rows, self.width, dtype=torch.bool, device=device)
        self.valid[self.row, self.slot] = True  # [rows, M]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, h, w] -> [rows * h * w, M, C] with zeros in padded slots."""
        channels, height, width = x.shape[1:]
        out = x.new_zeros(self.num_rows, height, width, self.width, channels)
        out[self.row, :, :, self.slot] = x.permute(0, 2, 3, 1)  # a plain view for channels-last x
        return out.view(-1, self.width, channels)

    def unpad(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """[rows * h * w, M, C] -> [N, C, h, w] (channels-last strides)."""
        grid = x.view(self.num_rows, height, width, self.width, x.shape[-1])
        return grid[self.row, :, :, self.slot].permute(0, 3, 1, 2)

    def key_mask(self, height: int, width: int) -> torch.Tensor:
        """[rows * h * w, 1, M] bool, True for real (not padded) actors."""
        return self.valid[:, None, None, :].expand(-1, height * width, 1, -1).reshape(-1, 1, self.width)


class RelativePosition(nn.Module):
    """Offset of every context cell from an actor's box, encoded for conv1: -> [N, H, W, C].

    The offset of cell centre (x, y) from the box centre is measured in box heights, x scaled by
    the map's aspect (W / H, the image's up to rounding) so both axes share one unit:
    ``((x - cx) * W / H / h, (y - cy) / h)`` in normalised coordinates. A two-layer MLP maps the
    two numbers to ``out_channels``.

    With ``facing_dim`` a per-actor facing descriptor (the head passes
    :func:`~stad.models.heads.common.left_right_asymmetry` of its RoI map) scales the MLP's hidden
    units (``1 + gate(facing)``, the gate starting at zero). "In front of me" is the product of
    where I face and which side the cell is on, which a sum of the two cannot express under one
    ReLU; a mirrored clip flips both factors and keeps the product. The max-pooled actor feature
    is no substitute: on the toy demo's model trained without the gate, a linear probe reads a
    walker's facing from it at 53% (chance 50%), from the asymmetry at 80%
    (``scripts/toy_diagnose.py facing --split train``).

    Args:
        out_channels: C (the ACAR head's hidden_dim).
        hidden: MLP width.
        facing_dim: channels of the facing descriptor for the gate; None: no gate.
    """

    def __init__(self, out_channels: int, hidden: int = 32, facing_dim: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(2, hidden)
        self.fc2 = nn.Linear(hidden, out_channels, bias=False)
        self.gate = nn.Linear(facing_dim, hidden) if facing_dim else None
        if self.gate is not None:  # start as the ungated encoding
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)

    @staticmethod
    def offsets(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """boxes [N, 4] normalised (x1, y1, x2, y2) -> offsets [N, H, W, 2] in box heights."""
        ys = (torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5) / height
        xs = (torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5) / width
        centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
        centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
        box_h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
        dx = (xs[None, :] - centre_x[:, None]) * (width / height) / box_h[:, None]  # [N, W]
        dy = (ys[None, :] - centre_y[:, None]) / box_h[:, None]  # [N, H]
        return torch.stack(torch.broadcast_tensors(dx[:, None, :], dy[:, :, None]), dim=-1)

    def forward(self, boxes: torch.Tensor, height: int, width: int,
                facing: torch.Tensor | None = None) -> torch.Tensor:
        """boxes [N, 4] normalised, facing [N, facing_dim] (needed iff gated) -> [N, H, W, C]."""
        hidden = F.relu(self.fc1(self.offsets(boxes.detach(), height, width)))  # [N, H, W, hidden]
        if self.gate is not None:
            if facing is None:
                raise ValueError("a gated RelativePosition needs the facing descriptor")
            hidden = hidden * (1 + self.gate(facing))[:, None, None, :]
        return self.fc2(hidden)


class HR2O(nn.Module):
    """High-order relation reasoning operator (ACAR-Net's ``HR2O_NL``): actor-actor attention at
    every spatial position, GroupNorm, ReLU, conv, dropout, residual.

    Args:
        hidden_dim: channels C.
        kernel_size: kernel of the q/k/v convs (and of the output conv unless ``mlp_1x1``).
        mlp_1x1: use a 1x1 output conv (ACAR R101 setting).
        dropout: dropout on the relation features (ACAR-Net: 0.2).
    """

    def __init__(self, hidden_dim: int = 512, kernel_size: int = 3, mlp_1x1: bool = False, dropout: float = 0.2):
        super().__init__()
        self.hidden_dim = hidden_dim
        pad = kernel_size // 2
        self.conv_q = nn.Conv2d(hidden_dim, hidden_dim, kernel_size, padding=pad, bias=False)
        self.conv_k = nn.Conv2d(hidden_dim, hidden_dim, kernel_size, padding=pad, bias=False)
        self.conv_v = nn.Conv2d(hidden_dim, hidden_dim, kernel_size, padding=pad, bias=False)
        out_kernel = 1 if mlp_1x1 else kernel_size
        self.conv = nn.Conv2d(hidden_dim, hidden_dim, out_kernel, padding=out_kernel // 2, bias=False)
        self.norm = nn.GroupNorm(1, hidden_dim, affine=True)
        self.dp = nn.Dropout(dropout)
        self._qkv_filters, self._out_filters = FilterCache(), FilterCache()  # Winograd filters (inference)

    def _finish(self, x: torch.Tensor, relation: torch.Tensor, fast: bool = True) -> torch.Tensor:
        """x + dropout(conv(relu(norm(relation)))); ``fast``: the conv through :func:`conv3x3`."""
        hidden = F.relu(self.norm(relation))
        if fast:
            out = conv3x3(hidden, [self.conv.weight], self.conv.padding[0], self._out_filters)[0]
        else:
            out = self.conv(hidden)
        return x + self.dp(out)

    def relation(self, x: torch.Tensor, layout: PaddedLayout) -> torch.Tensor:
        """Attention of every actor over the actors of its clip: x [N, C, h, w] -> [N, C, h, w]."""
        height, width = x.shape[-2:]
        weights = [self.conv_q.weight, self.conv_k.weight, self.conv_v.weight]
        q, k, v = (layout.pad(t) for t in conv3x3(x, weights, self.conv_q.padding[0], self._qkv_filters))
        logits = torch.bmm(q, k.transpose(1, 2)) / self.hidden_dim ** 0.5  # [rows*h*w, M, M]
        logits = logits.masked_fill(~layout.key_mask(height, width), torch.finfo(logits.dtype).min)
        return layout.unpad(torch.bmm(logits.softmax(dim=-1), v), height, width)

    def relation_one_clip(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`relation` for the actors of ONE clip (no padding, no mask; trace-friendly):
        x [N, C, h, w] -> [N, C, h, w]."""
        # [N, C, h, w] -> [h, w, N, C] and batched matmuls over (h, w): no reshape, whose ONNX form
        # would read a 0 in its target shape (N = 0) as "keep that input dimension"
        q, k, v = (conv(x).permute(2, 3, 0, 1) for conv in (self.conv_q, self.conv_k, self.conv_v))
        logits = torch.matmul(q, k.transpose(2, 3)) / self.hidden_dim ** 0.5  # [h, w, N, N]
        return torch.matmul(logits.softmax(dim=-1), v).permute(2, 3, 0, 1)  # [N, C, h, w]

    def forward_one_clip(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` for the actors of ONE clip (trace-friendly; eval mode: no dropout)."""
        return x + self.conv(F.relu(group_norm_traced(self.norm, self.relation_one_clip(x))))

    def forward(self, x: torch.Tensor, layout: PaddedLayout) -> torch.Tensor:
        """x [N, C, h, w] (RoIs grouped by clip) -> [N, C, h, w]; attention within each clip."""
        return self._finish(x, self.relation(x, layout))

    def forward_pooled(self, x: torch.Tensor, layout: PaddedLayout) -> torch.Tensor:
        """Spatial mean of ``forward(x, layout)``: [N, C, h, w] -> [N, C].

        In eval mode the output conv is folded into the mean (:func:`pooled_conv`), which skips the
        head's last 3x3 convolution; in training mode (dropout on that conv's output) it runs in full.
        """
        if self.training:
            return self.forward(x, layout).mean((2, 3))
        return x.mean((2, 3)) + pooled_conv(F.relu(self.norm(self.relation(x, layout))), self.conv)

    def forward_single_clip(self, x: torch.Tensor, fast_kernels: bool = False) -> torch.Tensor:
        """Reference path, ACAR-Net's algorithm: x [n, C, h, w] = all actors of ONE clip.
        ``fast_kernels``: its convolutions through :func:`conv3x3` (the batched head's kernels)."""
        if fast_kernels:
            weights = [self.conv_q.weight, self.conv_k.weight, self.conv_v.weight]
            query, key, value = conv3x3(x, weights, self.conv_q.padding[0], self._qkv_filters)
        else:
            query, key, value = self.conv_q(x), self.conv_k(x), self.conv_v(x)
        attention = ((query.unsqueeze(1) * key.unsqueeze(0)).sum(2) / self.hidden_dim ** 0.5).softmax(dim=1)
        relation = (attention.unsqueeze(2) * value.unsqueeze(0)).sum(1)
        return self._finish(x, relation, fast=fast_kernels)


def context_groups(rois: RoIBatch, height: int, width: int) -> list[tuple[tuple[int, int], list[int]]]:
    """Clips with at least one RoI grouped by the ``(h, w)`` cells of their context
    (:meth:`RoIBatch.context_sizes`): ``[((h, w), [clip, ...]), ...]``, clips ascending in a group."""
    groups: dict[tuple[int, int], list[int]] = {}
    for clip, (count, size) in enumerate(zip(rois.counts, rois.context_sizes(height, width))):
        if count:
            groups.setdefault(size, []).append(clip)
    return list(groups.items())


def cropped_rois(rois: RoIBatch, clips: list[int], height: int, width: int, eff_h: int,
                 eff_w: int) -> tuple[RoIBatch, torch.Tensor]:
    """The RoIs of ``clips`` for their ``eff_h x eff_w`` top-left context crop of an ``height x width``
    map: clips renumbered 0.., coordinates normalised to the crop (so :class:`RelativePosition`
    sees the crop's own geometry), and their rows ``[n]`` in ``rois``."""
    sub, index = rois.select_clips(clips)
    scale = sub.rois.new_tensor([1.0, width / eff_w, height / eff_h, width / eff_w, height / eff_h])
    return RoIBatch(sub.rois * scale, sub.counts), index


class ACARHead(nn.Module):
    """Actor-context-actor relation head.

    Args:
        in_channels: channels of the fused feature map (ACAR SlowFast: 2048 + 256 = 2304).
        num_classes: K.
        roi_size: RoIAlign output size before the max-pool (7).
        reduce_dim: channels after ``conv_reduce`` (1024).
        hidden_dim: relation channels (512).
        depth: number of HR2O layers (R50: 2, R101: 1).
        kernel_size, mlp_1x1: HR2O conv settings.
        downsample: 'max2x2' (3x3/2 max-pool before HR2O) or 'none'.
        dropout: dropout before the classifier.
        bias: bias in the final classifier ``fc2`` (ACAR-Net: False).
        relation_dropout: dropout inside HR2O (ACAR-Net: 0.2).
        channels_last: run the per-box convolutions in channels-last memory layout.
        relative_position: add :class:`RelativePosition` (each context cell's offset from the
            actor) to conv1's output before its ReLU; not in ACAR-Net, off by default.
        position_gate: gate that encoding with the actor's left-right asymmetry, i.e. which way it
            faces (``RelativePosition(facing_dim=...)``); needs ``relative_position``.
    """

    def __init__(self, in_channels: int, num_classes: int, *, roi_size: int = 7, reduce_dim: int = 1024,
                 hidden_dim: int = 512, depth: int = 2, kernel_size: int = 3, mlp_1x1: bool = False,
                 downsample: str = "max2x2", dropout: float = 0.0, bias: bool = False,
                 relation_dropout: float = 0.2, channels_last: bool = True, relative_position: bool = False,
                 position_gate: bool = False):
        super().__init__()
        if position_gate and not relative_position:
            raise ValueError("position_gate=True needs relative_position=True")
        self.channels_last = channels_last
        if downsample not in ("max2x2", "none"):
            raise ValueError(f"downsample must be 'max2x2' or 'none', got {downsample!r}")
        self.roi_size = roi_size
        self.num_classes = num_classes
        self.conv_reduce = nn.Conv2d(in_channels, reduce_dim, 1, bias=False)
        self.conv1 = nn.Conv2d(reduce_dim * 2, hidden_dim, 1, bias=False)
        self.position = (RelativePosition(hidden_dim, facing_dim=reduce_dim if position_gate else None)
                         if relative_position else None)
        self.conv2 = nn.Conv2d(hidden_dim, hidden_dim, 3, bias=False)
        self._conv2_filters = FilterCache()  # its Winograd filters, kept between inference calls
        self.downsample = nn.MaxPool2d(3, stride=2, padding=1) if downsample == "max2x2" else nn.Identity()
        self.hr2o = nn.Sequential(*[HR2O(hidden_dim, kernel_size, mlp_1x1, relation_dropout) for _ in range(depth)])
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(reduce_dim, hidden_dim, bias=False)
        self.fc2 = nn.Linear(hidden_dim * 2, num_classes, bias=bias)
        self.dp = nn.Dropout(dropout) if dropout > 0 else None

    def _classify(self, actor: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        out = torch.cat([F.relu(self.fc1(actor)), relation], dim=1)
        if self.dp is not None:
            out = self.dp(out)
        return self.fc2(out)

    def forward(self, feature_map: torch.Tensor, rois: RoIBatch) -> torch.Tensor:
        """feature_map [B, C, H, W], rois (N RoIs, grouped by clip) -> logits [N, K].

        RoI (actor) features come from the whole map; with ``rois.sizes`` (a padded batch) the
        context of each clip is its top-left ``ceil(H * frac_h) x ceil(W * frac_w)`` cells, as in
        ACAR-Net: clips are grouped by that size and each group goes through the batched path.
        """
        if len(rois) == 0:
            # Keep the graph connected to the input and every parameter: all-zero loss, zero gradients.
            return connect_empty(feature_map.new_zeros(0, self.num_classes), feature_map, self)
        feats = conv1x1(feature_map, self.conv_reduce.weight)  # [B, R, H, W]
        maps = roi_maps(feats, rois.rois, self.roi_size)  # [N, R, s, s]; RoIAlign wants the default layout
        actor = maps.amax((2, 3))  # [N, R]
        facing = self._facing(maps)
        if self.channels_last:  # converting R output channels is cheaper than C input channels
            feats = feats.contiguous(memory_format=torch.channels_last)
        groups = context_groups(rois, *feats.shape[-2:])
        if all(size == tuple(feats.shape[-2:]) for size, _ in groups):  # no clip padded (or none with a RoI)
            return self._classify(actor, self._context_relations(feats, actor, rois, facing))
        parts, rows = [], []
        for (eff_h, eff_w), clips in groups:  # padded batch: each clip's context is its own pixels only
            sub, index = cropped_rois(rois, clips, *feats.shape[-2:], eff_h, eff_w)
            crop = feats[torch.tensor(clips, device=feats.device), :, :eff_h, :eff_w]
            if self.channels_last:
                crop = crop.contiguous(memory_format=torch.channels_last)
            parts.append(self._context_relations(crop, actor[index], sub, None if facing is None else facing[index]))
            rows.append(index)
        order = torch.argsort(torch.cat(rows))  # groups' rows back to RoI order
        return self._classify(actor, torch.cat(parts)[order])

    def forward_one_clip(self, feature_map: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits of ONE unpadded clip, written for tracing / export (``stad.models.export``):
        feature_map [1, C, H, W], boxes [N, 4] normalised xyxy -> [N, K], N >= 0.

        :meth:`forward` on a batch of one clip, equal to float rounding (tested to 1e-6 on the toy
        model), without Python-side shape logic: no :class:`RoIBatch` counts, no
        :class:`PaddedLayout`, no branch on N. All N actors attend to each other (one clip), so
        HR2O needs no padding or mask (:meth:`HR2O.relation_one_clip`); GroupNorm is spelt out
        (:func:`group_norm_traced`). The eager :meth:`forward` is untouched by this path.
        """
        if self.training:
            raise RuntimeError("forward_one_clip is the eval-mode (export) path; call .eval() first")
        rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], dim=1)
        feats = conv1x1(feature_map, self.conv_reduce.weight)  # [1, R, H, W]
        maps = roi_maps_traced(feats, rois, self.roi_size)  # [N, R, s, s]
        actor = maps.amax((2, 3))
        facing = self._facing(maps)
        if min(feats.shape[-2:]) < 3:
            raise ValueError(f"ACAR head needs a context of at least 3x3 feature cells, got {tuple(feats.shape[-2:])}")
        w1 = self.conv1.weight
        context = conv1x1(feats, w1[:, :feats.shape[1]])  # [1, hid, H, W]
        x = context.permute(0, 2, 3, 1) + F.linear(actor, w1[:, feats.shape[1]:, 0, 0])[:, None, None, :]
        if self.position is not None:
            x = x + self.position(boxes, *feats.shape[-2:], facing=facing)
        x = x.relu().permute(0, 3, 1, 2)
        x = F.relu(self.conv2(x))
        x = max_pool_traced(self.downsample, x) if isinstance(self.downsample, nn.MaxPool2d) else self.downsample(x)
        if len(self.hr2o) == 0:
            relation = x.mean((2, 3))
        else:
            for layer in self.hr2o[:-1]:
                x = layer.forward_one_clip(x)
            last = self.hr2o[-1]
            relation = x.mean((2, 3)) + pooled_conv(F.relu(group_norm_traced(last.norm, last.relation_one_clip(x))),
                                                    last.conv)
        return self._classify(actor, relation)

    def _context_relations(self, feats: torch.Tensor, actor: torch.Tensor, rois: RoIBatch,
                           facing: torch.Tensor | None) -> torch.Tensor:
        """conv1 -> conv2 -> downsample -> HR2O -> GAP with every clip's whole map as its context:
        feats [B, R, h, w], actor [N, R] -> [N, hid]."""
        if min(feats.shape[-2:]) < 3:
            raise ValueError(f"ACAR head needs a context of at least 3x3 feature cells (its conv2 is a valid 3x3 "
                             f"conv), got {tuple(feats.shape[-2:])}: feed larger clips")
        x = self._conv2(self._actor_context(feats, actor, rois, facing))
        x = self.downsample(F.relu(x, inplace=True))
        return self._relations(x, PaddedLayout(rois.counts, x.device))

    def _conv2(self, x: torch.Tensor) -> torch.Tensor:
        """conv2 through :func:`conv3x3`: [N, hid, h, w] -> [N, hid, h - 2, w - 2]."""
        return conv3x3(x, [self.conv2.weight], self.conv2.padding[0], self._conv2_filters)[0]

    def _facing(self, maps: torch.Tensor) -> torch.Tensor | None:
        """The position gate's input: RoI maps [N, R, s, s] -> [N, R], or None without a gate."""
        gated = self.position is not None and self.position.gate is not None
        return left_right_asymmetry(maps) if gated else None

    def _actor_context(self, feats: torch.Tensor, actor: torch.Tensor, rois: RoIBatch,
                       facing: torch.Tensor | None = None) -> torch.Tensor:
        """relu(conv1([context, tiled actor])) without tiling: feats [B, R, H, W], actor [N, R] -> [N, hid, H, W]."""
        reduce_dim = feats.shape[1]
        w1 = self.conv1.weight
        context = conv1x1(feats, w1[:, :reduce_dim])  # [B, hid, H, W], once per clip
        actor_term = F.linear(actor, w1[:, reduce_dim:, 0, 0])  # [N, hid], once per box
        # [B, H, W, hid] + [N, 1, 1, hid] (in place on the fresh index_select output: no second buffer)
        x = context.permute(0, 2, 3, 1).index_select(0, rois.clip_index).add_(actor_term[:, None, None, :])
        if self.position is not None:
            x = x.add_(self.position(rois.rois[:, 1:], *feats.shape[-2:], facing=facing))
        x = x.relu_().permute(0, 3, 1, 2)  # NCHW view with channels-last strides
        return x if self.channels_last else x.contiguous()

    def _relations(self, x: torch.Tensor, layout: PaddedLayout) -> torch.Tensor:
        """HR2O layers then global average pool: x [N, hid, h, w] -> [N, hid]."""
        if len(self.hr2o) == 0:
            return x.mean((2, 3))
        for layer in self.hr2o[:-1]:
            x = layer(x, layout)
        return self.hr2o[-1].forward_pooled(x, layout)


def acar_per_clip_reference(head: ACARHead, feature_map: torch.Tensor, rois: RoIBatch, *,
                            fast_kernels: bool = False) -> torch.Tensor:
    """ACAR-Net's original per-clip loop (tiled actor features, one clip at a time).

    Kept as the reference the batched :meth:`ACARHead.forward` is tested and benchmarked against.
    Same inputs and output as ``head(feature_map, rois)``: feature_map [B, C, H, W] -> logits [N, K];
    with ``rois.sizes`` (a padded batch) each clip's context is cropped to its own cells, as in ACAR-Net.
    ``fast_kernels=True`` keeps the algorithm but gives it the batched head's kernels (channels-last
    tensors, the 3x3 convs through Winograd, :func:`~stad.models.heads.kernels.conv3x3`), to
    separate what batching gains from what the kernels gain.
    """
    layout = torch.channels_last if fast_kernels else torch.contiguous_format

    def conv_1x1(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        return conv1x1(x.contiguous(memory_format=layout), conv.weight) if fast_kernels else conv(x)

    feats = conv_1x1(head.conv_reduce, feature_map)
    maps = roi_maps(feats.contiguous(), rois.rois, head.roi_size)
    actor, facing = maps.amax((2, 3)), head._facing(maps)
    relations, start = [], 0
    height, width = feats.shape[-2:]
    for clip, (count, (eff_h, eff_w)) in enumerate(zip(rois.counts, rois.context_sizes(height, width))):
        if count == 0:
            continue
        context = feats[clip, :, :eff_h, :eff_w].unsqueeze(0).repeat(count, 1, 1, 1)  # the clip's own cells
        tiled = actor[start:start + count, :, None, None].expand_as(context)
        x = conv_1x1(head.conv1, torch.cat([context, tiled], dim=1))
        if head.position is not None:
            clip_facing = None if facing is None else facing[start:start + count]
            boxes = rois.rois[start:start + count, 1:] * rois.rois.new_tensor(
                [width / eff_w, height / eff_h] * 2)  # normalised to the clip's cells
            x = x + head.position(boxes, eff_h, eff_w, facing=clip_facing).permute(0, 3, 1, 2)
        x = F.relu(x)
        x = head.downsample(F.relu(head._conv2(x) if fast_kernels else head.conv2(x)))
        for layer in head.hr2o:
            x = layer.forward_single_clip(x, fast_kernels)
        relations.append(head.gap(x).flatten(1))
        start += count
    if not relations:
        return feature_map.new_zeros(0, head.num_classes)
    return head._classify(actor, torch.cat(relations))


@register_model("acar", kind="head")
def acar(*, in_channels: int, num_classes: int, **kwargs) -> ACARHead:
    """ACAR-Net's actor-context-actor relation head (HR2O); keyword arguments: :class:`ACARHead`'s."""
    return ACARHead(in_channels, num_classes, **kwargs)
