"""The job every rank runs: set up, then train (validating every ``val_freq`` epochs) or evaluate.

What differs between tasks (``config.task``: detection, recognition) is a `Task`: the preflight, model,
weights, loss, datasets, trainer and evaluation. The loop, checkpoints, resume, AMP, distributed setup
and logs are this module's, shared by both (`DETECTION` below; `stad.engine.recognition.TASK`).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from stad.config import Config, config_to_dict, save_config
from stad.engine import builders, checkpoint as ckpt
from stad.engine.distributed import DistContext, barrier, broadcast_object
from stad.engine.frame_map import evaluate_csv
from stad.engine.logs import ScalarWriter, progress, setup_logger
from stad.engine.optim import WarmupLRSchedule, build_optimizer
from stad.engine.predictor import gather_to_main, mean_loss, merge_shards, predict_shard, write_predictions_csv
from stad.engine.sampler import ResumableDistributedSampler, SeededBatches
from stad.engine.trainer import Trainer, amp_dtype, autocast, steps_per_epoch


@dataclass
class Session:
    """What every phase of a run shares."""

    ctx: DistContext
    config: Config
    logger: logging.Logger
    writer: ScalarWriter
    model: torch.nn.Module  # DDP-wrapped when distributed
    criterion: Any
    activation: Any
    task: "Task" = field(default=None)  # type: ignore[assignment]  # set by _prepare (DETECTION when None)

    def __post_init__(self) -> None:
        if self.task is None:
            self.task = DETECTION

    @property
    def result_path(self) -> Path:
        return Path(self.config.result_path)


def _prepare(ctx: DistContext, config: Config) -> Session:
    task = task_of(config)
    if ctx.is_main:
        Path(config.result_path).mkdir(parents=True, exist_ok=True)
        save_config(config, Path(config.result_path) / "config.yaml")
    logger = setup_logger(config.result_path, ctx.is_main)
    logger.info("world size %d, backend %s, device %s", ctx.world_size, ctx.backend, ctx.device)
    ckpt.seed_everything(config.manual_seed)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.deterministic = config.cudnn.deterministic
        torch.backends.cudnn.benchmark = config.cudnn.benchmark
    if ctx.is_main:  # the dataset checks run once; the other ranks wait at the barrier
        task.preflight(config, logger)
    barrier(ctx)
    model = task.build_model(config).to(ctx.device)
    task.load_initial_weights(model, config, logger)
    model = task.distribute(ctx, config, model)
    criterion, activation = task.build_criterion(config)
    writer = ScalarWriter(config.result_path, ctx.is_main)
    return Session(ctx, config, logger, writer, model, criterion, activation, task)


def distribute(ctx: DistContext, config: Config, model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when the job is distributed (else as it is)."""
    if not ctx.distributed:
        return model
    with warnings.catch_warnings():  # torch>=2.14 deprecates broadcast_buffers; same meaning here
        warnings.simplefilter("ignore", FutureWarning)
        # buffers are not synced each step (ACAR-Net): BatchNorm is frozen or per-rank
        return DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                       else None, broadcast_buffers=False,
                                       find_unused_parameters=config.dist.find_unused_parameters)


def _val_loader(session: Session) -> tuple[DataLoader, list[int], Any]:
    ctx, val = session.ctx, session.config.val
    dataset = builders.build_dataset(session.config, val, train=False)
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=False, drop_last=False)
    loader = DataLoader(dataset, batch_size=val.batch_size, sampler=sampler, num_workers=val.workers,
                        collate_fn=builders.collate, pin_memory=ctx.device.type == "cuda")
    return loader, list(sampler), dataset


def validate(session: Session, epoch: int) -> float | None:
    """Predict every val box on all ranks, merge into ``predict_epoch{epoch}.csv``, evaluate on rank 0."""
    ctx, config = session.ctx, session.config
    loader, indices, dataset = _val_loader(session)
    session.logger.info("evaluating epoch %d on %d clips", epoch, len(dataset))
    bar = progress(len(loader), f"val {epoch}", ctx.is_main)
    criterion = session.criterion if config.val.with_label else None
    shard = predict_shard(session.model, loader, indices, session.activation, ctx.device, config.num_classes, bar,
                          criterion)
    if bar is not None:
        bar.close()
    # over torch.distributed, not through result_path: ranks on other nodes need no shared filesystem
    shards, gathered = gather_to_main(ctx, shard)
    mAP = None
    if ctx.is_main:
        session.logger.info("gathered the predictions of %d ranks: %.2f MB in %d rounds, %.3f s", ctx.world_size,
                            gathered.bytes / 1e6, gathered.rounds, gathered.seconds)
        merged = merge_shards(shards, len(dataset), config.num_classes)
        csv_path = session.result_path / f"predict_epoch{epoch}.csv"
        rows = write_predictions_csv(csv_path, merged, builders.labelmap(dataset, config))
        session.logger.info("wrote %d rows (%d boxes) to %s", rows, len(merged), csv_path)
        loss = mean_loss(shards)
        if loss is not None:
            session.logger.info("val loss %.4f", loss)
            session.writer.add("val/loss", loss, epoch)
        if config.val.eval_mAP is not None:
            summary = evaluate_csv(config.val.eval_mAP, config.capacities, csv_path,
                                   session.result_path / f"eval_epoch{epoch}", session.logger)
            mAP = summary.mAP
            session.writer.add("val/mAP", mAP, epoch)
            session.writer.flush()
    mAP = broadcast_object(ctx, mAP)
    barrier(ctx)
    return mAP


def _train_loader(session: Session) -> tuple[DataLoader, ResumableDistributedSampler]:
    ctx, train = session.ctx, session.config.train
    dataset = session.task.train_dataset(session)
    # with mid-epoch checkpoints and DataLoader workers, a batch's augmentation is seeded by its
    # position (the workers' RNG states cannot be checkpointed); in-process loading restores the RNG
    seeded = train.save_every_iters > 0 and train.workers > 0
    sampler = ResumableDistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                          seed=session.config.manual_seed, drop_last=True, seeded=seeded)
    loader = DataLoader(SeededBatches(dataset) if seeded else dataset, batch_size=train.batch_size,
                        sampler=sampler, num_workers=train.workers,
                        collate_fn=session.task.collate, pin_memory=ctx.device.type == "cuda",
                        drop_last=train.drop_last,
                        persistent_workers=train.workers > 0)  # workers keep their decoded-frame cache (cache_mb)
    session.logger.info("train: %d clips, %d batches/epoch/rank", len(dataset), len(loader))
    return loader, sampler


@dataclass
class ResumePoint:
    """Where training continues: ``epoch`` (1-based) from its optimizer step ``step``."""

    epoch: int = 1
    step: int = 0
    totals: tuple[float, int] = (0.0, 0)  # (loss x boxes, boxes) of the epoch's steps before ``step``
    rng: dict | None = None  # this rank's RNG state at ``step`` (mid-epoch only)


def _resume(session: Session, state: dict, path: Path, optimizer: Any, schedule: Any, scaler: Any) -> ResumePoint:
    """Restore a checkpoint; returns where to continue. Foreign (e.g. ACAR) files restore weights only."""
    ctx = session.ctx
    session.task.load_checked_weights(session.model, state, session.config, session.logger, str(path))
    _restore_rank_batchnorm(session, state)
    if state.get("format") != ckpt.FORMAT:
        session.logger.warning("%s was not written by this engine: weights restored, optimizer state not", path)
        return ResumePoint(int(state.get("epoch", 0)) + 1)
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    ckpt.set_rng_state(state["rng"])
    epoch, mid = int(state.get("epoch", 0)), state.get("mid_epoch")
    if not mid:
        session.logger.info("resumed from %s (epoch %d)", path, epoch)
        return ResumePoint(epoch + 1)
    ranks = state.get("rng_ranks") or []
    if len(ranks) != ctx.world_size:
        session.logger.warning("%s was written by %d ranks, this job has %d: the data order and random draws of "
                               "the rest of epoch %d differ from the uninterrupted run's", path, len(ranks),
                               ctx.world_size, epoch)
    rng = ranks[ctx.rank] if len(ranks) == ctx.world_size else None
    session.logger.info("resumed from %s (epoch %d, step %d, iteration %d)", path, epoch, mid["step"],
                        mid["iteration"])
    return ResumePoint(epoch, int(mid["step"]), (float(mid["loss_total"]), int(mid["boxes"])), rng)


def _resume_path(config: Config, resume: bool) -> Path | None:
    if resume:
        latest = ckpt.latest_checkpoint(config.result_path)
        if latest is not None:
            return latest
    if config.resume_path:
        for path in (Path(config.resume_path), Path(config.result_path) / config.resume_path):
            if path.is_file():
                return path
        raise FileNotFoundError(f"resume_path: checkpoint not found: {config.resume_path} "
                                f"(also looked under result_path {config.result_path})")
    return None


def _restore_rank_batchnorm(session: Session, state: dict) -> None:
    """This rank's own BatchNorm running statistics, when the checkpoint holds every rank's (same world size)."""
    ranks = state.get("bn_ranks")
    if ranks and len(ranks) == session.ctx.world_size and session.ctx.rank > 0:
        ckpt.restore_batchnorm_state(session.model, ranks[session.ctx.rank])


def _validate(session: Session, epoch: int) -> float | None:
    """`validate` under ``val.amp``'s autocast (float32 by default)."""
    dtype = amp_dtype(session.config.val.amp, session.ctx.device)
    with autocast(session.ctx.device, dtype):
        return session.task.validate(session, epoch)


def train(session: Session, resume: bool) -> None:
    ctx, config, train_cfg = session.ctx, session.config, session.config.train
    loader, sampler = _train_loader(session)
    n_steps = steps_per_epoch(len(loader), train_cfg.accumulate_steps)
    if n_steps == 0:
        raise ValueError(f"{train_cfg.annotation_path}: too few clips for one step of {ctx.world_size} ranks x "
                         f"batch {train_cfg.batch_size} x accumulate {train_cfg.accumulate_steps}")
    params = builders.optimizer_params(session.model, config)  # model.finetune: one group, or per-part LR scales
    optimizer = build_optimizer(params, train_cfg.optimizer, train_cfg.scheduler.base_lr)
    schedule = WarmupLRSchedule(optimizer, train_cfg.scheduler, train_cfg.n_epochs, n_steps)
    dtype = amp_dtype(train_cfg.amp, ctx.device)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=dtype == torch.float16)  # fp16 only
    session.logger.info("training precision: %s", "float32" if dtype is None else f"autocast {dtype}")
    trainer = session.task.make_trainer(session, optimizer, schedule, scaler)
    # rank 0 chooses the checkpoint; ranks without the file receive it from rank 0
    path, state = ckpt.read_checkpoint_everywhere(ctx, _resume_path(config, resume) if ctx.is_main else None)
    start = _resume(session, state, path, optimizer, schedule, scaler) if state is not None else ResumePoint()
    del state
    states = {"optimizer": optimizer, "scheduler": schedule, "scaler": scaler}
    samples_per_step = train_cfg.batch_size * train_cfg.accumulate_steps

    def on_step(step: int, result: Any) -> None:
        if step % config.print_freq == 0:
            session.writer.add("train/loss", result.loss, step)
            session.writer.add("train/lr", result.lr, step)

    for epoch in range(start.epoch, train_cfg.n_epochs + 1):
        first = start.step if epoch == start.epoch else 0
        sampler.set_epoch(epoch, start=first * samples_per_step)
        # every epoch starts from RNG states fixed by (seed, epoch, rank): resume is exact
        ckpt.seed_everything(config.manual_seed * 100003 + epoch * 1009 + ctx.rank)
        restore = None
        if first and start.rng is not None:
            restore = lambda rng=start.rng: ckpt.set_rng_state(rng)  # noqa: E731 (after the loader's draw)

        def after_step(done: int, totals: tuple[float, int], epoch: int = epoch) -> None:
            iteration = (epoch - 1) * n_steps + done
            every = train_cfg.save_every_iters
            if not every or iteration % every or (done == n_steps and _saves_epoch(train_cfg, epoch)):
                return
            rngs = ckpt.gather_rng_states(ctx)  # collectives: every rank's RNG state and BatchNorm statistics
            bns = ckpt.gather_batchnorm_states(ctx, session.model)
            if ctx.is_main:
                _save(session, ckpt.iter_checkpoint_path(config.result_path, epoch, iteration), epoch, states,
                      prune=True, rng_ranks=rngs, bn_ranks=bns,
                      mid_epoch={"step": done, "iteration": iteration, "loss_total": totals[0], "boxes": totals[1]})

        bar = progress(n_steps, f"epoch {epoch}/{train_cfg.n_epochs}", ctx.is_main)
        loss = trainer.train_epoch(epoch, loader, n_steps, progress=bar, on_step=on_step, start_step=first,
                                   totals=start.totals if first else (0.0, 0), on_start=restore,
                                   after_step=after_step if train_cfg.save_every_iters else None)
        if bar is not None:
            bar.close()
        session.logger.info("epoch %d/%d: loss %.4f, lr %.3e", epoch, train_cfg.n_epochs, loss,
                            optimizer.param_groups[0]["lr"])
        session.writer.add("train/epoch_loss", loss, epoch)
        if _saves_epoch(train_cfg, epoch):
            bns = ckpt.gather_batchnorm_states(ctx, session.model)  # a collective
            if ctx.is_main:
                _save(session, ckpt.checkpoint_path(config.result_path, epoch), epoch, states,
                      prune=bool(train_cfg.save_every_iters), bn_ranks=bns)
        barrier(ctx)
        if config.val is not None and epoch % train_cfg.val_freq == 0:
            _validate(session, epoch)


def _save(session: Session, path: Path, epoch: int, states: dict, prune: bool, **extra: Any) -> None:
    """Rank 0: write a checkpoint (model + ``states``: optimizer, scheduler, scaler), point ``last.pth``
    at it and, with ``prune``, keep only ``train.keep_last`` mid-epoch checkpoints."""
    config = session.config
    saved = ckpt.save_checkpoint(path, epoch=epoch, model=session.model, config=config_to_dict(config),
                                 preset=session.task.preset(config), **states, **extra)
    ckpt.link_last(saved)
    if prune:
        ckpt.prune_mid_epoch(config.result_path, config.train.keep_last)
    session.logger.info("saved %s", saved)


def _saves_epoch(train_cfg: Any, epoch: int) -> bool:
    """Whether an end-of-epoch checkpoint is written after ``epoch``."""
    return epoch % train_cfg.save_freq == 0 or epoch == train_cfg.n_epochs


def run(ctx: DistContext, config: Config, resume: bool = False) -> None:
    """Entry point of each rank (see stad.engine.launch)."""
    session = _prepare(ctx, config)
    try:
        if config.evaluate:
            # rank 0 chooses the weights; ranks without the file receive them (no shared filesystem needed)
            path, state = ckpt.read_checkpoint_everywhere(ctx, _resume_path(config, resume) if ctx.is_main else None)
            epoch = 0
            if state is not None:
                # the config's preprocessing must match the weights' preset (stored, or inferred from the keys)
                session.task.load_checked_weights(session.model, state, config, session.logger, str(path))
                epoch = int(state.get("epoch", 0))
                session.logger.info("evaluating weights from %s", path)
            else:
                session.logger.warning("no resume_path and no checkpoint: evaluating untrained weights")
            _validate(session, epoch)
        else:
            train(session, resume)
    finally:
        session.writer.close()


def _trainer(session: Session, optimizer: Any, schedule: Any, scaler: Any) -> Trainer:
    """The detection `Trainer` (box-normalised loss) over the session's model."""
    config = session.config
    train_cfg = config.train
    return Trainer(session.ctx, session.model, session.criterion, optimizer, schedule, scaler,
                   freeze_bn=config.model.freeze_bn, accumulate_steps=train_cfg.accumulate_steps,
                   grad_clip=train_cfg.grad_clip, amp=train_cfg.amp,
                   frozen=builders.frozen_modules(session.model, config))


@dataclass(frozen=True)
class Task:
    """What one task (``config.task``) gives the shared engine; every field is a function.

    preflight(config, logger): data checks on rank 0. build_model(config) / load_initial_weights(model,
    config, logger) / distribute(ctx, config, model): the model, its starting weights, its DDP wrapper.
    build_criterion(config) -> (criterion, activation). train_dataset(session) + collate: the training
    data. make_trainer(session, optimizer, schedule, scaler) -> a `Trainer`. load_checked_weights(model,
    state, config, logger, source): a checkpoint's weights. validate(session, epoch) -> the metric.
    preset(config) -> the dict stored as a checkpoint's ``preset`` (None: derived from the config).
    """

    preflight: Callable
    build_model: Callable
    load_initial_weights: Callable
    build_criterion: Callable
    train_dataset: Callable
    collate: Callable
    make_trainer: Callable
    load_checked_weights: Callable
    validate: Callable
    preset: Callable = lambda config: None  # noqa: E731
    distribute: Callable = distribute


DETECTION = Task(preflight=builders.preflight, build_model=builders.build_model,
                 load_initial_weights=builders.load_initial_weights, build_criterion=builders.build_criterion,
                 train_dataset=lambda session: builders.build_dataset(session.config, session.config.train, True),
                 collate=builders.collate, make_trainer=_trainer, load_checked_weights=builders.load_checked_weights,
                 validate=validate)


def task_of(config: Config) -> Task:
    """The `Task` of ``config.task`` (recognition's module is imported only when used)."""
    if getattr(config, "task", "detection") == "recognition":
        from stad.engine.recognition import TASK

        return TASK
    return DETECTION
