"""Shared fixtures for detect/ tests: ultralytics checkpoints built offline, a tiny video and frames."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")

COCO_NAMES = {i: f"class{i}" for i in range(80)} | {0: "person", 1: "bicycle", 2: "car"}
FPS = 30
WIDTH, HEIGHT = 160, 120


@pytest.fixture(scope="session")
def coco_weights(tmp_path_factory) -> Path:
    """An 80-class yolov8n checkpoint (random, score-varied) with COCO-like names, saved by ultralytics."""
    import torch

    torch.set_num_threads(1)
    from detect.detector import build_untrained_detector

    return build_untrained_detector(tmp_path_factory.mktemp("weights") / "coco_random.pt", COCO_NAMES)


@pytest.fixture(scope="session")
def single_class_weights(tmp_path_factory) -> Path:
    from detect.detector import build_untrained_detector

    return build_untrained_detector(tmp_path_factory.mktemp("weights1") / "pedestrian.pt", {0: "pedestrian"})


def draw_frame(index: int, with_people: bool = True) -> np.ndarray:
    """A textured frame; with_people adds two bright figure-like blobs that move with ``index``."""
    rng = np.random.default_rng(index)
    frame = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    frame += rng.integers(0, 30, frame.shape, dtype=np.uint8)
    if with_people:
        x = 20 + index % 40
        cv2.rectangle(frame, (x, 30), (x + 18, 100), (30, 200, 240), -1)
        cv2.circle(frame, (x + 9, 22), 8, (200, 180, 160), -1)
        cv2.rectangle(frame, (100, 40), (120, 110), (220, 40, 40), -1)
    return frame


def write_video(path: Path, seconds: int = 4, empty_after: float | None = None) -> Path:
    """mp4 at 30 fps; frames at or after ``empty_after`` seconds show no people."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(seconds * FPS):
        writer.write(draw_frame(i, empty_after is None or i / FPS < empty_after))
    writer.release()
    return path


def write_frames(root: Path, video: str, frames: list[int], fmt: str = "{video}_%06d.jpg") -> Path:
    folder = root / video
    folder.mkdir(parents=True, exist_ok=True)
    for n in frames:
        cv2.imwrite(str(folder / (fmt.replace("{video}", video) % n)), draw_frame(n - 1))
    return root


@pytest.fixture
def make_video():
    return write_video


@pytest.fixture
def make_frames():
    return write_frames


@pytest.fixture
def frame_image():
    return draw_frame
