"""The demo pipeline's stage plan, without running any stage: order, skips, and what each stage is given."""
from __future__ import annotations

from pathlib import Path

import pytest

from stad.apps import demo_pipeline
from stad.apps.demo_pipeline import Pipeline, parse_args, run_pipeline


class RecordingPipeline(Pipeline):
    """Records the stages instead of running them; fakes the files later stages read."""

    def run(self, name, args, env=None):
        args = [str(a) for a in args]
        self.commands[name] = args
        if "--set" in args:  # main.py: a predictions CSV in its result folder
            result = Path(next(a.split("=", 1)[1] for a in args if a.startswith("result_path=")))
            result.mkdir(parents=True, exist_ok=True)
            (result / "predict_epoch8.csv").write_text("")


@pytest.fixture
def toy(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    toy = out / "data" / "toy"
    toy.mkdir(parents=True)
    (toy / "val.csv").write_text("toy_val_000,0001,0.1,0.1,0.5,0.9,1,0\n"
                                 "toy_val_001,0001,0.1,0.1,0.5,0.9,1,0\ntoy_val_001,0001,0.1,0.1,0.5,0.9,4,0\n")
    monkeypatch.setattr(demo_pipeline, "data_is_current", lambda *args: True)
    return out


def _run(out, *argv):
    pipe = RecordingPipeline(out)
    meta = run_pipeline(pipe, parse_args(["--out", str(out), *argv]), out)
    return pipe, meta


def test_plan_with_a_detector(toy, tmp_path):
    detector = tmp_path / "det.pt"
    detector.write_bytes(b"weights")
    pipe, meta = _run(toy, "--detector", str(detector), "--linear-e2e")
    assert list(pipe.commands) == ["proposals", "detector_eval", "train_acar", "eval_acar_det", "train_linear",
                                   "train_linear_e2e", "map_acar_gt", "map_linear_gt", "map_linear_e2e_gt",
                                   "map_acar_det", "video", "report"]
    assert list(pipe.skipped) == ["data"] and "already holds" in pipe.skipped["data"]
    proposals = str(toy / "proposals" / "val_proposals.pkl")
    assert f"val.annotation_path={proposals}" in pipe.commands["eval_acar_det"]
    assert f"val.min_score={demo_pipeline.PROPOSAL_MIN_SCORE}" in pipe.commands["eval_acar_det"]
    checkpoint = toy / "acar" / "checkpoints" / "last.pth"
    assert f"pretrain.path={checkpoint}" in pipe.commands["train_linear"]
    video = pipe.commands["video"]
    assert video[video.index("--video") + 1] == str(toy / "data" / "toy" / "videos" / "toy_val_001.mp4")
    assert "--detector" in video and "--boxes" not in video
    assert set(meta["maps"]) == {"acar_gt", "linear_gt", "linear_e2e_gt", "acar_det"}
    assert (toy / "pipeline.json").is_file()


def test_plan_without_a_detector_uses_gt_boxes(toy, tmp_path):
    pipe, meta = _run(toy, "--detector", str(tmp_path / "missing.pt"), "--fast")
    assert set(pipe.skipped) == {"data", "proposals", "detector_eval", "eval_acar_det"}
    assert "missing" in pipe.skipped["proposals"]
    assert list(pipe.commands) == ["train_acar", "train_linear", "map_acar_gt", "map_linear_gt", "video", "report"]
    assert "train.n_epochs=2" in pipe.commands["train_acar"]
    video = pipe.commands["video"]
    assert video[video.index("--boxes") + 1] == str(toy / "data" / "toy" / "val.csv") and "--detector" not in video
    assert meta["detector"] is None and set(meta["maps"]) == {"acar_gt", "linear_gt"}
