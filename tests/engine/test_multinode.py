"""Multi-node and torchrun on one machine (CPU, gloo): the predictions CSV equals one process's.

Two `main.py` launches with `--nnodes 2 --node_rank 0/1 --nproc_per_node 1 --master_addr 127.0.0.1`
run from two separate working folders, each with its own relative `result_path`, as on two machines
without a shared filesystem: predictions reach rank 0 over torch.distributed only. Evaluation only,
on the tiny toy set's first 3 val keyframes (odd: the 2-rank shards are padded).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine.test_main_e2e import NO_RANDOMNESS, ROOT, TOY_CONFIG, _data_overrides, _free_port, toy  # noqa: F401

MAIN = str(ROOT / "main.py")


def _eval_overrides(toy: Path, result: str) -> list[str]:
    return (_data_overrides(toy, Path("unused")) + NO_RANDOMNESS +
            [f"result_path={result}", "evaluate=true", "val.batch_size=1",
             f"val.annotation_path={toy}/annotations/val3.pkl"])


def _args(overrides: list[str]) -> list[str]:
    out = []
    for item in overrides:
        out += ["--set", item]
    return out


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLURM_") and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return dict(env, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def reference_csv(toy, tmp_path_factory) -> str:
    """The predictions CSV of one process."""
    work = tmp_path_factory.mktemp("one")
    _run([sys.executable, MAIN, "--config", str(TOY_CONFIG), "--master_port", str(_free_port()),
          *_args(_eval_overrides(toy, "runs/one"))], work)
    return (work / "runs" / "one" / "predict_epoch0.csv").read_text()


def _node_command(node_rank: int, port: int, result: str, toy: Path, *extra: str) -> list[str]:
    return [sys.executable, MAIN, "--config", str(TOY_CONFIG), "--nnodes", "2", "--node_rank", str(node_rank),
            "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port), *extra,
            *_args(_eval_overrides(toy, result))]


def _start_nodes(toy: Path, tmp_path: Path, *extra: str) -> tuple[list[subprocess.Popen], list[Path]]:
    port = _free_port()
    folders = [tmp_path / "node0", tmp_path / "node1"]
    procs = []
    for rank, folder in enumerate(folders):
        folder.mkdir()
        procs.append(subprocess.Popen(_node_command(rank, port, f"out_node{rank}", toy, *extra), cwd=folder,
                                      env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      stdin=subprocess.DEVNULL, start_new_session=True))
    return procs, folders


def test_two_nodes_without_shared_folder_give_the_one_process_csv(toy, tmp_path, reference_csv):
    procs, folders = _start_nodes(toy, tmp_path)
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, f"{out[-2000:]}\n{err[-3000:]}"
    csv = folders[0] / "out_node0" / "predict_epoch0.csv"
    assert csv.read_text() == reference_csv
    assert (folders[0] / "out_node0" / "eval_epoch0" / "eval.json").is_file()
    # node 1 wrote no predictions and no per-rank parts anywhere: nothing went through files
    assert not list(folders[1].rglob("*.csv")) and not list(folders[1].rglob("*.pt"))
    assert not (folders[0] / "out_node0" / "tmp").exists()
    log = (folders[0] / "out_node0" / "log.txt").read_text()
    assert "world size 2" in log and "gathered the predictions of 2 ranks" in log


def test_torchrun_two_processes_give_the_one_process_csv(toy, tmp_path, reference_csv):
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
          "--master_port", str(_free_port()), MAIN, "--config", str(TOY_CONFIG),
          *_args(_eval_overrides(toy, "runs/torchrun"))], tmp_path)
    assert (tmp_path / "runs" / "torchrun" / "predict_epoch0.csv").read_text() == reference_csv
    assert "world size 2" in (tmp_path / "runs" / "torchrun" / "log.txt").read_text()


def test_a_killed_node_does_not_hang_the_other(toy, tmp_path):
    """SIGKILL node 1 while the job runs: node 0, which no parent process connects to node 1, stops
    with an error well before the collective timeout (60 s here) instead of waiting for it."""
    procs, folders = _start_nodes(toy, tmp_path, "--timeout", "60")
    log = folders[0] / "out_node0" / "log.txt"
    deadline = time.monotonic() + 240
    while procs[0].poll() is None and time.monotonic() < deadline:
        if log.exists() and "evaluating epoch" in log.read_text():
            break
        time.sleep(0.05)
    os.killpg(procs[1].pid, signal.SIGKILL)
    killed = time.monotonic()
    out, err = procs[0].communicate(timeout=120)
    procs[1].communicate()
    assert procs[0].returncode != 0, out[-2000:]
    assert time.monotonic() - killed < 45
    assert "worker rank 0 failed" in err
    assert not (folders[0] / "out_node0" / "predict_epoch0.csv").exists()  # no partial CSV


def _free_slurm_port() -> int:
    """A free port in the range main.py derives from SLURM_JOB_ID (15000 + id mod 15000)."""
    import socket

    for port in range(15000 + os.getpid() % 10000, 30000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 15000..29999")


def test_srun_tasks_from_slurm_variables_give_the_one_process_csv(toy, tmp_path, reference_csv):
    """Two tasks of `srun -N 1 -n 2 python main.py ...`, fed the variables srun exports: rank, world,
    master address (the node list's first host) and port (from the job id) all come from SLURM."""
    job_id = _free_slurm_port() - 15000
    procs = []
    for procid in (0, 1):
        slurm = {"SLURM_PROCID": str(procid), "SLURM_NTASKS": "2", "SLURM_LOCALID": str(procid),
                 "SLURM_NODEID": "0", "SLURM_NNODES": "1", "SLURM_NODELIST": "localhost",
                 "SLURM_TASKS_PER_NODE": "2", "SLURM_JOB_ID": str(job_id), "SLURM_STEP_ID": "0",
                 "SLURM_CPUS_PER_TASK": "1"}
        procs.append(subprocess.Popen([sys.executable, MAIN, "--config", str(TOY_CONFIG),
                                       *_args(_eval_overrides(toy, "runs/srun"))],
                                      cwd=tmp_path, env=dict(_env(), **slurm), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL))
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{out[-2000:]}\n{err[-3000:]}"
    assert (tmp_path / "runs" / "srun" / "predict_epoch0.csv").read_text() == reference_csv
    assert "world size 2" in (tmp_path / "runs" / "srun" / "log.txt").read_text()


def test_a_node_missing_an_input_stops_every_node_with_a_storage_error(toy, tmp_path):
    """Node 1 lacks the val annotation file (no shared filesystem, not copied): both nodes stop at
    start-up, naming the rank, its host and the file, instead of failing later or hanging."""
    port = _free_port()
    procs = []
    for rank in (0, 1):
        folder = tmp_path / f"node{rank}"
        folder.mkdir()
        missing = [f"val.annotation_path={tmp_path}/absent_on_node1.pkl"] if rank == 1 else []
        cmd = _node_command(rank, port, f"out_node{rank}", toy, "--timeout", "60") + _args(missing)
        procs.append(subprocess.Popen(cmd, cwd=folder, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, stdin=subprocess.DEVNULL))
    start = time.monotonic()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert time.monotonic() - start < 60
    assert all(p.returncode == 1 for p in procs), errors
    assert "storage error: inputs differ between the ranks" in errors[0]
    assert f"rank 1 (host {os.uname().nodename}) cannot read val.annotation_path={tmp_path}/absent_on_node1.pkl" \
        in errors[0]
    assert not (tmp_path / "node0" / "out_node0" / "predict_epoch0.csv").exists()


def test_two_nodes_evaluate_weights_only_node_0_has(toy, tmp_path):
    """Evaluation without shared storage: ``resume_path`` exists on node 0 only; rank 0 broadcasts it, and the
    CSV equals one process evaluating the same weights."""
    import torch

    from stad.config import load_config
    from stad.engine import checkpoint as ckpt
    from stad.engine.builders import build_model

    config = load_config(TOY_CONFIG, _eval_overrides(toy, "unused"))
    torch.manual_seed(7)
    weights = tmp_path / "weights.pth"
    ckpt.save_checkpoint(weights, epoch=5, model=build_model(config))
    one = tmp_path / "one"
    one.mkdir()
    _run([sys.executable, MAIN, "--config", str(TOY_CONFIG), "--master_port", str(_free_port()),
          *_args(_eval_overrides(toy, "runs/one") + [f"resume_path={weights}"])], one)
    reference = (one / "runs" / "one" / "predict_epoch5.csv").read_text()
    port = _free_port()
    procs = []
    for rank in range(2):
        folder = tmp_path / f"node{rank}"
        folder.mkdir()
        if rank == 0:
            (folder / "weights.pth").write_bytes(weights.read_bytes())
        cmd = _node_command(rank, port, f"out_node{rank}", toy, "--set", "resume_path=weights.pth")
        procs.append(subprocess.Popen(cmd, cwd=folder, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, stdin=subprocess.DEVNULL, start_new_session=True))
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, f"{out[-2000:]}\n{err[-3000:]}"
    assert (tmp_path / "node0" / "out_node0" / "predict_epoch5.csv").read_text() == reference
    assert "rank(s) lack" in (tmp_path / "node0" / "out_node0" / "log.txt").read_text()
