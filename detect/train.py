"""Fine-tune / train a YOLO person detector (ultralytics), offline-safe, on CPU or GPU.

    python -m detect.train --data data/toy/yolo/dataset.yaml --model yolov8n.yaml --epochs 30 \\
        --imgsz 320 --device cpu --out checkpoints/toy_person_yolov8n.pt

``--model`` is a model yaml (random init, e.g. ``yolov8n.yaml``) or an ultralytics ``.pt`` to
fine-tune (e.g. the official COCO ``yolov8n.pt`` placed on disk). The dataset is a YOLO detection
set (FORMATS.md §5) such as the one written by ``python -m detect.yolo_dataset`` or the toy
generator. Extra ultralytics training arguments go through ``--set key=value``.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from stad.cli import run_cli
from stad.io_utils import atomic_write_text

LOGGER = logging.getLogger("detect.train")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def resolve_dataset_yaml(path: str | Path, out_dir: Path) -> Path:
    """Check a YOLO ``data.yaml`` and write a copy with absolute paths into ``out_dir``.

    A relative ``path:`` is resolved against the yaml's folder (ultralytics would try its global
    datasets dir, then download). Missing split folders raise naming the yaml and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset yaml not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with path/train/val/names")
    for key in ("train", "val", "names"):
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}")
    root = Path(data.get("path") or ".")
    root = root if root.is_absolute() else (path.parent / root)
    root = root.resolve()
    for key in ("train", "val", "test"):
        if key not in data or data[key] in (None, ""):
            continue
        entries = data[key] if isinstance(data[key], list) else [data[key]]
        for entry in entries:
            split = Path(entry) if Path(entry).is_absolute() else root / entry
            if not split.exists():
                raise FileNotFoundError(f"{path}: {key!r} -> {split} does not exist")
            if split.is_dir() and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in split.rglob("*")):
                raise ValueError(f"{path}: {key!r} -> {split} has no images")
    resolved = dict(data, path=str(root))
    resolved.pop("download", None)  # never fetch a dataset
    out = out_dir / "dataset.yaml"
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, yaml.safe_dump(resolved, sort_keys=False))
    return out


def scaled_model_yaml(model: str, out_dir: Path, width: float | None, depth: float | None) -> str:
    """A copy of an ultralytics model yaml with its scale's width/depth multipliers replaced."""
    from detect.detector import load_model_yaml

    cfg = load_model_yaml(model)
    scale = cfg["scale"]
    depth0, width0, max_channels = cfg["scales"][scale]
    cfg["scales"] = {scale: [depth if depth else depth0, width if width else width0, max_channels]}
    out = out_dir / f"{Path(model).stem}_d{cfg['scales'][scale][0]}_w{cfg['scales'][scale][1]}.yaml"
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, yaml.safe_dump(cfg, sort_keys=False))
    return str(out)


def _parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def train(data: str | Path, model: str, *, epochs: int, imgsz: int = 640, batch: int = 16, device: str = "cpu",
          workers: int = 0, project: str | Path = "runs/detect", name: str = "train", seed: int = 0,
          width: float | None = None, depth: float | None = None, out: str | Path | None = None,
          overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train; returns ``{"weights": best .pt, "metrics": {...}}`` and copies the best weights to ``out``."""
    from detect.detector import run_training

    run_dir = Path(project).resolve() / name
    data_yaml = resolve_dataset_yaml(data, run_dir / "config")
    if model.endswith((".yaml", ".yml")):
        if width or depth:
            model = scaled_model_yaml(model, run_dir / "config", width, depth)
    elif not Path(model).is_file():
        raise FileNotFoundError(f"--model {model}: no such weights file (downloads are disabled)")
    elif width or depth:
        raise ValueError("--width/--depth only apply to a model yaml")
    on_gpu = str(device) not in ("cpu", "") and not str(device).startswith("cpu")
    args = dict(data=str(data_yaml), epochs=epochs, imgsz=imgsz, batch=batch, device=device, workers=workers,
                project=str(Path(project).resolve()), name=name, exist_ok=True, seed=seed, deterministic=True,
                plots=False, amp=on_gpu, pretrained=not model.endswith((".yaml", ".yml")), verbose=True)
    args.update(overrides or {})
    best, metrics = run_training(model, **args)
    summary = {"weights": str(best), "metrics": metrics,
               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()}}
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.copyfile(best, tmp)
        tmp.replace(out)
        summary["out"] = str(out)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m detect.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="YOLO dataset yaml (path/train/val/names)")
    parser.add_argument("--model", default="yolov8n.yaml", help="model yaml (random init) or .pt to fine-tune")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu, 0, 0,1, ...")
    parser.add_argument("--workers", type=int, default=0, help="dataloader workers")
    parser.add_argument("--project", default="runs/detect")
    parser.add_argument("--name", default="train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=float, help="width multiplier replacing the yaml scale's (e.g. 0.25)")
    parser.add_argument("--depth", type=float, help="depth multiplier replacing the yaml scale's (e.g. 0.33)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--out", help="copy the best weights here (e.g. checkpoints/my_person.pt)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra ultralytics train argument, e.g. --set lr0=0.02 --set mosaic=0.5")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    summary = train(args.data, args.model, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                    device=args.device, workers=args.workers, project=args.project, name=args.name, seed=args.seed,
                    width=args.width, depth=args.depth, out=args.out, overrides=_parse_overrides(args.set))
    print(json.dumps(summary["metrics"], indent=2))
    print(f"best weights: {summary.get('out', summary['weights'])}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
