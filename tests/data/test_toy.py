"""The toy-actors generator: files, determinism, label statistics, conventions."""
import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from stad.data.formats import acar_pkl, ava
from stad.data.formats.labelmap import read_labelmap
from stad.data.toy import CLASSES, INTERACTION_CLASSES, MOTION_CLASSES, POSE_CLASSES, generate


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "toy"
    meta = generate(out, seed=0, size="tiny", workers=2, progress=False)
    return out, meta


def _digest(root: Path, pattern: str) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob(pattern))}


def test_layout_and_counts(tiny):
    out, meta = tiny
    assert meta["size"]["duration"] == 3 and len(meta["splits"]["train"]["videos"]) == 2
    for split in ("train", "val"):
        for video, n in meta["splits"][split]["videos"].items():
            assert n == 90
            assert (out / "videos" / f"{video}.mp4").stat().st_size > 1000
            frames = sorted((out / "frames" / video).glob("*.jpg"))
            assert len(frames) == 90 and frames[0].name == f"{video}_000001.jpg"
        assert (out / f"{split}_excluded_timestamps.csv").exists()
        assert any((out / "yolo" / "labels" / split).glob("*.txt"))
    assert "path:" in (out / "yolo" / "dataset.yaml").read_text()


def test_deterministic_across_runs_and_workers(tiny, tmp_path):
    out, _ = tiny
    again = tmp_path / "again"
    generate(again, seed=0, size="tiny", workers=1, write_video=False, progress=False)
    for pattern in ("*.csv", "annotations/*.pkl", "labelmap.pbtxt", "frames/*/*.jpg", "yolo/labels/*/*.txt"):
        first, second = _digest(out, pattern), _digest(again, pattern)
        assert first and first == second, pattern
    other = tmp_path / "seed1"
    generate(other, seed=1, size="tiny", workers=1, write_video=False, progress=False)
    assert _digest(out, "*.csv") != _digest(other, "*.csv")


def test_csv_pkl_and_labelmap_agree(tiny):
    out, _ = tiny
    labelmap = read_labelmap(out / "labelmap.pbtxt")
    assert labelmap.names == tuple(c[1] for c in CLASSES)
    for split in ("train", "val"):
        from_csv = ava.read_gt_csv(out / f"{split}.csv", labelmap)
        from_pkl, pkl_map = acar_pkl.read_acar_pkl(out / "annotations" / f"{split}.pkl")
        assert pkl_map.ids == labelmap.ids
        by_key = {kf.key: kf for kf in from_pkl}
        for kf in from_csv:
            ref = by_key[kf.key]
            np.testing.assert_allclose(kf.boxes.xyxy, ref.boxes.xyxy, atol=6e-4)
            assert kf.labels == ref.labels
            # toy convention: keyframe t <-> frame t*30+1, window clamped inside the video
            assert ref.mid_frame == kf.timestamp * 30 + 1
            assert 1 <= ref.start_frame <= ref.mid_frame < ref.start_frame + ref.n_frames <= 91
            assert ref.format_str == f"{kf.video}_%06d.jpg"
            assert (out / "frames" / kf.video / (ref.format_str % ref.mid_frame)).exists()
        assert all(1 <= kf.timestamp <= 2 for kf in from_pkl)


def test_multilabel_boxes_and_crowded_keyframes(tmp_path):
    out = tmp_path / "small"
    generate(out, seed=0, size="small", workers=2, write_video=False, progress=False)
    names = {c[0]: c[1] for c in CLASSES}
    for split in ("train", "val"):
        rows = list(csv.reader(open(out / f"{split}.csv")))
        assert len({names[int(r[6])] for r in rows} & set(INTERACTION_CLASSES)) >= 2  # every class: the demo set
        per_box = Counter((r[0], r[1], r[7]) for r in rows)
        assert max(per_box.values()) >= 3  # e.g. stand + walk + follow on one box
        keyframe_sizes = Counter((r[0], r[1]) for r in rows if names[int(r[6])] in POSE_CLASSES)
        assert max(keyframe_sizes.values()) >= 3  # several actors per frame
    assert set(POSE_CLASSES + MOTION_CLASSES + INTERACTION_CLASSES) == set(names.values())


def test_every_class_in_both_splits_of_the_demo_set():
    """The 'large' set (what `make demo` trains and evaluates on), labels computed without rendering."""
    counts = {"toy_train": Counter(), "toy_val": Counter()}
    for script, _, _, shown in _keyframe_actors("large"):
        counts[script.video.rsplit("_", 1)[0]].update(i for a in shown for i in a.labels)
    for split, counter in counts.items():
        assert set(counter) == set(range(len(CLASSES))), (split, counter)
        assert min(counter[i] for i in range(7, 11)) >= 8, (split, counter)  # interactions: enough to score


def test_yolo_labels_match_normalised_boxes(tiny):
    out, _ = tiny
    for txt in (out / "yolo" / "labels" / "train").glob("*.txt"):
        assert (out / "yolo" / "images" / "train" / f"{txt.stem}.jpg").exists()
        for line in txt.read_text().splitlines():
            cls, cx, cy, w, h = line.split()
            assert cls == "0" and 0 < float(w) <= 1 and 0 < float(h) <= 1
            assert 0 <= float(cx) - float(w) / 2 + 1e-6 and float(cx) + float(w) / 2 <= 1 + 1e-6


def test_cli(tmp_path, capsys):
    from stad.data.toy.__main__ import main

    assert main(["--out", str(tmp_path / "cli"), "--size", "tiny", "--workers", "1", "--no-video"]) == 0
    out = capsys.readouterr().out
    assert "train: 2 videos" in out and "val: 2 videos" in out
    assert not (tmp_path / "cli" / "videos").exists() and (tmp_path / "cli" / "annotations" / "val.pkl").exists()


def _keyframe_actors(size: str):
    """(script, t, states by actor, labelled VisibleActors) of every labelled keyframe of both splits."""
    from stad.data.toy.generate import SIZES, keyframe_annotations
    from stad.data.toy.render import LABEL_MIN_VISIBLE, actor_states, visible_actors
    from stad.data.toy.script import plan_split

    spec = SIZES[size]
    dims = dict(width=spec.width, height=spec.height, fps=spec.fps, duration=spec.duration)
    for index, (prefix, n) in enumerate((("toy_train", spec.train_videos), ("toy_val", spec.val_videos))):
        for script in plan_split(prefix, n, 0, index, **dims):
            keyframes, _ = keyframe_annotations(script)
            for kf in keyframes:
                t = float(kf.timestamp)
                shown = [a for a in visible_actors(script, t) if a.visible >= LABEL_MIN_VISIBLE]
                assert [a.labels for a in shown] == [tuple(sorted(x)) for x in kf.labels]
                yield script, t, {s.actor: s for s in actor_states(script, t)}, shown


def _in_relation(actor, other, relation) -> bool:
    """The relation geometry restated: same lane, partner activity, ahead within range, facing rule."""
    ahead = (other.x - actor.x) * actor.facing / actor.height
    facing = -actor.facing if relation.partner_facing == "towards" else actor.facing
    return (other.actor != actor.actor and other.lane == actor.lane and other.activity == relation.partner_activity
            and other.facing == facing and relation.min_gap <= ahead <= relation.max_gap)


def test_interactions_need_a_partner_outside_the_box_and_decoys_exist():
    from stad.data.toy.actions import RELATIONS
    from stad.data.toy.figure import person_box
    from stad.data.toy.render import PARTNER_MIN_VISIBLE

    index = {name: i for i, (_, name, _) in enumerate(CLASSES)}
    positives, decoys = Counter(), Counter()
    for script, t, states, shown in _keyframe_actors("default"):
        for a in shown:
            state = states[a.actor]
            relation = RELATIONS.get(state.activity)
            carried = [c for c in INTERACTION_CLASSES if index[c] in a.labels]
            if relation is None:
                assert not carried, (script.video, t, a)
                continue
            partners = [o for o in states.values() if _in_relation(state, o, relation)]
            if carried:
                assert carried == [relation.label] and partners, (script.video, t, a)
                assert a.partner in {p.actor for p in partners} and a.partner_visible >= PARTNER_MIN_VISIBLE
                mine = person_box(state.points, state.height)
                theirs = person_box(states[a.partner].points, state.height)
                separation = max(theirs[0] - mine[2], mine[0] - theirs[2]) / state.height
                assert separation > 0.35, (script.video, t, a, separation)  # the partner is well outside the box
                positives[relation.label] += 1
            else:  # a decoy: the same activity (same look and motion), nobody in the relation's geometry
                assert not partners, (script.video, t, a)
                decoys[relation.label] += 1
    for name in INTERACTION_CLASSES:  # decoys: about as many as interacting actors
        assert positives[name] >= 20 and decoys[name] >= 0.4 * positives[name], (name, positives, decoys)


def _single_group_script(activities, facings, gap, kind, direction=0, speed=0.0, centre=150.0):
    """A 3 s video with one group on the front lane doing one segment (hand-made, not planned)."""
    from stad.data.toy.figure import Look
    from stad.data.toy.script import ActorSpec, Group, Segment, VideoScript, make_lanes

    look = Look((40, 40, 220), (60, 30, 10), (140, 180, 230))
    actors = [ActorSpec(look, 0.0) for _ in activities]
    script = VideoScript("v", 320, 240, 30, 3, 0.0, 0.0, 320, make_lanes(320, 240), actors, [], 7)
    segment = Segment(0.0, 3.0, kind, tuple(activities), tuple(facings), direction, speed, centre, gap)
    script.groups.append(Group(tuple(range(len(activities))), 1, [segment]))
    return script


@pytest.mark.parametrize("kind,activities,facings,moving", [
    ("talk", ("talk", "listen"), (1, -1), False),
    ("handover", ("give", "take"), (1, -1), False),
    ("push", ("push", "pushed"), (1, -1), True),
    ("follow", ("walk", "walk"), (1, 1), True),
])
def test_decoy_box_shows_exactly_what_the_interacting_box_shows(kind, activities, facings, moving):
    """The left member of a pair vs the same actor alone at the same place: identical pixels in its
    box, but only the pair member carries the interaction class (the cue is outside the box)."""
    from stad.data.toy.actions import PAIR_GAP_RANGE, RELATIONS, SPEED
    from stad.data.toy.figure import person_box
    from stad.data.toy.render import actor_states, background, render_frame, visible_actors
    from stad.data.toy.script import make_lanes

    height = make_lanes(320, 240)[1].height  # the front lane, where _single_group_script puts the group
    gap = float(np.mean(PAIR_GAP_RANGE[kind])) * height
    speed = SPEED.get(activities[0], 0.0) * height if moving else 0.0
    direction = 1 if moving else 0
    pair = _single_group_script(activities, facings, gap, kind, direction, speed)
    alone = _single_group_script(activities[:1], facings[:1], gap, activities[0], direction, speed,
                                 centre=150.0 - gap / 2)
    t = 1.0
    state = actor_states(pair, t)[0]
    assert state.x == actor_states(alone, t)[0].x
    x1, y1, x2, y2 = np.round(person_box(state.points, state.height)).astype(int) + np.array([-1, -1, 2, 2])
    pair_img = render_frame(pair, background(pair), t)
    alone_img = render_frame(alone, background(alone), t)
    assert np.array_equal(pair_img[y1:y2, x1:x2], alone_img[y1:y2, x1:x2])
    assert not np.array_equal(pair_img, alone_img)  # the partner is in the frame, outside the box
    label = {name: i for i, (_, name, _) in enumerate(CLASSES)}[RELATIONS[activities[0]].label]
    assert label in visible_actors(pair, t)[0].labels
    assert label not in visible_actors(alone, t)[0].labels


def _first_script_with(activity: str, duration: int = 3):
    from stad.data.toy.render import visible_actors
    from stad.data.toy.script import plan_split

    for script in plan_split("toy_train", 16, 0, 0, width=320, height=240, fps=30, duration=duration):
        if any(a.activity == activity for n in range(0, duration * 30, 3) for a in visible_actors(script, n / 30)):
            return script
    raise AssertionError(f"no planned video shows {activity!r}")


def test_yolo_set_oversamples_frames_with_a_lying_figure(tmp_path):
    from stad.data.toy.generate import AMBIGUOUS_MIN_VISIBLE, render_video
    from stad.data.toy.render import visible_actors

    script = _first_script_with("lie")
    (tmp_path / "yolo" / "images" / "train").mkdir(parents=True)
    result = render_video(script, tmp_path, "train", write_video=False)

    def lying(n: int) -> bool:
        return any(a.activity == "lie" and a.visible > AMBIGUOUS_MIN_VISIBLE for a in visible_actors(script, (n - 1) / 30))

    expected = {n for n in range(1, script.num_frames + 1)
                if (n - 1) % 15 == 0 or ((n - 1) % 3 == 0 and lying(n))}
    assert {n for n, _ in result.yolo} == expected
    assert len(expected) > script.num_frames // 15 + 1  # extra frames were sampled
    images = {p.stem for p in (tmp_path / "yolo" / "images" / "train").glob("*.jpg")}
    assert images == {f"{script.video}_{n:06d}" for n in expected}
