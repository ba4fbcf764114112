"""The whole action model exported (ONNX, OpenVINO IR, TorchScript) equals PyTorch eager to 1e-4 with
zero, one and many boxes, on the toy model and on an R50 + HR2O-sized model; the exports' metadata
carries the preset; the Predictor's runtimes (onnx, openvino, auto) score like torch, and auto
measures once and caches its choice. Every file goes to pytest's temporary folder."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from stad.engine import action_runtimes
from stad.engine.action_export import (clip_shape_for, export_action_model, export_openvino, metadata_path,
                                       read_metadata, write_metadata)
from stad.engine.action_runtimes import OnnxActionNetwork, OpenVinoActionNetwork, RuntimeActionModel
from stad.models.action_model import build_action_model
from stad.models.export import SingleClipActionModel
from stad.models.presets import ModelPreset, get_preset

TOLERANCE = 1e-4
BOX_COUNTS = (0, 1, 6)


def _boxes(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(count, 2, generator=generator) * 0.6
    return torch.cat([corner, corner + 0.1 + torch.rand(count, 2, generator=generator) * 0.3], dim=1)


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter drawn (the zero-initialised position gate too, so that path is exercised)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=generator) / np.sqrt(p[0].numel()))
            else:
                p.copy_((1.0 if name.endswith("norm.weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=generator))
    return model.eval()


def _toy() -> tuple[torch.nn.Module, ModelPreset]:
    torch.manual_seed(0)
    preset = get_preset("toy_acar_vitsf_tiny")
    return _randomised(preset.build_model()), preset


def _runners(path_onnx, path_ir, path_ts) -> dict:
    traced = torch.jit.load(str(path_ts))

    def torchscript(clip, boxes):
        with torch.no_grad():
            return traced(torch.from_numpy(clip), torch.from_numpy(boxes)).numpy()

    return {"onnx": OnnxActionNetwork(path_onnx, 2), "openvino": OpenVinoActionNetwork(path_ir, 2),
            "torchscript": torchscript}


def _export_all(model, preset, folder, clip_shape):
    """model.onnx, model.xml (converted from that ONNX file, as `export_action_model` does: one trace
    fewer), model.pt, each with its metadata."""
    net = SingleClipActionModel(model).eval()
    onnx_path = export_action_model(net, folder / "model", "onnx", clip_shape, preset=preset)
    ir_path = export_openvino(onnx_path, folder / "model.xml")
    write_metadata(ir_path, "openvino", clip_shape, model.num_classes, preset)
    return [onnx_path, ir_path, export_action_model(net, folder / "model", "torchscript", clip_shape, preset=preset)]


def _max_diffs(model, runners, clip_shape, seed=0) -> dict:
    clip = torch.randn(clip_shape, generator=torch.Generator().manual_seed(seed))
    out = {}
    for count in BOX_COUNTS:
        boxes = _boxes(count, seed + count)
        with torch.no_grad():
            reference = model(clip, [boxes]).numpy()
        assert reference.shape == (count, model.num_classes)
        for name, run in runners.items():
            got = run(clip.numpy(), boxes.numpy())
            assert got.shape == reference.shape, (name, count)
            out[name, count] = float(np.abs(got - reference).max()) if count else 0.0
    return out


def test_toy_model_exports_equal_pytorch_with_zero_one_and_many_boxes(tmp_path):
    model, preset = _toy()
    clip_shape = clip_shape_for(preset.preprocessing, 320, 240)
    assert clip_shape == (1, 3, 8, 120, 160)
    paths = _export_all(model, preset, tmp_path, clip_shape)
    assert [p.name for p in paths] == ["model.onnx", "model.xml", "model.pt"]
    runners = _runners(*paths)
    diffs = _max_diffs(model, runners, clip_shape)
    assert max(diffs.values()) < TOLERANCE, diffs
    # 1, 2, ..., 20 boxes in turn on one request: openvino's CPU runtime cache gave wrong logits from 16 on
    clip = torch.randn(clip_shape, generator=torch.Generator().manual_seed(1))
    for count in range(1, 21):
        boxes = _boxes(count, count)
        with torch.no_grad():
            reference = model(clip, [boxes]).numpy()
        for name in ("onnx", "openvino"):
            got = runners[name](clip.numpy(), boxes.numpy())
            assert np.abs(got - reference).max() < TOLERANCE, (name, count)
    meta = read_metadata(paths[0])
    assert metadata_path(paths[0]).name == "model.onnx.json"
    assert meta["inputs"]["clip"]["shape"] == [1, 3, 8, 120, 160]
    assert meta["inputs"]["boxes"]["shape"] == ["num_boxes", 4]
    assert ModelPreset.from_dict(meta["preset"]) == preset


def test_linear_head_model_exports(tmp_path):
    torch.manual_seed(1)
    model = _randomised(build_action_model("vitsf", "linear", 7, vit="vit_tiny", slowfast="slowfast_tiny"))
    clip_shape = (1, 3, 8, 96, 128)
    diffs = _max_diffs(model, _runners(*_export_all(model, None, tmp_path, clip_shape)), clip_shape)
    assert max(diffs.values()) < TOLERANCE, diffs


def test_r50_hr2o_sized_model_exports_equal_pytorch(tmp_path):
    """ACAR-Net's AVA R50 + HR2O architecture (its model-zoo key layout, weights drawn from the manifest),
    on a smaller clip than AVA's 32 x 256 x 341 to keep the test short."""
    from stad.engine.builders import load_weights
    from tests.models.models_testutils import load_manifest, random_state_dict

    start = time.perf_counter()
    preset = get_preset("acar_slowfast_r50_ava")
    model = preset.build_model()
    load_weights(model, {"state_dict": random_state_dict(load_manifest("acar_ava_slowfast_r50_hr2o"), seed=0)},
                 strict=True)
    model.eval()
    clip_shape = (1, 3, 16, 128, 160)
    net = SingleClipActionModel(model).eval()
    onnx_path = export_action_model(net, tmp_path / "r50", "onnx", clip_shape, preset=preset)
    ir_path = export_openvino(onnx_path, tmp_path / "r50.xml")
    runners = {"onnx": OnnxActionNetwork(onnx_path, 2), "openvino": OpenVinoActionNetwork(ir_path, 2)}
    diffs = _max_diffs(model, runners, clip_shape)
    assert max(diffs.values()) < TOLERANCE, diffs
    assert time.perf_counter() - start < 120


def test_predictor_runtimes_score_like_torch_and_auto_caches_its_choice(tmp_path, monkeypatch):
    from stad.engine.inference import Predictor
    from stad.structures import Boxes

    model, preset = _toy()
    frames = [np.random.default_rng(i).integers(0, 255, (240, 320, 3), dtype=np.uint8) for i in range(8)]
    boxes = Boxes(np.array([[0.1, 0.2, 0.4, 0.9], [0.5, 0.1, 0.8, 0.95], [0.3, 0.3, 0.6, 0.7]], np.float32))
    reference = Predictor(model, preset.preprocessing).predict_clip(frames, boxes)
    for runtime in ("onnx", "openvino"):
        predictor = Predictor(model, preset.preprocessing, runtime=runtime, runtime_cache=tmp_path)
        assert predictor.runtime == runtime
        np.testing.assert_allclose(predictor.predict_clip(frames, boxes), reference, atol=TOLERANCE)
    assert len(list(tmp_path.glob("action-*-8x120x160-torch*.onnx"))) == 1  # exported once, shared

    auto = Predictor(model, preset.preprocessing, runtime="auto", runtime_cache=tmp_path)
    assert auto.runtime == "auto"
    np.testing.assert_allclose(auto.predict_clip(frames, boxes), reference, atol=TOLERANCE)
    assert auto.runtime in ("torch", "onnx", "openvino")
    (choice_file,) = tmp_path.glob("*.runtime.json")
    record = json.loads(choice_file.read_text())
    assert record["choice"] == auto.runtime and set(record["seconds"]) == {"torch", "onnx", "openvino"}

    def no_measuring(*args, **kwargs):
        raise AssertionError("auto measured again although its choice is cached")

    monkeypatch.setattr(action_runtimes, "measure_runtimes", no_measuring)
    again = Predictor(model, preset.preprocessing, runtime="auto", runtime_cache=tmp_path)
    again.predict_clip(frames, boxes)
    assert again.runtime == record["choice"]


def test_auto_runs_torch_when_nothing_can_be_measured(tmp_path, monkeypatch):
    model, _ = _toy()
    monkeypatch.setattr(action_runtimes, "installed_runtimes", lambda: ["torch"])
    wrapped = RuntimeActionModel(model, "auto", cache_dir=tmp_path)
    clips, boxes = torch.randn(2, 3, 8, 120, 160), [_boxes(2, 0), _boxes(0, 1)]
    with torch.no_grad():
        assert torch.equal(wrapped(clips, boxes), model(clips, boxes))  # the eager batch itself
    assert wrapped.chosen == "torch" and not list(tmp_path.iterdir())


def test_exported_runtime_runs_a_batch_clip_by_clip_and_a_padded_clip_on_its_own_pixels(tmp_path):
    model, _ = _toy()
    wrapped = RuntimeActionModel(model, "onnx", cache_dir=tmp_path)
    clips = torch.randn(3, 3, 8, 120, 160)
    boxes = [_boxes(2, 0), _boxes(0, 1), _boxes(3, 2)]
    with torch.no_grad():
        got = wrapped(clips, boxes)
        expected = torch.cat([model(clips[i:i + 1], [boxes[i]]) for i in range(3)])
        assert got.shape == (5, model.num_classes)
        assert (got - expected).abs().max() < TOLERANCE
        padded = wrapped(clips[:2], boxes[:2], sizes=[(1.0, 1.0), (0.8, 0.9)])  # clip 1 has no boxes: no row
        assert (padded - model(clips[:1], boxes[:1])).abs().max() < TOLERANCE


def test_unknown_runtime_is_a_clear_error():
    model, preset = _toy()
    from stad.engine.inference import Predictor

    with pytest.raises(action_runtimes.ActionRuntimeError, match="unknown action-model runtime 'tensorrt'"):
        Predictor(model, preset.preprocessing, runtime="tensorrt")


def test_export_cli_and_demo_action_runtime(tmp_path):
    """`python -m stad.export` (the app's main) writes the file and its preset; the demo with
    `--action-runtime onnx` gives the torch run's scores; exports land beside the weights."""
    from stad.apps import demo, export
    from stad.config import config_to_dict, load_config
    from stad.engine import builders
    from stad.engine.checkpoint import save_checkpoint
    from tests.e2e.demo_testutils import tiny_model, write_test_video

    config_path, _ = tiny_model(tmp_path)
    config = load_config(config_path)
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "w" / "ckpt_1.pth", epoch=1, model=builders.build_model(config),
                              config=config_to_dict(config))
    assert export.main(["--weights", str(weights), "--format", "onnx", "--out", str(tmp_path / "x" / "m"),
                        "--check"]) == 0
    meta = read_metadata(tmp_path / "x" / "m.onnx")
    assert meta["preset"]["preprocessing"]["num_classes"] == 11 and meta["inputs"]["clip"]["shape"][0] == 1

    video = write_test_video(tmp_path / "v.mp4", width=96, height=72, fps=30, seconds=2.0)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("v,0,0.05,0.20,0.30,0.90,,0.9\nv,1,0.30,0.25,0.45,0.90,,0.8\nv,1,0.65,0.15,0.85,0.85,,0.7\n")
    scores = {}
    for runtime in ("torch", "onnx"):
        summary = demo.run(demo.parse_args(["--video", str(video), "--weights", str(weights), "--boxes", str(boxes),
                                            "--out", str(tmp_path / f"{runtime}.mp4"), "--no-progress",
                                            "--action-runtime", runtime]))
        assert summary["action_runtime"] == runtime
        scores[runtime] = np.concatenate([p.scores for p in summary["predictions"]])
    assert scores["torch"].shape == (3, 11)
    np.testing.assert_allclose(scores["onnx"], scores["torch"], atol=TOLERANCE)
    assert [p.suffix for p in sorted((tmp_path / "w").iterdir())] == [".onnx", ".pth"]
