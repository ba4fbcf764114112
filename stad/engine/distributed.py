"""Process-group setup and the few collectives the engine needs, all with bounded waits."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "gloo"
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def default_backend() -> str:
    """nccl when CUDA is usable, gloo otherwise."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def device_problem(backend: str, local_rank: int) -> str | None:
    """Why local rank ``local_rank`` cannot run with ``backend`` on this machine's GPUs, or None.

    nccl needs CUDA and one GPU per process; gloo runs anywhere (and shares GPUs)."""
    if not torch.cuda.is_available():
        return "--backend nccl needs CUDA, but torch sees no GPU; use --backend gloo" if backend == "nccl" else None
    count = torch.cuda.device_count()
    if backend == "nccl" and local_rank >= count:
        return (f"--nproc_per_node is larger than the {count} GPU(s) this node makes visible (local rank "
                f"{local_rank} has none; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}"
                f"): nccl needs one GPU per process; use --nproc_per_node {count} or fewer")
    return None


def select_device(backend: str, local_rank: int) -> torch.device:
    """The device this rank computes on: it follows the hardware, not the backend.

    With CUDA, rank ``local_rank`` takes GPU ``local_rank`` under either backend (``--backend gloo`` on
    a GPU machine trains on the GPUs; hide them with ``CUDA_VISIBLE_DEVICES=`` to use the CPU). nccl
    needs one GPU per process (`device_problem`).
    """
    problem = device_problem(backend, local_rank)
    if problem is not None:
        raise RuntimeError(problem)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    index = local_rank % count
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def init_process_group(rank: int, world_size: int, local_rank: int, backend: str,
                       timeout_s: float, store: dist.Store | None = None) -> DistContext:
    """Join the job described by MASTER_ADDR/MASTER_PORT in the environment (or through ``store``)."""
    device = select_device(backend, local_rank)
    timeout = datetime.timedelta(seconds=timeout_s)
    if store is None:
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size,
                                timeout=timeout)
    else:
        dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend,
                       device=device)


def elastic_attempt_prefix(environ: dict[str, str] | None = None) -> str | None:
    """The store namespace of this torchrun attempt, or None when ``env://`` is safe as it is.

    torchrun (c10d rendezvous) shares its own TCPStore with the workers (``TORCHELASTIC_USE_AGENT_STORE``)
    and keeps it across restarts, without a per-attempt prefix (pytorch/pytorch#135712). A restarted
    group then reads the dead group's keys: gloo connects to a killed rank's old port ("Connection
    refused"), nccl gets a stale unique id. On one node every worker of an attempt sees the same
    ``TORCHELASTIC_RESTART_COUNT``, so it names the attempt. Across nodes the agents count restarts
    separately, so there is no common name: `multinode_elastic_warning` says what to do instead.
    """
    env = os.environ if environ is None else environ
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "TORCHELASTIC_RESTART_COUNT" not in env:
        return None
    if int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])) != int(env["WORLD_SIZE"]):
        return None
    return f"stad/attempt_{int(env['TORCHELASTIC_RESTART_COUNT'])}/"


def multinode_elastic_warning(environ: dict[str, str] | None = None) -> str | None:
    """A warning for torchrun jobs over several nodes that may restart while sharing the agent's store."""
    env = os.environ if environ is None else environ
    several_nodes = int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", "1"))) != int(env.get("WORLD_SIZE", "1"))
    if (env.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and several_nodes
            and int(env.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0):
        return ("torchrun restarts over several nodes: start torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 "
                "in its environment, or a restarted group may read the previous attempt's addresses from the "
                "shared store and fail to connect (pytorch/pytorch#135712)")
    return None


def context_from_torchrun_env(backend: str | None, timeout_s: float) -> DistContext:
    """Initialise from the variables torchrun (or SLURM scripts using its names) exports.

    Under a single-node torchrun that shares its store, each restart attempt gets its own namespace
    in that store (`elastic_attempt_prefix`), so a restarted group never reads the previous one's keys.
    """
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    prefix = elastic_attempt_prefix()
    store = None
    if prefix is not None:
        # the agent hosts the server at MASTER_ADDR:MASTER_PORT; every worker is a client
        client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                               is_master=False, timeout=datetime.timedelta(seconds=timeout_s))
        store = dist.PrefixStore(prefix, client)
    return init_process_group(rank, world_size, local_rank, backend or default_backend(), timeout_s, store=store)


def destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed and ctx.world_size > 1:
        # a barrier via all_reduce honours the group timeout on every backend
        all_reduce_sum(ctx, 0.0)


def all_reduce_sum(ctx: DistContext, value: float | torch.Tensor) -> torch.Tensor:
    """Sum ``value`` over ranks; returns a float64 tensor on the CPU (a copy, input untouched)."""
    tensor = torch.as_tensor(value, dtype=torch.float64).clone()
    if ctx.distributed and ctx.world_size > 1:
        work = tensor.to(ctx.device) if ctx.backend == "nccl" else tensor
        dist.all_reduce(work)
        tensor = work.cpu()
    return tensor


def broadcast_object(ctx: DistContext, obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not (ctx.distributed and ctx.world_size > 1):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src, device=ctx.device if ctx.backend == "nccl" else None)
    return holder[0]


GATHER_CHUNK_BYTES = 4 << 20  # bytes per rank per collective call (gather rounds)


@dataclass(frozen=True)
class GatherStats:
    """What one `gather_bytes` call moved: total bytes from all ranks, rounds (collective calls), seconds."""

    bytes: int = 0
    rounds: int = 0
    seconds: float = 0.0


def gather_bytes(ctx: DistContext, payload: bytes, dst: int = 0,
                 chunk_bytes: int = GATHER_CHUNK_BYTES) -> tuple[list[bytes] | None, GatherStats]:
    """Every rank's ``payload`` on rank ``dst`` (in rank order; other ranks get None), over the process
    group: no shared filesystem. Payloads of any size move in rounds of at most ``chunk_bytes`` per
    rank, so no single message (or receive buffer on ``dst``: world_size x chunk) grows with the data;
    each round is a collective with the group's timeout, so a dead peer ends the wait with an error."""
    import time

    start = time.perf_counter()
    if not (ctx.distributed and ctx.world_size > 1):
        return [bytes(payload)], GatherStats(len(payload), 0, time.perf_counter() - start)
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    device = ctx.device if ctx.backend == "nccl" else torch.device("cpu")
    sizes_t = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(ctx.world_size)]
    dist.all_gather(sizes_t, torch.tensor([len(payload)], dtype=torch.int64, device=device))
    sizes = [int(s.item()) for s in sizes_t]
    largest = max(sizes)
    source = np.frombuffer(payload, dtype=np.uint8) if payload else np.zeros(0, np.uint8)
    received = [np.empty(n, np.uint8) for n in sizes] if ctx.rank == dst else None
    rounds = 0
    for begin in range(0, largest, chunk_bytes):
        width = min(chunk_bytes, largest - begin)  # the last round is no wider than needed
        piece = np.zeros(width, np.uint8)
        mine = source[begin:begin + width]
        piece[:len(mine)] = mine
        tensor = torch.from_numpy(piece).to(device)
        buffers = ([torch.empty(width, dtype=torch.uint8, device=device) for _ in range(ctx.world_size)]
                   if ctx.rank == dst else None)
        dist.gather(tensor, buffers, dst=dst)
        rounds += 1
        if received is not None:
            for rank, buf in enumerate(buffers):
                n = max(0, min(width, sizes[rank] - begin))
                if n:
                    received[rank][begin:begin + n] = buf[:n].cpu().numpy()
    elapsed = time.perf_counter() - start
    stats = GatherStats(sum(sizes), rounds, elapsed)
    return ([b.tobytes() for b in received] if received is not None else None), stats
