"""SLURM: srun's environment variables -> ranks, nodes, master address and port (no SLURM needed).

The end-to-end run of two srun-style tasks through main.py is in test_multinode.py.
"""
from __future__ import annotations

import pytest

from stad.engine.launch import LaunchError, LaunchSpec, expand_hostlist, plan_launch, slurm_task


def _srun_env(procid: int, ntasks: int = 8, nnodes: int = 2, **extra: str) -> dict:
    """What srun exports to task ``procid`` of ``srun -N nnodes -n ntasks`` (block distribution)."""
    per_node = ntasks // nnodes
    env = {"SLURM_PROCID": str(procid), "SLURM_NTASKS": str(ntasks), "SLURM_NPROCS": str(ntasks),
           "SLURM_LOCALID": str(procid % per_node), "SLURM_NODEID": str(procid // per_node),
           "SLURM_NNODES": str(nnodes), "SLURM_JOB_NUM_NODES": str(nnodes),
           "SLURM_NODELIST": "gpu[07-08]", "SLURM_JOB_NODELIST": "gpu[07-08]",
           "SLURM_TASKS_PER_NODE": f"{per_node}(x{nnodes})", "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0",
           "SLURM_CPUS_PER_TASK": "6"}
    env.update(extra)
    return env


@pytest.mark.parametrize("text, hosts", [
    ("node1", ["node1"]),
    ("gpu[07-10]", ["gpu07", "gpu08", "gpu09", "gpu10"]),
    ("gpu[1,3-4],login01", ["gpu1", "gpu3", "gpu4", "login01"]),
    ("a[8-10]", ["a8", "a9", "a10"]),
    ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),
    ("c-1,c-2", ["c-1", "c-2"]),
])
def test_expand_hostlist(text, hosts):
    assert expand_hostlist(text) == hosts


def test_bad_hostlist_is_a_launch_error():
    with pytest.raises(LaunchError, match="unbalanced"):
        expand_hostlist("gpu[01-02")


def test_each_srun_task_is_one_rank():
    for procid in range(8):
        plan = plan_launch(LaunchSpec(master_addr=None, master_port=None), _srun_env(procid))
        assert (plan.mode, plan.rank, plan.world_size, plan.local_rank) == ("slurm", procid, 8, procid % 4)
        assert plan.spec.nnodes == 2 and plan.spec.node_rank == procid // 4
        assert plan.spec.master_addr == "gpu07"  # the step's first node
        assert plan.spec.master_port == 15000 + 4242  # from the job id: jobs sharing a node differ
        assert plan.threads == 6  # SLURM_CPUS_PER_TASK


def test_gpus_per_task_binding_gives_each_task_its_device_0():
    # srun --gpus-per-task 1: every task sees only its own GPU (CUDA_VISIBLE_DEVICES per task)
    plans = [plan_launch(LaunchSpec(), _srun_env(p, SLURM_GPUS_PER_TASK="1")) for p in range(8)]
    assert [p.local_rank for p in plans] == [0] * 8 and [p.rank for p in plans] == list(range(8))


def test_explicit_flags_and_master_variables_win():
    env = _srun_env(3, MASTER_ADDR="10.0.0.5", MASTER_PORT="29400")
    plan = plan_launch(LaunchSpec(master_addr=None, master_port=None), env)
    assert (plan.spec.master_addr, plan.spec.master_port) == ("10.0.0.5", 29400)
    plan = plan_launch(LaunchSpec(master_addr="ib-gpu07", master_port=1234), env)
    assert (plan.spec.master_addr, plan.spec.master_port) == ("ib-gpu07", 1234)


def test_step_variables_take_precedence_over_the_allocation():
    # a 4-node allocation, an srun step on two of its nodes
    env = _srun_env(1, ntasks=2, nnodes=2, SLURM_NNODES="4", SLURM_NTASKS="8", SLURM_NODELIST="n[1-4]",
                    SLURM_STEP_NUM_TASKS="2", SLURM_STEP_NUM_NODES="2", SLURM_STEP_NODELIST="n[3-4]",
                    SLURM_STEP_TASKS_PER_NODE="1(x2)", SLURM_NODEID="1", SLURM_LOCALID="0")
    task = slurm_task(env)
    assert (task.world_size, task.nnodes, task.nodes, task.tasks_on_node) == (2, 2, ("n3", "n4"), 1)
    plan = plan_launch(LaunchSpec(master_addr=None, master_port=None), env)
    assert (plan.rank, plan.world_size, plan.spec.master_addr) == (1, 2, "n3")


def test_threads_without_cpus_per_task_split_the_cores_among_the_node_tasks(monkeypatch):
    monkeypatch.setattr("stad.engine.launch._cores", lambda: 16)
    env = _srun_env(0)
    del env["SLURM_CPUS_PER_TASK"]
    assert plan_launch(LaunchSpec(), env).threads == 4
    assert plan_launch(LaunchSpec(), dict(env, OMP_NUM_THREADS="2")).threads == 2


def test_one_task_per_node_spawns_nproc_per_node_workers():
    env = _srun_env(1, ntasks=2, nnodes=2)
    plan = plan_launch(LaunchSpec(nproc_per_node=4, master_addr=None, master_port=None), env)
    assert plan.mode == "spawn"
    assert (plan.spec.nnodes, plan.spec.node_rank, plan.spec.world_size) == (2, 1, 8)
    assert plan.spec.master_addr == "gpu07"


def test_nproc_per_node_with_several_tasks_per_node_is_an_error():
    with pytest.raises(LaunchError, match="each task is one rank: drop --nproc_per_node 2"):
        plan_launch(LaunchSpec(nproc_per_node=2), _srun_env(0))


def test_node_flags_that_contradict_slurm_are_an_error():
    with pytest.raises(LaunchError, match="disagree with SLURM"):
        plan_launch(LaunchSpec(nnodes=3, node_rank=1), _srun_env(0))


def test_outside_slurm_and_single_task_steps_spawn_locally():
    assert plan_launch(LaunchSpec(nproc_per_node=2), {}).mode == "spawn"
    plan = plan_launch(LaunchSpec(nproc_per_node=2, master_addr=None, master_port=None),
                       _srun_env(0, ntasks=1, nnodes=1))
    assert (plan.mode, plan.spec.master_addr, plan.spec.master_port) == ("spawn", "127.0.0.1", 31114)
    # --launcher local ignores SLURM's variables
    assert plan_launch(LaunchSpec(launcher="local"), _srun_env(0)).mode == "spawn"
    with pytest.raises(LaunchError, match="--launcher slurm"):
        plan_launch(LaunchSpec(launcher="slurm"), {})


def test_torchrun_variables_take_precedence_over_slurm():
    env = dict(_srun_env(5), RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", MASTER_ADDR="x", MASTER_PORT="1")
    plan = plan_launch(LaunchSpec(), env)
    assert (plan.mode, plan.rank, plan.world_size, plan.local_rank) == ("torchrun", 1, 2, 1)


def test_inconsistent_variables_are_a_launch_error():
    with pytest.raises(LaunchError, match="inconsistent"):
        slurm_task(_srun_env(9))
    with pytest.raises(LaunchError, match="not integers"):
        slurm_task(_srun_env(0, SLURM_LOCALID="x"))
