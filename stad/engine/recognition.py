"""Clip-level action recognition on the shared engine (``task: recognition``; docs/engine.md, *Recognition*).

`TASK` gives `stad.engine.runner` what differs from detection: the recognizer
(``stad.models.recognition.build_recognizer``), its weights, a per-group cross-entropy (BCE when
multi-label), list-file datasets (`stad.data.recognition`), a `RecognitionTrainer` (the detection
`Trainer`, normalised by clips instead of boxes) and the evaluation of `stad.engine.recognition_eval`.
The loop, checkpoints, exact resume, AMP, DDP, TensorBoard and the preflight are the engine's.

Linear probe with cached features (``model.finetune.mode: linear_probe`` + ``recognition.probe.cache_features``):
the frozen backbone's pooled features (``forward_features``, ``[N, V, D]``) are computed once per split,
stored under ``recognition.probe.cache_dir`` keyed by the frozen weights, the list file's bytes, the root,
the sampling and the transforms (`feature_cache_key`), and training / evaluation then run the head on
them (`FeatureHead`): the same trainer, optimizer, schedule, checkpoints and metrics, seconds per epoch.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from stad.config import Config, ConfigError, config_to_dict
from stad.data.recognition import RecognitionDataset, RecognitionSample, collate_recognition, encode_targets
from stad.engine import builders, checkpoint as ckpt
from stad.engine.distributed import DistContext, broadcast_object, gather_bytes
from stad.engine.trainer import Trainer, autocast


def label_groups(config: Config) -> dict[str, int]:
    """Head name -> class count, in list-file order."""
    return dict(config.recognition.label_groups)


def probe_cached(config: Config) -> bool:
    """Whether this run trains / evaluates the head on cached backbone features."""
    return config.model.finetune.mode == "linear_probe" and config.recognition.probe.cache_features


# --------------------------------------------------------------------------- model, weights, loss


def build_model(config: Config) -> nn.Module:
    """``build_recognizer`` from ``model.backbone.arch/kwargs``, ``model.head.type/kwargs`` and the label
    groups, with ``model.finetune`` / ``model.backbone.learnable`` applied (`builders.apply_finetune`)."""
    from stad.models.recognition import build_recognizer

    model = build_recognizer(backbone=config.model.backbone.arch, backbone_kwargs=dict(config.model.backbone.kwargs),
                             head=config.model.head.type, head_kwargs=dict(config.model.head.kwargs),
                             label_groups=label_groups(config))
    builders.apply_finetune(model, config)
    return model


def check_model(config: Config) -> None:
    """main.py's config check for recognition: the model builds (on the meta device: no memory), the loss
    section is left alone and the probe's cache goes with a linear probe."""
    if config.loss != type(config.loss)():
        raise ConfigError("loss: recognition uses cross-entropy per label group (BCE with recognition.multi_label); "
                          "remove the loss section")
    if config.recognition.probe.cache_features and config.model.finetune.mode != "linear_probe":
        raise ConfigError("recognition.probe.cache_features needs model.finetune.mode: linear_probe (a frozen "
                          f"backbone), not {config.model.finetune.mode!r}")
    try:
        with torch.device("meta"):
            build_model(config)
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"model (backbone {config.model.backbone.arch!r}, head {config.model.head.type!r}): "
                          f"{err.args[0] if err.args else err}") from None


def _load(model: nn.Module, state: Any, strict: bool) -> Any:
    from stad.models.recognition import load_recognition_weights

    return load_recognition_weights(ckpt.unwrap(model), state, strict=strict)


def load_initial_weights(model: nn.Module, config: Config, logger: logging.Logger) -> None:
    """``model.backbone.pretrain`` (backbone or whole-recognizer weights, ACAR's key edits applied) and
    ``pretrain`` (a whole recognizer), both non-strict, through ``load_recognition_weights``."""
    for where, spec in (("model.backbone.pretrain", config.model.backbone.pretrain), ("pretrain", config.pretrain)):
        if spec is None:
            continue
        result = _load(model, builders._read_weights(spec), strict=False)
        missing, unexpected = list(getattr(result, "missing", [])), list(getattr(result, "unexpected", []))
        backbone = [k for k in ckpt.unwrap(model).state_dict() if k.startswith("backbone.")]
        if backbone and set(backbone) <= set(missing):
            raise RuntimeError(f"{where}: no backbone tensor of {spec.path} fits the model (file keys e.g. "
                               f"{unexpected[:3]}; model keys e.g. {backbone[:3]}): set {where}.state_dict_key / "
                               "replace_prefix / replace_to / delete_prefix")
        logger.info("%s: loaded %s (layout %s; %d model keys left at init, e.g. %s; %d file keys unused)", where,
                    spec.path, getattr(result, "layout", "?"), len(missing), missing[:3], len(unexpected))


def load_checked_weights(model: nn.Module, state: dict, config: Config, logger: logging.Logger,
                         source: str = "weights") -> Any:
    """A checkpoint's weights, strictly; a checkpoint of ours must have been trained on the same label groups."""
    preset = state.get("preset") if isinstance(state, dict) else None
    if isinstance(preset, dict) and preset.get("task") == "recognition":
        if dict(preset.get("label_groups") or {}) != label_groups(config):
            raise ConfigError(f"{source}: trained for label groups {preset.get('label_groups')}, the config has "
                              f"{label_groups(config)} (recognition.label_groups)")
    elif isinstance(state, dict) and state.get("format") == ckpt.FORMAT:
        raise ConfigError(f"{source}: a detection checkpoint, not a recognition one (task: recognition)")
    logger.info("loading recognition weights from %s", source)
    return _load(model, state.get("state_dict", state) if isinstance(state, dict) else state, strict=True)


def preset(config: Config) -> dict:
    """What a recognition checkpoint carries besides its weights: model, label groups and names, test views."""
    rec = config.recognition
    return {"task": "recognition", "label_groups": label_groups(config), "multi_label": rec.multi_label,
            "class_names": {g: class_names(config, g) for g in rec.label_groups},
            "backbone": config.model.backbone.arch, "backbone_kwargs": dict(config.model.backbone.kwargs),
            "head": config.model.head.type, "head_kwargs": dict(config.model.head.kwargs),
            "sampling": config_to_dict(rec.sampling), "test_clips": rec.test_clips, "average": rec.average}


def class_names(config: Config, group: str) -> list[str]:
    """``recognition.class_names[group]``'s lines (one name a line), else ``"0" .. "K-1"``."""
    count = label_groups(config)[group]
    path = config.recognition.class_names.get(group)
    if path is None:
        return [str(i) for i in range(count)]
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != count:
        raise ConfigError(f"recognition.class_names.{group}: {path} has {len(names)} names, the group {count} classes")
    return names


class RecognitionLoss(nn.Module):
    """Sum over label groups of the mean cross-entropy over clips (multi-label: mean BCE with logits).

    forward(logits: {group: [B, K_g]}, targets: per group int64 ``[B]`` or multi-hot ``[B, K]``) -> scalar.
    """

    def __init__(self, groups: Mapping[str, int], multi_label: bool) -> None:
        super().__init__()
        self.groups, self.multi_label = list(groups), multi_label

    def forward(self, logits: Mapping[str, torch.Tensor], targets: tuple[torch.Tensor, ...]) -> torch.Tensor:
        loss = logits[self.groups[0]].new_zeros(())
        for name, target in zip(self.groups, targets):
            out = logits[name].float()
            loss = loss + (nn.functional.binary_cross_entropy_with_logits(out, target.float()) if self.multi_label
                           else nn.functional.cross_entropy(out, target))
        return loss

    def activation(self, logits: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per group: softmax probabilities (sigmoid when multi-label)."""
        return {k: (v.float().sigmoid() if self.multi_label else v.float().softmax(-1)) for k, v in logits.items()}


def build_criterion(config: Config) -> tuple[RecognitionLoss, Any]:
    loss = RecognitionLoss(label_groups(config), config.recognition.multi_label)
    return loss, loss.activation


# --------------------------------------------------------------------------- training


class FeatureHead(nn.Module):
    """The recognizer's head on cached features: forward(features ``[B, D]``) -> {group: logits ``[B, K]``}."""

    def __init__(self, recognizer: nn.Module) -> None:
        super().__init__()
        self.recognizer = recognizer

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.recognizer.forward_head(features)


class RecognitionTrainer(Trainer):
    """The engine's `Trainer` for clips: the loss is normalised by the clips of all ranks (not boxes); a
    batch's ``clips`` are ``[B, 1, 3, T, H, W]`` (or cached features ``[B, 1, D]`` through a `FeatureHead`)."""

    def count(self, batch: Any) -> int:
        return len(batch)

    def _micro_loss(self, batch: Any, n_total: float) -> torch.Tensor:
        with autocast(self.ctx.device, self.amp_dtype):
            logits = self.model(batch.clips[:, 0])
        loss = self.criterion({k: v.float() for k, v in logits.items()}, batch.targets)
        return loss * (len(batch) * self.ctx.world_size / n_total)


def distribute(ctx: DistContext, config: Config, model: nn.Module) -> nn.Module:
    """DDP as detection; with cached features the recognizer stays plain (the trainer wraps its `FeatureHead`)."""
    from stad.engine.runner import distribute as ddp

    return model if probe_cached(config) else ddp(ctx, config, model)


def make_trainer(session: Any, optimizer: Any, schedule: Any, scaler: Any) -> RecognitionTrainer:
    from stad.engine.runner import distribute as ddp

    config, train = session.config, session.config.train
    model = ddp(session.ctx, config, FeatureHead(ckpt.unwrap(session.model))) if probe_cached(config) else session.model
    return RecognitionTrainer(session.ctx, model, session.criterion, optimizer, schedule, scaler,
                              freeze_bn=config.model.freeze_bn, accumulate_steps=train.accumulate_steps,
                              grad_clip=train.grad_clip, amp=train.amp,
                              frozen=builders.frozen_modules(session.model, config))


# --------------------------------------------------------------------------- data


def eval_views(config: Config) -> list:
    """The test-time pipelines (M crops): the val section's (lists of kwargs = views), else train's, deterministic."""
    split = config.val if config.val is not None else config.train
    return builders.build_views(split.augmentation, train=False)


def clip_dataset(config: Config, split: Any, train: bool, views: list | None = None,
                 num_clips: int | None = None) -> RecognitionDataset:
    """A `RecognitionDataset` of a train / val section (``views``, ``num_clips``: the test views by default)."""
    if views is None:
        views = builders.build_views(split.augmentation, train=True) if train else eval_views(config)
    clips = config.recognition.test_clips if num_clips is None else num_clips
    return RecognitionDataset(split.annotation_path, split.root_path, config.recognition, views, train=train,
                              num_clips=clips, decode_threads=split.decode_threads)


class FeatureDataset(Dataset):
    """Cached features ``[N, V, D]`` of a `RecognitionDataset`'s videos, as `RecognitionSample` s."""

    def __init__(self, features: np.ndarray, base: RecognitionDataset) -> None:
        self.features, self.base = features, base
        self.entries = base.entries

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> RecognitionSample:
        targets = encode_targets(self.base.entries[index], self.base.groups, self.base.cfg.multi_label)
        return RecognitionSample(index, torch.from_numpy(np.ascontiguousarray(self.features[index])), targets)


def train_dataset(session: Any) -> Dataset:
    config = session.config
    if probe_cached(config):  # one deterministic view per video: the test-time first crop of the centre clip
        base = clip_dataset(config, config.train, train=False, views=eval_views(config)[:1], num_clips=1)
        return FeatureDataset(cached_features(session, "train", base), base)
    return clip_dataset(config, config.train, train=True)


def eval_data(session: Any) -> tuple[Dataset, nn.Module]:
    """(val dataset, the module scoring one view of a batch): clips through the recognizer, or cached features
    through its `FeatureHead`."""
    config = session.config
    base = clip_dataset(config, config.val, train=False)
    if probe_cached(config):
        return FeatureDataset(cached_features(session, "val", base), base), FeatureHead(ckpt.unwrap(session.model))
    return base, session.model


# --------------------------------------------------------------------------- cached features


def feature_cache_key(model: nn.Module, config: Config, dataset: RecognitionDataset, role: str) -> str:
    """sha256 (hex, 20 chars) of what the features depend on: every frozen tensor of the model (not the
    trainable head), the list file's bytes, the root, the recognition data keys and the views."""
    digest = hashlib.sha256()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for name, tensor in sorted(model.state_dict().items()):
        if name not in trainable:
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    rec = config_to_dict(config.recognition)
    rec.pop("probe")
    facts = {"role": role, "list": hashlib.sha256(Path(dataset.list_path).read_bytes()).hexdigest(),
             "root": str(Path(dataset.root).resolve()), "recognition": rec, "clips": dataset.num_clips,
             "views": [repr(v) for v in dataset.views], "backbone": config_to_dict(config.model.backbone)}
    digest.update(json.dumps(facts, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:20]


@torch.no_grad()
def _extract_shard(session: Any, dataset: RecognitionDataset) -> tuple[np.ndarray, np.ndarray]:
    """This rank's (indices ``[n]``, features ``[n, V, D]``) of ``dataset`` (eval mode, float32)."""
    ctx, config = session.ctx, session.config
    model = ckpt.unwrap(session.model).eval()
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=False, drop_last=False)
    loader = DataLoader(dataset, batch_size=config.val.batch_size if config.val else 1, sampler=sampler,
                        num_workers=0, collate_fn=collate_recognition)
    indices, feats = [], []
    for batch in loader:
        clips = batch.clips.to(ctx.device)
        b, v = clips.shape[:2]
        out = model.forward_features(clips.flatten(0, 1)).float().reshape(b, v, -1)
        indices.append(batch.indices.numpy())
        feats.append(out.cpu().numpy())
    return np.concatenate(indices), np.concatenate(feats)


def cached_features(session: Any, split: str, dataset: RecognitionDataset) -> np.ndarray:
    """float32 ``[N, V, D]`` features of ``dataset``: read from the cache (rank 0) or computed by every rank
    on its shard and written by rank 0 (atomically); every rank receives them from rank 0."""
    ctx, config, logger = session.ctx, session.config, session.logger
    folder = Path(config.recognition.probe.cache_dir or Path(config.result_path) / "feature_cache")
    path = folder / f"{split}_{feature_cache_key(ckpt.unwrap(session.model), config, dataset, split)}.npy"
    found = broadcast_object(ctx, path.is_file() if ctx.is_main else None)
    if found:
        feats = np.load(path) if ctx.is_main else None
        if ctx.is_main:
            logger.info("%s features: read %s %s from the cache", split, path, tuple(feats.shape))
        return broadcast_object(ctx, feats)
    import pickle
    import time

    start = time.perf_counter()
    shards, _ = gather_bytes(ctx, pickle.dumps(_extract_shard(session, dataset)))
    feats = None
    if ctx.is_main:
        parts = [pickle.loads(s) for s in shards]
        dim = parts[0][1].shape[1:]
        feats = np.zeros((len(dataset), *dim), np.float32)
        for index, values in reversed(parts):  # padding copies: the first rank's write wins
            feats[index] = values
        folder.mkdir(parents=True, exist_ok=True)
        from stad.io_utils import atomic_open

        with atomic_open(path, "wb") as handle:
            np.save(handle, feats)
        logger.info("%s features %s computed in %.1f s, cached in %s", split, tuple(feats.shape),
                    time.perf_counter() - start, path)
    return broadcast_object(ctx, feats)


def preflight(config: Config, logger: logging.Logger) -> None:
    from stad.data.validate import validate_recognition_config

    validate_recognition_config(config, logger=logger)


def _task() -> Any:
    from stad.engine.recognition_eval import validate
    from stad.engine.runner import Task

    return Task(preflight=preflight, build_model=build_model, load_initial_weights=load_initial_weights,
                build_criterion=build_criterion, train_dataset=train_dataset, collate=collate_recognition,
                make_trainer=make_trainer, load_checked_weights=load_checked_weights, validate=validate,
                preset=preset, distribute=distribute)


TASK = _task()
