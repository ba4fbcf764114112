"""Why a toy-set model fails on the interaction classes: the figures docs/recipes.md §1 cites.

    python scripts/toy_diagnose.py decoys --data runs/demo/data/toy --predictions runs/demo/acar/predict_epoch8.csv
    python scripts/toy_diagnose.py facing --data runs/demo/data/toy --run runs/demo/acar [--split train]

``decoys``: every predicted box is matched to the figure the generator placed there (the toy scripts
are re-planned from ``toy_meta.json``); for each interaction class it prints the median score of
the positives and of the *decoys* (the same activity without a partner: a lone pusher, a walker
nobody walks ahead of), and how many of each sit on the wrong side of 0.5.

``facing``: can a linear classifier read which way an actor faces from the ACAR head's actor
feature (RoIAlign, max over the box) and from its left-right asymmetry (the position gate's input)?
Logistic regression fitted on 3/4 of the videos, accuracy on the other 1/4, per activity.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stad.data.formats.ava import read_predictions_csv  # noqa: E402
from stad.data.toy.actions import CLASSES, INTERACTION_CLASSES, RELATIONS  # noqa: E402
from stad.data.toy.generate import ToySize  # noqa: E402
from stad.data.toy.render import actor_states, visible_actors  # noqa: E402
from stad.data.toy.script import VideoScript, plan_split  # noqa: E402

SPLIT_INDEX = {"train": 0, "val": 1}
ACTIVITY_OF = {rel.label: activity for activity, rel in RELATIONS.items()}  # "follow" -> "walk"


def toy_scripts(data: Path, split: str) -> dict[str, VideoScript]:
    """The generator's scripts of one split, re-planned from the data folder's ``toy_meta.json``."""
    meta = json.loads((data / "toy_meta.json").read_text())
    size = ToySize(**meta["size"])
    dims = dict(width=size.width, height=size.height, fps=size.fps, duration=size.duration)
    count = size.train_videos if split == "train" else size.val_videos
    return {s.video: s for s in plan_split(f"toy_{split}", count, meta["seed"], SPLIT_INDEX[split], **dims)}


def nearest_actor(script: VideoScript, t: float, box: np.ndarray):
    """The visible figure whose box is closest (L1) to ``box`` (normalised xyxy)."""
    return min(visible_actors(script, t), key=lambda a: float(np.abs(a.box - box).sum()))


def decoy_report(data: Path, predictions: Path, split: str) -> None:
    scripts = toy_scripts(data, split)
    scores: dict[tuple, dict[int, float]] = defaultdict(dict)
    for row in read_predictions_csv(predictions):  # bad rows: FormatError naming file, line and field
        if row.video not in scripts:
            raise SystemExit(f"{predictions}: video {row.video!r} is not in the {split} split of {data}")
        scores[(row.video, row.timestamp, tuple(round(v, 3) for v in row.box))][row.action_id] = row.score
    figures = [(nearest_actor(scripts[v], float(t), np.array(box)), by_class) for (v, t, box), by_class in scores.items()]
    for name in INTERACTION_CLASSES:
        class_id = next(i for i, n, _ in CLASSES if n == name)  # 1-based, as in the CSV
        positives = [s.get(class_id, 0.0) for a, s in figures if class_id - 1 in a.labels]
        decoys = [s.get(class_id, 0.0) for a, s in figures
                  if class_id - 1 not in a.labels and a.activity == ACTIVITY_OF[name]]
        print(f"{name:10s} positives n={len(positives):4d} median {_median(positives)} (< 0.5: "
              f"{sum(p < 0.5 for p in positives)}) | decoys n={len(decoys):4d} median {_median(decoys)} "
              f"(> 0.5: {sum(d > 0.5 for d in decoys)})")


def _median(values: list[float]) -> str:
    return f"{np.median(values):.2f}" if values else "   -"


def facing_report(data: Path, run: Path, split: str) -> None:
    import torch

    from stad.engine.builders import collate
    from stad.models.heads.common import left_right_asymmetry

    model, dataset = _load(run, data, split)
    head = model.head
    if not hasattr(head, "_facing"):
        raise SystemExit(f"{run}: the model has a {type(head).__name__}, not the ACAR head this probe reads")
    scripts = toy_scripts(data, split)
    captured: list = []
    head_facing = head._facing  # the head hands it its actors' RoI maps [N, R, s, s], gated or not

    def capture_maps(maps):
        captured.append(maps)
        return head_facing(maps)

    head._facing = capture_maps
    rows: list[tuple[np.ndarray, np.ndarray, int, str, str]] = []
    with torch.no_grad():
        for start in range(0, len(dataset), 8):
            batch = collate([dataset[i] for i in range(start, min(start + 8, len(dataset)))])
            captured.clear()
            model(batch.clips, batch.boxes, sizes=batch.valid_fractions)
            maps = captured[0]
            actor, asym = maps.amax((2, 3)).numpy(), left_right_asymmetry(maps).numpy()
            k = 0
            for key, boxes in zip(batch.keys, getattr(batch, "orig_boxes", batch.boxes)):
                video, t = str(key[0]), float(key[1])
                states = {s.actor: s for s in actor_states(scripts[video], t)}
                for box in boxes.reshape(-1, 4).numpy():
                    figure = nearest_actor(scripts[video], t, box)
                    rows.append((actor[k], asym[k], states[figure.actor].facing, figure.activity, video))
                    k += 1
    facing = np.array([r[2] > 0 for r in rows])
    videos = np.array([r[4] for r in rows])
    activity = np.array([r[3] for r in rows])
    held_out = np.isin(videos, sorted(set(videos))[::4])
    for name, column in (("max over the box (actor feature)", 0), ("left-right asymmetry (gate input)", 1)):
        features = np.stack([r[column] for r in rows])
        correct = _logistic_fit_predict(features, facing, ~held_out) == facing
        per_activity = ", ".join(f"{a} {correct[held_out & (activity == a)].mean():.2f}"
                                 for a in ("walk", "push", "talk", "stand") if (held_out & (activity == a)).any())
        print(f"{name}: held-out facing accuracy {correct[held_out].mean():.3f} (n={held_out.sum()}; {per_activity})")


def _logistic_fit_predict(x: np.ndarray, y: np.ndarray, fit: np.ndarray) -> np.ndarray:
    import torch

    xt = torch.tensor(x, dtype=torch.float32)
    mean, std = xt[fit].mean(0), xt[fit].std(0) + 1e-6
    xt = (xt - mean) / std
    target = torch.tensor(y, dtype=torch.float32)
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200)
    mask = torch.tensor(fit)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt[mask] @ weight + bias, target[mask])
        loss = loss + 1e-3 * (weight ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return ((xt @ weight + bias) > 0).numpy()


def _load(run: Path, data: Path, split: str):
    import torch

    from stad.config import load_config
    from stad.engine import builders

    config = load_config(run / "config.yaml", [f"val.root_path={data / 'frames'}",
                                               f"val.annotation_path={data / 'annotations' / (split + '.pkl')}"])
    model = builders.build_model(config)
    state = torch.load(run / "checkpoints" / "last.pth", map_location="cpu", weights_only=False)
    builders.load_weights(model, state["state_dict"], strict=True)
    return model.eval(), builders.build_dataset(config, config.val, train=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("decoys", "facing"))
    parser.add_argument("--data", type=Path, required=True, help="toy data folder (with toy_meta.json)")
    parser.add_argument("--predictions", type=Path, help="decoys: an AVA-style predictions CSV of the split")
    parser.add_argument("--run", type=Path, help="facing: a training run folder (config.yaml, checkpoints/last.pth)")
    parser.add_argument("--split", default="val", choices=tuple(SPLIT_INDEX))
    args = parser.parse_args(argv)
    if args.what == "decoys":
        if args.predictions is None:
            parser.error("decoys needs --predictions")
        decoy_report(args.data, args.predictions, args.split)
    else:
        if args.run is None:
            parser.error("facing needs --run")
        facing_report(args.data, args.run, args.split)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
