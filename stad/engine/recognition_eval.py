"""Recognition evaluation: every video's views scored on all ranks, merged on rank 0, metrics and files.

Each rank scores its shard (`DistributedSampler`, no shuffle): a video's V = N clips x M crops views run
through the model one view at a time and are averaged (``recognition.average``: ``prob`` = the mean of
softmax / sigmoid probabilities, MMAction2's ``average_clips='prob'``; ``logit``: the mean logits, then the
activation). Scores reach rank 0 over torch.distributed (`distributed.gather_bytes`: no shared filesystem);
the sampler's padding copies are dropped by dataset index, so the files are the same for any number of
ranks. Rank 0 writes, atomically, under ``result_path``:

* ``scores_epoch{E}.csv``: one row per video: ``video, where`` (list ``file:line``), then per group
  ``<g>_label, <g>_pred`` and ``<g>:<class name>`` scores;
* ``scores_epoch{E}.json``: the same per video, with the class names per group;
* ``metrics_epoch{E}.json``: per group top-1, top-5, mean-class accuracy, F1-mean (macro), per-class
  accuracy and the confusion matrix (multi-label: mAP and per-class AP);
* ``confusion_<g>_epoch{E}.png`` (single-label groups).
"""
from __future__ import annotations

import csv
import io
import json
import pickle
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from stad.engine.distributed import barrier, broadcast_object, gather_bytes
from stad.engine.logs import progress
from stad.evaluation import recognition_metrics as metrics
from stad.io_utils import atomic_write_text


@torch.no_grad()
def score_views(model: torch.nn.Module, inputs: torch.Tensor, activation: Any, average: str) -> dict[str, torch.Tensor]:
    """Scores per group ``[B, K]`` of a batch of views ``inputs [B, V, ...]`` (clips or cached features),
    averaged over the V views as probabilities (``prob``) or as logits (``logit``)."""
    total: dict[str, torch.Tensor] = {}
    views = inputs.shape[1]
    for v in range(views):
        out = model(inputs[:, v])
        out = activation(out) if average == "prob" else {k: t.float() for k, t in out.items()}
        for name, value in out.items():
            total[name] = total.get(name, 0) + value.float()
    mean = {k: t / views for k, t in total.items()}
    return mean if average == "prob" else activation(mean)


def predict_shard(session: Any, model: torch.nn.Module, dataset: Any) -> dict:
    """This rank's {"indices": int64 ``[n]``, "scores": {group: float32 ``[n, K]``}} over its shard."""
    ctx, config = session.ctx, session.config
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=False, drop_last=False)
    loader = DataLoader(dataset, batch_size=config.val.batch_size, sampler=sampler, num_workers=config.val.workers,
                        collate_fn=session.task.collate)
    model.eval()
    bar = progress(len(loader), "val", ctx.is_main)
    indices, scores = [], {}
    for batch in loader:
        batch = batch.to(ctx.device)
        for name, value in score_views(model, batch.clips, session.activation, config.recognition.average).items():
            scores.setdefault(name, []).append(value.cpu().numpy().astype(np.float32))
        indices.append(batch.indices.numpy())
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    groups = list(config.recognition.label_groups)
    return {"indices": np.concatenate(indices) if indices else np.zeros(0, np.int64),
            "scores": {g: np.concatenate(scores[g]) if g in scores else np.zeros((0, k), np.float32)
                       for g, k in config.recognition.label_groups.items() if g in groups}}


def merge_shards(shards: list[dict], count: int) -> dict[str, np.ndarray]:
    """{group: ``[count, K]``} in dataset order, the first copy of each index kept; every index must be there."""
    seen = np.zeros(count, bool)
    merged: dict[str, np.ndarray] = {}
    for shard in shards:
        fresh = ~seen[shard["indices"]]
        _, first = np.unique(shard["indices"], return_index=True)
        keep = np.zeros(len(shard["indices"]), bool)
        keep[first] = True
        keep &= fresh
        for name, values in shard["scores"].items():
            merged.setdefault(name, np.zeros((count, values.shape[1]), np.float32))[shard["indices"][keep]] = values[keep]
        seen[shard["indices"][keep]] = True
    if not seen.all():
        raise RuntimeError(f"evaluation: {int((~seen).sum())} of {count} videos were scored by no rank")
    return merged


def labels_of(dataset: Any, group: int, multi_label: bool, num_classes: int) -> np.ndarray:
    """Ground truth of label group ``group``: ``[N]`` class indices, or ``[N, K]`` multi-hot."""
    if multi_label:
        hot = np.zeros((len(dataset.entries), num_classes), np.float32)
        for i, entry in enumerate(dataset.entries):
            hot[i, list(entry.labels[0])] = 1.0
        return hot
    return np.array([entry.labels[group][0] for entry in dataset.entries], np.int64)


def write_scores(path_csv: Any, path_json: Any, dataset: Any, scores: dict, labels: dict, names: dict,
                 epoch: int) -> None:
    """The per-video score files (CSV and JSON), atomically."""
    text = io.StringIO()
    out = csv.writer(text, lineterminator="\n")
    header = ["video", "where"]
    for g in scores:
        header += [f"{g}_label", f"{g}_pred"] + [f"{g}:{n}" for n in names[g]]
    out.writerow(header)
    videos = []
    for i, entry in enumerate(dataset.entries):
        row, record = [entry.path, entry.where], {"video": entry.path, "where": entry.where}
        for g, values in scores.items():
            label = labels[g][i]
            label = " ".join(str(int(k)) for k in np.flatnonzero(label)) if np.ndim(label) else int(label)
            pred = int(np.argmax(values[i]))
            row += [label, pred] + [f"{v:.6f}" for v in values[i]]
            record[g] = {"label": label, "pred": pred, "scores": [round(float(v), 6) for v in values[i]]}
        out.writerow(row)
        videos.append(record)
    atomic_write_text(path_csv, text.getvalue())
    atomic_write_text(path_json, json.dumps({"epoch": epoch, "class_names": names, "videos": videos}) + "\n")


def report(session: Any, dataset: Any, scores: dict, epoch: int) -> float:
    """Rank 0: metrics, score files, confusion PNGs, log lines and TensorBoard scalars; returns the first
    group's top-1 (mAP when multi-label)."""
    from stad.engine.recognition import class_names

    config, root = session.config, session.result_path
    rec = config.recognition
    names = {g: class_names(config, g) for g in scores}
    labels = {g: labels_of(dataset, i, rec.multi_label, rec.label_groups[g]) for i, g in enumerate(scores)}
    results, headline = {}, None
    for g, values in scores.items():
        found = (metrics.multi_label_metrics if rec.multi_label else metrics.single_label_metrics)(values, labels[g])
        results[g] = found
        for key in ("top1", "top5", "mean_class_accuracy", "f1_macro", "mAP"):
            if key in found:
                session.writer.add(f"val/{g}/{key}", found[key], epoch)
        if rec.multi_label:
            session.logger.info("val %s: mAP %.4f over %d videos", g, found["mAP"], found["num_videos"])
        else:
            session.logger.info("val %s: top-1 %.4f, top-5 %.4f, mean-class %.4f, F1-macro %.4f over %d videos", g,
                                found["top1"], found["top5"], found["mean_class_accuracy"], found["f1_macro"],
                                found["num_videos"])
            metrics.confusion_png(np.array(found["confusion"]), names[g], root / f"confusion_{g}_epoch{epoch}.png",
                                  f"{g}, epoch {epoch}: top-1 {found['top1']:.3f}")
        headline = found["mAP" if rec.multi_label else "top1"] if headline is None else headline
    write_scores(root / f"scores_epoch{epoch}.csv", root / f"scores_epoch{epoch}.json", dataset, scores, labels, names,
                 epoch)
    atomic_write_text(root / f"metrics_epoch{epoch}.json", json.dumps({"epoch": epoch, "groups": results}, indent=1)
                      + "\n")
    session.writer.flush()
    session.logger.info("wrote %s, %s and metrics_epoch%d.json", f"scores_epoch{epoch}.csv",
                        f"scores_epoch{epoch}.json", epoch)
    return float(headline)


def validate(session: Any, epoch: int) -> float | None:
    """Score every val video on all ranks (`predict_shard`), merge on rank 0 and `report`; every rank gets
    the headline metric."""
    from stad.engine.recognition import eval_data

    ctx = session.ctx
    dataset, model = eval_data(session)
    session.logger.info("evaluating epoch %d on %d videos x %d views", epoch, len(dataset),
                        getattr(getattr(dataset, "base", dataset), "num_views", 1))
    shards, _ = gather_bytes(ctx, pickle.dumps(predict_shard(session, model, dataset)))
    value = None
    if ctx.is_main:
        merged = merge_shards([pickle.loads(s) for s in shards], len(dataset))
        value = report(session, dataset, merged, epoch)
    value = broadcast_object(ctx, value)
    barrier(ctx)
    return value
