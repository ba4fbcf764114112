"""Start the workers of a job: N spawned processes on this node, or one process under torchrun.

The parent supervises its children: the first worker that fails has its traceback printed and the
others are stopped, so a crash on any rank ends the job promptly with a non-zero exit code instead
of leaving its peers blocked in a collective.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from stad.engine import distributed

WorkerFn = Callable[..., None]  # fn(ctx: DistContext, *args)


class LaunchError(RuntimeError):
    """The job could not be started (bad arguments, port in use)."""


@dataclass(frozen=True)
class LaunchSpec:
    """How many processes to start and how they find each other (the CLI flags of main.py)."""

    nproc_per_node: int = 1
    backend: str | None = None  # None: nccl with CUDA, else gloo
    master_addr: str = "127.0.0.1"
    master_port: int = 31114
    nnodes: int = 1
    node_rank: int = 0
    timeout_s: float = 600.0  # process-group timeout (bounds every collective)
    threads_per_worker: int | None = None  # None: OMP_NUM_THREADS, else cores / nproc_per_node

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise LaunchError("--nproc_per_node and --nnodes must be >= 1")
        if not 0 <= self.node_rank < self.nnodes:
            raise LaunchError(f"--node_rank {self.node_rank} is outside [0, {self.nnodes})")
        if self.backend not in (None, "gloo", "nccl"):
            raise LaunchError(f"--backend {self.backend!r}: expected gloo or nccl")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


def under_torchrun() -> bool:
    """True when torchrun (or an equivalent launcher) already started this process as one rank."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def check_port_free(addr: str, port: int) -> None:
    """Raise `LaunchError` if something already listens on ``addr:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: sockets lingering in TIME_WAIT from a previous run are not "in use"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((addr, port))
        except OSError as err:
            raise LaunchError(
                f"master port {port} on {addr} is already in use ({err.strerror}); another job may be "
                f"running. Pick a free port with --master_port") from None


def _set_threads(spec: LaunchSpec) -> None:
    import torch

    if spec.threads_per_worker is not None:
        threads = spec.threads_per_worker
    elif os.environ.get("OMP_NUM_THREADS"):
        threads = int(os.environ["OMP_NUM_THREADS"])
    else:
        threads = max(1, (os.cpu_count() or 1) // spec.nproc_per_node)
    torch.set_num_threads(threads)


def _run_worker(ctx_factory: Callable[[], Any], spec: LaunchSpec, fn: WorkerFn, args: tuple,
                error_file: str | None = None) -> None:
    _set_threads(spec)
    try:
        ctx = ctx_factory()
        fn(ctx, *args)
    except BaseException as error:
        # record the traceback before tearing down the group: peers fail as soon as it goes
        if error_file is not None:
            Path(error_file).write_text(_describe(error), encoding="utf-8")
        raise
    finally:
        distributed.destroy()


def _describe(error: BaseException) -> str:
    """What the supervisor prints for a failed rank: the message alone for bad input (config,
    annotation files: it names the file and key), the traceback for anything else."""
    from stad.config import ConfigError
    from stad.data.formats.errors import FormatError

    if isinstance(error, ConfigError):
        return f"config error: {error}\n"
    from stad.data.validate import DatasetValidationError

    if isinstance(error, DatasetValidationError):
        return f"preflight found errors in the data; nothing was trained or evaluated:\n{error}\n"
    if isinstance(error, FormatError):
        return f"data error: {error}\n"
    return traceback.format_exc()


def _spawned_worker(local_rank: int, spec: LaunchSpec, fn: WorkerFn, args: tuple, error_file: str) -> None:
    """Entry point of a spawned child: join the group, run ``fn``, record any traceback."""
    rank = spec.node_rank * spec.nproc_per_node + local_rank
    os.environ.update(MASTER_ADDR=spec.master_addr, MASTER_PORT=str(spec.master_port), RANK=str(rank),
                      WORLD_SIZE=str(spec.world_size), LOCAL_RANK=str(local_rank))
    backend = spec.backend or distributed.default_backend()
    try:
        _run_worker(lambda: distributed.init_process_group(rank, spec.world_size, local_rank, backend,
                                                           spec.timeout_s), spec, fn, args, error_file)
    except BaseException:
        sys.exit(1)


def _stop(procs: list[mp.process.BaseProcess], grace_s: float = 5.0) -> None:
    procs = [p for p in procs if p.pid is not None]  # started ones
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


def _first_error(error_files: list[Path], codes: list[int | None], rank0: int) -> tuple[int, int, str]:
    """(rank, exit code, traceback) of the root failure: the earliest traceback written."""
    written = [(f.stat().st_mtime, i) for i, f in enumerate(error_files) if f.exists()]
    if written:
        i = min(written)[1]
        return rank0 + i, codes[i] or 1, error_files[i].read_text(encoding="utf-8")
    i = next(i for i, c in enumerate(codes) if c)
    return rank0 + i, codes[i], f"(no traceback: the process died with exit code {codes[i]})\n"


def _supervise(procs: list[mp.process.BaseProcess], error_files: list[Path], rank0: int) -> int:
    """Wait for all children; on the first failure stop the rest and report it. Returns the exit code."""
    try:
        while any(p.exitcode is None for p in procs):
            if any(p.exitcode not in (None, 0) for p in procs):
                # peers of a crashed rank fail too ("connection closed"); give the root cause a
                # moment to be written, then report the earliest traceback
                time.sleep(1.0)
                codes = [p.exitcode for p in procs]
                _stop(procs)
                rank, code, message = _first_error(error_files, codes, rank0)
                sys.stderr.write(f"\n[stad.launch] worker rank {rank} failed (exit code {code}):\n{message}")
                sys.stderr.flush()
                return 1
            time.sleep(0.05)
    except KeyboardInterrupt:
        _stop(procs)
        return 130
    if any(p.exitcode != 0 for p in procs):
        codes = [p.exitcode for p in procs]
        rank, code, message = _first_error(error_files, codes, rank0)
        sys.stderr.write(f"\n[stad.launch] worker rank {rank} failed (exit code {code}):\n{message}")
        return 1
    return 0


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def launch(fn: WorkerFn, spec: LaunchSpec, args: tuple = ()) -> int:
    """Run ``fn(ctx, *args)`` on every rank of the job; returns the process exit code (0 = success).

    Under torchrun this process is one rank and runs ``fn`` directly. Otherwise the parent spawns
    ``nproc_per_node`` workers (start method "spawn", safe with CUDA) and supervises them.
    """
    if under_torchrun():
        backend = spec.backend or distributed.default_backend()
        _run_worker(lambda: distributed.context_from_torchrun_env(backend, spec.timeout_s), spec, fn, args)
        return 0
    if spec.node_rank == 0:
        check_port_free(spec.master_addr, spec.master_port)
    context = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="stad_launch_") as tmp:
        error_files = [Path(tmp) / f"rank{i}.err" for i in range(spec.nproc_per_node)]
        procs = [context.Process(target=_spawned_worker, args=(i, spec, fn, args, str(error_files[i])),
                                 daemon=False) for i in range(spec.nproc_per_node)]
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill <launcher>` stops the workers too
        try:
            for proc in procs:
                proc.start()
            return _supervise(procs, error_files, spec.node_rank * spec.nproc_per_node)
        except KeyboardInterrupt:  # while starting
            _stop(procs)
            return 130
        finally:
            signal.signal(signal.SIGTERM, previous)
