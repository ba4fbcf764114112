"""Predictions gathered over torch.distributed (no files): chunked byte gather, shard round trip, merge."""
from __future__ import annotations

import pickle
import socket
from pathlib import Path

import numpy as np
import pytest

from stad.engine.distributed import DistContext, gather_bytes
from stad.engine.launch import LaunchSpec, launch
from stad.engine.predictor import (Predictions, Shard, gather_to_main, merge_shards, shard_from_bytes,
                                   shard_to_bytes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _payload(rank: int) -> bytes:
    # rank 1 sends nothing, the others sizes that are not multiples of the chunk
    return b"" if rank == 1 else bytes((rank * 31 + i) % 251 for i in range(10 * rank + 23))


def _shard(rank: int, world: int, dataset_size: int = 7, num_classes: int = 3) -> Shard:
    """What rank ``rank`` of ``world`` scores: DistributedSampler order with padding, 0-2 boxes per clip."""
    total = -(-dataset_size // world) * world
    indices = (list(range(dataset_size)) * 2)[:total][rank::world]
    parts, occurrence = [], []
    for position, sample in enumerate(indices):
        n = sample % 3
        parts.append(Predictions(np.full(n, sample, np.int64), tuple(f"v{sample}" for _ in range(n)),
                                 np.full(n, 900 + sample, np.int64), np.full((n, 4), sample / 10, np.float32),
                                 np.full((n, num_classes), sample / 7, np.float32), np.full(n, position, np.int64)))
        occurrence.append(position)
    return Shard(Predictions.concatenate(parts, num_classes), np.asarray(indices, np.int64),
                 np.asarray(indices, np.float64))


def _gather_worker(ctx: DistContext, out_dir: str, chunk: int) -> None:
    received, stats = gather_bytes(ctx, _payload(ctx.rank), chunk_bytes=chunk)
    shards, _ = gather_to_main(ctx, _shard(ctx.rank, ctx.world_size), chunk_bytes=chunk)
    if ctx.rank == 0:
        merged = merge_shards(shards, 7, 3)
        Path(out_dir, "out.pkl").write_bytes(pickle.dumps((received, stats, merged)))
    else:
        assert received is None and shards is None


@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_gather_over_three_ranks_in_chunks(tmp_path, chunk):
    spec = LaunchSpec(nproc_per_node=3, master_port=_free_port(), threads_per_worker=1, timeout_s=60)
    assert launch(_gather_worker, spec, (str(tmp_path), chunk)) == 0
    received, stats, merged = pickle.loads((tmp_path / "out.pkl").read_bytes())
    assert received == [_payload(r) for r in range(3)]
    assert stats.bytes == sum(len(_payload(r)) for r in range(3))
    assert stats.rounds == -(-max(len(_payload(r)) for r in range(3)) // chunk)
    # the same rows as merging the shards in one process, each sample once
    local = merge_shards([_shard(r, 3) for r in range(3)], 7, 3)
    for name in ("sample_index", "timestamps", "boxes", "scores"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(local, name))
    assert merged.videos == local.videos
    assert merged.sample_index.tolist() == [1, 2, 2, 4, 5, 5]


def test_single_process_gather_is_the_identity():
    shards, stats = gather_to_main(DistContext(), _shard(0, 1))
    assert len(shards) == 1 and stats.rounds == 0
    np.testing.assert_array_equal(shards[0].predictions.scores, _shard(0, 1).predictions.scores)


def test_shard_bytes_round_trip_checks_rank_and_rows():
    shard = _shard(1, 2)
    back = shard_from_bytes(shard_to_bytes(shard, 1), 1)
    np.testing.assert_array_equal(back.covered, shard.covered)
    np.testing.assert_array_equal(back.predictions.boxes, shard.predictions.boxes)
    with pytest.raises(RuntimeError, match="rank 1 arrived in the slot of rank 0"):
        shard_from_bytes(shard_to_bytes(shard, 1), 0)
