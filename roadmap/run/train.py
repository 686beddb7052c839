"""Fit one roadmap step from a composed config (``run.py``'s job), with results that last.

The run folder, its paths and ``metrics.json`` are :mod:`roadmap.run.record`'s. A finished run is not retrained
(``run.force=true`` retrains); an unfinished or preempted one resumes from ``last.ckpt`` (``run.resume=false``
restarts); a folder whose saved config is another run's is refused. At the end the final, best and EMA
weights are exported (:func:`export_run_weights`).
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import replace

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from roadmap.config.effective import effective_run
from roadmap.config.recipe import HEAD_LAYER
from roadmap.config.steps import instantiate_model
from roadmap.data.datamodule import RoadmapDataModule
from roadmap.errors import ConfigError
from roadmap.models.shapes import count_gflops, count_params_m
from roadmap.models.weights import export, init_from, read_state_dict
from roadmap.run.callbacks import (BadFiles, History, LayoutChange, MidEpochCheckpoint, Preemption, ProgressLines,
                                   ResumableProgressBar, Throughput)
from roadmap.run.checkpoints import AtomicCheckpointIO
from roadmap.run.module import RoadmapModule
from roadmap.run.plan import RunPlan, take_plan
from roadmap.run.record import RunPaths, RunRecord
from roadmap.utils.cpu_allocator import retain_freed_memory
from roadmap.utils.devices import device_name
from roadmap.utils.files import write_text


def build_loggers(cfg: DictConfig, paths: RunPaths) -> list:
    """Every ``cfg.logger`` node; one with an ``id`` key (wandb) keeps the id stored in the run folder."""
    loggers = []
    for node in cfg.logger.values():
        extra = {}
        if "id" in node and node.id is None and rank_zero_only.rank == 0:  # other ranks log nothing
            if not paths.wandb_id.exists():
                write_text(paths.wandb_id, uuid.uuid4().hex[:12])
            extra["id"] = paths.wandb_id.read_text().strip()
            paths.wandb.mkdir(parents=True, exist_ok=True)
        loggers.append(instantiate(node, **extra))
    return loggers


def checkpoint_callbacks(cfg: DictConfig, paths: RunPaths, metric: str) -> list[ModelCheckpoint]:
    """``last.ckpt`` at every epoch end and, with ``run.checkpoint_every_n_steps``, every n optimizer steps too (a
    second callback: Lightning's triggers are exclusive within one); ``best.ckpt`` by the table's ``metric`` where the
    run validates."""
    newest = dict(dirpath=paths.checkpoints, filename=paths.last_ckpt.stem, save_top_k=1,  # no monitor: the newest
                  enable_version_counter=False)  # only, overwritten in place
    found = [ModelCheckpoint(**newest, every_n_epochs=1)]
    if cfg.run.checkpoint_every_n_steps:
        found.append(MidEpochCheckpoint(**newest, every_n_train_steps=cfg.run.checkpoint_every_n_steps))
    if cfg.recipe.validate:  # a run without validation has no best epoch
        found.append(ModelCheckpoint(dirpath=paths.checkpoints, filename=paths.best_ckpt.stem,
                                     monitor=metric, mode="max", save_top_k=1,
                                     save_weights_only=True, enable_version_counter=False, every_n_epochs=1))
    return found


def build_trainer(cfg: DictConfig, run, plan: RunPlan, callbacks: list) -> L.Trainer:
    """Lightning's trainer: hardware and switches from ``cfg.trainer``, the loop's length, clipping,
    accumulation and batch limits from the effective run, checkpoints in the plan's run folder."""
    paths = plan.paths
    extra = [instantiate(c) for c in cfg.get("callbacks", {}).values()]
    if cfg.trainer.get("enable_progress_bar", True):  # a bar on a terminal, lines in a log file
        extra.append(ResumableProgressBar() if sys.stdout.isatty() else ProgressLines())
    plugins = [*(instantiate(p) for p in cfg.trainer.get("plugins") or []),
               AtomicCheckpointIO(keep_previous={paths.last_ckpt: paths.previous_ckpt})]
    try:
        return instantiate(cfg.trainer, callbacks=[*callbacks, *checkpoint_callbacks(cfg, paths, plan.metric), *extra],
                           plugins=plugins, logger=build_loggers(cfg, paths), default_root_dir=str(paths.root),
                           enable_checkpointing=True, use_distributed_sampler=False, **run.trainer_arguments())
    except InstantiationException as err:
        if not isinstance(err.__cause__, (ValueError, TypeError, MisconfigurationException)):
            raise
        reason = " ".join(str(err.__cause__).split())  # a trainer value Lightning refuses
        raise ConfigError(f"Lightning refuses the trainer ({_trainer_values(cfg.trainer)}): {reason[:300]}") from None


def _trainer_values(trainer) -> str:
    return ", ".join(f"trainer.{k}={trainer.get(k)}" for k in ("accelerator", "devices", "strategy", "precision")
                     if k in trainer)


def _interrupted(err: BaseException) -> tuple[str, str]:
    """(status, error) of a run that ended by ``err`` before a stop signal could save a checkpoint: a signal's
    exit (submitit requeueing a job that had not reached its first step, Ctrl-C) resumes from the last
    checkpoint; anything else is a failure."""
    if isinstance(err, (SystemExit, KeyboardInterrupt)):
        status = "preempted" if isinstance(err, SystemExit) and os.environ.get("SLURM_JOB_ID") else "cancelled"
        return status, f"{status} before a checkpoint ({type(err).__name__}): the same command resumes from the last one"
    message = str(err).strip().splitlines()[-1] if str(err).strip() else ""
    return "failed", f"{type(err).__name__}: {message}"


STOPPED = {"preempted": "preempted: the requeued job resumes from {last}",
           "cancelled": "cancelled: the same command resumes from {last}"}


def export_run_weights(module, paths) -> dict[str, str]:
    """A finished run's ``weights/{final,best,ema}.safetensors`` (plain RoadmapNet state dicts; best from
    ``best.ckpt``), as paths in the run folder (``paths``: its :class:`roadmap.run.record.RunPaths`). Weights are written
    once: a best epoch that is the last one names the final (or EMA) file instead of a copy."""
    model = getattr(module.model, "_orig_mod", module.model)  # torch.compile's wrapper
    current = {"final": model.state_dict()}
    if module.ema is not None:
        current["ema"] = module.ema.module.state_dict()
    out = {name: export(state, paths.weights_file(name)) for name, state in current.items()}
    if paths.best_ckpt.exists():
        which = "ema" if module.ema is not None else "final"
        best = read_state_dict(paths.best_ckpt, "ema" if which == "ema" else "model")
        same = best.keys() == current[which].keys() and all(torch.equal(best[k], v.cpu()) for k, v in current[which].items())
        out["best"] = out[which] if same else export(best, paths.weights_file("best"))
    return {k: paths.relative(v) for k, v in out.items()}


def fine_tune_line(loaded: dict, recipe, run) -> str:
    """What a run starting from weights loaded, and how it trains them: the file, EMA or raw weights, the head, the
    layer-wise lr decay (its groups and the stem's share of the head's peak lr)."""
    decay = recipe.get("layer_decay")
    groups = (f"layer decay {decay} over {HEAD_LAYER + 1} layer groups (head lr {run.peak_lr:.3g}, stem lr "
              f"{run.peak_lr * decay ** HEAD_LAYER:.3g})" if decay else f"no layer decay (lr {run.peak_lr:.3g})")
    return f"init: {loaded['weights']} weights of {loaded['file']} | head {loaded['head']} | {groups}"


def train(cfg: DictConfig) -> RunRecord:
    """Train, validate and record one step; returns its record.

    Everything that can refuse the run (config, input size, identity, devices, data) runs before its record
    says ``running``; after that the record ends as done, failed, preempted or cancelled."""
    plan = take_plan(cfg)
    retain_freed_memory()
    step, paths, previous = plan.step, plan.paths, plan.previous
    if previous is None and paths.metrics.exists() and rank_zero_only.rank == 0:
        print(f"{paths.metrics} does not read back ({RunRecord.load(paths.root).error}): this run writes it anew",
              file=sys.stderr)
    if previous and previous.status == "done" and not cfg.run.force:
        previous = replace(previous, run_dir=str(paths.root))  # where it is now (a copied or moved folder)
        print(f"already done, not retraining (run.force=true retrains)\n{previous.summary()}")
        return previous
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = instantiate_model(cfg.model, init_from=None)
    loaded = init_from(model, str(cfg.model.init_from), cfg.recipe.init_from_ema, plan.init_named) \
        if cfg.model.init_from else None
    datamodule = RoadmapDataModule(cfg.data, cfg.recipe, cfg.budget.batch_size, cfg.budget.num_workers, cfg.seed)
    datamodule.setup()
    run = effective_run(cfg, train_size=len(datamodule.train_set))
    if not run.total_steps:
        raise ConfigError(f"{len(datamodule.train_set)} training images give no full batch of "
                          f"{cfg.budget.batch_size} × {run.effective_batch // cfg.budget.batch_size} (processes × "
                          f"accumulation): lower budget.batch_size or add data")
    if run.warmup_steps >= run.total_steps:
        raise ConfigError(f"the warm-up ({run.warmup_epochs:g} of {run.epochs} epochs) takes {run.warmup_steps} of the "
                          f"run's {run.total_steps} optimizer steps, leaving none for the schedule: lower "
                          f"recipe.warmup_epochs or raise budget.epoch_scale")
    if rank_zero_only.rank == 0:  # every file of the run folder is global rank 0's
        paths.root.mkdir(parents=True, exist_ok=True)
        write_text(paths.config, OmegaConf.to_yaml(plan.resolved))

    # the run's time so far: a resumed run's record holds its earlier processes' (a restart from scratch: none)
    earlier = previous.wall_s or 0.0 if previous and cfg.run.resume and not cfg.run.force else 0.0
    started = time.time() - earlier
    throughput, bad_files = Throughput(), BadFiles(cfg.data.get("max_bad_fraction", 0.0))
    header = RunRecord.of_run(cfg, step, HydraConfig.get().overrides.task, paths, run, plan.data,
                              {**plan.init, "weights": loaded["weights"], "head": loaded["head"]} if loaded else None)
    if loaded and rank_zero_only.rank == 0:
        print(fine_tune_line(loaded, cfg.recipe, run))

    def record_now(status: str, error: str | None = None) -> None:
        """The run's record as it stands (global rank 0's file): the history so far, the unreadable files met."""
        if rank_zero_only.rank == 0:
            replace(header.with_status(status, error, history.epochs, time.time() - started),
                    bad_files=bad_files.files).write(paths.root)

    # the record follows the run: its history at every epoch's end
    history = History(extras=(throughput.history_row, bad_files.history_row), on_epoch=lambda: record_now("running"),
                      validated=cfg.recipe.validate)

    def stopped(status: str, error: str | None = None) -> None:
        record_now(status, error or STOPPED[status].format(last=paths.relative(paths.last_ckpt)))

    preemption = Preemption(paths.last_ckpt, stopped)
    module = RoadmapModule(model, cfg.recipe, num_classes=cfg.data.num_classes, run=run, seed=cfg.seed,
                           channels_last=cfg.channels_last, compile=cfg.compile, compile_cache=cfg.compile_cache,
                           depthwise=cfg.depthwise)
    resume = plan.resume_from
    trainer = build_trainer(cfg, run, plan, [throughput, bad_files, history, preemption, LayoutChange()])
    if rank_zero_only.rank == 0:
        header.write(paths.root)
    for logger in trainer.loggers:  # the resolved run config reaches every logger (wandb: filterable)
        logger.log_hyperparams(plan.resolved)
    if resume:
        print(f"resuming from {resume}")
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    except BaseException as err:  # recorded, then re-raised: a sweep shows the step as failed with its error
        # after a stop signal the record already says so; submitit's handler ends the job with SystemExit
        if not preemption.stopped:
            stopped(*_interrupted(err))
        raise
    finally:
        if "wandb" in cfg.logger:
            import wandb

            wandb.finish()
    if not trainer.is_global_zero:  # its part is done (a launcher that restarts failed workers reads its exit code)
        return header.with_status("done", None, history.epochs, time.time() - started)
    paths.previous_ckpt.unlink(missing_ok=True)  # kept only while the run may resume from it
    exported = export_run_weights(module, paths) if cfg.run.export_weights else {}
    result = header.finished(
        history.epochs, plan.metric, time.time() - started, weights=exported,
        gflops_224=round(count_gflops(model, 224, num_classes=1000), 4),  # the paper's count: 1000 classes at 224²
        gflops_run=round(count_gflops(model, cfg.data.img_size), 5), params_m=round(count_params_m(model), 4),
        params_m_1000=round(count_params_m(model, num_classes=1000), 4),
        train_images_per_s=throughput.images_per_s, warmup_batches_s=round(throughput.warmup_seconds, 2),
        bad_files=bad_files.files,
        hardware={"device": device_name(trainer.strategy.root_device), "devices": trainer.world_size})
    result.write(paths.root)
    print(result.summary())
    return result
