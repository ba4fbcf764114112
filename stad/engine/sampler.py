"""A DistributedSampler that can start an epoch part-way, for exact mid-epoch resume.

The order of an epoch is `DistributedSampler`'s (seed + epoch, the same shards); ``set_epoch(epoch,
start=k)`` makes the next pass skip this rank's first ``k`` samples, the ones a checkpoint's optimizer
steps already consumed. Later epochs start at 0 again.

With DataLoader workers the augmentation of a batch is drawn in a worker from that worker's RNG,
whose state a checkpoint cannot capture. ``seeded=True`` makes it a function of the batch instead:
each index travels as ``(index, seed)``, the seed fixed by (sampler seed, epoch, rank, position in the
shard), and `SeededBatches` seeds torch's generator with the first sample's seed before the dataset
draws the batch's clip seeds. The same batch then gets the same augmentation whichever process reads
it and whenever, so a run resumed mid-epoch reads what the uninterrupted run read.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import Dataset, DistributedSampler


class ResumableDistributedSampler(DistributedSampler):
    """`DistributedSampler` + ``set_epoch(epoch, start)``: skip the first ``start`` samples of this rank."""

    def __init__(self, *args: Any, seeded: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.start = 0
        self.seeded = seeded

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        super().set_epoch(epoch)
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"sampler start {start} outside this rank's {self.num_samples} samples")
        self.start = start

    def __iter__(self) -> Iterator[Any]:
        indices = list(super().__iter__())  # eager: no RNG draws later, in the middle of the epoch
        if not self.seeded:
            return iter(indices[self.start:])
        base = (self.seed * 1_000_003 + self.epoch * 10_007 + self.rank) * 1_000_003
        return iter([(index, (base + pos) % 2**62) for pos, index in enumerate(indices)][self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


class SeededBatches(Dataset):
    """Wraps a dataset for a ``seeded`` sampler: items arrive as ``(index, seed)``.

    A batch is read with torch's generator seeded from its first item (restored afterwards, so the
    caller's RNG stream is untouched); the dataset draws the per-clip seeds from it.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:  # labelmap, keyframes, ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        return self.__getitems__([item])[0]

    def __getitems__(self, items: Sequence[tuple[int, int]]) -> list[Any]:
        indices = [int(i) for i, _ in items]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(items[0][1]))
            if hasattr(self.dataset, "__getitems__"):
                return list(self.dataset.__getitems__(indices))
            return [self.dataset[i] for i in indices]
