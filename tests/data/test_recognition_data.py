"""Recognition list files, sampling, datasets and the preflight: every bad line is an error naming file:line."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from stad.config import RecognitionConfig, SamplingConfig
from stad.data import validate
from stad.data.recognition import (ListFileError, RecognitionDataset, collate_recognition, frame_indices,
                                   read_list_file)
from stad.data.transforms import default_transform
from tests.data.recognition_testutils import write_frames_set, write_video_set

GROUPS = {"action": 3}


def _rec(**kwargs) -> RecognitionConfig:
    return RecognitionConfig(**{"label_groups": GROUPS, "list_format": "frames", **kwargs})


@pytest.mark.parametrize("line, message", [
    ("a.mp4", "expected '<video_path> <label>"),
    ("a.mp4 x", "a label must be an integer"),
    ("a.mp4 3", "label 3 of group 'action' is outside [0, 3)"),
    ("a.mp4 1 2", "expected 1 label(s) (action), got 2"),
])
def test_bad_video_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "list.txt"
    path.write_text("# comment\nok.mp4 0\n\n" + line + "\n")
    with pytest.raises(ListFileError) as err:
        read_list_file(path, "videos", GROUPS)
    assert str(err.value).startswith(f"{path}:4: ") and message in str(err.value)


def test_frames_lines_multi_head_and_multi_label(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("clips/a 30 1 2\n")
    (entry,) = read_list_file(path, "frames", {"body": 2, "action": 3})
    assert entry.total_frames == 30 and entry.labels == ((1,), (2,)) and entry.where == f"{path}:1"
    path.write_text("clips/a 0 1 2\n")
    with pytest.raises(ListFileError, match=r":1: total_frames must be >= 1"):
        read_list_file(path, "frames", {"body": 2, "action": 3})
    path.write_text("a.mp4 0 2\nb.mp4 1\n")
    entries = read_list_file(path, "videos", GROUPS, multi_label=True)
    assert [e.labels for e in entries] == [((0, 2),), ((1,),)]


def test_dense_and_uniform_sampling_by_hand():
    dense = SamplingConfig("dense", clip_len=4, frame_interval=2)  # span 7
    assert frame_indices(20, dense, 0, 1).tolist() == [6, 8, 10, 12]  # free 13, start int(6.5)
    assert frame_indices(20, dense, 1, 2).tolist() == [9, 11, 13, 15]  # start int(13 * 0.75)
    assert frame_indices(5, dense).tolist() == [0, 2, 4, 4]  # longer than the video: clamped
    starts = {frame_indices(20, dense, rng=np.random.default_rng(s))[0] for s in range(50)}
    assert min(starts) >= 0 and max(starts) <= 13 and len(starts) > 5
    uniform = SamplingConfig("uniform", clip_len=4, frame_interval=1)  # segments of 5 frames
    assert frame_indices(20, uniform, 0, 1).tolist() == [2, 7, 12, 17]
    assert frame_indices(20, uniform, 0, 2).tolist() == [1, 6, 11, 16]
    drawn = frame_indices(20, uniform, rng=np.random.default_rng(0))
    assert all(5 * k <= v < 5 * k + 5 for k, v in enumerate(drawn.tolist()))


def test_frames_dataset_views_and_batch(tmp_path):
    list_path = write_frames_set(tmp_path, [0, 1, 2], n_frames=6)
    views = [default_transform(), default_transform()]  # M = 2 crops
    rec = _rec(sampling=SamplingConfig("dense", 4, 1))
    test = RecognitionDataset(list_path, tmp_path / "frames", rec, views, train=False, num_clips=3)
    sample = test[1]
    assert sample.clips.shape == (6, 3, 4, 32, 32) and sample.targets[0].tolist() == [1]  # 3 clips x 2 crops
    train = RecognitionDataset(list_path, tmp_path / "frames", rec, views[:1], train=True)
    batch = collate_recognition([train[0], train[2]])
    assert batch.clips.shape == (2, 1, 3, 4, 32, 32) and batch.targets[0].tolist() == [0, 2]
    assert batch.indices.tolist() == [0, 2]


def test_video_dataset_reads_mp4(tmp_path):
    list_path = write_video_set(tmp_path, [1, 0], n_frames=6)
    rec = _rec(list_format="videos", sampling=SamplingConfig("uniform", 3, 1))
    dataset = RecognitionDataset(list_path, tmp_path / "videos", rec, [default_transform()], train=False)
    clip = dataset[0].clips[0]
    assert clip.shape == (3, 3, 32, 32)
    assert clip[:, :, :, 16:].mean() > clip[:, :, :, :16].mean()  # class 1: the right half is bright


def test_missing_frames_while_training_name_the_line(tmp_path):
    list_path = write_frames_set(tmp_path, [0, 1], n_frames=6)
    list_path.write_text(list_path.read_text() + "gone 6 0\n")
    dataset = RecognitionDataset(list_path, tmp_path / "frames", _rec(), [default_transform()], train=False)
    with pytest.raises(RuntimeError, match=rf"{list_path}:3: .*gone"):
        dataset[2]


def test_preflight_reports_every_problem_with_file_and_line(tmp_path):
    list_path = write_video_set(tmp_path, [0, 1], n_frames=4)
    (tmp_path / "videos" / "empty.mp4").write_bytes(b"")
    (tmp_path / "videos" / "junk.mp4").write_bytes(b"not a video at all" * 10)
    list_path.write_text(list_path.read_text() + "missing.mp4 0\nempty.mp4 1\njunk.mp4 2\nv0.mp4 7\nv1.mp4\n")
    report = validate.validate_recognition_split(list_path, tmp_path / "videos", _rec(list_format="videos"))
    text = report.format()
    assert not report.ok and {"missing-file", "unreadable", "bad-line"} <= report.codes
    for n in (3, 4, 5, 6, 7):
        assert f"{list_path}:{n}:" in text, (n, text)
    assert report.counts["videos"] == 5  # lines 1-5 parse; 6 and 7 are bad lines


def test_preflight_frames_counts_and_config_dispatch(tmp_path):
    list_path = write_frames_set(tmp_path, [0, 1, 2], n_frames=4)
    (tmp_path / "frames" / "hollow").mkdir()
    list_path.write_text(list_path.read_text().replace("v2 4 2", "v2 9 2") + "hollow 4 0\n")
    report = validate.validate_recognition_split(list_path, tmp_path / "frames", _rec())
    assert report.codes == {"missing-frames", "empty-video"}
    assert f"{list_path}:3: the line says 9 frames" in report.format()
    assert f"{list_path}:4: {tmp_path / 'frames' / 'hollow'} holds no frames" in report.format()
    split = SimpleNamespace(annotation_path=str(list_path), root_path=str(tmp_path / "frames"))
    config = SimpleNamespace(task="recognition", recognition=_rec(), train=split, val=None, evaluate=False)
    with pytest.raises(validate.DatasetValidationError, match=r"list_frames.txt:3"):
        validate.validate_config(config)
