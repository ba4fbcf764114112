"""Checkpoints carry their preset; a config that disagrees with the weights' preprocessing is an error."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from stad.config import ConfigError, config_to_dict, load_config
from stad.data.formats.labelmap import write_labelmap
from stad.data.toy.actions import toy_labelmap
from stad.engine import builders, checkpoint as ckpt
from stad.models.presets import ModelPreset, UnknownLayoutError, get_preset
from tests.models.models_testutils import load_manifest, meta_state_dict

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "toy" / "demo_acar.yaml"
AVA_EVAL = ROOT / "configs" / "ava" / "eval_SLOWFAST_R50_ACAR_HR2O.yaml"
LOG = logging.getLogger("test.preset")
R50_NORM = ("val.augmentation.spatial=[{type: Scale, kwargs: {resize: 256}}, {type: ToTensor, kwargs: {norm_value: 255.}},"
            " {type: Normalize, kwargs: {mean: [0.45, 0.45, 0.45], std: [0.225, 0.225, 0.225]}}]")
R101_NORM = ("val.augmentation.spatial=[{type: Scale, kwargs: {resize: 256}}, {type: ToTensor, kwargs: {norm_value: 1.}},"
             " {type: Normalize, kwargs: {mean: [110.63666788, 103.16065604, 96.29023126],"
             " std: [38.7568578, 37.88248729, 40.02898126]}}]")
# the toy demo model at a CPU-test size (64x64 clips of 4 frames)
TINY = ("model.backbone.sub_kwargs.num_frames=4", "model.backbone.sub_kwargs.img_size=64",
        "val.augmentation.temporal.kwargs.size=16", "train.augmentation.temporal.kwargs.size=16",
        "val.augmentation.spatial=[{type: Scale, kwargs: {resize: [64, 64]}}, {type: ToTensor, kwargs: {norm_value: 255.}}]")


def toy_config(tmp_path: Path, *sets: str):
    labelmap = tmp_path / "labelmap.pbtxt"
    write_labelmap(toy_labelmap(), labelmap)
    return load_config(DEMO, [f"val.eval_mAP.labelmap={labelmap}", *sets])


def acar_r50_zoo_file() -> dict:
    return {"state_dict": meta_state_dict(load_manifest("acar_ava_slowfast_r50_hr2o")), "optimizer": {}}


def test_toy_preset_states_what_the_demo_config_says(tmp_path):
    """The registered toy preset and configs/toy/demo_acar.yaml agree on model and preprocessing."""
    config = toy_config(tmp_path)
    preset = get_preset("toy_acar_vitsf_tiny")
    from_config = builders.preset_from_config(config)
    assert from_config.preprocessing.differences(preset.preprocessing) == []
    assert from_config.preprocessing.label_ids == preset.preprocessing.label_ids == tuple(range(1, 12))
    assert from_config.preprocessing.label_names == toy_labelmap().names  # the run's config knows the names
    assert from_config.preprocessing.fps is None  # the frame rate comes from the annotation pickle (absent here)
    assert dict(from_config.model_kwargs) == dict(preset.model_kwargs)


def test_saved_checkpoint_carries_its_preset_and_reads_back(tmp_path):
    config = toy_config(tmp_path, *TINY)
    model = builders.build_model(config)
    path = ckpt.save_checkpoint(tmp_path / "ckpt_1.pth", epoch=1, model=model, config=config_to_dict(config))
    state = ckpt.read_checkpoint(path)
    assert isinstance(state["preset"], dict)  # plain values: no class needed to unpickle it
    preset = ckpt.checkpoint_preset(state)
    assert preset == builders.preset_from_config(config)
    pre = preset.preprocessing
    assert (pre.resize, pre.clip_len, pre.frame_stride, pre.norm_value, pre.mean, pre.std) == \
        ((64, 64), 4, 4, 255.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert (pre.activation, pre.exclusive) == ("pose_softmax", (0, 1, 2))
    assert pre.label_names == toy_labelmap().names
    # the preset alone rebuilds the model the weights fit
    preset.build_model().load_state_dict(state["state_dict"], strict=True)
    found, reason = builders.weights_preset(state, "ckpt_1.pth")
    assert found == preset and "stored in ckpt_1.pth" in reason


def test_old_checkpoint_without_preset_derives_it_from_its_config(tmp_path):
    config = toy_config(tmp_path, *TINY)
    state = {"format": ckpt.FORMAT, "epoch": 3, "state_dict": {}, "config": config_to_dict(config)}
    preset, reason = builders.weights_preset(state, "old.pth")
    assert preset.preprocessing == builders.preprocessing_from_config(config)
    assert "before presets" in reason


def test_r50_model_zoo_weights_with_r101_normalisation_is_an_error():
    """The bug this guards against: ACAR-Net's R50 file evaluated with the R101 config's pixel statistics."""
    preset, reason = builders.weights_preset(acar_r50_zoo_file(), "AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar")
    assert preset.name == "acar_slowfast_r50_ava" and "inferred from the key layout" in reason
    config = load_config(AVA_EVAL, [R101_NORM])
    with pytest.raises(ConfigError) as info:
        builders.check_preprocessing(config, preset, reason, LOG)
    message = str(info.value)
    assert "val.augmentation.spatial ToTensor.norm_value: config 1.0 vs weights 255.0" in message
    assert "Normalize.mean: config [110.63666788, 103.16065604, 96.29023126] vs weights [0.45, 0.45, 0.45]" in message
    assert "Normalize.std" in message and "preprocessing_override" in message
    assert builders.check_preprocessing(load_config(AVA_EVAL, [R50_NORM]), preset, reason, LOG) == []


def test_override_key_runs_anyway_and_logs_the_fields(caplog):
    preset, reason = builders.weights_preset(acar_r50_zoo_file(), "r50.pth.tar")
    config = load_config(AVA_EVAL, [R101_NORM, "preprocessing_override=true",
                                    "val.augmentation.temporal.kwargs.step=4"])
    with caplog.at_level(logging.WARNING, logger="test.preset"):
        diffs = builders.check_preprocessing(config, preset, reason, LOG)
    assert {f for f, _, _ in diffs} == {"norm_value", "mean", "std", "clip_len", "frame_stride"}
    assert "preprocessing_override" in caplog.text and "TemporalCenterCrop.step: config 4 vs weights 2" in caplog.text


def test_activation_and_class_ids_mismatch(tmp_path):
    config = toy_config(tmp_path, *TINY)
    preset = builders.preset_from_config(config)
    sigmoid = toy_config(tmp_path, *TINY, "loss={type: ava_criterion, kwargs: {pose_softmax: False}}")
    with pytest.raises(ConfigError, match=r"loss \(pose softmax or sigmoid\): config sigmoid vs weights pose_softmax"):
        builders.check_preprocessing(sigmoid, preset, "test", LOG)
    other_ids = tmp_path / "other.pbtxt"
    labels = toy_labelmap()
    write_labelmap(type(labels)(tuple(i + 100 for i in labels.ids), labels.names), other_ids)
    with pytest.raises(ConfigError, match=r"val.eval_mAP.labelmap \(class ids\): config \[101, 102"):
        builders.check_preprocessing(toy_config(tmp_path, *TINY, f"val.eval_mAP.labelmap={other_ids}"), preset,
                                     "test", LOG)


def test_load_checked_weights(tmp_path, caplog):
    config = toy_config(tmp_path, *TINY)
    torch.manual_seed(0)
    model = builders.build_model(config)
    path = ckpt.save_checkpoint(tmp_path / "ckpt_1.pth", epoch=1, model=model, config=config_to_dict(config))
    state = ckpt.read_checkpoint(path)
    fresh = builders.build_model(config)
    builders.load_checked_weights(fresh, state, config, LOG, str(path))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    strided = toy_config(tmp_path, *TINY, "val.augmentation.temporal.kwargs.step=2")
    with pytest.raises(ConfigError, match="TemporalCenterCrop.step: config 2 vs weights 4"):
        builders.load_checked_weights(builders.build_model(strided), state, strided, LOG, str(path))
    # a bare state dict of ours (no preset, no config): loaded strictly, unchecked, and said so
    with caplog.at_level(logging.WARNING, logger="test.preset"):
        builders.load_checked_weights(fresh, {"state_dict": model.state_dict()}, config, LOG, "bare.pth")
    assert "preprocessing not checked" in caplog.text
    with pytest.raises(UnknownLayoutError, match="Known layouts: acar_slowfast_r50_ava"):
        builders.weights_preset({"state_dict": model.state_dict()}, "bare.pth")
    assert isinstance(ModelPreset.from_dict(state["preset"]), ModelPreset)


def test_main_py_evaluation_refuses_mismatched_preprocessing_unless_overridden(tmp_path):
    """Through main.py: a checkpoint of ours evaluated with another pixel scale fails naming the field;
    ``--set preprocessing_override=true`` evaluates and logs the overridden field as a WARNING."""
    import os
    import subprocess
    import sys

    toy = tmp_path / "toy"
    subprocess.run([sys.executable, "-m", "stad.data.toy", "--out", str(toy), "--seed", "0", "--size", "tiny",
                    "--no-video", "--workers", "1"], check=True, cwd=ROOT, capture_output=True, stdin=subprocess.DEVNULL)
    data = [f"train.root_path={toy}/frames", f"train.annotation_path={toy}/annotations/train.pkl",
            f"val.root_path={toy}/frames", f"val.annotation_path={toy}/annotations/val.pkl",
            f"val.eval_mAP.groundtruth={toy}/val.csv", f"val.eval_mAP.exclusions={toy}/val_excluded_timestamps.csv"]
    config = toy_config(tmp_path, *TINY, *data, f"val.eval_mAP.labelmap={toy}/labelmap.pbtxt")
    weights = ckpt.save_checkpoint(tmp_path / "ckpt_1.pth", epoch=1, model=builders.build_model(config),
                                   config=config_to_dict(config))
    config_path = tmp_path / "eval.yaml"
    import yaml

    config_path.write_text(yaml.safe_dump(config_to_dict(config)))
    scale_1 = ("val.augmentation.spatial=[{type: Scale, kwargs: {resize: [64, 64]}}, "
               "{type: ToTensor, kwargs: {norm_value: 1.}}]")

    def main(*sets: str, result: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "main.py", "--config", str(config_path), "--nproc_per_node", "1",
               "--set", "evaluate=True", "--set", f"resume_path={weights}", "--set", f"result_path={tmp_path / result}"]
        for item in sets:
            cmd += ["--set", item]
        return subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)),
                              capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)

    refused = main(scale_1, result="refused")
    assert refused.returncode != 0
    assert "the config's preprocessing disagrees with the weights' (the preset stored in" in refused.stderr
    assert "ToTensor.norm_value: config 1.0 vs weights 255.0" in refused.stderr
    assert not list((tmp_path / "refused").glob("predict_epoch*.csv"))
    overridden = main(scale_1, "preprocessing_override=true", result="overridden")
    assert overridden.returncode == 0, overridden.stderr[-2000:]
    log = (tmp_path / "overridden" / "log.txt").read_text()
    assert "WARNING preprocessing_override" in log and "ToTensor.norm_value: config 1.0 vs weights 255.0" in log
    assert (tmp_path / "overridden" / "predict_epoch1.csv").is_file()
    assert ckpt.checkpoint_preset(torch.load(weights, weights_only=False)).preprocessing.fps == 30.0  # toy pickle
    matching = main(result="matching")
    assert matching.returncode == 0 and "matches the weights" in (tmp_path / "matching" / "log.txt").read_text()
