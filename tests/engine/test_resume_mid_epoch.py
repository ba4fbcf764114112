"""Mid-epoch checkpoints: kill -9 at a random iteration, ``--resume``, the same final weights.

Through main.py with 2 gloo workers on the tiny toy set (the fixture and helpers of test_main_e2e):
2 optimizer steps per epoch and rank, a checkpoint after every step.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import torch
from tests.engine.test_main_e2e import ROOT, _command, _data_overrides, _env, _main, _weights, toy  # noqa: F401 (fixture)

from stad.engine import checkpoint as ckpt

COMMON = ["train.n_epochs=3", "train.val_freq=100", "train.batch_size=1"]


def _kill_at(cmd: list[str], target, timeout: float = 240) -> None:
    """Start ``cmd``, SIGKILL its launcher and workers as soon as ``target`` exists."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # like a node going away: no clean-up of any kind
    proc.wait()
    assert target.exists(), f"{target} never appeared"


def test_kill_9_mid_epoch_then_resume_matches_uninterrupted(toy, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    _main(2, _data_overrides(toy, full) + COMMON)  # no mid-epoch checkpoints: today's training
    seed = random.randrange(10**6)
    iteration = random.Random(seed).choice([1, 3, 5])  # step 1 of epoch 1, 2 or 3 (2 steps per epoch)
    epoch = (iteration + 1) // 2
    print(f"kill after iteration {iteration} (epoch {epoch}); random seed {seed}")
    saving = COMMON + ["train.save_every_iters=1", "train.keep_last=2"]
    _kill_at(_command(2, _data_overrides(toy, cut) + saving), ckpt.iter_checkpoint_path(cut, epoch, iteration))
    mids = [p.name for p in ckpt.list_checkpoints(cut) if "_iter" in p.name]
    assert 1 <= len(mids) <= 2, mids  # keep_last
    # every rank's BatchNorm statistics are in it (freeze_bn: False): the ranks normalised different batches
    bn = ckpt.read_checkpoint(ckpt.iter_checkpoint_path(cut, epoch, iteration))["bn_ranks"]
    assert len(bn) == 2 and bn[0].keys() == bn[1].keys() and bn[0]
    assert any(not torch.equal(bn[0][k], bn[1][k]) for k in bn[0] if k.endswith("running_mean"))
    resumed = _main(2, _data_overrides(toy, cut) + saving, "--resume")
    log = (cut / "log.txt").read_text()
    assert "resumed from" in resumed.stdout + log
    assert ", step " in log  # the resume point was inside an epoch
    a, b = _weights(full, 3), _weights(cut, 3)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # the epoch-3 checkpoint supersedes every mid-epoch one
    assert [p.name for p in ckpt.list_checkpoints(cut)][-1] == "ckpt_3.pth"
    assert not [p for p in ckpt.list_checkpoints(cut) if "_iter" in p.name]


def test_checkpoint_names_order_and_pruning(tmp_path):
    folder = ckpt.checkpoint_dir(tmp_path)
    folder.mkdir(parents=True)
    names = ["ckpt_1.pth", "ckpt_2_iter3.pth", "ckpt_2_iter4.pth", "ckpt_2_iter5.pth", "ckpt_2.pth",
             "ckpt_3_iter7.pth", "ckpt_3_iter8.pth", "ckpt_3_iter9.pth", "last.pth", "ckpt_x.pth"]
    for name in names:
        (folder / name).write_bytes(b"")
    order = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert order == ["ckpt_1.pth", "ckpt_2_iter3.pth", "ckpt_2_iter4.pth", "ckpt_2_iter5.pth", "ckpt_2.pth",
                     "ckpt_3_iter7.pth", "ckpt_3_iter8.pth", "ckpt_3_iter9.pth"]
    assert ckpt.latest_checkpoint(tmp_path).name == "ckpt_3_iter9.pth"
    ckpt.prune_mid_epoch(tmp_path, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt_1.pth", "ckpt_2.pth", "ckpt_3_iter8.pth",
                                                                 "ckpt_3_iter9.pth"]
    assert (folder / "last.pth").exists()


def test_resumable_sampler_skips_and_seeds(tmp_path):
    from stad.engine.sampler import ResumableDistributedSampler, SeededBatches

    data = list(range(23))
    for rank in (0, 1):
        sampler = ResumableDistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=5, drop_last=True)
        sampler.set_epoch(3)
        whole = list(sampler)
        sampler.set_epoch(3, start=4)
        assert list(sampler) == whole[4:] and len(sampler) == len(whole) - 4
        sampler.set_epoch(4)
        assert len(list(sampler)) == len(whole)
        seeded = ResumableDistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=5, drop_last=True,
                                             seeded=True)
        seeded.set_epoch(3)
        pairs = list(seeded)
        assert [i for i, _ in pairs] == whole
        seeded.set_epoch(3, start=4)
        assert list(seeded) == pairs[4:]

    class Draws:  # draws from torch's RNG as ClipDataset does
        def __len__(self):
            return 10

        def __getitems__(self, indices):
            return [(i, int(torch.randint(0, 10**9, ()))) for i in indices]

    wrapped = SeededBatches(Draws())
    before = torch.get_rng_state()
    one = wrapped.__getitems__([(3, 11), (4, 12)])
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is untouched
    assert wrapped.__getitems__([(3, 11), (4, 12)]) == one
    assert wrapped.__getitems__([(3, 99), (4, 12)]) != one


def test_batchnorm_statistics_round_trip():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4, affine=False))
    model.train()
    model(torch.randn(2, 3, 5, 5))
    saved = ckpt.batchnorm_buffers(model)
    assert sorted(saved) == [f"{i}.{k}" for i in (1, 2) for k in ("num_batches_tracked", "running_mean", "running_var")]
    fresh = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4, affine=False))
    ckpt.restore_batchnorm_state(fresh, saved)
    for key, value in saved.items():
        assert torch.equal(dict(fresh.named_buffers())[key], value)
    import pytest

    with pytest.raises(KeyError, match="unknown buffers: 9.running_mean"):
        ckpt.restore_batchnorm_state(fresh, {"9.running_mean": torch.zeros(4)})
