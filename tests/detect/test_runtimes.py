"""onnx/openvino network runtimes: cached export, boxes equal to the torch runtime, clear errors."""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detect import proposals, runtimes
from detect.detector import PersonDetector
from detect.runtimes import RuntimeUnavailableError, check_runtime, export_onnx, resolve_runtime
from detect.streams import plan_batch
from tests.detect.offline_testutils import NETWORK_TRAP, PIP_TRAP

needs_onnx = pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="onnx not installed")


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("exports")


def _assert_same_boxes(got, expected, atol=1e-4):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert len(a) == len(b)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=atol)
        np.testing.assert_allclose(a.scores, b.scores, atol=atol)


@needs_onnx
def test_export_is_cached_and_never_redone(coco_weights, export_cache, monkeypatch):
    path = export_onnx(coco_weights, export_cache, imgsz=160)
    assert path.is_file() and path.suffix == ".onnx" and path.parent == export_cache
    assert runtimes.weights_digest(coco_weights)[:16] in path.name
    assert not list(export_cache.glob(".export-*"))          # the scratch folder is gone
    stamp = path.stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("re-exported although the cached file exists")

    monkeypatch.setattr("ultralytics.engine.model.Model.export", no_export)
    assert export_onnx(coco_weights, export_cache, imgsz=320) == path
    assert path.stat().st_mtime_ns == stamp


def test_default_cache_is_beside_the_weights(tmp_path, monkeypatch):
    weights = tmp_path / "models" / "det.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"not really weights")
    monkeypatch.delenv(runtimes.CACHE_ENV, raising=False)
    assert runtimes.default_cache_dir(weights) == weights.parent.resolve()
    monkeypatch.setattr(runtimes.os, "access", lambda path, mode: False)      # a read-only model folder
    assert runtimes.default_cache_dir(weights) == Path.home() / ".cache" / "stad" / "detector_exports"
    monkeypatch.setenv(runtimes.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert runtimes.default_cache_dir(weights) == tmp_path / "elsewhere"
    assert runtimes.onnx_export_path(weights, tmp_path).name.startswith(
        f"det-{runtimes.weights_digest(weights)[:16]}-ul")


@needs_onnx
def test_failed_export_leaves_nothing_behind(coco_weights, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr("ultralytics.engine.model.Model.export", broken)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export_onnx(coco_weights, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


@needs_onnx
@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_runtime_gives_the_torch_boxes(runtime, coco_weights, export_cache, frame_image):
    pytest.importorskip("onnxruntime" if runtime == "onnx" else "openvino")
    torch_detector = PersonDetector(coco_weights, imgsz=160, conf=0.3)
    detector = PersonDetector(coco_weights, imgsz=160, conf=0.3, runtime=runtime, export_cache=export_cache)
    assert detector.runtime == runtime and detector.network is not None
    frames = [frame_image(i) for i in range(5)]               # 160x120 -> letterboxed 160x128 (rect)
    frames.append(np.ascontiguousarray(frame_image(7)[:, :100]))  # another letterbox shape
    frames.append(frame_image(3, with_people=False))
    expected = torch_detector.detect(frames)
    assert sum(len(b) for b in expected) > 0
    _assert_same_boxes(detector.detect(frames), expected)
    # a partial batch and one image: other input shapes of the same dynamic export
    _assert_same_boxes(detector.detect(frames[:1]), expected[:1])
    _assert_same_boxes(detector.detect(frames[1:4]), expected[1:4])
    twin = detector.replica(threads=2)
    assert twin.network is not detector.network and twin.network.threads == 2
    _assert_same_boxes(twin.detect(frames), expected)


@needs_onnx
@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed")
def test_cli_runtime_onnx_writes_the_torch_proposals(tmp_path, coco_weights, export_cache, make_frames):
    frames = make_frames(tmp_path / "frames", "vid_r", [31, 61, 91, 121, 151])
    keys = tmp_path / "keys.csv"
    keys.write_text("".join(f"vid_r,{t:04d}\n" for t in (1, 2, 3, 4, 5)))
    outputs = []
    for runtime, streams in (("torch", "1"), ("onnx", "2"), ("onnx", "1")):
        out = tmp_path / f"p_{runtime}{streams}.pkl"
        argv = ["--weights", str(coco_weights), "--source", str(frames), "--annotations", str(keys),
                "--dataset", "toy", "--out", str(out), "--imgsz", "160", "--batch", "2", "--conf", "0.3",
                "--threads", "2", "--streams", streams, "--runtime", runtime, "--export-cache", str(export_cache),
                "--no-progress"]
        assert proposals.main(argv) == 0
        with open(out, "rb") as handle:
            outputs.append(pickle.load(handle)[0])
    assert sum(len(e["labels"]) for e in outputs[0]) > 0
    for other in outputs[1:]:
        assert [(e["time"], len(e["labels"])) for e in other] == [(e["time"], len(e["labels"])) for e in outputs[0]]
        for a, b in zip(outputs[0], other):
            for box_a, box_b in zip(a["labels"], b["labels"]):
                np.testing.assert_allclose(box_a["bounding_box"], box_b["bounding_box"], atol=1e-4)
                assert box_a["score"] == pytest.approx(box_b["score"], abs=1e-4)


def test_unknown_runtime_is_a_clear_error(coco_weights):
    with pytest.raises(ValueError, match=r"unknown detector runtime 'onxx' \(did you mean 'onnx'\?\)"):
        check_runtime("onxx")
    with pytest.raises(ValueError, match="choose one of torch, onnx, openvino or auto"):
        PersonDetector(coco_weights, runtime="tensorrt")
    with pytest.raises(SystemExit):
        proposals.parse_args(["--weights", "w.pt", "--source", "s", "--out", "o.pkl", "--runtime", "tflite"])


def test_missing_runtime_package_is_a_clear_error(coco_weights, tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("onnxruntime", "openvino") else real_find_spec(name, *a))
    with pytest.raises(RuntimeUnavailableError, match=r"'onnx' needs the Python package\(s\) onnxruntime"):
        PersonDetector(coco_weights, runtime="onnx", export_cache=tmp_path)
    with pytest.raises(RuntimeUnavailableError, match="pip install -r requirements.txt"):
        check_runtime("openvino")
    assert check_runtime("torch") == "torch"
    assert not list(tmp_path.iterdir())                        # failed before exporting anything


def test_network_runtimes_are_cpu_only(coco_weights, tmp_path):
    with pytest.raises(ValueError, match="CPU only"):
        PersonDetector(coco_weights, runtime="onnx", device="cuda:0", export_cache=tmp_path)


def test_plan_batch_per_runtime():
    assert plan_batch("cpu") == plan_batch("cpu", 0, "torch") == 4
    assert plan_batch("cpu", 0, "onnx") == plan_batch("cpu", 0, "openvino") == 2
    assert plan_batch("cpu", 3, "onnx") == 3 and plan_batch("cuda:0", 0, "torch") == 16


def test_auto_runtime(coco_weights, export_cache, monkeypatch):
    assert resolve_runtime("auto", "cuda:0") == "torch"
    assert resolve_runtime("auto", "cpu", end2end=True) == "torch"      # NMS-free heads stay on torch
    assert resolve_runtime("onnx", "cpu") == "onnx"
    real_find_spec = importlib.util.find_spec

    def without(*missing):
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name in missing else real_find_spec(name, *a))

    without("openvino")
    assert resolve_runtime("auto", "cpu") == "onnx"                     # the next one installed
    without("openvino", "onnxruntime")
    assert resolve_runtime("auto", "cpu") == "torch"                    # none installed: torch, no error
    monkeypatch.undo()
    assert runtimes.AUTO_CPU_RUNTIMES == ("openvino", "onnx")
    if importlib.util.find_spec("openvino") is not None:
        assert resolve_runtime("auto", "cpu") == "openvino"
        assert PersonDetector(coco_weights, imgsz=160, runtime="auto", export_cache=export_cache).runtime == "openvino"

OFFLINE_SCRIPT = NETWORK_TRAP + PIP_TRAP + r'''
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
tmp = Path(sys.argv[2])
from detect.detector import PersonDetector, build_untrained_detector
weights = build_untrained_detector(tmp / "coco.pt", {0: "person", 1: "car"})
import numpy as np
image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
counts = {}
for runtime in sys.argv[3:]:
    detector = PersonDetector(weights, imgsz=64, conf=0.3, runtime=runtime, export_cache=tmp / "cache")
    counts[runtime] = len(detector.detect([image])[0])
print(json.dumps({"attempts": attempts, "counts": counts, "cached": sorted(p.name for p in (tmp / "cache").iterdir())}))
'''


def test_export_and_runtimes_never_touch_the_network_or_pip(tmp_path):
    wanted = [r for r, module in (("onnx", "onnxruntime"), ("openvino", "openvino"))
              if importlib.util.find_spec(module) is not None]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "ULTRALYTICS"))}
    env["YOLO_CONFIG_DIR"] = str(tmp_path / "ultralytics_config")
    env["OMP_NUM_THREADS"] = "1"
    env.pop("CI", None)  # OpenVINO tools skip telemetry on CI: this run must not need that
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, str(root), str(tmp_path), "torch", *wanted],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["attempts"] == [], report["attempts"]
    assert len(set(report["counts"].values())) == 1, report["counts"]   # same box count on every runtime
    assert len(report["cached"]) == (1 if wanted else 0) and all(n.endswith(".onnx") for n in report["cached"])


RACE_SCRIPT = r'''
import sys, threading
import numpy as np
sys.path.insert(0, sys.argv[1])
from detect.runtimes import OpenVinoNetwork
networks = [OpenVinoNetwork(sys.argv[2], 1) for _ in range(4)]
images = np.zeros((1, 3, 64, 64), np.float32)
for network in networks:
    network._request_for(images.shape)      # compiled beforehand: the threads meet at their first infer
barrier = threading.Barrier(len(networks))
def first_infer(network):
    barrier.wait()
    network(images)
threads = [threading.Thread(target=first_infer, args=(n,)) for n in networks]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("all streams ran")
'''


@needs_onnx
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
def test_openvino_streams_starting_together_do_not_deadlock(coco_weights, export_cache, tmp_path):
    """Regression: 2 of 3 fresh processes hung here before OpenVinoNetwork set up pybind11's numpy
    bindings in the constructing thread."""
    path = export_onnx(coco_weights, export_cache)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", RACE_SCRIPT, str(root), str(path)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("all streams ran")
