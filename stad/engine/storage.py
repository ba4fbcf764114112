"""Start-up check of what each rank must see on its own disk, for jobs spanning several nodes.

Predictions reach rank 0 over torch.distributed, only rank 0 writes outputs, and training and
evaluation load the checkpoint rank 0 chooses (``resume_path``, or with ``--resume`` the newest one
under rank 0's ``result_path``; broadcast to ranks without the file), so ``result_path`` need not be
shared. Each rank still reads, from its own filesystem: the dataset (annotation file, frames or
videos) and the pretrained weights. Before any model is built, every rank reports what it sees
(`all_gather_object`, a few hundred bytes) and all ranks stop with the same `StorageError` naming the
rank, host and file when a rank lacks what rank 0 has (what rank 0 lacks too is left to its
preflight, which explains data errors in detail). Rank 0 also says
whether ``result_path`` is shared with the other nodes (a probe file), so nobody looks for outputs
on node 1.
"""
from __future__ import annotations

import socket
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.distributed as dist

from stad.engine.distributed import DistContext


class StorageError(RuntimeError):
    """A rank cannot see a file the job needs on every rank (no shared filesystem, or a missing copy)."""


@dataclass(frozen=True)
class RankView:
    """What one rank sees: its host and each needed input (key -> (path, exists))."""

    rank: int
    host: str
    inputs: dict[str, tuple[str, bool]] = field(default_factory=dict)
    sees_probe: bool = True  # rank 0's probe file is visible under this rank's result_path


def needed_inputs(config: Any) -> dict[str, str]:
    """Config key -> path of every file or folder each rank reads itself."""
    from stad.config import config_to_dict

    data = config_to_dict(config)
    out: dict[str, str] = {}
    splits = ("val",) if config.evaluate else ("train", "val")
    for split in splits:
        section = data.get(split) or {}
        for key in ("annotation_path", "root_path", "video_root"):
            if section.get(key):
                out[f"{split}.{key}"] = str(section[key])

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                where = f"{prefix}.{key}" if prefix else str(key)
                if key == "pretrain" and isinstance(value, dict) and value.get("path"):
                    out[f"{where}.path"] = str(value["path"])
                else:
                    walk(value, where)

    walk(data, "")
    return out


def local_view(rank: int, config: Any, probe: str | None) -> RankView:
    inputs = {key: (path, Path(path).exists()) for key, path in needed_inputs(config).items()}
    sees = probe is None or (Path(config.result_path) / probe).exists()
    return RankView(rank, socket.gethostname(), inputs, sees)


def problems(views: list[RankView]) -> list[str]:
    """What prevents the job from running correctly, one message per problem (empty: all good)."""
    out = []
    main = views[0]
    for view in views[1:]:
        # what rank 0 lacks too is no difference between nodes: rank 0's preflight reports it in detail
        missing = [f"{key}={path}" for key, (path, ok) in view.inputs.items()
                   if not ok and main.inputs.get(key, (path, False))[1]]
        if missing:
            out.append(f"rank {view.rank} (host {view.host}) cannot read {', '.join(missing)}")
    return out


def check_storage(ctx: DistContext, config: Any) -> list[RankView]:
    """Gather every rank's `RankView`; raise `StorageError` on all ranks if any input is missing."""
    if not (ctx.distributed and ctx.world_size > 1):
        return []
    probe = None
    if ctx.is_main:
        probe = f".stad_shared_probe_{uuid.uuid4().hex}"
        Path(config.result_path).mkdir(parents=True, exist_ok=True)
        (Path(config.result_path) / probe).touch()
    holder = [probe]
    dist.broadcast_object_list(holder, src=0)
    views: list[Any] = [None] * ctx.world_size
    try:
        dist.all_gather_object(views, local_view(ctx.rank, config, holder[0]))
    finally:
        if ctx.is_main:
            (Path(config.result_path) / probe).unlink(missing_ok=True)
    found = problems(views)
    if found:
        raise StorageError("inputs differ between the ranks of a multi-node job:\n  " + "\n  ".join(found) +
                           "\nEach rank reads these itself: copy them to every node or put them on shared storage.")
    if ctx.is_main:
        apart = sorted({v.host for v in views if not v.sees_probe})
        if apart:
            print(f"[stad] result_path {config.result_path} is not shared with host(s) {', '.join(apart)}: "
                  f"predictions are gathered over torch.distributed; logs, checkpoints and results are written "
                  f"on rank 0's host ({views[0].host}) only", file=sys.stderr, flush=True)
    return views


def run_checked(ctx: DistContext, config: Any, resume: bool = False) -> None:
    """What main.py runs on each rank: the storage check, the weight files, then `stad.engine.runner.run`."""
    from stad.engine.config_check import check_weight_files
    from stad.engine.runner import run

    check_storage(ctx, config)
    check_weight_files(config)  # a ConfigError naming the key, instead of a traceback from the loader
    run(ctx, config, resume)
