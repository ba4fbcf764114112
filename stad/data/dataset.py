"""Training / inference dataset: one sample per keyframe of an ACAR annotation pickle.

``ClipDataset(annotation_path, frames_root=... | video_root=..., clip_len, frame_stride, transform,
num_classes)[i]`` -> `ClipSample`: a clip of ``clip_len`` frames, ``frame_stride`` apart, centred on
the keyframe's ``mid_frame`` (``mid + stride * (i - T // 2)``, clamped to the video's frames), the
keyframe's boxes mapped through the same geometric transform as the pixels, multi-hot targets and
the boxes' detector scores. The pickle may hold ground truth or detector proposals.

With several test-time ``views`` (ACAR-Net's multi-view evaluation, `stad.data.transforms.acar_views`)
each index gives one `MultiViewSample`: the keyframe's clip through every view, decoded once.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from stad.data.formats.acar_pkl import read_acar_pkl
from stad.data.transforms import Compose, Normalization, Recipe, ToTensor
from stad.data.video import clip_indices, make_source
from stad.structures import Boxes, Keyframe, LabelMap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipSample:
    """One keyframe's clip and boxes.

    Attributes:
        pixels: the clip as stored: RGB ``uint8 [3, T, H, W]`` awaiting ``norm`` (or float, norm None).
        boxes: float ``[N, 4]`` normalised xyxy in the transformed clip.
        targets: float ``[N, K]`` multi-hot.
        box_scores: float ``[N]`` detector scores (1 for ground truth).
        key: ``(video, timestamp)``.
        person_ids: int64 ``[N]`` (-1 unknown).
        orig_size: ``(height, width)`` of the source frames.
        orig_boxes: float ``[N, 4]`` normalised xyxy in the source frame (for writing predictions).
        norm: normalisation still to apply to ``pixels`` (None: ``pixels`` is final).
        clip (property): float ``[3, T, H, W]`` normalised RGB.
    """

    pixels: torch.Tensor
    boxes: torch.Tensor
    targets: torch.Tensor
    box_scores: torch.Tensor
    key: tuple[str, int]
    person_ids: torch.Tensor
    orig_size: tuple[int, int]
    orig_boxes: torch.Tensor
    norm: Normalization | None = None

    @property
    def clip(self) -> torch.Tensor:
        """Float ``[3, T, H, W]`` (normalised on first access, then cached)."""
        if self.norm is None:
            return self.pixels
        cached = self.__dict__.get("_clip")
        if cached is None:
            cached = self.norm.apply(self.pixels)
            object.__setattr__(self, "_clip", cached)
        return cached

    def boxes_pixels(self) -> torch.Tensor:
        """``[N, 4]`` boxes in pixels of ``clip``."""
        h, w = self.pixels.shape[-2:]
        return self.boxes * self.boxes.new_tensor([w, h, w, h])


@dataclass(frozen=True)
class MultiViewSample:
    """One keyframe through several deterministic test-time views (one dataset index, so a sampler
    neither loses nor duplicates views).

    Attributes:
        views: one `ClipSample` per view, each with ALL the keyframe's ``N`` boxes (mapped into the
            view, clipped to it), in the keyframe's order.
        keep: per view bool ``[N]``: the box is scored in that view - ACAR-Net's neck rule, its area
            inside the view's crop is above ``threshold`` x its area.
    """

    views: tuple[ClipSample, ...]
    keep: tuple[np.ndarray, ...]

    @property
    def key(self) -> tuple[str, int]:
        return self.views[0].key


def kept_in_view(boxes: np.ndarray, geometry: object, threshold: float = 0.0) -> np.ndarray:
    """ACAR-Net's ``get_bbox_after_aug`` test: normalised source boxes ``[N, 4]`` -> bool ``[N]``, True
    where the area inside the view's crop (in the source frame) exceeds ``threshold`` x the area."""
    g = geometry
    rw, rh = g.resize  # type: ignore[attr-defined]
    crop = np.array([g.x0 / rw, g.y0 / rh, (g.x0 + g.out[0]) / rw, (g.y0 + g.out[1]) / rh])  # type: ignore
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    left, right = (np.clip(b[:, i], crop[0], crop[2]) for i in (0, 2))
    top, bottom = (np.clip(b[:, i], crop[1], crop[3]) for i in (1, 3))
    area = (b[:, 3] - b[:, 1]) * (b[:, 2] - b[:, 0])
    return (bottom - top) * (right - left) > area * threshold


def clip_sample(frames_bgr: Sequence[np.ndarray], recipe: Recipe, key: tuple[str, int], boxes: Boxes,
                targets: np.ndarray, orig_size: tuple[int, int]) -> ClipSample:
    """One keyframe's `ClipSample` from its decoded frames: the one place pixels and boxes meet a recipe.

    Args:
        frames_bgr: T BGR ``uint8 [h, w, 3]`` frames (source size, or already ``recipe.geometry.resize``).
        recipe: the drawn transform (`Compose.sample`); boxes: the keyframe's N normalised source boxes.
        targets: float ``[N, K]`` multi-hot (zeros at inference); orig_size: source ``(height, width)``.
    """
    return ClipSample(pixels=recipe.render_uint8(frames_bgr), norm=recipe.normalization,
                      boxes=torch.from_numpy(recipe.map_boxes(boxes.xyxy)), targets=torch.from_numpy(targets),
                      box_scores=torch.from_numpy(boxes.scores.copy()), key=key,
                      person_ids=torch.from_numpy(boxes.ids.copy()), orig_size=(int(orig_size[0]), int(orig_size[1])),
                      orig_boxes=torch.from_numpy(boxes.xyxy.copy()))


def multiview_sample(frames_bgr: Sequence[np.ndarray], recipes: Sequence[Recipe], key: tuple[str, int], boxes: Boxes,
                     targets: np.ndarray, orig_size: tuple[int, int], threshold: float = 0.0) -> MultiViewSample:
    """Every view (one recipe each) of one keyframe from the same decoded frames; per view the boxes it keeps
    (`kept_in_view`, ACAR-Net's ``aug_threshold`` = ``threshold``)."""
    views = tuple(clip_sample(frames_bgr, r, key, boxes, targets, orig_size) for r in recipes)
    return MultiViewSample(views, tuple(kept_in_view(boxes.xyxy, r.geometry, threshold) for r in recipes))


def sample_from_frames(frames_bgr: Sequence[np.ndarray], key: tuple[str, int], boxes: Boxes, num_classes: int,
                       views: Sequence[Compose], view_threshold: float = 0.0) -> ClipSample | MultiViewSample:
    """An inference sample (zero targets) from decoded source frames: a `ClipSample` through the one
    test-time transform of ``views``, or a `MultiViewSample` through each of several (deterministic) views."""
    height, width = frames_bgr[0].shape[:2]
    recipes = [view.sample(height, width, np.random.default_rng(0)) for view in views]
    targets = np.zeros((len(boxes), num_classes), np.float32)
    if len(recipes) == 1:
        return clip_sample(frames_bgr, recipes[0], key, boxes, targets, (height, width))
    return multiview_sample(frames_bgr, recipes, key, boxes, targets, (height, width), view_threshold)


_WORKER_SETUP_DONE = False


def _limit_threads_in_workers(source: object) -> None:
    """One OpenCV thread, single-threaded video decoding and (unless set explicitly) inline frame
    decoding inside DataLoader workers (the worker processes already share the cores; extra threads
    only add switching)."""
    global _WORKER_SETUP_DONE
    if torch.utils.data.get_worker_info() is None:
        return
    if not _WORKER_SETUP_DONE:
        import cv2

        cv2.setNumThreads(1)
        _WORKER_SETUP_DONE = True
    if getattr(source, "codec_threads", 1) != 1:
        source.codec_threads = 1  # type: ignore[attr-defined]
    if getattr(source, "decode_threads", 1) is None:  # auto
        source.decode_threads = 1  # type: ignore[attr-defined]


def _draw_seed() -> int:
    """A per-clip seed from torch's generator (seeded per DataLoader worker, as torch intends)."""
    return int(torch.randint(0, 2**62, (1,)).item())


def _filter_scores(kf: Keyframe, min_score: float) -> Keyframe:
    """Keep boxes with score >= min(min_score, best score) (at least one box survives, as mmaction2)."""
    if not len(kf.boxes) or min_score <= 0:
        return kf
    keep = np.flatnonzero(kf.boxes.scores >= min(min_score, float(kf.boxes.scores.max())))
    return Keyframe(kf.video, kf.timestamp, kf.boxes[keep], tuple(kf.labels[i] for i in keep), kf.mid_frame,
                    kf.start_frame, kf.n_frames, kf.format_str, kf.frame_rate)


class ClipDataset(Dataset):
    """Clips around the keyframes of an ACAR pickle, read from frame folders or video files.

    Args:
        annotation_path: ACAR pickle ``[elements, idx_to_class]`` (GT or proposals).
        frames_root: folder of ``<video>/<format_str % n>`` frames; or
        video_root: folder of ``<video>.mp4`` (or .mkv/.avi/...) files, decoded with PyAV.
        clip_len: frames per clip ``T``.
        frame_stride: frame-number step between clip frames.
        transform: a `stad.data.transforms.Compose` (default: only ``/255``).
        num_classes: ``K``; defaults to ``len(idx_to_class)``; label indices must be below it.
        min_score: drop proposal boxes scoring below it (the best box of a keyframe always stays).
        min_visible: after a crop, drop boxes keeping less than this fraction of their area (0: keep all).
        video_frame_offset: added to frame numbers when reading videos whose first frame is not
            frame 1 of the annotation's numbering (AVA frames cut at 900 s from full videos: 27000).
        cache_videos: with ``video_root``, keep this many fully decoded videos in memory (tiny sets).
        cache_mb: with ``frames_root``, an LRU cache of decoded frames of about this size per worker
            (0: off); multi-epoch training on small sets then decodes each frame once.
        fast_decode: decode JPEGs at 1/2, 1/4, 1/8 size when the transform downscales that much.
        decode_threads: threads of the reading process that decode (and resize) a clip's frames in
            parallel (the decoders release the GIL): None = auto = min(4, cpu count), inline inside
            DataLoader workers; 0 or 1 = inline. Same pixels either way. Call `close` to stop them.
        views: test-time views (`stad.data.transforms.acar_views`); with two or more, each index is a
            `MultiViewSample` (``transform`` is then ignored); one view is the same as ``transform``.
        view_threshold: ACAR-Net's ``aug_threshold`` for views (0: a box is scored in every view in
            which some of it is visible).
    """

    def __init__(self, annotation_path: str | Path, frames_root: str | Path | None = None,
                 video_root: str | Path | None = None, clip_len: int = 16, frame_stride: int = 2,
                 transform: Compose | None = None, num_classes: int | None = None, min_score: float = 0.0,
                 min_visible: float = 0.0, video_frame_offset: int = 0, cache_videos: int = 0,
                 cache_mb: float = 0.0, fast_decode: bool = True, decode_threads: int | None = None,
                 views: Sequence[Compose] | None = None, view_threshold: float = 0.0) -> None:
        keyframes, labelmap = read_acar_pkl(annotation_path, num_classes)
        self.annotation_path = Path(annotation_path)
        self.labelmap: LabelMap = labelmap
        self.num_classes = int(num_classes if num_classes is not None else len(labelmap))
        if len(labelmap) != self.num_classes:
            log.warning("%s: idx_to_class has %d classes but num_classes=%d", annotation_path, len(labelmap),
                        self.num_classes)
        self.keyframes = [_filter_scores(kf, min_score) for kf in keyframes]
        self.source = make_source(frames_root, video_root, cache_videos, cache_mb, decode_threads)
        self.from_video = frames_root is None
        self.clip_len, self.frame_stride = int(clip_len), int(frame_stride)
        self.transform = transform if transform is not None else Compose((ToTensor(255.0),))
        self.views = tuple(views) if views is not None and len(views) > 1 else None
        if views is not None and len(views) >= 1:
            self.transform = views[0]
        self.view_threshold = float(view_threshold)
        self.min_visible = float(min_visible)
        self.video_frame_offset = int(video_frame_offset)
        self.fast_decode = fast_decode

    def __len__(self) -> int:
        return len(self.keyframes)

    @property
    def keys(self) -> list[tuple[str, int]]:
        return [kf.key for kf in self.keyframes]

    def with_transform(self, transform: Compose) -> "ClipDataset":
        """A shallow copy reading the same keyframes through another transform (test-time views)."""
        other = copy.copy(self)
        other.transform, other.views = transform, None  # one view: plain ClipSamples
        return other

    def close(self) -> None:
        """Stop this process's decode threads and close open video decoders (both restart on the next
        read); copies made by `with_transform` share them."""
        self.source.close()

    def frame_numbers(self, index: int) -> np.ndarray:
        """Frame numbers ``[T]`` of sample ``index`` in the source's numbering."""
        kf = self.keyframes[index]
        offset = self.video_frame_offset if self.from_video else 0
        last = self.source.num_frames(kf.video, kf.format_str)
        return clip_indices(kf.mid_frame + offset, self.clip_len, self.frame_stride, last)

    def __getitem__(self, index: int) -> ClipSample:
        _limit_threads_in_workers(self.source)
        return self._sample(index, _draw_seed())

    def __getitems__(self, indices: Sequence[int]) -> list[ClipSample]:
        """The samples of a batch (DataLoader's fetcher calls this): with decode threads, each
        thread builds a run of consecutive clips (decode, resize, crop, planes) - one hand-off per
        batch. A single clip, clips that share frames with the one before (a sequential pass:
        the source reuses those frames) and clips from video files (one decoder per video: clips
        read in parallel would make it seek back and forth) are built one after the other with
        each clip's frames spread over the threads instead. The random draws are made first, in order, so the samples
        equal ``[self[i] for i in indices]``."""
        _limit_threads_in_workers(self.source)
        jobs = [(int(i), _draw_seed()) for i in indices]
        in_order = getattr(self.source, "reads_in_order", False) or (
            getattr(self.source, "reuses_previous_clip", False) and self._overlapping([i for i, _ in jobs]))
        if in_order:
            return [self._sample(*job) for job in jobs]
        return self.source.pool.map(self._sample_job, jobs, contiguous=True)

    def _overlapping(self, indices: list[int]) -> bool:
        """Whether some clip of the batch shares at least a quarter of its frames with the previous
        clip of the batch (same video): then building them in order lets the source reuse those."""
        for a, b in zip(indices, indices[1:]):
            if a != b and self.keyframes[a].video == self.keyframes[b].video:
                shared = np.intersect1d(self.frame_numbers(a), self.frame_numbers(b)).size
                if shared and shared >= self.clip_len / 4:
                    return True
        return False

    def _sample_job(self, job: tuple[int, int]) -> ClipSample:
        return self._sample(*job)

    def _sample(self, index: int, seed: int) -> ClipSample | MultiViewSample:
        if self.views is not None:
            return self._sample_views(index)
        kf = self.keyframes[index]
        frames = self.frame_numbers(index)
        height, width = self.source.frame_size(kf.video, kf.format_str, int(frames[len(frames) // 2]))
        rng = np.random.default_rng(seed)
        recipe = self.transform.sample(height, width, rng)
        reduction = recipe.geometry.decode_reduction() if self.fast_decode and not self.from_video else 1
        pixels = self.source.read_frames(kf.video, kf.format_str, frames, reduction, recipe.geometry.resize)
        keep = self._visible(kf, recipe)
        return clip_sample(pixels, recipe, kf.key, kf.boxes[keep], kf.multi_hot(self.num_classes)[keep],
                           (height, width))

    def _sample_views(self, index: int) -> MultiViewSample:
        """Every view of keyframe ``index`` from one decode of its frames (at the finest DCT reduction
        any view allows), each view resizing and cutting its own copy."""
        kf = self.keyframes[index]
        frames = self.frame_numbers(index)
        height, width = self.source.frame_size(kf.video, kf.format_str, int(frames[len(frames) // 2]))
        recipes = [view.sample(height, width, np.random.default_rng(0)) for view in self.views]  # deterministic
        reduction = (min(r.geometry.decode_reduction() for r in recipes)
                     if self.fast_decode and not self.from_video else 1)
        pixels = self.source.read_frames(kf.video, kf.format_str, frames, reduction)
        return multiview_sample(pixels, recipes, kf.key, kf.boxes, kf.multi_hot(self.num_classes), (height, width),
                                self.view_threshold)

    def _visible(self, kf: Keyframe, recipe: object) -> np.ndarray:
        if self.min_visible <= 0 or not len(kf.boxes):
            return np.arange(len(kf.boxes))
        g = recipe.geometry  # type: ignore[attr-defined]
        full = kf.boxes.xyxy * np.array([g.resize[0], g.resize[1]] * 2, np.float32)
        full_area = (full[:, 2] - full[:, 0]) * (full[:, 3] - full[:, 1])
        mapped = recipe.map_boxes(kf.boxes.xyxy) * np.array([g.out[0], g.out[1]] * 2, np.float32)  # type: ignore
        area = (mapped[:, 2] - mapped[:, 0]) * (mapped[:, 3] - mapped[:, 1])
        return np.flatnonzero(area >= self.min_visible * np.maximum(full_area, 1e-9))
