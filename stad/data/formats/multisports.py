"""MultiSports ``multisports_GT.pkl`` (FORMATS.md §4): tubes in pixels -> per-frame keyframes.

The GT dict has ``labels`` (66 names, index = label), ``train_videos``/``test_videos`` (use ``[0]``),
``nframes`` (frames 1..n), ``resolution`` (``(h, w)``, height first) and ``gttubes``
(``video -> {label: [ndarray (n, 5) [frame, x1, y1, x2, y2] pixels]}``).

Keyframes are keyed by frame number (``timestamp = frame``, `conventions.MULTISPORTS`). Labels are
0-based and used as ids unchanged (no +1). ``person_id`` is the tube's running number within its
video (over labels in sorted order), so boxes of one tube share an id; identical boxes of different
tubes merge into one multi-label box. The input arrays are never modified (the mmaction2 script
divides them in place).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from stad.data.formats.conventions import MULTISPORTS, FrameConvention
from stad.data.formats.errors import FormatError
from stad.structures import Boxes, Keyframe, KeyframeKey, LabelMap

REQUIRED_KEYS = ("labels", "gttubes", "nframes", "resolution")
SPLIT_KEYS = {"train": "train_videos", "test": "test_videos", "val": "test_videos"}


def read_multisports_gt(path: str | Path, split: str | None = None) -> dict:
    """Load and check the GT dict (keys, tube shapes); raises `FormatError` naming video and label.

    Only the video list of ``split`` is required (MMAction2 ships test-only GT files without
    ``train_videos``); ``split=None`` requires at least one of the lists.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, None, None, "no such file")
    try:
        with open(path, "rb") as handle:
            gt = pickle.load(handle, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise FormatError(path, None, None, f"not a readable pickle ({error})") from None
    if not isinstance(gt, dict):
        raise FormatError(path, None, None, f"expected a dict, got {type(gt).__name__}")
    lists = (_split_key(split),) if split is not None else tuple(k for k in SPLIT_KEYS.values() if k in gt)
    if not lists:
        raise FormatError(path, None, "train_videos/test_videos", "missing key: the GT has neither video list")
    for key in REQUIRED_KEYS + lists:
        if key not in gt:
            hint = " (the key is 'nframes', not 'n_frames')" if key == "nframes" and "n_frames" in gt else ""
            raise FormatError(path, None, key, f"missing key{hint}")
    for video, by_label in gt["gttubes"].items():
        for label, tubes in by_label.items():
            if not 0 <= int(label) < len(gt["labels"]):
                raise FormatError(path, None, f"gttubes[{video!r}]", f"label {label} outside 0..{len(gt['labels']) - 1}")
            for k, tube in enumerate(tubes):
                arr = np.asarray(tube)
                if arr.ndim != 2 or arr.shape[1] != 5:
                    raise FormatError(path, None, f"gttubes[{video!r}][{label}][{k}]",
                                      f"expected (n, 5) [frame, x1, y1, x2, y2], got shape {arr.shape}")
        if video not in gt["resolution"] or video not in gt["nframes"]:
            raise FormatError(path, None, f"gttubes[{video!r}]", "video has no 'resolution' or 'nframes' entry")
    return gt


def multisports_labelmap(gt: dict) -> LabelMap:
    """ids 0..65 = indices, names from ``gt['labels']``."""
    return LabelMap(tuple(range(len(gt["labels"]))), tuple(str(n) for n in gt["labels"]))


def split_videos(gt: dict, split: str) -> list[str]:
    """Videos of ``train`` or ``test`` (``val`` = test, as mmaction2 builds its val CSV)."""
    key = _split_key(split)
    if key not in gt:
        raise KeyError(f"the GT has no {key!r} list for split {split!r} (it has: "
                       f"{', '.join(k for k in SPLIT_KEYS.values() if k in gt) or 'none'})")
    videos = gt[key]
    return list(videos[0] if videos and isinstance(videos[0], (list, tuple)) else videos)


def _split_key(split: str) -> str:
    if split not in SPLIT_KEYS:
        raise ValueError(f"split must be train, val or test, got {split!r}")
    return SPLIT_KEYS[split]


def frame_format(video: str) -> str:
    """Frame files of ``sport/clip`` live in ``root/sport/clip/clip_%06d.jpg``."""
    return f"{video.rsplit('/', 1)[-1]}_%06d.jpg"


def multisports_keyframes(gt: dict, split: str, convention: FrameConvention = MULTISPORTS) -> list[Keyframe]:
    """One keyframe per annotated (video, frame) of the split, boxes normalised by ``(h, w)``."""
    keyframes = []
    for video in split_videos(gt, split):
        h, w = gt["resolution"][video]
        n_total = int(gt["nframes"][video])
        scale = np.array([w, h, w, h], np.float64)
        per_frame: dict[int, dict[tuple, tuple[int, list[int]]]] = {}
        tube_id = 0
        for label in sorted(gt["gttubes"].get(video, {})):
            for tube in gt["gttubes"][video][label]:
                for row in np.asarray(tube, np.float64):
                    box = tuple(np.float32(row[1:5] / scale).tolist())
                    pid, labels = per_frame.setdefault(int(row[0]), {}).setdefault(box, (tube_id, []))
                    if int(label) not in labels:
                        labels.append(int(label))
                tube_id += 1
        for frame in sorted(per_frame):
            boxes = per_frame[frame]
            start, n = convention.window(frame, n_total)
            keyframes.append(Keyframe(video, frame, Boxes(np.array(list(boxes), np.float32).reshape(-1, 4), None,
                                                          np.array([p for p, _ in boxes.values()], np.int64)),
                                      tuple(tuple(sorted(ls)) for _, ls in boxes.values()),
                                      mid_frame=frame, start_frame=start, n_frames=n, format_str=frame_format(video),
                                      frame_rate=convention.fps))
    return keyframes


def keyframes_to_gttubes(keyframes: Iterable[Keyframe], gt_meta: dict) -> dict[str, dict[int, list[np.ndarray]]]:
    """Inverse of `multisports_keyframes`: rebuild pixel tubes ``video -> {label: [(n, 5)]}`` by person id.

    ``gt_meta`` provides ``resolution``. Tubes come back ordered by person id, rows by frame.
    """
    tubes: dict[str, dict[int, dict[int, list]]] = {}
    for kf in keyframes:
        h, w = gt_meta["resolution"][kf.video]
        scale = np.array([w, h, w, h], np.float64)
        for box, pid, labels in zip(kf.boxes.xyxy, kf.boxes.ids, kf.labels):
            for label in labels:
                row = [float(kf.timestamp), *(box.astype(np.float64) * scale)]
                tubes.setdefault(kf.video, {}).setdefault(label, {}).setdefault(int(pid), []).append(row)
    return {v: {lab: [np.array(sorted(rows), np.float32) for _, rows in sorted(by_pid.items())]
                for lab, by_pid in sorted(by_label.items())} for v, by_label in tubes.items()}


def read_multisports_proposals(path: str | Path, videos: Sequence[str]) -> dict[KeyframeKey, Boxes]:
    """``MultiSports_box/*.pkl`` ``{"clip,frame": (N, 5) normalised [x1, y1, x2, y2, score]}`` -> keys
    ``(video id, frame)``.

    The clip may be named by its basename (``v_x_c003``), its id (``sport/v_x_c003``) or with
    ``.mp4``. A name matching no video of ``videos`` raises `FormatError` listing a few (the
    mmaction2 script silently reuses the previous key instead).
    """
    path = Path(path)
    with open(path, "rb") as handle:
        data = pickle.load(handle, encoding="latin1")
    if not isinstance(data, dict):
        raise FormatError(path, None, None, f"expected a dict 'clip,frame' -> array, got {type(data).__name__}")
    names: dict[str, str] = {}
    for video in videos:
        for alias in (video, f"{video}.mp4", video.rsplit("/", 1)[-1]):
            if names.setdefault(alias, video) != video:
                raise FormatError(path, None, None, f"clip name {alias!r} is ambiguous: {names[alias]!r} and {video!r}")
    out: dict[KeyframeKey, Boxes] = {}
    unknown = []
    for text, array in data.items():
        clip, sep, frame = str(text).rpartition(",")
        if not sep or clip not in names:
            unknown.append(str(text))
            continue
        arr = np.asarray(array, np.float32)
        if arr.size == 0:
            out[(names[clip], int(frame))] = Boxes.empty()
            continue
        if arr.ndim != 2 or arr.shape[1] not in (4, 5):
            raise FormatError(path, None, str(text), f"expected shape (N,5) or (N,4), got {arr.shape}")
        out[(names[clip], int(frame))] = Boxes(arr[:, :4], arr[:, 4] if arr.shape[1] == 5 else None)
    if unknown:
        raise FormatError(path, None, "key", f"{len(unknown)} keys name no video of the split, e.g. {unknown[:3]}")
    return dict(sorted(out.items()))
