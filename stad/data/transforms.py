"""Clip transforms that move boxes with the pixels.

A transform pipeline does not touch pixels step by step. Each geometric step (scale, crop, flip)
edits a small `Geometry` plan - "resize the whole frame to (rw, rh), cut the integer window
(x0, y0, w, h), mirror or not" - drawn once per clip, so every frame of the clip gets the same
random parameters and the boxes get exactly the mapping the pixels get. `Recipe.render_uint8` then
takes each distinct frame once through one ``cv2.resize`` (skipped when the source already
resized it, after a reduced-size JPEG decode when the plan downscales by >= 2), a crop view, an
optional mirror and one ``cv2.split`` that writes the BGR pixels as RGB planes straight into the
``uint8 [3, T, H, W]`` clip; colour jitter (when drawn) runs in torch and normalisation is left for
the batch (`Normalization.apply`, on the device the batch goes to).

Names accepted in configs (`from_acar_spec`) follow ACAR-Net's ``spatial_transforms``: ``Scale``,
``CenterCrop``, ``CornerCrop``, ``RandomHorizontalFlip``, ``ScaleJitteringRandomCrop``, ``ToTensor``,
``Normalize``; plus ``ShortSideScale``, ``RandomShortSideScale``, ``RandomCrop``, ``ColorJitter``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from stad.data.video import resize_frame


@dataclass(frozen=True)
class Geometry:
    """Resize the ``src`` frame to ``resize``, cut the window at ``(x0, y0)`` of size ``out``, mirror.

    Sizes are ``(width, height)``; the window may reach outside the resized frame (zero padding).
    """

    src: tuple[int, int]
    resize: tuple[int, int]
    x0: int = 0
    y0: int = 0
    out: tuple[int, int] = (0, 0)
    flip: bool = False

    @classmethod
    def identity(cls, height: int, width: int) -> "Geometry":
        return cls((width, height), (width, height), 0, 0, (width, height), False)

    def scaled(self, width: int, height: int) -> "Geometry":
        """The output rescaled to ``width x height`` (the window scales with it)."""
        fx, fy = width / self.out[0], height / self.out[1]
        return replace(self, resize=(max(1, round(self.resize[0] * fx)), max(1, round(self.resize[1] * fy))),
                       x0=round(self.x0 * fx), y0=round(self.y0 * fy), out=(width, height))

    def cropped(self, x: int, y: int, width: int, height: int) -> "Geometry":
        """Keep the window ``(x, y, width, height)`` of the current output (in output pixels)."""
        if self.flip:  # the current output is mirrored: measure x from the other side
            x = self.out[0] - x - width
        return replace(self, x0=self.x0 + int(x), y0=self.y0 + int(y), out=(int(width), int(height)))

    def flipped(self) -> "Geometry":
        return replace(self, flip=not self.flip)

    def map_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """Normalised source boxes ``[N, 4]`` -> normalised output boxes, clipped to [0, 1]."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        sx, sy = self.resize
        x = (b[:, [0, 2]] * sx - self.x0) / self.out[0]
        y = (b[:, [1, 3]] * sy - self.y0) / self.out[1]
        if self.flip:
            x = 1.0 - x[:, ::-1]
        out = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def decode_reduction(self) -> int:
        """Largest JPEG DCT reduction (1, 2, 4, 8) that still decodes at least the resize target."""
        for r in (8, 4, 2):
            if self.src[0] / r >= self.resize[0] and self.src[1] / r >= self.resize[1]:
                return r
        return 1


@dataclass(frozen=True)
class ColorParams:
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0

    @property
    def is_identity(self) -> bool:
        return self.brightness == 1.0 and self.contrast == 1.0 and self.saturation == 1.0


@dataclass(frozen=True)
class Normalization:
    """``(x / norm_value - mean) / std`` per RGB channel, for uint8 or float pixels ``[..., 3, T, H, W]``."""

    norm_value: float = 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        """Float32 normalised copy on ``pixels``' device: ``x * scale_c - shift_c`` per channel.

        Contiguous uint8 CPU pixels go through one fused numba pass (read 1 byte, write 4) instead of
        torch's separate convert / multiply / subtract passes over a batch too big for the caches;
        anything else (CUDA, float, strided) through torch.
        """
        scale = [1.0 / (self.norm_value * s) for s in self.std]
        shift = [m / s for m, s in zip(self.mean, self.std)]
        if pixels.device.type == "cpu" and pixels.dtype == torch.uint8 and pixels.is_contiguous() \
                and pixels.dim() >= 4 and pixels.shape[-4] == 3:
            kernel = _fused_normalize_kernel()
            if kernel is not None:
                out = torch.empty(pixels.shape, dtype=torch.float32)
                per_channel = pixels.shape[-3] * pixels.shape[-2] * pixels.shape[-1]  # T * H * W
                kernel(pixels.numpy().reshape(-1, 3, per_channel), np.asarray(scale, np.float32),
                       np.asarray(shift, np.float32), out.numpy().reshape(-1, 3, per_channel))
                return out
        scale_t = torch.tensor(scale, device=pixels.device).view(3, 1, 1, 1)
        shift_t = torch.tensor(shift, device=pixels.device).view(3, 1, 1, 1)
        return pixels.float().mul_(scale_t).sub_(shift_t)


_KERNEL: list = []


def _fused_normalize_kernel():
    """numba-compiled ``out[b, c, i] = src[b, c, i] * scale[c] - shift[c]`` (uint8 -> float32), or None
    without numba. Compiled once per machine (on-disk cache), on first use."""
    if not _KERNEL:
        try:
            import numba

            @numba.njit(cache=True, nogil=True)
            def normalize(src, scale, shift, out):  # pragma: no cover - compiled
                for b in range(src.shape[0]):
                    for c in range(src.shape[1]):
                        s, h = scale[c], shift[c]
                        for i in range(src.shape[2]):
                            out[b, c, i] = src[b, c, i] * s - h

            _KERNEL.append(normalize)
        except Exception:  # noqa: BLE001 - any numba problem: the torch path is correct too
            _KERNEL.append(None)
    return _KERNEL[0]


@dataclass(frozen=True)
class Recipe:
    """Everything drawn for one clip: geometry, colour and normalisation."""

    geometry: Geometry
    color: ColorParams = ColorParams()
    norm_value: float = 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def normalization(self) -> Normalization:
        return Normalization(self.norm_value, self.mean, self.std)

    def map_boxes(self, boxes: np.ndarray) -> np.ndarray:
        return self.geometry.map_boxes(boxes)

    def render_uint8(self, frames_bgr: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """BGR ``uint8 [T, h, w, 3]`` (source frames, maybe reduced or already resized to
        ``geometry.resize``; a stack or a list in which a repeated frame is the same array)
        -> RGB ``uint8 [3, T, H, W]``.

        Geometry and colour are applied; normalisation is left to `normalization` so batches can
        travel (from workers, to the GPU) as uint8, 4x smaller than float.
        """
        clip = torch.from_numpy(render_frames(frames_bgr, self.geometry))
        if not self.color.is_identity:
            clip = apply_color(clip.float(), self.color, 255.0).round_().to(torch.uint8)
        return clip

    def render(self, frames_bgr: np.ndarray) -> torch.Tensor:
        """Like `render_uint8`, then normalised: float ``[3, T, H, W]``."""
        return self.normalization.apply(self.render_uint8(frames_bgr))


def render_frames(frames_bgr: np.ndarray | Sequence[np.ndarray], geometry: Geometry) -> np.ndarray:
    """Apply the plan frame by frame: BGR ``[h, w, 3]`` frames -> RGB ``uint8 [3, T, out_h, out_w]``.

    Equal to `render_geometry` followed by BGR->RGB and a channels-first transpose (tested), without
    the intermediate stacks: each distinct frame is resized (if not already), cut and mirrored as a
    view, and split into the three output planes; a repeated frame object is copied plane-wise.
    """
    frames = list(frames_bgr)  # keeps every view alive, so equal ids mean the same frame
    rw, rh = geometry.resize
    (ow, oh), x0, y0 = geometry.out, geometry.x0, geometry.y0
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(rw, x0 + ow), min(rh, y0 + oh)  # window in the frame
    inside = sx1 > sx0 and sy1 > sy0
    padded = not inside or sx0 != x0 or sy0 != y0 or sx1 != x0 + ow or sy1 != y0 + oh
    out = (np.zeros if padded else np.empty)((3, len(frames), oh, ow), np.uint8)
    dy0, dy1 = sy0 - y0, sy1 - y0
    dx0, dx1 = sx0 - x0, sx1 - x0
    if geometry.flip:
        dx0, dx1 = ow - dx1, ow - dx0
    first_use: dict[int, int] = {}
    for t, img in enumerate(frames):
        seen = first_use.setdefault(id(img), t)
        if seen != t:
            out[:, t] = out[:, seen]
            continue
        if not inside:
            continue
        if img.shape[0] != rh or img.shape[1] != rw:
            img = resize_frame(img, (rw, rh))
        window = img[sy0:sy1, sx0:sx1]
        if geometry.flip:
            window = cv2.flip(window, 1)
        cv2.split(window, [out[2, t, dy0:dy1, dx0:dx1], out[1, t, dy0:dy1, dx0:dx1], out[0, t, dy0:dy1, dx0:dx1]])
    return out


def render_geometry(frames: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Apply the plan to a BGR stack ``[T, h, w, 3]`` -> ``[T, out_h, out_w, 3]`` uint8 (reference
    implementation of `render_frames`, kept for tests and callers that want channels-last)."""
    rw, rh = geometry.resize
    if frames.shape[2] != rw or frames.shape[1] != rh:
        frames = np.stack([resize_frame(f, (rw, rh)) for f in frames])
    (ow, oh), x0, y0 = geometry.out, geometry.x0, geometry.y0
    if x0 != 0 or y0 != 0 or ow != rw or oh != rh:
        pad = ((0, 0), (max(0, -y0), max(0, y0 + oh - rh)), (max(0, -x0), max(0, x0 + ow - rw)), (0, 0))
        if any(p != (0, 0) for p in pad):
            frames = np.pad(frames, pad)
            x0, y0 = x0 + pad[2][0], y0 + pad[1][0]
        frames = frames[:, y0:y0 + oh, x0:x0 + ow]
    if geometry.flip:
        frames = frames[:, :, ::-1]
    return frames


def apply_color(clip: torch.Tensor, color: ColorParams, norm_value: float) -> torch.Tensor:
    """Brightness, contrast (around the clip's mean grey) and saturation on RGB ``[3, T, H, W]``."""
    clip = clip * color.brightness
    grey = clip[0] * 0.299 + clip[1] * 0.587 + clip[2] * 0.114  # [T, H, W]
    if color.saturation != 1.0:
        clip = grey.unsqueeze(0) + (clip - grey.unsqueeze(0)) * color.saturation
    if color.contrast != 1.0:
        mean = grey.mean()
        clip = mean + (clip - mean) * color.contrast
    return clip.clamp_(0.0, norm_value)


# --------------------------------------------------------------------------- steps


class Step:
    """One pipeline step: edits the recipe (never pixels)."""

    def __call__(self, recipe: Recipe, rng: np.random.Generator) -> Recipe:
        raise NotImplementedError


def _short_side_size(width: int, height: int, size: int, max_ratio: float | None = None) -> tuple[int, int]:
    """(w, h) with the short side ``size`` (ACAR Scale: long side truncated with int())."""
    if max_ratio and max(width, height) / min(width, height) > max_ratio:
        long_side = int(size * max_ratio)
        return (long_side, size) if width > height else (size, long_side)
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


@dataclass(frozen=True)
class ShortSideScale(Step):
    """Rescale so the short side is ``size`` (``Scale(resize=int)`` in ACAR); ``(w, h)`` pair: exact size."""

    size: int | tuple[int, int]
    max_ratio: float | None = None

    def __call__(self, recipe: Recipe, rng: np.random.Generator) -> Recipe:
        w, h = recipe.geometry.out
        size = (self.size if not isinstance(self.size, (int, np.integer))
                else _short_side_size(w, h, int(self.size), self.max_ratio))
        return replace(recipe, geometry=recipe.geometry.scaled(int(size[0]), int(size[1])))


@dataclass(frozen=True)
class RandomShortSideScale(Step):
    """Short side drawn uniformly from ``[min_size, max_size]`` (multi-scale training)."""

    min_size: int
    max_size: int

    def __call__(self, recipe: Recipe, rng: np.random.Generator) -> Recipe:
        return ShortSideScale(int(rng.integers(self.min_size, self.max_size + 1)))(recipe, rng)


def _crop_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``size`` or ``(h, w)`` -> ``(w, h)``."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    return int(size[1]), int(size[0])


@dataclass(frozen=True)
class CenterCrop(Step):
    size: int | tuple[int, int]  # int or (h, w)

    def __call__(self, recipe: Recipe, rng: np.random.Generator) -> Recipe:
        cw, ch = _crop_size(self.size)
        w, h = recipe.geometry.out
        return replace(recipe, geometry=recipe.geometry.cropped(int(round((w - cw) / 2)), int(round((h - ch) / 2)), cw, ch))


@dataclass(frozen=True)
class RandomCrop(Step):
    size: int | tuple[int, int]  # int or (h, w)

    def __call__(self, recipe: Recipe, rng: np.random.Generator) -> Recipe:
        cw, ch = _crop_size(self.size)
        w, h = recipe.geometry.out
        x = int(rng.integers(0, max(0, w - cw) + 1))
        y = int(rng.integers(0, max(0, h - ch) + 1))
        return replace(recipe, geometry=recipe.geometry.cropped(x, y, cw, ch))


@dataclass(frozen=True)
class CornerCrop(Step):
    """Square crop at a corner or the centre (``c, tl, tr, bl, br``; None: random)."""

    size: int
    crop_position: str | None = None

    def __call__(self, recipe: Recipe, rng: np.random.Generator) -> Recipe:
        pos = self.crop_position or ("c", "tl", "tr", "bl", "br")[int(rng.integers(5))]
        w, h, s = *recipe.geometry.out, self.size
        x, y = {"c": (int(round((w - s) / 2)), int(round((h - s) / 2))), "tl": (0, 0), "tr": (w - s, 0),
                "bl": (0, h - s), "br": (w - s, h - s)}[pos]
        return replace(recipe, geometry=recipe.geometry.cropped(x, y, s, s))


@dataclass(frozen=True)
class RandomHorizontalFlip(Step):
    p: float = 0.5

    def __call__(self, recipe: Recipe, rng: np.random.Generator) -> Recipe:
        return replace(recipe, geometry=recipe.geometry.flipped()) if rng.random() < self.p else recipe


@dataclass(frozen=True)
class HorizontalFlip(Step):
    """Always mirror (test-time flip)."""

    def __call__(self, recipe: Recipe, rng: np.random.Generator) -> Recipe:
        return replace(recipe, geometry=recipe.geometry.flipped())


@dataclass(frozen=True)
class ScaleJitteringRandomCrop(Step):
    """Short side drawn from ``[min_scale, max_scale]``, then a random ``size`` square crop."""

    min_scale: int
    max_scale: int
    size: int

    def __call__(self, recipe: Recipe, rng: np.random.Generator) -> Recipe:
        w, h = recipe.geometry.out
        rate = int(rng.integers(self.min_scale, self.max_scale + 1)) / min(w, h)
        nw, nh = int(rate * w), int(rate * h)
        geometry = recipe.geometry.scaled(nw, nh)
        x, y = int(rng.random() * (nw - self.size)), int(rng.random() * (nh - self.size))
        return replace(recipe, geometry=geometry.cropped(x, y, self.size, self.size))


@dataclass(frozen=True)
class ColorJitter(Step):
    """Brightness / contrast / saturation factors drawn from ``[1 - v, 1 + v]`` once per clip."""

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    p: float = 1.0

    def __call__(self, recipe: Recipe, rng: np.random.Generator) -> Recipe:
        if rng.random() >= self.p:
            return recipe
        draw = lambda v: float(rng.uniform(1 - v, 1 + v)) if v else 1.0  # noqa: E731
        return replace(recipe, color=ColorParams(draw(self.brightness), draw(self.contrast), draw(self.saturation)))


@dataclass(frozen=True)
class ToTensor(Step):
    """Pixel values are divided by ``norm_value`` (ACAR ``ToTensor(norm_value=255.)``)."""

    norm_value: float = 255.0

    def __call__(self, recipe: Recipe, rng: np.random.Generator) -> Recipe:
        return replace(recipe, norm_value=float(self.norm_value))


@dataclass(frozen=True)
class Normalize(Step):
    """``(x / norm_value - mean) / std`` per RGB channel."""

    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)

    def __call__(self, recipe: Recipe, rng: np.random.Generator) -> Recipe:
        return replace(recipe, mean=tuple(float(m) for m in self.mean), std=tuple(float(s) for s in self.std))


@dataclass(frozen=True)
class Compose:
    """A pipeline of steps. ``sample`` draws one `Recipe` for a clip of ``height x width`` frames."""

    steps: tuple[Step, ...] = field(default_factory=tuple)

    def sample(self, height: int, width: int, rng: np.random.Generator | None = None) -> Recipe:
        rng = rng if rng is not None else np.random.default_rng()
        recipe = Recipe(Geometry.identity(height, width))
        for step in self.steps:
            recipe = step(recipe, rng)
        return recipe


STEPS: dict[str, Callable[..., Step]] = {
    "Scale": lambda resize, interpolation=None, max_ratio=None: ShortSideScale(
        resize if isinstance(resize, int) else tuple(resize), max_ratio),
    "ShortSideScale": ShortSideScale,
    "RandomShortSideScale": RandomShortSideScale,
    "CenterCrop": CenterCrop,
    "RandomCrop": RandomCrop,
    "CornerCrop": CornerCrop,
    "RandomHorizontalFlip": RandomHorizontalFlip,
    "HorizontalFlip": HorizontalFlip,
    "ScaleJitteringRandomCrop": lambda min_scale, max_scale, size, interpolation=None: ScaleJitteringRandomCrop(
        min_scale, max_scale, size),
    "ColorJitter": ColorJitter,
    "ToTensor": ToTensor,
    "Normalize": lambda mean, std: Normalize(tuple(mean), tuple(std)),
}
RANDOM_STEPS = (RandomShortSideScale, RandomCrop, RandomHorizontalFlip, ScaleJitteringRandomCrop, ColorJitter)


def from_acar_spec(spec: Sequence[tuple[str, dict]], train: bool = True) -> Compose:
    """Build a pipeline from ``[(type, kwargs), ...]`` as in ACAR configs (``augmentation.spatial``).

    With ``train=False`` random steps are dropped, except a ``CornerCrop``/``RandomCrop`` which
    becomes a centre crop and a ``RandomHorizontalFlip`` with ``p >= 1``, which always mirrors (as in
    ACAR-Net), so evaluation is deterministic. A list of kwargs (test-time views) is
    :func:`acar_views`' business.
    """
    steps: list[Step] = []
    for i, (name, kwargs) in enumerate(spec):
        if name not in STEPS:
            raise ValueError(f"augmentation.spatial[{i}]: unknown transform {name!r}; known: {', '.join(STEPS)}")
        try:
            step = STEPS[name](**(kwargs or {}))
        except TypeError as error:
            raise ValueError(f"augmentation.spatial[{i}] ({name}): bad arguments {kwargs!r}: {error}") from None
        if not train and isinstance(step, RandomCrop):
            step = CenterCrop(step.size)
        elif not train and isinstance(step, CornerCrop):
            step = CornerCrop(step.size, step.crop_position or "c")
        elif not train and isinstance(step, ScaleJitteringRandomCrop):
            step = Compose((ShortSideScale(step.min_scale), CenterCrop(step.size)))  # type: ignore[assignment]
        elif not train and isinstance(step, RandomHorizontalFlip) and step.p >= 1:
            step = HorizontalFlip()  # ACAR draws random() < p: p = 1 always mirrors (a test-time flip view)
        elif not train and isinstance(step, RANDOM_STEPS):
            continue
        steps.extend(step.steps if isinstance(step, Compose) else (step,))
    return Compose(tuple(steps))


def acar_views(spec: Sequence[tuple[str, dict | Sequence[dict]]], train: bool = False) -> list[Compose]:
    """ACAR-Net's multi-view evaluation: a step whose kwargs are a LIST gives one choice per entry and
    the views are every combination, in ACAR-Net's order (``main.py``: view ``v`` takes choice
    ``(v // prod(choices of earlier steps)) % choices`` of each step, the first step varying fastest).

    ``[("Scale", [{"resize": 224}, {"resize": 256}]), ("RandomHorizontalFlip", [{"p": 0}, {"p": 1}])]``
    -> 4 views: (224, -), (256, -), (224, flip), (256, flip). Each view is a deterministic
    :func:`from_acar_spec` pipeline (``train=False``). Lists are a test-time feature (ACAR-Net only
    reads them in ``val``): with ``train=True`` a list is a ValueError. No list: one view.
    """
    choices: list[list[dict]] = []
    for i, (name, kwargs) in enumerate(spec):
        if isinstance(kwargs, (list, tuple)):
            if train:
                raise ValueError(f"augmentation.spatial[{i}] ({name}): a list of kwargs makes test-time views, "
                                 "which ACAR-Net only supports in val; give one dict for training")
            if not kwargs:
                raise ValueError(f"augmentation.spatial[{i}] ({name}): empty list of kwargs")
            choices.append([dict(k or {}) for k in kwargs])
        else:
            choices.append([dict(kwargs or {})])
    total = int(np.prod([len(c) for c in choices])) if choices else 1
    views = []
    for view in range(total):
        picked, rest = [], view
        for (name, _), options in zip(spec, choices):
            picked.append((name, options[rest % len(options)]))
            rest //= len(options)
        views.append(from_acar_spec(picked, train=train))
    return views


def default_transform(short_side: int | None = None, train: bool = False, mean: Sequence[float] = (0.45, 0.45, 0.45),
                      std: Sequence[float] = (0.225, 0.225, 0.225), crop: int | None = None,
                      color_jitter: float = 0.0) -> Compose:
    """Short-side scale (+ random crop, flip, colour jitter when training), ToTensor, Normalize."""
    steps: list[Step] = []
    if short_side:
        steps.append(ShortSideScale(short_side))
    if crop:
        steps.append(RandomCrop(crop) if train else CenterCrop(crop))
    if train:
        steps.append(RandomHorizontalFlip())
        if color_jitter:
            steps.append(ColorJitter(color_jitter, color_jitter, color_jitter))
    steps += [ToTensor(255.0), Normalize(tuple(mean), tuple(std))]
    return Compose(tuple(steps))


def tta_transforms(short_sides: Sequence[int], flip: bool = True, mean: Sequence[float] = (0.45, 0.45, 0.45),
                         std: Sequence[float] = (0.225, 0.225, 0.225)) -> list[Compose]:
    """One deterministic pipeline per (scale, flip) view for test-time augmentation, scale-major
    (configs use ACAR-Net's order instead: `acar_views`).

    ``ClipDataset(..., views=tta_transforms(...))`` gives one `MultiViewSample` per keyframe and
    `stad.engine.predictor.multiview_logits` averages each box's logits over the views, as ACAR-Net.
    """
    views = []
    for size in short_sides:
        for mirrored in ((False, True) if flip else (False,)):
            steps: list[Step] = [ShortSideScale(int(size))] + ([HorizontalFlip()] if mirrored else [])
            views.append(Compose(tuple(steps + [ToTensor(255.0), Normalize(tuple(mean), tuple(std))])))
    return views
