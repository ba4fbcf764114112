"""Distributed inference: every box gets a score for every class, merged into one AVA CSV.

Each rank scores its shard of the dataset, tagged with dataset indices, and sends it to rank 0 over
torch.distributed (`gather_to_main`: no files, no shared filesystem). The distributed sampler pads
the last shard with repeated samples, so rank 0 keeps the first copy of each dataset index, checks that every index is present exactly once, and writes the rows in dataset
order -- the merged CSV is the same for any number of ranks.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from stad.engine.distributed import GATHER_CHUNK_BYTES, DistContext, GatherStats, gather_bytes
from stad.structures import LabelMap

@dataclass(frozen=True)
class Predictions:
    """Scores for the boxes of a set of keyframes (one row per box).

    Attributes:
        sample_index: int64 ``[M]`` dataset index of each box's clip.
        videos: ``M`` video ids; timestamps: int64 ``[M]``.
        boxes: float32 ``[M, 4]`` normalised xyxy; scores: float32 ``[M, K]`` probabilities.
    """

    sample_index: np.ndarray
    videos: tuple[str, ...]
    timestamps: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    occurrence: np.ndarray  # int64 [M]: position of the box's clip in its rank's sample list

    def __len__(self) -> int:
        return len(self.sample_index)

    def select(self, rows: np.ndarray) -> "Predictions":
        """The rows ``rows`` (int index array), in that order."""
        return Predictions(self.sample_index[rows], tuple(self.videos[i] for i in rows.tolist()),
                           self.timestamps[rows], self.boxes[rows], self.scores[rows], self.occurrence[rows])

    @staticmethod
    def concatenate(parts: Sequence["Predictions"], num_classes: int) -> "Predictions":
        if not parts:
            return Predictions(np.zeros(0, np.int64), (), np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
                               np.zeros((0, num_classes), np.float32), np.zeros(0, np.int64))
        return Predictions(np.concatenate([p.sample_index for p in parts]),
                           tuple(v for p in parts for v in p.videos),
                           np.concatenate([p.timestamps for p in parts]),
                           np.concatenate([p.boxes for p in parts]),
                           np.concatenate([p.scores for p in parts]),
                           np.concatenate([p.occurrence for p in parts]))


@dataclass(frozen=True)
class Shard:
    """What one rank scored: its predictions and every dataset index it processed (boxes or not)."""

    predictions: Predictions
    covered: np.ndarray  # int64 [C]: dataset index of each processed clip, in order (may repeat)
    loss_sums: np.ndarray | None = None  # float64 [C]: per clip, sum over its boxes of the mean loss


def mean_loss(shards: Sequence[Shard]) -> float | None:
    """Box-weighted validation loss over each dataset index once (padding copies dropped)."""
    if any(s.loss_sums is None for s in shards):
        return None
    seen: set[int] = set()
    total, boxes = 0.0, 0
    for shard in shards:
        counts = np.bincount(shard.predictions.occurrence, minlength=len(shard.covered))  # boxes per clip
        for sample, loss, n in zip(shard.covered.tolist(), shard.loss_sums.tolist(), counts.tolist()):
            if sample not in seen:
                seen.add(sample)
                total, boxes = total + loss, boxes + n
    return total / boxes if boxes else None


def forward_batch(model: nn.Module, batch: Any, boxes: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """``model(batch.clips, boxes or batch.boxes)`` -> logits ``[sum N_i, K]``, plus ``sizes=`` (each
    clip's valid fraction, ``ClipBatch.valid_fractions``) when the batch is padded, so the ACAR head
    reads every clip's context from its own pixels (models without padding support see the old call)."""
    boxes = batch.boxes if boxes is None else boxes
    sizes = getattr(batch, "valid_fractions", None)
    if sizes is None:
        return model(batch.clips, boxes)
    return model(batch.clips, boxes, sizes=sizes)


def multiview_logits(model: nn.Module, batch: Any) -> tuple[torch.Tensor, list[np.ndarray]]:
    """ACAR-Net's multi-view evaluation of a `stad.data.collate.MultiViewBatch`.

    Each view runs with the boxes it keeps; a box's logits are averaged over the views that kept it
    (before the activation). Returns logits ``[M, K]`` for the M boxes kept by at least one view, in
    box order, and per clip bool ``[N_i]``: which of its boxes those are (the others are dropped,
    as ACAR-Net drops them).
    """
    counts = [len(b) for b in batch.boxes]
    total, seen = None, torch.zeros(sum(counts), dtype=torch.long)
    for view, keep in zip(batch.views, batch.keep):
        flat = torch.from_numpy(np.concatenate(keep) if keep else np.zeros(0, bool))
        boxes = [b[torch.as_tensor(k, device=b.device)] for b, k in zip(view.boxes, keep)]
        logits = forward_batch(model, view, boxes).float()
        if total is None:
            total = logits.new_zeros(sum(counts), logits.shape[1])
        total[flat.to(logits.device)] += logits
        seen += flat.long()
    present = seen > 0
    averaged = total[present.to(total.device)] / seen[present].to(total)[:, None]
    return averaged, [k.numpy() for k in torch.split(present, counts)]


@dataclass(frozen=True)
class BatchScores:
    """One batch through the model: the single path from pixels + boxes to scores.

    Attributes:
        logits: float ``[M, K]`` (multi-view: averaged over the views that keep each box).
        scores: float32 numpy ``[M, K]``: ``activation(logits)``.
        boxes: per clip float ``[M_i, 4]`` (CPU) normalised xyxy in the original frame, as given.
        kept: per clip bool numpy ``[N_i]``: which of its boxes have rows (all, except boxes no view keeps).
    """

    logits: torch.Tensor
    scores: np.ndarray
    boxes: list[torch.Tensor]
    kept: list[np.ndarray]

    @property
    def counts(self) -> list[int]:
        """Rows per clip ``M_i``."""
        return [len(b) for b in self.boxes]


@torch.no_grad()
def score_batch(model: nn.Module, batch: Any, activation: Callable) -> BatchScores:
    """Scores for every box of a `ClipBatch` (`forward_batch`) or `MultiViewBatch` (`multiview_logits`),
    already on the model's device; `predict_shard` (main.py evaluation) and
    `stad.engine.inference.Predictor` (the demo, streaming) both score through this function."""
    # the boxes as given in the annotation, not as transformed into the clip
    boxes = [b.detach().cpu().float().reshape(-1, 4) for b in getattr(batch, "orig_boxes", batch.boxes)]
    if hasattr(batch, "views"):  # test-time views: boxes no view kept are dropped
        logits, kept = multiview_logits(model, batch)
        boxes = [b[torch.from_numpy(k)] for b, k in zip(boxes, kept)]
    else:
        logits, kept = forward_batch(model, batch), [np.ones(len(b), bool) for b in boxes]
    scores = activation(logits.float()).cpu().numpy().astype(np.float32)
    if scores.shape[0] != sum(len(b) for b in boxes):
        raise RuntimeError(f"model returned scores {scores.shape} for {sum(len(b) for b in boxes)} boxes")
    return BatchScores(logits.float(), scores, boxes, kept)


@torch.no_grad()
def predict_shard(model: nn.Module, loader: Any, indices: Sequence[int], activation: Callable, device: torch.device,
                  num_classes: int, progress: Any = None, criterion: Callable | None = None) -> Shard:
    """Score every box of the batches of ``loader``, whose samples are ``indices`` in order.

    ``loader`` must not shuffle: batch i holds ``indices[i*B:(i+1)*B]``. Each clip occurrence's rows
    carry its position in ``indices`` (``sample_index`` holds the dataset index).
    """
    model.eval()
    parts, offset, loss_sums = [], 0, []
    for batch in loader:
        n_clips = len(batch.keys)
        batch_indices = list(indices[offset:offset + n_clips])
        offset += n_clips
        batch = batch.to(device)
        scored = score_batch(model, batch, activation)
        counts = scored.counts
        if scored.scores.shape != (sum(counts), num_classes):
            raise RuntimeError(f"model returned scores {scored.scores.shape}, expected ({sum(counts)}, {num_classes})")
        if criterion is not None:  # ACAR's val.with_label: per-clip loss, padding removed at merge
            targets = [t[torch.as_tensor(k, device=t.device)] for t, k in zip(batch.targets, scored.kept)]
            loss_sums.extend(_clip_losses(criterion, scored.logits, targets, counts))
        parts.append(Predictions(
            sample_index=np.repeat(np.asarray(batch_indices, np.int64), counts),
            videos=tuple(str(key[0]) for key, n in zip(batch.keys, counts) for _ in range(n)),
            timestamps=np.repeat(np.asarray([int(k[1]) for k in batch.keys], np.int64), counts),
            boxes=torch.cat(scored.boxes).numpy() if scored.boxes else np.zeros((0, 4), np.float32),
            scores=scored.scores,
            occurrence=np.repeat(np.arange(offset - n_clips, offset, dtype=np.int64), counts)))
        if progress is not None:
            progress.update(1)
    if offset != len(indices):
        raise RuntimeError(f"loader produced {offset} samples but the sampler assigned {len(indices)}")
    return Shard(Predictions.concatenate(parts, num_classes), np.asarray(indices, np.int64),
                 np.asarray(loss_sums, np.float64) if criterion is not None else None)


def _clip_losses(criterion: Callable, logits: torch.Tensor, targets: Sequence[torch.Tensor],
                 counts: Sequence[int]) -> list[float]:
    """For each clip: its boxes' mean loss times their number (0 for a clip without boxes)."""
    out, start = [], 0
    for target, n in zip(targets, counts):
        out.append(float(criterion(logits[start:start + n], target.to(logits)) * n) if n else 0.0)
        start += n
    return out


def merge_shards(shards: Sequence[Shard], dataset_size: int, num_classes: int) -> Predictions:
    """One prediction set in dataset order with each dataset index once (sampler padding dropped).

    Raises if a dataset index was processed by no rank (its boxes would be lost).
    """
    covered = set()
    for shard in shards:
        covered.update(shard.covered.tolist())
    missing = sorted(set(range(dataset_size)) - covered)
    if missing:
        raise RuntimeError(f"{len(missing)} samples were scored by no rank (first: {missing[:5]})")
    first: dict[int, tuple[int, int]] = {}  # dataset index -> (rank, occurrence) that scored it first
    for rank, shard in enumerate(shards):
        for position, sample in enumerate(shard.covered.tolist()):
            first.setdefault(sample, (rank, position))
    kept = []
    for rank, shard in enumerate(shards):
        p = shard.predictions
        mask = np.array([first[s] == (rank, o) for s, o in zip(p.sample_index.tolist(), p.occurrence.tolist())], bool)
        kept.append(p.select(np.flatnonzero(mask)))
    merged = Predictions.concatenate(kept, num_classes)
    return merged.select(np.argsort(merged.sample_index, kind="stable"))


def shard_to_bytes(shard: Shard, rank: int) -> bytes:
    """One rank's shard as bytes (what `gather_to_main` sends): numpy arrays + its rank, pickled."""
    p = shard.predictions
    return pickle.dumps({"rank": rank, "predictions": {name: getattr(p, name) for name in _PREDICTION_FIELDS},
                         "covered": shard.covered, "loss_sums": shard.loss_sums}, protocol=pickle.HIGHEST_PROTOCOL)


def shard_from_bytes(payload: bytes, rank: int) -> Shard:
    """Inverse of `shard_to_bytes`; checks the sender's rank and that every column has one entry per row."""
    state = pickle.loads(payload)
    if state.get("rank") != rank:
        raise RuntimeError(f"prediction shard of rank {state.get('rank')} arrived in the slot of rank {rank}")
    p = Predictions(**state["predictions"])
    rows = {name: len(getattr(p, name)) for name in _PREDICTION_FIELDS}
    if len(set(rows.values())) != 1:
        raise RuntimeError(f"prediction shard of rank {rank} is inconsistent: rows per column {rows}")
    return Shard(p, state["covered"], state["loss_sums"])


_PREDICTION_FIELDS = ("sample_index", "videos", "timestamps", "boxes", "scores", "occurrence")


def gather_to_main(ctx: DistContext, shard: Shard,
                   chunk_bytes: int = GATHER_CHUNK_BYTES) -> tuple[list[Shard] | None, GatherStats]:
    """Every rank's shard on rank 0, in rank order (others get None), over torch.distributed.

    Nothing goes through files, so ranks on different nodes need no shared filesystem. Shards are
    pickled numpy arrays sent in rounds of at most ``chunk_bytes`` per rank (`gather_bytes`): a real
    AVA val set (~50k boxes x 60 classes, ~12 MB of scores per rank) takes a few rounds, none of
    whose messages grows with the data. `merge_shards` then drops the sampler's padding copies and
    raises if any sample is missing, so a row is never lost or duplicated.
    """
    payloads, stats = gather_bytes(ctx, shard_to_bytes(shard, ctx.rank), dst=0, chunk_bytes=chunk_bytes)
    if payloads is None:
        return None, stats
    if len(payloads) != ctx.world_size:
        raise RuntimeError(f"gathered {len(payloads)} prediction shards from a world of {ctx.world_size}")
    return [shard_from_bytes(payload, rank) for rank, payload in enumerate(payloads)], stats


def iter_keyframes(predictions: Predictions) -> Iterator[tuple[str, int, np.ndarray, np.ndarray]]:
    """``(video, t, boxes [N,4], scores [N,K])`` per clip, in row order (rows of a clip are contiguous)."""
    if len(predictions) == 0:
        return
    starts = np.flatnonzero(np.diff(predictions.sample_index, prepend=-1) != 0).tolist() + [len(predictions)]
    for begin, end in zip(starts[:-1], starts[1:]):
        yield (predictions.videos[begin], int(predictions.timestamps[begin]),
               predictions.boxes[begin:end], predictions.scores[begin:end])


def write_predictions_csv(path: str | Path, predictions: Predictions, labelmap: LabelMap) -> int:
    """AVA detections CSV (FORMATS.md 1.2): one row per (box, class), written atomically. Returns rows."""
    from stad.data.formats.ava import write_predictions_csv as write_ava

    return write_ava(path, iter_keyframes(predictions), labelmap)
