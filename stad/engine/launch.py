"""Start the workers of a job: N spawned processes on this node, or one rank under torchrun or srun.

Which one is decided by `plan_launch` from the environment: torchrun's variables (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT) make this process that rank; inside an ``srun`` step of several tasks,
SLURM's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID, SLURM_NODELIST, ...) make each task
one rank, or, with one task per node and ``--nproc_per_node N``, each task the launcher of its node.

The parent supervises its children: the first worker that fails has its traceback printed and the
others are stopped, so a crash on any rank ends the job promptly with a non-zero exit code instead
of leaving its peers blocked in a collective.
"""
from __future__ import annotations

import errno
import multiprocessing as mp
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from stad.engine import distributed

WorkerFn = Callable[..., None]  # fn(ctx: DistContext, *args)


class LaunchError(RuntimeError):
    """The job could not be started (bad arguments, port in use)."""


@dataclass(frozen=True)
class LaunchSpec:
    """How many processes to start and how they find each other (the CLI flags of main.py)."""

    nproc_per_node: int = 1
    backend: str | None = None  # None: nccl with CUDA, else gloo
    master_addr: str | None = "127.0.0.1"  # None: MASTER_ADDR, else SLURM's first node, else 127.0.0.1
    master_port: int | None = 31114  # None: MASTER_PORT, else derived from SLURM_JOB_ID, else 31114
    nnodes: int = 1
    node_rank: int = 0
    timeout_s: float = 600.0  # process-group timeout (bounds every collective)
    threads_per_worker: int | None = None  # None: OMP_NUM_THREADS, else cores / nproc_per_node
    launcher: str = "auto"  # auto | local (ignore SLURM's variables) | slurm (require them)

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise LaunchError("--nproc_per_node and --nnodes must be >= 1")
        if not 0 <= self.node_rank < self.nnodes:
            raise LaunchError(f"--node_rank {self.node_rank} is outside [0, {self.nnodes})")
        if self.backend not in (None, "gloo", "nccl"):
            raise LaunchError(f"--backend {self.backend!r}: expected gloo or nccl")
        if self.launcher not in LAUNCHERS:
            raise LaunchError(f"--launcher {self.launcher!r}: expected one of {', '.join(LAUNCHERS)}")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


LAUNCHERS = ("auto", "local", "slurm")
DEFAULT_MASTER_ADDR = "127.0.0.1"
DEFAULT_MASTER_PORT = 31114
SLURM_PORT_BASE, SLURM_PORT_SPAN = 15000, 15000  # port from the job id: 15000..29999, below the ephemeral range


def under_torchrun() -> bool:
    """True when torchrun (or an equivalent launcher) already started this process as one rank."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


# ---------------------------------------------------------------------------------------------- SLURM


def expand_hostlist(text: str) -> list[str]:
    """SLURM's compressed host list -> host names: ``"gpu[01-03,07],login1"`` -> gpu01 gpu02 gpu03 gpu07
    login1; several bracket groups in one name (``rack[1-2]-n[1-2]``) expand as a product; zero padding
    follows the range's first bound (what ``scontrol show hostnames`` prints)."""
    hosts: list[str] = []
    for item in _split_top_level(text.strip()):
        hosts.extend(_expand_host(item))
    return hosts


def _split_top_level(text: str) -> list[str]:
    items, depth, current = [], 0, []
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise LaunchError(f"SLURM host list {text!r}: unbalanced ']'")
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise LaunchError(f"SLURM host list {text!r}: unbalanced '['")
    items.append("".join(current))
    return [item for item in (i.strip() for i in items) if item]


def _expand_host(item: str) -> list[str]:
    open_at = item.find("[")
    if open_at < 0:
        return [item]
    close_at = item.index("]", open_at)
    prefix, body, rest = item[:open_at], item[open_at + 1:close_at], item[close_at + 1:]
    values: list[str] = []
    for part in body.split(","):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise LaunchError(f"SLURM host list item {item!r}: bad range {part!r}")
        width = len(low)
        values.extend(str(n).zfill(width) for n in range(int(low), int(high or low) + 1))
    return [prefix + value + tail for value in values for tail in _expand_host(rest)]


def _tasks_on_node(spec: str, node: int) -> int | None:
    """Tasks on node ``node`` from SLURM_TASKS_PER_NODE (``"2(x3),1"``: 2 on nodes 0-2, 1 on node 3)."""
    counts: list[int] = []
    for part in spec.split(","):
        number, _, repeat = part.partition("(x")
        try:
            counts.extend([int(number)] * (int(repeat.rstrip(")")) if repeat else 1))
        except ValueError:
            return None
    return counts[node] if 0 <= node < len(counts) else None


@dataclass(frozen=True)
class SlurmTask:
    """This process as one task of an ``srun`` step, from SLURM's environment variables."""

    rank: int  # SLURM_PROCID
    world_size: int  # SLURM_STEP_NUM_TASKS / SLURM_NTASKS
    local_rank: int  # SLURM_LOCALID
    node_rank: int  # SLURM_NODEID
    nnodes: int  # SLURM_STEP_NUM_NODES / SLURM_NNODES / SLURM_JOB_NUM_NODES
    nodes: tuple[str, ...]  # SLURM_STEP_NODELIST / SLURM_JOB_NODELIST / SLURM_NODELIST, expanded
    tasks_on_node: int  # SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE at this node
    job_id: int | None  # SLURM_JOB_ID / SLURM_JOBID
    cpus_per_task: int | None  # SLURM_CPUS_PER_TASK
    in_step: bool  # SLURM_STEP_ID set: started by srun (a batch script itself has SLURM_PROCID=0 too)


def _first(environ: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        if environ.get(name):
            return environ[name]
    return None


def slurm_task(environ: Mapping[str, str] | None = None) -> SlurmTask | None:
    """The SLURM task this process is, or None outside SLURM (no SLURM_PROCID / SLURM_NTASKS)."""
    env = os.environ if environ is None else environ
    ntasks = _first(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS")
    if "SLURM_PROCID" not in env or ntasks is None:
        return None
    try:
        rank, world = int(env["SLURM_PROCID"]), int(ntasks)
        local_rank = int(env.get("SLURM_LOCALID", "0"))
        node_rank = int(env.get("SLURM_NODEID", "0"))
        nnodes = int(_first(env, "SLURM_STEP_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES") or "1")
        job = _first(env, "SLURM_JOB_ID", "SLURM_JOBID")
        cpus = env.get("SLURM_CPUS_PER_TASK")
        nodes = tuple(expand_hostlist(_first(env, "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
                                      or ""))
        per_node = _first(env, "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
        on_node = (_tasks_on_node(per_node, node_rank) if per_node else None) or max(1, world // max(1, nnodes))
        task = SlurmTask(rank, world, local_rank, node_rank, nnodes, nodes, on_node,
                         int(job) if job and job.isdigit() else None, int(cpus) if cpus and cpus.isdigit() else None,
                         "SLURM_STEP_ID" in env or "SLURM_STEPID" in env)
    except ValueError as err:
        raise LaunchError(f"SLURM environment variables are not integers where expected: {err}") from None
    if not 0 <= task.rank < task.world_size or not 0 <= task.node_rank < task.nnodes:
        raise LaunchError(f"SLURM_PROCID {task.rank} / SLURM_NTASKS {task.world_size} / SLURM_NODEID "
                          f"{task.node_rank} / SLURM_NNODES {task.nnodes} are inconsistent")
    return task


# ---------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class LaunchPlan:
    """What `launch` does: ``spawn`` ``spec.nproc_per_node`` workers of node ``spec.node_rank``, or run
    this process as the one rank ``rank`` of ``world_size`` (``torchrun``, ``slurm``)."""

    mode: str  # spawn | torchrun | slurm
    spec: LaunchSpec  # master_addr / master_port / nnodes / node_rank resolved
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    threads: int | None = None  # torch threads of the single rank (slurm), None: as _set_threads decides


def _explicit(value: Any, default: Any) -> bool:
    return value is not None and value != default


def plan_launch(spec: LaunchSpec, environ: Mapping[str, str] | None = None) -> LaunchPlan:
    """Decide how to start the job from ``spec`` (the CLI) and the environment.

    Order: torchrun's variables; then, unless ``launcher == "local"``, an srun step of several tasks
    (each task one rank, ``--nproc_per_node 1``; or one task per node that spawns ``--nproc_per_node``
    workers); else this node spawns its workers. Master address: ``--master_addr``, else MASTER_ADDR,
    else the step's first node (SLURM), else 127.0.0.1; port: ``--master_port``, else MASTER_PORT, else
    15000 + SLURM_JOB_ID mod 15000 (jobs sharing a node do not collide), else 31114.
    """
    env = os.environ if environ is None else environ
    if under_torchrun() if environ is None else all(
            k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")):
        return LaunchPlan("torchrun", spec, int(env["RANK"]), int(env["WORLD_SIZE"]),
                          int(env.get("LOCAL_RANK", env["RANK"])))
    task = None if spec.launcher == "local" else slurm_task(env)
    if spec.launcher == "slurm" and task is None:
        raise LaunchError("--launcher slurm: SLURM_PROCID / SLURM_NTASKS are not set (start main.py with srun)")
    addr = spec.master_addr or env.get("MASTER_ADDR")
    port = spec.master_port or (int(env["MASTER_PORT"]) if env.get("MASTER_PORT") else None)
    if task is None or (task.world_size == 1 and spec.launcher != "slurm"):
        resolved = replace(spec, master_addr=addr or DEFAULT_MASTER_ADDR, master_port=port or DEFAULT_MASTER_PORT)
        return LaunchPlan("spawn", resolved)
    if (_explicit(spec.nnodes, 1) and spec.nnodes != task.nnodes
            or _explicit(spec.node_rank, 0) and spec.node_rank != task.node_rank):
        raise LaunchError(f"--nnodes {spec.nnodes} --node_rank {spec.node_rank} disagree with SLURM "
                          f"(SLURM_NNODES {task.nnodes}, SLURM_NODEID {task.node_rank}); leave them out under srun")
    if not task.nodes and addr is None:
        raise LaunchError("under srun: SLURM_NODELIST is not set; pass --master_addr <address of the first node>")
    addr = addr or task.nodes[0]
    if port is None:
        port = SLURM_PORT_BASE + task.job_id % SLURM_PORT_SPAN if task.job_id is not None else DEFAULT_MASTER_PORT
    if not task.in_step:
        sys.stderr.write("[stad.launch] warning: SLURM variables without SLURM_STEP_ID: if this is a batch script "
                         "itself rather than an srun task, start main.py with srun (or pass --launcher local)\n")
    if spec.nproc_per_node > 1:
        if task.world_size != task.nnodes:
            raise LaunchError(
                f"under srun with {task.world_size} tasks on {task.nnodes} nodes, each task is one rank: drop "
                f"--nproc_per_node {spec.nproc_per_node} (or run one task per node: srun --ntasks-per-node 1)")
        resolved = replace(spec, master_addr=addr, master_port=port, nnodes=task.nnodes, node_rank=task.node_rank)
        return LaunchPlan("spawn", resolved)
    resolved = replace(spec, master_addr=addr, master_port=port, nnodes=task.nnodes, node_rank=task.node_rank)
    if spec.threads_per_worker is not None:
        threads = spec.threads_per_worker
    elif env.get("OMP_NUM_THREADS"):
        threads = int(env["OMP_NUM_THREADS"])
    elif task.cpus_per_task:
        threads = task.cpus_per_task
    else:
        threads = max(1, _cores() // task.tasks_on_node)
    # srun --gpus-per-task binds each task to its own GPU(s) (CUDA_VISIBLE_DEVICES per task): the
    # task's GPU is then device 0 whatever its SLURM_LOCALID; otherwise all tasks of a node see all
    # its GPUs and task SLURM_LOCALID takes GPU SLURM_LOCALID
    local_rank = 0 if env.get("SLURM_GPUS_PER_TASK") else task.local_rank
    return LaunchPlan("slurm", resolved, task.rank, task.world_size, local_rank, threads)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs srun bound this task to
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_port_free(addr: str, port: int) -> None:
    """Raise `LaunchError` if something already listens on ``addr:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: sockets lingering in TIME_WAIT from a previous run are not "in use"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            try:
                sock.bind((addr, port))
            except (socket.gaierror, OSError) as err:
                if isinstance(err, socket.gaierror) or err.errno == errno.EADDRNOTAVAIL:
                    sock.bind(("", port))  # a name that is not (resolvable to) a local address: all interfaces
                else:
                    raise
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
    from stad.engine.storage import StorageError

    if isinstance(error, StorageError):
        return f"storage error: {error}\n"
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

    Under torchrun, or as one task of an srun step, this process is one rank and runs ``fn`` directly
    (`plan_launch`). Otherwise the parent spawns ``nproc_per_node`` workers (start method "spawn",
    safe with CUDA) and supervises them.
    """
    plan = plan_launch(spec)
    spec = plan.spec
    backend = spec.backend or distributed.default_backend()
    if plan.mode == "torchrun":
        warning = distributed.multinode_elastic_warning()
        if warning and plan.rank == 0:
            sys.stderr.write(f"[stad.launch] WARNING: {warning}\n")
        _run_worker(lambda: distributed.context_from_torchrun_env(backend, spec.timeout_s), spec, fn, args)
        return 0
    if plan.mode == "slurm":
        if plan.rank == 0:  # a clear error instead of joining whatever listens there
            check_port_free(spec.master_addr, spec.master_port)
        os.environ.update(MASTER_ADDR=spec.master_addr, MASTER_PORT=str(spec.master_port), RANK=str(plan.rank),
                          WORLD_SIZE=str(plan.world_size), LOCAL_RANK=str(plan.local_rank))
        _run_worker(lambda: distributed.init_process_group(plan.rank, plan.world_size, plan.local_rank, backend,
                                                           spec.timeout_s),
                    replace(spec, threads_per_worker=plan.threads), fn, args)
        return 0
    problem = distributed.device_problem(backend, spec.nproc_per_node - 1)  # before any worker starts
    if problem is not None:
        raise LaunchError(problem)
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

