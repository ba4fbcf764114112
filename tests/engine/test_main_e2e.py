"""main.py end to end on the tiny toy set (CPU, gloo): DDP equivalences, resume, failures.

Each run spawns real worker processes, so this file takes a minute or so; models are tiny.
"""
from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TOY_CONFIG = ROOT / "configs" / "toy" / "vitsf_acar_train.yaml"

# deterministic training for the equivalence tests: no flip, no box jitter, no dropout
NO_RANDOMNESS = [
    "train.augmentation.spatial=[{type: Scale, kwargs: {resize: [64, 64]}}, {type: ToTensor, kwargs: {norm_value: 255.}}]",
    "val.augmentation.spatial=[{type: Scale, kwargs: {resize: [64, 64]}}, {type: ToTensor, kwargs: {norm_value: 255.}}]",
    "model.neck.kwargs.bbox_jitter.scale=0.0",
    "model.head.kwargs.relation_dropout=0.0",
    "model.backbone.sub_kwargs.img_size=64",
]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy")
    subprocess.run([sys.executable, "-m", "stad.data.toy", "--out", str(out), "--seed", "0", "--size", "tiny",
                    "--no-video", "--workers", "1"], check=True, cwd=ROOT, capture_output=True, stdin=subprocess.DEVNULL)
    # an odd number of val keyframes, so 2 ranks get a padded shard
    elements, classes = pickle.loads((out / "annotations" / "val.pkl").read_bytes())
    (out / "annotations" / "val3.pkl").write_bytes(pickle.dumps([elements[:3], classes]))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data_overrides(toy: Path, result: Path) -> list[str]:
    return [f"result_path={result}", f"train.root_path={toy}/frames", f"train.annotation_path={toy}/annotations/train.pkl",
            f"val.root_path={toy}/frames", f"val.annotation_path={toy}/annotations/val.pkl",
            f"val.eval_mAP.labelmap={toy}/labelmap.pbtxt", f"val.eval_mAP.groundtruth={toy}/val.csv",
            f"val.eval_mAP.exclusions={toy}/val_excluded_timestamps.csv",
            "train.augmentation.temporal.kwargs.size=16", "model.backbone.sub_kwargs.num_frames=4"]


def _command(nproc: int, overrides: list[str], *extra: str) -> list[str]:
    cmd = [sys.executable, "main.py", "--config", str(TOY_CONFIG), "--nproc_per_node", str(nproc),
           "--master_port", str(_free_port()), *extra]
    for item in overrides:
        cmd += ["--set", item]
    return cmd


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _main(nproc: int, overrides: list[str], *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(_command(nproc, overrides, *extra), cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"main.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _weights(result: Path, epoch: int) -> dict:
    return torch.load(result / "checkpoints" / f"ckpt_{epoch}.pth", map_location="cpu", weights_only=False)["state_dict"]


def test_inference_csv_identical_for_1_and_2_processes(toy, tmp_path):
    csvs = []
    for nproc in (1, 2):
        result = tmp_path / f"eval{nproc}"
        _main(nproc, _data_overrides(toy, result) + NO_RANDOMNESS +
              ["evaluate=true", "val.batch_size=1", f"val.annotation_path={toy}/annotations/val3.pkl"])
        csvs.append((result / "predict_epoch0.csv").read_text())
        assert (result / "eval_epoch0" / "eval.json").is_file()
        assert (result / "config.yaml").is_file()
    one, two = csvs
    assert one == two
    elements, _ = pickle.loads((toy / "annotations" / "val3.pkl").read_bytes())
    n_boxes = sum(len(e["labels"]) for e in elements)
    lines = one.splitlines()
    assert len(lines) == n_boxes * 11  # every box x every class, padding dropped
    assert len(set(lines)) == len(lines)


def _initial_weights(toy: Path, overrides: list[str]) -> dict:
    """The weights main.py starts from (seeded with manual_seed before building)."""
    from stad.config import load_config
    from stad.engine import builders, checkpoint

    config = load_config(TOY_CONFIG, overrides)
    checkpoint.seed_everything(config.manual_seed)
    return builders.build_model(config).state_dict()


def test_one_training_step_same_parameters_1x4_vs_2x2(toy, tmp_path):
    # frozen BatchNorm: batch statistics of 4 clips and of 2 + 2 clips differ
    common = NO_RANDOMNESS + ["model.freeze_bn=true", "train.n_epochs=1", "train.val_freq=100",
                              "train.scheduler.type=constant",
                              "train.scheduler.base_lr=0.01", "train.scheduler.warmup_epochs=0"]
    _main(1, _data_overrides(toy, tmp_path / "p1") + common + ["train.batch_size=4"])
    _main(2, _data_overrides(toy, tmp_path / "p2") + common + ["train.batch_size=2"])
    one, two = _weights(tmp_path / "p1", 1), _weights(tmp_path / "p2", 1)
    start = _initial_weights(toy, _data_overrides(toy, tmp_path / "p0") + common)
    moved = 0
    for name, value in one.items():
        # atol 1e-3 x lr: Adam-style updates of near-zero gradients amplify fp32 summation-order noise
        torch.testing.assert_close(two[name], value, rtol=1e-4, atol=1e-5, msg=name)
        moved += int(not torch.equal(value, start[name]))
    assert moved > 10  # the step changed the weights


def test_kill_after_epoch_1_then_resume_matches_uninterrupted(toy, tmp_path):
    common = ["train.n_epochs=2", "train.val_freq=100", "train.batch_size=2"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    _main(2, _data_overrides(toy, full) + common)
    proc = subprocess.Popen(_command(2, _data_overrides(toy, cut) + common), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, stdin=subprocess.DEVNULL)
    first = cut / "checkpoints" / "ckpt_1.pth"
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its workers
    proc.wait()
    assert first.exists()
    for later in (cut / "checkpoints").glob("ckpt_*.pth"):
        if later.name != "ckpt_1.pth":
            later.unlink()  # as if the kill came before epoch 2 ended
    resumed = _main(2, _data_overrides(toy, cut) + common, "--resume")
    assert "resumed from" in resumed.stdout
    a, b = _weights(full, 2), _weights(cut, 2)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_failing_workers_exit_nonzero_with_error(toy, tmp_path):
    overrides = _data_overrides(toy, tmp_path / "r") + [f"train.annotation_path={tmp_path}/missing.pkl"]
    start = time.monotonic()
    proc = _main(2, overrides, check=False)
    assert proc.returncode != 0
    assert time.monotonic() - start < 120
    assert "worker rank" in proc.stderr and "missing.pkl" in proc.stderr
    assert "Traceback" not in proc.stderr  # the preflight report, then one line from the launcher
    assert "preflight found errors in the data" in proc.stderr


def test_unknown_key_is_rejected_with_suggestion(tmp_path):
    proc = subprocess.run([sys.executable, "main.py", "--config", str(TOY_CONFIG), "--set", "train.n_epoch=3"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert "unknown key 'train.n_epoch'; did you mean 'train.n_epochs'?" in proc.stderr


def test_a_kwargs_typo_is_one_config_error_before_any_worker(tmp_path):
    proc = subprocess.run([sys.executable, "main.py", "--config", str(TOY_CONFIG), "--nproc_per_node", "2",
                           "--set", "model.head.kwargs.depht=2", "--set", f"result_path={tmp_path / 'r'}"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("config error: unknown key 'model.head.kwargs.depht' (acar -> ACARHead does not "
                                   "take it); did you mean 'model.head.kwargs.depth'?")
    assert not (tmp_path / "r").exists()  # no worker started, nothing written
