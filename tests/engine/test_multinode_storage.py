"""The start-up check of per-rank inputs (stad.engine.storage), without processes."""
from __future__ import annotations

from pathlib import Path

from stad.config import load_config
from stad.engine.storage import RankView, local_view, needed_inputs, problems

ROOT = Path(__file__).resolve().parents[2]
TOY_CONFIG = ROOT / "configs" / "toy" / "vitsf_acar_train.yaml"


def _config(tmp_path: Path, *extra: str):
    return load_config(TOY_CONFIG, [f"result_path={tmp_path / 'r'}", f"train.root_path={tmp_path}/frames",
                                    f"train.annotation_path={tmp_path}/train.pkl", f"val.root_path={tmp_path}/frames",
                                    f"val.annotation_path={tmp_path}/val.pkl", *extra])


def test_needed_inputs_are_data_and_weights_not_the_checkpoint(tmp_path):
    needed = needed_inputs(_config(tmp_path, "pretrain={path: w.pth}", "resume_path=ckpt.pth"))
    assert needed["train.annotation_path"] == f"{tmp_path}/train.pkl"
    assert needed["val.root_path"] == f"{tmp_path}/frames"
    assert needed["pretrain.path"] == "w.pth"
    assert "resume_path" not in needed  # rank 0 reads it and broadcasts
    evaluation = needed_inputs(_config(tmp_path, "evaluate=true", "resume_path=ckpt.pth"))
    assert "train.annotation_path" not in evaluation and "val.annotation_path" in evaluation
    assert "resume_path" not in evaluation  # evaluation too: rank 0's copy, broadcast


def test_local_view_sees_files(tmp_path):
    config = _config(tmp_path, "evaluate=true")
    (tmp_path / "frames").mkdir()
    (tmp_path / "train.pkl").write_bytes(b"x")
    view = local_view(0, config, probe=None)
    assert view.inputs["val.root_path"][1]
    assert not view.inputs["val.annotation_path"][1]
    assert not local_view(0, config, probe=".absent").sees_probe


def test_problems_name_rank_host_and_file():
    ok = {"val.annotation_path": ("/data/val.pkl", True)}
    views = [RankView(0, "n1", ok), RankView(1, "n2", {"val.annotation_path": ("/data/val.pkl", False)})]
    assert problems([views[0], RankView(1, "n2", ok)]) == []
    (message,) = problems(views)
    assert message == "rank 1 (host n2) cannot read val.annotation_path=/data/val.pkl"
    # missing on rank 0 too: no difference between nodes, left to rank 0's preflight
    assert problems([RankView(0, "n1", {"val.annotation_path": ("/data/val.pkl", False)}), views[1]]) == []
