"""task: recognition on the shared engine: config keys, main.py end to end (1 vs 2 gloo processes, resume),
the cached-feature linear probe, output files."""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from stad.config import ConfigError, config_from_dict, load_config
from tests.data.recognition_testutils import write_frames_set

ROOT = Path(__file__).resolve().parents[2]
LABELS = [0, 1, 0, 1, 1, 0, 0, 1]  # 8 videos, 2 classes


def _config(data: Path, result: Path, **top) -> dict:
    """A tiny deterministic recognition config (no random augmentation, the clip spans the whole video,
    BatchNorm frozen, no dropout: 1 and 2 processes train the same model)."""
    split = {"root_path": str(data / "frames"), "annotation_path": str(data / "list_frames.txt"), "batch_size": 4,
             "augmentation": {"spatial": [{"type": "ToTensor", "kwargs": {"norm_value": 255.0}}]}}
    return {"task": "recognition", "result_path": str(result), "manual_seed": 0, "print_freq": 1,
            "recognition": {"list_format": "frames", "label_groups": {"action": 2},
                            "sampling": {"type": "dense", "clip_len": 4, "frame_interval": 1}, "test_clips": 1},
            "model": {"freeze_bn": True, "backbone": {"arch": "slowfast_tiny"},
                      "head": {"type": "linear", "kwargs": {"dropout": 0.0}}},
            "train": {**split, "n_epochs": 2, "val_freq": 2, "save_freq": 1,
                      "optimizer": {"type": "SGD", "kwargs": {"momentum": 0.9}},
                      "scheduler": {"type": "constant", "base_lr": 0.05}},
            "val": {**split, "batch_size": 3}, **top}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rec")
    write_frames_set(root, LABELS, n_frames=4, size=32)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _main(config: dict, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    path = Path(config["result_path"] + ".yaml")
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "main.py", "--config", str(path), "--nproc_per_node", str(nproc),
                           "--master_port", str(_free_port()), *extra], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)), timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"main.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _scores(result: Path, epoch: int) -> tuple[list, np.ndarray]:
    rows = list(csv.DictReader((result / f"scores_epoch{epoch}.csv").open()))
    return [(r["video"], r["action_label"]) for r in rows], np.array([[float(r["action:0"]), float(r["action:1"])]
                                                                      for r in rows])


def test_existing_configs_stay_detection_and_recognition_keys_are_strict(data, tmp_path):
    assert load_config(ROOT / "configs/toy/demo_acar.yaml").task == "detection"
    good = _config(data, tmp_path / "r")
    assert config_from_dict(good).num_classes == 2
    for change, message in [({"task": "recognitoin"}, "did you mean 'recognition'"),
                            ({"recognition": {**good["recognition"], "list_format": "frame"}}, "did you mean 'frames'"),
                            ({"recognition": {**good["recognition"], "test_clip": 3}}, "did you mean 'recognition.test_clips'"),
                            ({"recognition": {**good["recognition"], "sampling": {"type": "uniformm"}}}, "'uniform'"),
                            ({"task": "detection"}, "only read with task: recognition"),
                            ({"recognition": {**good["recognition"], "label_groups": {}}}, "label_groups")]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({**good, **change})


def test_probe_cache_needs_a_linear_probe(data, tmp_path):
    from stad.engine.config_check import check_config

    config = _config(data, tmp_path / "r")
    config["recognition"]["probe"] = {"cache_features": True}
    with pytest.raises(ConfigError, match="needs model.finetune.mode: linear_probe"):
        check_config(config_from_dict(config))


def test_one_and_two_processes_score_alike_and_resume_is_exact(data, tmp_path):
    one, two, cut = tmp_path / "one", tmp_path / "two", tmp_path / "cut"
    _main(_config(data, one), 1)
    _main({**_config(data, two), "train": {**_config(data, two)["train"], "batch_size": 2},
           "val": {**_config(data, two)["val"], "batch_size": 2}}, 2)
    videos, scores = _scores(one, 2)
    assert videos == [(f"v{i}", str(label)) for i, label in enumerate(LABELS)]
    videos2, scores2 = _scores(two, 2)  # 2 ranks x batch 2 = 1 rank x batch 4; val shards padded (8 / 2 x 2)
    assert videos2 == videos and np.allclose(scores, scores2, atol=1e-5), np.abs(scores - scores2).max()
    metrics = json.loads((one / "metrics_epoch2.json").read_text())["groups"]["action"]
    assert metrics["top1"] == pytest.approx(np.mean(scores.argmax(1) == np.array(LABELS)))
    assert (one / "confusion_action_epoch2.png").is_file() and (one / "scores_epoch2.json").is_file()
    # stopped after epoch 1, then resumed: the same scores as the uninterrupted run
    config = _config(data, cut)
    _main({**config, "train": {**config["train"], "n_epochs": 1}}, 1)
    assert not (cut / "scores_epoch1.csv").exists()
    proc = _main(config, 1, "--resume")
    assert "resumed from" in proc.stdout + proc.stderr + (cut / "log.txt").read_text()
    assert np.array_equal(_scores(cut, 2)[1], scores)


def test_kill_9_mid_epoch_then_resume_gives_the_uninterrupted_scores(data, tmp_path):
    from stad.engine import checkpoint as ckpt
    from tests.engine.test_resume_mid_epoch import _kill_at

    def config(result: Path, **train) -> dict:
        base = _config(data, result)  # batch 2: 4 optimizer steps per epoch, 8 in all
        return {**base, "train": {**base["train"], "batch_size": 2, **train}}

    full, cut = tmp_path / "full", tmp_path / "cut"
    _main(config(full), 1)
    saving = config(cut, save_every_iters=1, keep_last=2)
    path = Path(saving["result_path"] + ".yaml")
    path.write_text(yaml.safe_dump(saving))
    _kill_at([sys.executable, "main.py", "--config", str(path), "--nproc_per_node", "1",
              "--master_port", str(_free_port())], ckpt.iter_checkpoint_path(cut, 2, 6))  # step 2 of epoch 2
    assert not (cut / "scores_epoch2.csv").exists()
    _main(saving, 1, "--resume")
    assert ", step " in (cut / "log.txt").read_text()  # resumed inside epoch 2
    assert np.array_equal(_scores(cut, 2)[1], _scores(full, 2)[1])
    assert [p.name for p in ckpt.list_checkpoints(cut)][-1] == "ckpt_2.pth"


def test_linear_probe_caches_features_once(data, tmp_path):
    result = tmp_path / "probe"
    config = _config(data, result)
    config["model"]["finetune"] = {"mode": "linear_probe"}
    config["recognition"]["probe"] = {"cache_features": True}
    config["recognition"]["test_clips"] = 2
    _main(config, 1)
    cached = sorted((result / "feature_cache").glob("*.npy"))
    assert [p.name.split("_")[0] for p in cached] == ["train", "val"]
    assert np.load(cached[0]).shape[:2] == (8, 1) and np.load(cached[1]).shape[:2] == (8, 2)  # val: 2 clip views
    first = _scores(result, 2)[1]
    config["result_path"] = str(tmp_path / "probe2")
    config["recognition"]["probe"]["cache_dir"] = str(result / "feature_cache")
    _main(config, 1)
    log = (tmp_path / "probe2" / "log.txt").read_text()
    assert log.count("from the cache") == 2 and "computed in" not in log
    assert np.allclose(_scores(tmp_path / "probe2", 2)[1], first, atol=1e-5)


@pytest.mark.parametrize("finetune, trainable", [
    ({"mode": "linear_probe"}, lambda n: n.startswith("head.")),
    ({"mode": "partial", "last_blocks": 1}, lambda n: n.startswith(("head.", "backbone.blocks.1.", "backbone.norm."))),
    ({"mode": "lora"}, lambda n: n.startswith("head.") or n.endswith(("lora_a", "lora_b"))),
])
def test_finetune_modes_apply_to_the_recognizer(data, tmp_path, finetune, trainable):
    from stad.engine import builders, recognition

    config = _config(data, tmp_path / "r")
    config["model"]["backbone"] = {"arch": "vit_tiny", "kwargs": {"img_size": 32, "num_frames": 4}}
    config["model"]["finetune"] = finetune
    cfg = config_from_dict(config)
    model = recognition.build_model(cfg)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and names == {n for n, _ in model.named_parameters() if trainable(n)}
    assert sum(p.numel() for p in builders.optimizer_params(model, cfg)) == sum(
        p.numel() for n, p in model.named_parameters() if n in names)


def test_layer_decay_groups_scale_vit_layers(data, tmp_path):
    from stad.engine import builders, recognition

    config = _config(data, tmp_path / "r")
    config["model"]["backbone"] = {"arch": "vit_tiny", "kwargs": {"img_size": 32, "num_frames": 4}}
    config["model"]["finetune"] = {"mode": "full", "layer_decay": 0.5}
    cfg = config_from_dict(config)
    groups = builders.optimizer_params(recognition.build_model(cfg), cfg)
    assert sorted({g["lr_scale"] for g in groups}) == [0.125, 0.25, 0.5, 1.0]  # vit_tiny: 2 blocks + embed + head
