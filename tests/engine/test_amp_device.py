"""The device follows the hardware, not the backend (stad.engine.distributed.select_device), CUDA faked."""
from __future__ import annotations

import pytest
import torch

from stad.engine import distributed


@pytest.fixture
def two_gpus(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    return chosen


def test_gloo_on_a_cuda_machine_trains_on_the_gpu(two_gpus):
    assert distributed.select_device("gloo", 0) == torch.device("cuda", 0)
    assert distributed.select_device("gloo", 1) == torch.device("cuda", 1)
    assert distributed.select_device("gloo", 2) == torch.device("cuda", 0)  # gloo may share a GPU
    assert two_gpus == [0, 1, 0]


def test_nccl_with_more_processes_than_gpus_is_a_clear_error(two_gpus):
    assert distributed.select_device("nccl", 1) == torch.device("cuda", 1)
    with pytest.raises(RuntimeError, match=r"--nproc_per_node is larger than the 2 GPU\(s\).*--nproc_per_node 2 or fewer"):
        distributed.select_device("nccl", 2)


def test_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.select_device("gloo", 3) == torch.device("cpu")
    with pytest.raises(RuntimeError, match="--backend nccl needs CUDA"):
        distributed.select_device("nccl", 0)


def test_the_launcher_refuses_more_nccl_processes_than_gpus_before_spawning(two_gpus, monkeypatch):
    from stad.engine import launch

    spawned = []
    monkeypatch.setattr(launch.mp, "get_context", lambda method: spawned.append(method))
    spec = launch.LaunchSpec(nproc_per_node=3, backend="nccl", master_port=0)
    with pytest.raises(launch.LaunchError, match=r"larger than the 2 GPU\(s\).*--nproc_per_node 2 or fewer"):
        launch.launch(lambda ctx: None, spec)
    assert spawned == []  # no worker was started
