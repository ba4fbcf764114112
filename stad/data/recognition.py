"""Clip-level action recognition data: MMAction2-style list files, clip sampling, multi-view test samples.

List files (one video a line, ``#`` comments and blank lines skipped; paths relative to the split's
``root_path``)::

    videos:  <video_path> <label> [<label> ...]              e.g.  walk/clip_0001.mp4 3
    frames:  <frame_dir> <total_frames> <label> [<label> ...]  e.g.  walk/clip_0001 30 3

With several label groups (MA-52's ``body`` + ``action``) a line carries one label per group, in the
config's ``recognition.label_groups`` order; with ``multi_label`` (one group) any number of labels.
Every line is used: a line that cannot be parsed is an error naming ``file:line`` (`ListFileError`),
never skipped. Missing or empty videos are the preflight's business (`stad.data.validate`), and a video
that fails to decode while training raises with its ``file:line`` too.

Sampling (``recognition.sampling``, 1-based frame numbers ``start_index ..``):

* ``dense`` (SlowFast-style): ``clip_len`` frames ``frame_interval`` apart; training starts the clip at a
  random frame, test clip ``i`` of ``N`` starts at ``free * (i + 1/2) / N`` (``free`` = frames left after
  the span); a span longer than the video is clamped to its last frame.
* ``uniform`` (TSN-style): the video in ``clip_len`` equal segments, one frame per segment: a random one
  when training, at ``(i + 1/2) / N`` of the segment for test clip ``i`` of ``N``.

Parsing and sampling live in `stad.data.recognition_lists` (no torch: the preflight reads them).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from stad.data.recognition_lists import (ListFileError, VideoEntry, frame_indices, parse_line, read_list_file,
                                         video_id)
from stad.data.transforms import Compose
from stad.data.video import FrameFolderSource, FrameReadError, VideoFileSource

__all__ = ["ListFileError", "VideoEntry", "parse_line", "read_list_file", "video_id", "frame_indices",
           "RecognitionSample", "RecognitionBatch", "RecognitionDataset", "collate_recognition", "encode_targets"]


@dataclass
class RecognitionSample:
    """One video's clip(s).

    Attributes:
        index: dataset index. clips: float ``[V, 3, T, H, W]`` (V = 1 when training; test: clips x crops,
        clip-major). targets: per label group int64 ``[1]`` (single-label) or float ``[K]`` multi-hot.
    """

    index: int
    clips: torch.Tensor
    targets: tuple[torch.Tensor, ...]


@dataclass
class RecognitionBatch:
    """A batch: indices int64 ``[B]``, clips float ``[B, V, 3, T, H, W]``, targets per group ``[B]`` (class
    index) or ``[B, K]`` (multi-hot)."""

    indices: torch.Tensor
    clips: torch.Tensor
    targets: tuple[torch.Tensor, ...]

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "RecognitionBatch":
        return RecognitionBatch(self.indices, self.clips.to(device, non_blocking=non_blocking),
                                tuple(t.to(device, non_blocking=non_blocking) for t in self.targets))

    def pin_memory(self) -> "RecognitionBatch":
        return RecognitionBatch(self.indices, self.clips.pin_memory(), tuple(t.pin_memory() for t in self.targets))


def collate_recognition(samples: Sequence[RecognitionSample]) -> RecognitionBatch:
    """Stack samples (all of one split have the same clip shape: fixed crops)."""
    targets = tuple(torch.cat([s.targets[g] for s in samples]) if samples[0].targets[g].ndim == 1 and
                    samples[0].targets[g].dtype == torch.int64 else torch.stack([s.targets[g] for s in samples])
                    for g in range(len(samples[0].targets)))
    return RecognitionBatch(torch.tensor([s.index for s in samples], dtype=torch.int64),
                            torch.stack([s.clips for s in samples]), targets)


def encode_targets(entry: VideoEntry, groups: Mapping[str, int], multi_label: bool) -> tuple[torch.Tensor, ...]:
    """Per group: int64 ``[1]`` class index, or (multi-label) float32 ``[K]`` multi-hot."""
    if multi_label:
        (name,) = groups
        hot = torch.zeros(groups[name], dtype=torch.float32)
        hot[list(entry.labels[0])] = 1.0
        return (hot,)
    return tuple(torch.tensor([labels[0]], dtype=torch.int64) for labels in entry.labels)


class RecognitionDataset(Dataset):
    """Videos of a list file as clips: one random clip (``train``) or every test view.

    Args:
        list_path: the list file; root: folder its paths are relative to.
        recognition: `stad.config.RecognitionConfig` (format, label groups, sampling, frame template).
        views: the spatial pipelines; training uses ``views[0]`` with random draws, testing every view
            (M crops) on each of ``num_clips`` clips. num_clips: N test clips (1 when training).
    """

    def __init__(self, list_path: str | Path, root: str | Path, recognition: Any, views: Sequence[Compose],
                 train: bool, num_clips: int = 1, decode_threads: int | None = 1) -> None:
        self.list_path, self.root, self.cfg = str(list_path), Path(root), recognition
        self.groups = dict(recognition.label_groups)
        self.entries = read_list_file(list_path, recognition.list_format, self.groups, recognition.multi_label)
        self.views, self.train, self.num_clips = list(views), train, 1 if train else int(num_clips)
        self.frames = recognition.list_format == "frames"
        self.source = (FrameFolderSource(root, decode_threads=decode_threads) if self.frames
                       else VideoFileSource(root, decode_threads=decode_threads))
        self.ids = [e.path if self.frames else video_id(e) for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def num_views(self) -> int:
        return 1 if self.train else self.num_clips * len(self.views)

    def num_frames(self, index: int) -> int:
        entry = self.entries[index]
        return entry.total_frames if entry.total_frames is not None else self.source.num_frames(self.ids[index])

    def _read(self, index: int, offsets: np.ndarray) -> list[np.ndarray]:
        numbers = offsets + (self.cfg.start_index if self.frames else 1)
        try:
            return self.source.read_frames(self.ids[index], self.cfg.filename_tmpl, numbers.tolist())
        except (FrameReadError, OSError, ValueError) as err:
            raise FrameReadError(f"{self.entries[index].where}: {err}") from None

    def __getitem__(self, index: int) -> RecognitionSample:
        entry = self.entries[index]
        try:
            n = self.num_frames(index)
        except FrameReadError as err:
            raise FrameReadError(f"{entry.where}: {err}") from None
        targets = encode_targets(entry, self.groups, self.cfg.multi_label)
        if self.train:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
            frames = self._read(index, frame_indices(n, self.cfg.sampling, rng=rng))
            height, width = frames[0].shape[:2]
            clip = self.views[0].sample(height, width, rng).render(np.stack(frames))
            return RecognitionSample(index, clip[None], targets)
        clips = []
        for c in range(self.num_clips):  # clip-major: view v = clip (v // M), crop (v % M)
            frames = np.stack(self._read(index, frame_indices(n, self.cfg.sampling, c, self.num_clips)))
            height, width = frames.shape[1:3]
            clips += [view.sample(height, width, np.random.default_rng(0)).render(frames) for view in self.views]
        return RecognitionSample(index, torch.stack(clips), targets)
