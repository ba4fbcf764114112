"""Tiny recognition data sets for tests: frame folders and mp4 videos with list files."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def clip_frames(label: int, n_frames: int, size: int = 32, seed: int = 0) -> list[np.ndarray]:
    """BGR frames of a clip whose bright half (left: class 0, right: class 1, ...) says its class."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(n_frames):
        img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        x0 = (label % 2) * size // 2
        img[:, x0:x0 + size // 2] += np.uint8(150 + 5 * t % 40)
        frames.append(img)
    return frames


def write_frames_set(root: Path, labels: list[int], n_frames: int = 6, size: int = 32) -> Path:
    """``root/frames/v<i>/img_%05d.jpg`` and ``root/list_frames.txt`` (``v<i> n label``); returns the list."""
    lines = []
    for i, label in enumerate(labels):
        folder = root / "frames" / f"v{i}"
        folder.mkdir(parents=True, exist_ok=True)
        for n, img in enumerate(clip_frames(label, n_frames, size, seed=i), 1):
            cv2.imwrite(str(folder / f"img_{n:05d}.jpg"), img)
        lines.append(f"v{i} {n_frames} {label}\n")
    path = root / "list_frames.txt"
    path.write_text("".join(lines))
    return path


def write_video_set(root: Path, labels: list[int], n_frames: int = 6, size: int = 32) -> Path:
    """``root/videos/v<i>.mp4`` and ``root/list_videos.txt`` (``v<i>.mp4 label``); returns the list."""
    from stad.data.toy.generate import _write_video

    (root / "videos").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, label in enumerate(labels):
        _write_video(root / "videos" / f"v{i}.mp4", clip_frames(label, n_frames, size, seed=i), 30)
        lines.append(f"v{i}.mp4 {label}\n")
    path = root / "list_videos.txt"
    path.write_text("".join(lines))
    return path
