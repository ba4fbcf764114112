"""One inference path: the `Predictor` (the demo's path) scores every box exactly as `main.py` evaluation does.

The same generated video, boxes and weights go (a) through main.py's evaluation path - `ClipDataset` on the
video file, the engine's collate, `predict_shard` - and (b) through `Predictor.stream` with the boxes read
from an AVA-style CSV as the demo reads them; per-box scores agree to 1e-6 for every batch size.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from stad.config import load_config
from stad.data.formats.acar_pkl import write_acar_pkl
from stad.data.formats.ava import read_person_boxes_csv
from stad.data.toy.actions import toy_labelmap
from stad.data.video import VideoInfo, probe_video
from stad.engine import builders
from stad.engine.inference import InferenceError, Predictor, plan_keyframes
from stad.engine.predictor import predict_shard
from stad.structures import Boxes, Keyframe
from tests.e2e.demo_testutils import tiny_model, write_test_video

FPS = 30
BOXES = {0: [[0.05, 0.2, 0.3, 0.9], [0.6, 0.1, 0.9, 0.8]],
         1: [[0.3, 0.25, 0.45, 0.9]],
         2: [[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.95, 0.95], [0.2, 0.3, 0.7, 0.9]],
         3: [[0.0, 0.0, 1.0, 1.0]]}
VIEWS = ("val.augmentation.spatial=[{type: Scale, kwargs: {resize: [64, 64]}}, {type: RandomHorizontalFlip, kwargs: "
         "[{p: 0}, {p: 1}]}, {type: ToTensor, kwargs: {norm_value: 255.}}]")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """A 4 s 30 fps video, its keyframes' boxes as an ACAR pickle (main.py) and a CSV (the demo), tiny weights."""
    tmp = tmp_path_factory.mktemp("inference")
    (tmp / "videos").mkdir()
    video = write_test_video(tmp / "videos" / "v.mp4", width=160, height=120, fps=FPS, seconds=4.0)
    config_path, weights = tiny_model(tmp)
    keyframes = [Keyframe("v", t, Boxes(np.array(b, np.float32)), tuple((t % 11,) for _ in b), mid_frame=t * FPS + 1,
                          start_frame=1, n_frames=4 * FPS, format_str="%06d.jpg", frame_rate=FPS)
                 for t, b in BOXES.items()]
    write_acar_pkl(tmp / "val.pkl", keyframes, toy_labelmap())
    rows = [f"v,{t:04d},{','.join(f'{x:g}' for x in box)},1,{i}" for t, b in BOXES.items() for i, box in enumerate(b)]
    (tmp / "boxes.csv").write_text("\n".join(rows) + "\n")
    sets = [f"val.annotation_path={tmp / 'val.pkl'}", f"val.video_root={tmp / 'videos'}", "val.decode_threads=0"]
    return {"tmp": tmp, "video": video, "config": config_path, "weights": weights, "sets": sets}


def main_py_scores(setup: dict, predictor: Predictor, extra: tuple[str, ...] = (), batch_size: int = 2) -> dict:
    """main.py's evaluation path on the video: ClipDataset + engine collate + predict_shard, per key."""
    from stad.data.dataset import ClipDataset

    config = load_config(setup["config"], setup["sets"] + list(extra))
    val = config.val  # builders.build_dataset's arguments, reading the video file (its frames win over videos)
    clip_len, stride = builders.temporal_sampling(val.augmentation)
    views = builders.build_views(val.augmentation, train=False)
    dataset = ClipDataset(val.annotation_path, video_root=val.video_root, clip_len=clip_len, frame_stride=stride,
                          transform=views[0], views=views, num_classes=config.num_classes,
                          decode_threads=val.decode_threads)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=builders.collate)
    _, activation = builders.build_criterion(config)
    shard = predict_shard(predictor.model, loader, list(range(len(dataset))), activation, torch.device("cpu"),
                          config.num_classes)
    dataset.close()
    p = shard.predictions
    return {(v, int(t)): (p.boxes[p.sample_index == i], p.scores[p.sample_index == i])
            for i, (v, t) in enumerate(dataset.keys)}


def demo_scores(setup: dict, predictor: Predictor) -> dict:
    """The demo's path: boxes from the CSV (`read_person_boxes_csv`), keyframes planned on the video, one stream."""
    info = probe_video(setup["video"])
    by_time = {t: b for (_, t), b in read_person_boxes_csv(setup["tmp"] / "boxes.csv", video="v").items()}
    plans = predictor.plan(info, timestamps=sorted(by_time), model_fps=FPS)
    return {p.key: (p.boxes.xyxy, p.scores) for p in predictor.stream(info, plans, lambda plan, _: by_time[plan.timestamp])}


@pytest.mark.parametrize("batch_size", [1, 3])
def test_demo_path_scores_equal_main_py_scores(setup, batch_size):
    predictor = Predictor.from_weights(setup["weights"], load_config(setup["config"], setup["sets"]),
                                       batch_size=batch_size)
    expected = main_py_scores(setup, predictor)
    got = demo_scores(setup, predictor)
    assert list(got) == [("v", t) for t in BOXES] == list(expected)
    for key, (boxes, scores) in expected.items():
        assert scores.shape == (len(BOXES[key[1]]), 11)
        np.testing.assert_array_equal(got[key][0], boxes)
        np.testing.assert_allclose(got[key][1], scores, rtol=0, atol=1e-6)


def test_multiview_demo_path_equals_main_py(setup):
    """Test-time views (flip): both paths average each box's logits over the views through the same code."""
    config = load_config(setup["config"], setup["sets"] + [VIEWS])
    base = Predictor.from_weights(setup["weights"], config)
    predictor = Predictor(base.model, base.preprocessing, views=builders.build_views(config.val.augmentation, False),
                          batch_size=2)
    expected, got = main_py_scores(setup, predictor, (VIEWS,)), demo_scores(setup, predictor)
    single = demo_scores(setup, base)
    for key, (boxes, scores) in expected.items():
        np.testing.assert_allclose(got[key][1], scores, rtol=0, atol=1e-6)
        assert not np.allclose(single[key][1], scores, atol=1e-6)  # the views did change the scores


def test_keyframes_without_boxes_and_a_short_video(setup):
    """Keyframes with no boxes get no rows (no forward); plans past the decoded end use the last frame."""
    predictor = Predictor.from_weights(setup["weights"], load_config(setup["config"], setup["sets"]), batch_size=2)
    info = probe_video(setup["video"])
    plans = predictor.plan(info, model_fps=FPS)
    assert [p.timestamp for p in plans] == [0, 1, 2, 3]
    boxes = {0: Boxes(np.array(BOXES[0], np.float32)), 2: Boxes(np.array(BOXES[2], np.float32))}
    out = list(predictor.stream(info, plans, lambda plan, frame: boxes.get(plan.timestamp, Boxes.empty())))
    assert [len(p.boxes) for p in out] == [2, 0, 3, 0] and [p.scores.shape for p in out][1] == (0, 11)
    longer = VideoInfo(info.path, info.num_frames + 30, info.fps, info.width, info.height)  # header says 5 s
    late = plan_keyframes(longer, 4, 4, FPS, timestamps=[4])
    (last,) = predictor.stream(longer, late, lambda plan, frame: boxes[0])
    assert last.scores.shape == (2, 11)


def test_missing_weights_and_non_video_are_clear_errors(tmp_path, setup):
    from stad.data.video import FrameReadError

    with pytest.raises(InferenceError, match="nope.pth: weights not found"):
        Predictor.from_weights(tmp_path / "nope.pth")
    (tmp_path / "x.mp4").write_text("not a video")
    with pytest.raises(FrameReadError, match="not a readable video file"):
        probe_video(tmp_path / "x.mp4")
    assert VideoInfo(tmp_path / "a.mp4", 30, Fraction(30), 4, 4).video_id == "a"


def test_demo_app_scores_equal_main_py_scores(setup):
    """The demo application itself (--boxes, --batch-size 2, annotated video drawn in the same pass)."""
    from stad.apps import demo

    out = setup["tmp"] / "annotated.mp4"
    args = demo.parse_args(["--video", str(setup["video"]), "--config", str(setup["config"]), "--weights",
                            str(setup["weights"]), "--boxes", str(setup["tmp"] / "boxes.csv"), "--model-fps", str(FPS),
                            "--batch-size", "2", "--out", str(out), "--no-progress"])
    summary = demo.run(args)
    assert summary["frames_written"] == 4 * FPS and out.is_file()
    predictor = Predictor.from_weights(setup["weights"], load_config(setup["config"], setup["sets"]))
    expected = main_py_scores(setup, predictor)
    got = {p.key: p for p in summary["predictions"]}
    assert list(got) == list(expected)
    for key, (boxes, scores) in expected.items():
        np.testing.assert_array_equal(got[key].boxes.xyxy, boxes)
        assert got[key].boxes.ids.tolist() == list(range(len(boxes)))  # the CSV's person ids, not tracked
        np.testing.assert_allclose(got[key].scores, scores, rtol=0, atol=1e-6)


def test_padded_batches_score_as_in_main_py(setup, tmp_path):
    """Keyframes of a landscape and a portrait video in one batch (short side 64: 85x64 and 64x85, padded to
    85x85): `Predictor.score` goes through the same collate and `score_batch` as predict_shard, sizes included."""
    from stad.data.video import clip_indices, iter_video_frames

    (tmp_path / "videos").mkdir()
    write_test_video(tmp_path / "videos" / "a.mp4", width=160, height=120, fps=FPS, seconds=1.0)
    write_test_video(tmp_path / "videos" / "b.mp4", width=120, height=160, fps=FPS, seconds=1.0)
    boxes = Boxes(np.array(BOXES[2], np.float32))
    keyframes = [Keyframe(v, 0, boxes, tuple((1,) for _ in range(3)), mid_frame=16, start_frame=1, n_frames=FPS,
                          format_str="%06d.jpg", frame_rate=FPS) for v in ("a", "b")]
    write_acar_pkl(tmp_path / "val.pkl", keyframes, toy_labelmap())
    scale = ("val.augmentation.spatial=[{type: Scale, kwargs: {resize: 64}}, {type: ToTensor, kwargs: "
             "{norm_value: 255.}}]")
    padded = {**setup, "sets": [f"val.annotation_path={tmp_path / 'val.pkl'}",
                                f"val.video_root={tmp_path / 'videos'}", "val.decode_threads=0", scale]}
    predictor = Predictor.from_weights(setup["weights"], load_config(setup["config"], padded["sets"]), batch_size=2)
    expected = main_py_scores(padded, predictor, batch_size=2)
    samples = []
    for v in ("a", "b"):
        frames = list(iter_video_frames(tmp_path / "videos" / f"{v}.mp4"))
        clip = clip_indices(16, 4, 4, len(frames)) - 1  # the dataset's 1-based frame numbers -> decoding order
        samples.append(predictor.sample([frames[i] for i in clip], (v, 0), boxes))
    assert {tuple(s.pixels.shape[-2:]) for s in samples} == {(64, 85), (85, 64)}
    scored = predictor.score(samples)
    np.testing.assert_allclose(scored.scores, np.concatenate([expected["a", 0][1], expected["b", 0][1]]), atol=1e-6)
