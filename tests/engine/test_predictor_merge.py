"""Merging per-rank predictions: DistributedSampler padding dropped, nothing lost, dataset order."""
import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from stad.engine.predictor import (Predictions, Shard, iter_keyframes, mean_loss, merge_shards, predict_shard,
                                   write_predictions_csv)
from stad.structures import LabelMap

K = 3
# dataset: sample i has (i % 3) boxes (sample 0 and 3 have none)
N_SAMPLES = 7


def _shard(indices):
    rows = []
    for occ, i in enumerate(indices):
        for b in range(i % 3):
            rows.append((i, occ, b))
    idx = np.array([r[0] for r in rows], np.int64)
    return Shard(Predictions(
        sample_index=idx,
        videos=tuple(f"v{r[0]}" for r in rows),
        timestamps=idx + 900,
        boxes=np.array([[0.1 * r[2], 0, 0.5, 0.5] for r in rows], np.float32).reshape(-1, 4),
        scores=np.array([[r[0] / 10, r[2] / 10, 0.5] for r in rows], np.float32).reshape(-1, K),
        occurrence=np.array([r[1] for r in rows], np.int64)), np.asarray(indices, np.int64))


@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_merge_drops_padding_and_is_world_size_independent(world):
    ds = list(range(N_SAMPLES))
    shards = [_shard(list(DistributedSampler(ds, num_replicas=world, rank=r, shuffle=False))) for r in range(world)]
    assert sum(len(s.covered) for s in shards) >= N_SAMPLES  # padded
    merged = merge_shards(shards, N_SAMPLES, K)
    expected = merge_shards([_shard(ds)], N_SAMPLES, K)
    assert merged.sample_index.tolist() == expected.sample_index.tolist()
    assert len(merged) == sum(i % 3 for i in ds)
    np.testing.assert_array_equal(merged.scores, expected.scores)
    np.testing.assert_array_equal(merged.boxes, expected.boxes)


def test_merge_raises_when_a_sample_is_lost():
    shards = [_shard([0, 1, 2]), _shard([4, 5, 6])]
    with pytest.raises(RuntimeError, match="1 samples were scored by no rank"):
        merge_shards(shards, N_SAMPLES, K)


def test_iter_keyframes_and_csv(tmp_path):
    merged = merge_shards([_shard(list(range(N_SAMPLES)))], N_SAMPLES, K)
    frames = list(iter_keyframes(merged))
    assert [(v, t, len(b)) for v, t, b, _ in frames] == [("v1", 901, 1), ("v2", 902, 2), ("v4", 904, 1),
                                                          ("v5", 905, 2)]
    labels = LabelMap((1, 5, 9), ("a", "b", "c"))
    rows = write_predictions_csv(tmp_path / "p.csv", merged, labels)
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert rows == len(lines) == len(merged) * K
    assert lines[0] == "v1,0901,0.000,0.000,0.500,0.500,1,0.1000"
    assert lines[2] == "v1,0901,0.000,0.000,0.500,0.500,9,0.5000"


def test_empty_predictions(tmp_path):
    merged = merge_shards([_shard([0, 1])], 2, K)  # sample 0 has no boxes
    assert len(merged) == 1
    empty = Predictions.concatenate([], K)
    assert len(empty) == 0 and list(iter_keyframes(empty)) == []
    assert write_predictions_csv(tmp_path / "e.csv", empty, LabelMap((1, 2, 3), ("a", "b", "c"))) == 0
    assert (tmp_path / "e.csv").read_text() == ""


def test_predict_shard_with_zero_box_clips_and_original_boxes():
    from stad.data.collate import ClipBatch

    class Model(torch.nn.Module):
        def forward(self, clips, boxes):
            rows = [b.sum(1, keepdim=True) * clips[i].mean() + torch.arange(K) for i, b in enumerate(boxes)]
            return torch.cat(rows) if rows else torch.zeros(0, K)

    def batch(counts, keys):
        boxes = [torch.full((n, 4), 0.25) for n in counts]
        orig = [torch.full((n, 4), 0.5) for n in counts]
        return ClipBatch(pixels=torch.ones(len(counts), 3, 2, 4, 4), boxes=boxes,
                         targets=[torch.zeros(n, K) for n in counts], box_scores=[torch.ones(n) for n in counts],
                         keys=keys, person_ids=[torch.zeros(n, dtype=torch.long) for n in counts],
                         orig_boxes=orig, orig_sizes=[(8, 8)] * len(counts))

    loader = [batch([2, 0], [("a", 1), ("a", 2)]), batch([0], [("b", 3)]), batch([1], [("b", 4)])]
    shard = predict_shard(Model(), loader, [5, 6, 7, 8], torch.sigmoid, torch.device("cpu"), K)
    assert shard.covered.tolist() == [5, 6, 7, 8]
    p = shard.predictions
    assert p.sample_index.tolist() == [5, 5, 8] and p.videos == ("a", "a", "b")
    assert p.timestamps.tolist() == [1, 1, 4]
    np.testing.assert_array_equal(p.boxes, np.full((3, 4), 0.5, np.float32))  # original, not transformed
    assert p.scores.shape == (3, K)
    bce = torch.nn.BCEWithLogitsLoss()
    with_loss = predict_shard(Model(), loader, [5, 6, 7, 8], torch.sigmoid, torch.device("cpu"), K, criterion=bce)
    assert with_loss.loss_sums.shape == (4,) and with_loss.loss_sums[1] == with_loss.loss_sums[2] == 0.0
    assert with_loss.loss_sums[0] > 0 and mean_loss([with_loss]) > 0
    with pytest.raises(RuntimeError, match="sampler assigned 5"):
        predict_shard(Model(), loader, [5, 6, 7, 8, 9], torch.sigmoid, torch.device("cpu"), K)


def test_validation_loss_counts_each_sample_once():
    ds = list(range(N_SAMPLES))
    def with_losses(shard):  # loss sum of clip i = 10 * i per box
        counts = np.bincount(shard.predictions.occurrence, minlength=len(shard.covered))
        return Shard(shard.predictions, shard.covered, np.array([10.0 * i * n for i, n in zip(shard.covered, counts)]))
    expected = sum(10.0 * i * (i % 3) for i in ds) / sum(i % 3 for i in ds)
    for world in (1, 2, 3):
        shards = [with_losses(_shard(list(DistributedSampler(ds, num_replicas=world, rank=r, shuffle=False))))
                  for r in range(world)]
        assert mean_loss(shards) == pytest.approx(expected)
    assert mean_loss([_shard(ds)]) is None  # no losses recorded
