"""Training checkpoints: atomic save every epoch, exact resume, and loading of foreign weights.

A checkpoint is a dict with ACAR-Net's key names (``epoch``, ``state_dict``, ``optimizer``,
``scheduler``) plus ``scaler``, ``rng``, ``config`` and ``preset`` (the model and the preprocessing its
weights expect, `stad.models.presets.ModelPreset.to_dict`); ``format`` marks files we wrote.
"""
from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from stad.io_utils import atomic_open

FORMAT = "stad-engine/1"
_CKPT_RE = re.compile(r"^ckpt_(\d+)\.pth$")


def checkpoint_dir(result_path: str | Path) -> Path:
    return Path(result_path) / "checkpoints"


def checkpoint_path(result_path: str | Path, epoch: int) -> Path:
    return checkpoint_dir(result_path) / f"ckpt_{epoch}.pth"


def link_last(path: str | Path) -> Path:
    """Point ``last.pth`` next to ``path`` at it, atomically (hard link, copy if links are unsupported)."""
    import os
    import shutil

    path = Path(path)
    last = path.parent / "last.pth"
    tmp = path.parent / f".last.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, last)
    return last


def latest_checkpoint(result_path: str | Path) -> Path | None:
    """The checkpoint with the highest epoch under ``result_path/checkpoints``, if any."""
    folder = checkpoint_dir(result_path)
    found = [(int(m.group(1)), p) for p in folder.glob("ckpt_*.pth") if (m := _CKPT_RE.match(p.name))]
    return max(found)[1] if found else None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def _preset_of_config(config: dict) -> dict | None:
    """The preset dict of a run config (model kwargs + test-time preprocessing); None if it cannot be stated."""
    from stad.config import ConfigError, config_from_dict
    from stad.engine.builders import preset_from_config

    try:
        return preset_from_config(config_from_dict(config, "<run config>")).to_dict()
    except (ConfigError, ValueError, KeyError, OSError) as err:
        logging.getLogger(__name__).warning("checkpoint without a preset: the run config's preprocessing cannot be "
                                            "stated (%s)", err)
        return None


def save_checkpoint(path: str | Path, *, epoch: int, model: torch.nn.Module, optimizer: Any = None,
                    scheduler: Any = None, scaler: Any = None, config: dict | None = None,
                    preset: dict | None = None) -> Path:
    """Write everything needed to resume after ``epoch``; atomic (temp file + rename).

    ``preset`` (a `ModelPreset.to_dict()`) defaults to the one the run ``config`` states
    (`builders.preset_from_config`): the weights carry their preprocessing, label map and activation.
    """
    if preset is None and config is not None:
        preset = _preset_of_config(config)
    state = {
        "format": FORMAT,
        "epoch": epoch,
        "state_dict": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "config": config,
        "preset": preset,
    }
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)
    return Path(path)


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint onto the CPU; a clear error names a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # corrupt / truncated / not a torch file
        raise RuntimeError(f"cannot read checkpoint {path}: {err}") from err


def checkpoint_preset(checkpoint: Any) -> Any:
    """The `stad.models.presets.ModelPreset` stored in a checkpoint (``checkpoint["preset"]``), else None."""
    stored = checkpoint.get("preset") if isinstance(checkpoint, dict) else None
    if not stored:
        return None
    from stad.models.presets import ModelPreset

    return stored if isinstance(stored, ModelPreset) else ModelPreset.from_dict(stored)


def load_model_weights(model: torch.nn.Module, state_dict: dict, *, strict: bool = True,
                       filters: tuple[Callable[[dict], dict], ...] = ()) -> list[str]:
    """Load ``state_dict`` into ``model``; if it does not match, try each filter (official layouts).

    Strict: the first candidate (the file as is, then each filter's output) whose keys are exactly the
    model's. Not strict: the candidate that fills the most model tensors (same name and shape), so an
    official file given as ``pretrain`` goes through its filter too; one that fills none is an error.
    Returns the missing keys (empty when strict).
    """
    from stad.models.checkpoints import strip_prefix

    model = unwrap(model)
    candidates = [strip_prefix(state_dict, "module.")]
    for fn in filters:
        try:
            candidates.append(fn(candidates[0]))
        except (KeyError, ValueError, RuntimeError):
            continue  # this filter is for another layout
    own = model.state_dict()
    if strict:
        for candidate in candidates:
            if set(candidate) == set(own):
                model.load_state_dict(candidate, strict=True)
                return []
    else:
        fits = [sum(k in own and own[k].shape == v.shape for k, v in c.items()) for c in candidates]
        best = max(range(len(candidates)), key=fits.__getitem__)
        if fits[best]:
            chosen = {k: v for k, v in candidates[best].items() if k in own and own[k].shape == v.shape}
            reshaped = sorted(k for k, v in candidates[best].items() if k in own and own[k].shape != v.shape)
            if reshaped:
                logging.getLogger(__name__).warning("%d tensors of other shapes left at init, e.g. %s",
                                                    len(reshaped), reshaped[:3])
            return list(model.load_state_dict(chosen, strict=False).missing_keys)
    first = candidates[0]
    missing = sorted(set(own) - set(first))[:5]
    unexpected = sorted(set(first) - set(own))[:5]
    raise RuntimeError(f"weights do not match the model: missing {missing}..., unexpected {unexpected}... "
                       f"(tried {len(candidates) - 1} checkpoint filters)")
