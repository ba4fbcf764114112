"""Helpers for the end-to-end tests: a tiny model config + checkpoint, a small test video, CLI runner."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "configs" / "toy" / "demo_acar.yaml"

# --set overrides shrinking the demo model and clips to a CPU smoke-test size (64 px, 4 frames 4 apart)
TINY_SETS = (
    "train.n_epochs=1",
    "train.val_freq=1",
    "train.batch_size=2",
    "val.batch_size=2",
    "train.augmentation.temporal.kwargs.size=16",
    "val.augmentation.temporal.kwargs.size=16",
    "model.backbone.sub_kwargs.num_frames=4",
    "model.backbone.sub_kwargs.img_size=64",
    "train.augmentation.spatial=[{type: Scale, kwargs: {resize: [64, 64]}}, {type: ToTensor, kwargs: {norm_value: 255.}}]",
    "val.augmentation.spatial=[{type: Scale, kwargs: {resize: [64, 64]}}, {type: ToTensor, kwargs: {norm_value: 255.}}]",
)


def run_cli(args: list[str], cwd: Path | None = None, timeout: float = 600,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python <args>`` with the repo importable from any working directory, single-threaded."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1", "MPLBACKEND": "Agg",
           **(extra_env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd or ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def tiny_model(tmp: Path, labelmap: bool = True) -> tuple[Path, Path]:
    """A tiny demo-architecture config (64 px, 4 frames) and a checkpoint of its freshly built model."""
    import torch

    from stad.config import config_to_dict, load_config
    from stad.engine import builders

    config = load_config(DEMO_CONFIG, list(TINY_SETS))
    data = config_to_dict(config)
    if labelmap:
        from stad.data.formats.labelmap import write_labelmap
        from stad.data.toy.actions import toy_labelmap

        write_labelmap(toy_labelmap(), tmp / "labelmap.pbtxt")
        data["val"]["eval_mAP"]["labelmap"] = str(tmp / "labelmap.pbtxt")
    else:
        data["val"]["eval_mAP"]["labelmap"] = str(tmp / "missing.pbtxt")
    data["val"]["annotation_path"] = data["train"]["annotation_path"] = str(tmp / "missing.pkl")
    config_path = tmp / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    torch.manual_seed(0)
    model = builders.build_model(load_config(config_path))
    checkpoint = tmp / "tiny.pth"
    torch.save({"state_dict": model.state_dict(), "epoch": 1}, checkpoint)
    return config_path, checkpoint


def write_test_video(path: Path, width: int = 161, height: int = 121, fps: int = 25, seconds: float = 2.0) -> Path:
    """An H.264 video with two moving rectangles ("persons") on a textured background."""
    from stad.apps.visualize import Mp4Writer

    rng = np.random.default_rng(0)
    background = rng.integers(60, 120, (height, width, 3), dtype=np.uint8)
    with Mp4Writer(path, width, height, fps) as writer:
        for i in range(int(round(seconds * fps))):
            frame = background.copy()
            x = 10 + i % 40
            frame[30:110, x:x + 25] = (40, 200, 240)
            frame[20:100, 110:135] = (220, 60, 60)
            writer.write(frame)
    return path


def probe(path: Path) -> tuple[int, int, int, float]:
    """(decoded frame count, width, height, fps) of a video file."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, stream.codec_context.width, stream.codec_context.height, float(stream.average_rate)
