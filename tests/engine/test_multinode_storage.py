"""The start-up check of per-rank inputs (stad.engine.storage), without processes."""
from __future__ import annotations

from pathlib import Path

from stad.config import load_config
from stad.engine import checkpoint as ckpt
from stad.engine.storage import RankView, local_view, needed_inputs, problems

ROOT = Path(__file__).resolve().parents[2]
TOY_CONFIG = ROOT / "configs" / "toy" / "vitsf_acar_train.yaml"


def _config(tmp_path: Path, *extra: str):
    return load_config(TOY_CONFIG, [f"result_path={tmp_path / 'r'}", f"train.root_path={tmp_path}/frames",
                                    f"train.annotation_path={tmp_path}/train.pkl", f"val.root_path={tmp_path}/frames",
                                    f"val.annotation_path={tmp_path}/val.pkl", *extra])


def test_needed_inputs_are_data_weights_and_the_evaluated_checkpoint(tmp_path):
    needed = needed_inputs(_config(tmp_path, "pretrain={path: w.pth}", "resume_path=ckpt.pth"))
    assert needed["train.annotation_path"] == f"{tmp_path}/train.pkl"
    assert needed["val.root_path"] == f"{tmp_path}/frames"
    assert needed["pretrain.path"] == "w.pth"
    assert "resume_path" not in needed  # training: rank 0 reads it and broadcasts
    evaluation = needed_inputs(_config(tmp_path, "evaluate=true", "resume_path=ckpt.pth"))
    assert "train.annotation_path" not in evaluation and "val.annotation_path" in evaluation
    assert evaluation["resume_path"] == "ckpt.pth"  # evaluation loads it on every rank


def test_local_view_sees_files_and_the_resume_checkpoint(tmp_path):
    config = _config(tmp_path, "evaluate=true")
    (tmp_path / "frames").mkdir()
    (tmp_path / "train.pkl").write_bytes(b"x")
    view = local_view(0, config, resume=True, probe=None)
    assert view.inputs["val.root_path"][1]
    assert not view.inputs["val.annotation_path"][1]
    assert view.resume is None
    saved = ckpt.checkpoint_path(config.result_path, 3)
    saved.parent.mkdir(parents=True)
    saved.write_bytes(b"12345")
    assert local_view(0, config, resume=True, probe=None).resume == ("checkpoints/ckpt_3.pth", 5)
    assert local_view(0, config, resume=False, probe=None).resume is None
    assert local_view(0, _config(tmp_path), resume=True, probe=None).resume is None  # training: broadcast
    assert not local_view(0, config, resume=False, probe=".absent").sees_probe


def test_problems_name_rank_host_and_file():
    ok = {"val.annotation_path": ("/data/val.pkl", True)}
    views = [RankView(0, "n1", ok), RankView(1, "n2", {"val.annotation_path": ("/data/val.pkl", False)})]
    assert problems([views[0], RankView(1, "n2", ok)]) == []
    (message,) = problems(views)
    assert message == "rank 1 (host n2) cannot read val.annotation_path=/data/val.pkl"
    # missing on rank 0 too: no difference between nodes, left to rank 0's preflight
    assert problems([RankView(0, "n1", {"val.annotation_path": ("/data/val.pkl", False)}), views[1]]) == []


def test_ranks_that_would_resume_from_different_checkpoints_are_a_problem():
    views = [RankView(0, "n1", resume=("checkpoints/ckpt_3.pth", 10)), RankView(1, "n2", resume=None)]
    (message,) = problems(views)
    assert "rank 0 (host n1) finds checkpoints/ckpt_3.pth (10 bytes)" in message
    assert "rank 1 (host n2) finds no checkpoint" in message and "storage all nodes share" in message
    assert problems([views[0], RankView(1, "n2", resume=("checkpoints/ckpt_3.pth", 10))]) == []
