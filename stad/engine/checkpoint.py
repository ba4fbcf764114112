"""Training checkpoints: atomic save every epoch (and every N steps), exact resume, and loading of foreign weights.

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
# ckpt_{E}.pth: after epoch E; ckpt_{E}_iter{S}.pth: mid-epoch, in epoch E after global optimizer step S
_CKPT_RE = re.compile(r"^ckpt_(\d+)(?:_iter(\d+))?\.pth$")


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


def iter_checkpoint_path(result_path: str | Path, epoch: int, iteration: int) -> Path:
    """A mid-epoch checkpoint: in epoch ``epoch`` (1-based), after global optimizer step ``iteration``."""
    return checkpoint_dir(result_path) / f"ckpt_{epoch}_iter{iteration}.pth"


def _position(path: Path) -> tuple[int, float] | None:
    """(epoch, step) ordering key of a checkpoint name: an epoch's end comes after its mid-epoch ones."""
    m = _CKPT_RE.match(path.name)
    if not m:
        return None
    return int(m.group(1)), float("inf") if m.group(2) is None else float(m.group(2))


def list_checkpoints(result_path: str | Path) -> list[Path]:
    """Every checkpoint under ``result_path/checkpoints``, oldest first (epoch, then mid-epoch step)."""
    found = [(pos, p) for p in checkpoint_dir(result_path).glob("ckpt_*.pth") if (pos := _position(p))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(result_path: str | Path) -> Path | None:
    """The newest checkpoint under ``result_path/checkpoints`` (end of epoch or mid-epoch), if any."""
    found = list_checkpoints(result_path)
    return found[-1] if found else None


def prune_mid_epoch(result_path: str | Path, keep_last: int) -> list[Path]:
    """Delete mid-epoch checkpoints but the newest ``keep_last``, and those older than the newest
    end-of-epoch checkpoint (it supersedes them). Epoch checkpoints stay. Returns the deleted paths."""
    found = list_checkpoints(result_path)
    newest_epoch = max((i for i, p in enumerate(found) if _position(p)[1] == float("inf")), default=-1)
    mids = [i for i, p in enumerate(found) if _position(p)[1] != float("inf")]
    doomed = [found[i] for i in mids if i < newest_epoch] + [found[i] for i in mids if i > newest_epoch][:-keep_last]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


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
                    preset: dict | None = None, mid_epoch: dict | None = None,
                    rng_ranks: list | None = None, bn_ranks: list | None = None) -> Path:
    """Write everything needed to resume after ``epoch``; atomic (temp file + rename).

    ``preset`` (a `ModelPreset.to_dict()`) defaults to the one the run ``config`` states
    (`builders.preset_from_config`): the weights carry their preprocessing, label map and activation.
    ``mid_epoch`` (``{"step", "iteration", "loss_total", "boxes"}``) marks a checkpoint taken inside
    epoch ``epoch`` after ``step`` of its optimizer steps; ``rng_ranks`` holds every rank's RNG state
    (`gather_rng_states`), which a mid-epoch resume needs; ``bn_ranks`` every rank's BatchNorm running
    statistics (`gather_batchnorm_states`), restored per rank on resume.
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
    if mid_epoch is not None:
        state["mid_epoch"] = dict(mid_epoch)
    if rng_ranks is not None:
        state["rng_ranks"] = list(rng_ranks)
    if bn_ranks is not None:
        state["bn_ranks"] = list(bn_ranks)
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)
    return Path(path)


def gather_rng_states(ctx: Any) -> list | None:
    """Every rank's `rng_state()` on rank 0 (None elsewhere); a collective: all ranks call it."""
    import torch.distributed as dist

    own = rng_state()
    if not (ctx.distributed and ctx.world_size > 1):
        return [own]
    states: list = [None] * ctx.world_size
    dist.all_gather_object(states, own)  # a few KB per rank
    return states if ctx.is_main else None


def batchnorm_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the running statistics of every BatchNorm layer of ``model`` (by state-dict key)."""
    model = unwrap(model)
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                value = getattr(module, key, None)
                if value is not None:
                    found[f"{name}.{key}" if name else key] = value.detach().cpu().clone()
    return found


def gather_batchnorm_states(ctx: Any, model: torch.nn.Module) -> list | None:
    """Every rank's `batchnorm_buffers` on rank 0 (None elsewhere, and None without BatchNorm statistics or
    with one rank: the model's state dict holds them); a collective: all ranks call it.

    Ranks normalise their own batches, so with ``freeze_bn: False`` their running statistics differ;
    the state dict keeps only rank 0's."""
    import torch.distributed as dist

    own = batchnorm_buffers(model)
    if not own or not (ctx.distributed and ctx.world_size > 1):
        return None
    states: list = [None] * ctx.world_size
    dist.all_gather_object(states, own)
    return states if ctx.is_main else None


def restore_batchnorm_state(model: torch.nn.Module, buffers: dict[str, torch.Tensor]) -> None:
    """Copy ``buffers`` (from `batchnorm_buffers`) into ``model``'s BatchNorm statistics; every key must exist."""
    own = dict(unwrap(model).named_buffers())
    missing = sorted(set(buffers) - set(own))
    if missing:
        raise KeyError(f"BatchNorm statistics for unknown buffers: {', '.join(missing[:5])}")
    with torch.no_grad():
        for key, value in buffers.items():
            own[key].copy_(value.to(own[key].device))


def read_checkpoint_everywhere(ctx: Any, path: Path | None) -> tuple[Path | None, dict | None]:
    """Rank 0's choice of checkpoint (``path`` on rank 0; ignored elsewhere), read on every rank:
    from the local file where every rank has it; if some rank lacks it (no shared filesystem),
    rank 0 reads it and broadcasts the state. Returns (path, state); (None, None) for no checkpoint."""
    from stad.engine.distributed import all_reduce_sum, broadcast_object

    if not (ctx.distributed and ctx.world_size > 1):
        return (path, read_checkpoint(path)) if path is not None else (None, None)
    chosen = broadcast_object(ctx, None if path is None else str(path))
    if chosen is None:
        return None, None
    path = Path(chosen)
    missing = int(all_reduce_sum(ctx, 0.0 if path.is_file() else 1.0))
    if missing == 0:
        return path, read_checkpoint(path)
    logging.getLogger(__name__).info("%d rank(s) lack %s: rank 0 broadcasts it", missing, path)
    return path, broadcast_object(ctx, read_checkpoint(path) if ctx.is_main else None)


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
