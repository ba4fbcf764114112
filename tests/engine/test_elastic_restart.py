"""Elastic restart: under ``torchrun --max-restarts 1`` one worker is killed mid-epoch; torchrun restarts the
job, which resumes from the last (mid-epoch) checkpoint and ends with the uninterrupted run's weights."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from stad.engine import checkpoint as ckpt
from stad.engine.distributed import elastic_attempt_prefix, multinode_elastic_warning
from tests.engine.test_main_e2e import ROOT, TOY_CONFIG, _data_overrides, _env, _main, _weights, toy  # noqa: F401

COMMON = ["train.n_epochs=3", "train.val_freq=100", "train.batch_size=1"]


def _workers(parent: int) -> dict[int, int]:
    """{RANK: pid} of the processes ``parent`` started (torchrun's workers)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != parent:
                continue
            env = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        rank = [e[5:] for e in env if e.startswith(b"RANK=")]
        if rank:
            found[int(rank[0])] = int(stat.parent.name)
    return found


def _kill_job(proc: subprocess.Popen, marker: str) -> None:
    """End torchrun and every worker of this job, also ones it left behind (torchrun starts each worker
    in its own session, so they are found by ``marker``, the job's result path, on their command line):
    a failed run must not leave ranks that hold ports and CPUs for the next tests."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def test_torchrun_restart_after_a_worker_is_killed_mid_epoch(toy, tmp_path):
    full, elastic = tmp_path / "full", tmp_path / "elastic"
    _main(2, _data_overrides(toy, full) + COMMON)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--max-restarts", "1", "--monitor-interval", "0.2", "main.py", "--config", str(TOY_CONFIG), "--resume"]
    for item in _data_overrides(toy, elastic) + COMMON + ["train.save_every_iters=1"]:
        cmd += ["--set", item]
    log = tmp_path / "torchrun.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, stdin=subprocess.DEVNULL)
        try:
            target = ckpt.iter_checkpoint_path(elastic, 2, 3)  # epoch 2, after its first step
            deadline = time.monotonic() + 240
            while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert target.exists(), log.read_text()[-3000:]
            workers = _workers(proc.pid)
            assert set(workers) == {0, 1}, workers
            os.kill(workers[1], signal.SIGKILL)  # one worker of the two
            code = proc.wait(timeout=300)
        finally:
            _kill_job(proc, str(elastic))
    text = log.read_text()
    assert code == 0, text[-3000:]
    run_log = (elastic / "log.txt").read_text()
    assert "resumed from" in run_log and "epoch 2, step 1" in run_log, run_log[-2000:]
    a, b = _weights(full, 3), _weights(elastic, 3)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _torchrun_env(**extra: str) -> dict[str, str]:
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
           "TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RESTART_COUNT": "0", "TORCHELASTIC_MAX_RESTARTS": "1"}
    env.update(extra)
    return env


def test_each_single_node_attempt_gets_its_own_store_namespace():
    assert elastic_attempt_prefix(_torchrun_env()) == "stad/attempt_0/"
    assert elastic_attempt_prefix(_torchrun_env(TORCHELASTIC_RESTART_COUNT="1")) == "stad/attempt_1/"
    # torchrun without a shared store (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1), or not torchrun: env:// as is
    assert elastic_attempt_prefix(_torchrun_env(TORCHELASTIC_USE_AGENT_STORE="False")) is None
    assert elastic_attempt_prefix({"RANK": "0", "WORLD_SIZE": "1"}) is None
    # several nodes: the agents' restart counts can differ, so they name no common attempt
    assert elastic_attempt_prefix(_torchrun_env(WORLD_SIZE="4")) is None


def test_multinode_restarts_with_a_shared_store_are_warned_about():
    warning = multinode_elastic_warning(_torchrun_env(WORLD_SIZE="4"))
    assert warning is not None and "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in warning
    assert multinode_elastic_warning(_torchrun_env()) is None  # one node: handled by the attempt prefix
    assert multinode_elastic_warning(_torchrun_env(WORLD_SIZE="4", TORCHELASTIC_MAX_RESTARTS="0")) is None
    assert multinode_elastic_warning(_torchrun_env(WORLD_SIZE="4", TORCHELASTIC_USE_AGENT_STORE="False")) is None


def _start_agent(node: int, port: int, result: Path, toy: Path, log: Path) -> subprocess.Popen:
    """One torchrun agent of a two-node job (one worker), with its own result folder (no shared storage)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "stad-elastic",
           "--max-restarts", "1", "--monitor-interval", "0.2", "main.py", "--config", str(TOY_CONFIG), "--resume"]
    for item in _data_overrides(toy, result) + COMMON + ["train.save_every_iters=1"]:
        cmd += ["--set", item]
    env = dict(_env(), TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    with log.open("w") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, stdin=subprocess.DEVNULL)


def test_two_node_torchrun_restart_without_shared_storage(toy, tmp_path):
    """Two agents (nodes) with separate result folders; node 1's worker is killed mid-epoch. Both agents
    restart their workers, which resume (rank 0's checkpoint, broadcast) and end with the weights of an
    uninterrupted two-process run."""
    full = tmp_path / "full"
    _main(2, _data_overrides(toy, full) + COMMON)
    from tests.engine.test_main_e2e import _free_port
    port = _free_port()
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    agents = [_start_agent(i, port, nodes[i], toy, tmp_path / f"agent{i}.log") for i in range(2)]
    try:
        deadline = time.monotonic() + 240
        target = None
        while target is None and time.monotonic() < deadline and all(a.poll() is None for a in agents):
            target = next((n for n in nodes if ckpt.iter_checkpoint_path(n, 2, 3).exists()), None)
            time.sleep(0.01)
        logs = "\n".join((tmp_path / f"agent{i}.log").read_text()[-2000:] for i in range(2))
        assert target is not None, logs
        ranks = {rank: pid for agent in agents for rank, pid in _workers(agent.pid).items()}
        assert set(ranks) == {0, 1}, ranks
        os.kill(ranks[1], signal.SIGKILL)
        codes = [agent.wait(timeout=300) for agent in agents]
    finally:
        for i, agent in enumerate(agents):
            _kill_job(agent, str(nodes[i]))
    logs = "\n".join((tmp_path / f"agent{i}.log").read_text()[-3000:] for i in range(2))
    assert codes == [0, 0], logs
    run_log = (target / "log.txt").read_text()
    assert "resumed from" in run_log and "epoch 2, step 1" in run_log, run_log[-2000:]
    a, b = _weights(full, 3), _weights(target, 3)
    for name in a:
        assert torch.equal(a[name], b[name]), name
