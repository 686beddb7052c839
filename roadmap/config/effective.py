"""The effective run: what one composed config computes, whatever hardware it runs on.

:func:`effective_run` is the one place that turns a config into epochs, effective batch, peak lr and floor, warm-up
and schedule in optimizer steps, precision, clipping and batch limits: from the recipe (length, clipping),
the budget (its scale of the length, batch, accumulation, batch limits) and the trainer's hardware (devices,
nodes, precision). Lightning's loop (:meth:`EffectiveRun.trainer_arguments`), the optimizer and scheduler
(:mod:`roadmap.run.module`), ``roadmap.explain``, a run's identity (:mod:`roadmap.run.record`) and ``metrics.json`` all
take them from here. The hardware layout (devices × nodes × accumulation at the same effective batch) is not
part of it: a run started on 4 nodes × 8 GPUs resumes on 1 GPU × accumulation 32.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
from omegaconf import DictConfig, OmegaConf


def scaled_epochs(epochs: int, scale: float) -> int:
    """A recipe's length under a budget: ``round(epochs × scale)``, at least one epoch."""
    return max(1, round(epochs * scale))


def scaled_lr(recipe, effective_batch: int) -> float:
    """Linear lr scaling rule: base_lr × effective batch / base batch (Table 5: 4e-3 at 4096)."""
    return recipe.base_lr * effective_batch / recipe.base_batch


def scaled_lr_floor(recipe, effective_batch: int) -> float:
    """The cosine's floor, scaled as the peak is (``lr_min`` at ``base_batch``): the schedule keeps the paper's shape,
    its floor the official ratio to the peak (1e-6 / 4e-3; fine-tuning 1e-6 / 5e-5), at any batch."""
    return recipe.lr_min * effective_batch / recipe.base_batch


def warmup_epochs(recipe, effective_batch: int) -> float:
    """The recipe's warm-up at this effective batch, in its own epochs (before a budget scales them):
    none at or below ``warmup_above_batch`` (torchvision's recipe at 256), else ``warmup_epochs``."""
    return recipe.warmup_epochs if effective_batch > recipe.warmup_above_batch else 0.0


def world_size(trainer) -> int | None:
    """Processes of a trainer config: devices × nodes; None where ``devices`` means 'all visible' (-1, auto)
    and no CUDA device tells how many that is."""
    devices = trainer.devices
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        devices = len(devices)
    elif isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if not isinstance(devices, int) or devices < 1:
        if trainer.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
            devices = torch.cuda.device_count()
        elif trainer.accelerator == "cpu" and devices in ("auto", None):
            devices = 1
        else:
            return None
    return devices * trainer.num_nodes


def batches_per_epoch(limit, available: int) -> int:
    """Lightning's rule for ``limit_train_batches``: an int is a count, a float ≤ 1 a fraction of the epoch."""
    if isinstance(limit, float) and limit <= 1.0:
        return int(available * limit)
    return min(available, int(limit))


@dataclass(frozen=True)
class EffectiveRun:
    """The numbers that decide what a run computes (``steps``: optimizer steps, None until the data is known)."""

    epochs: int
    effective_batch: int | None     # per-device batch × devices × nodes × accumulation
    peak_lr: float | None
    lr_floor: float | None          # the cosine's end, scaled with the batch as the peak is
    warmup_epochs: float            # in the run's epochs (the recipe's warm-up scaled by the budget)
    schedule: str
    precision: str
    grad_clip: float | None
    limit_train_batches: float
    limit_val_batches: float
    accumulate: int = 1             # micro-batches per optimizer step (hardware layout: not in the identity)
    steps_per_epoch: int | None = None
    total_steps: int | None = None
    warmup_steps: int | None = None
    decay_every_steps: int | None = None  # the step schedule's ×0.1 interval

    def identity(self) -> dict:
        """What a saved run must match to be resumed or reused (steps follow from these and the data)."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("accumulate", "steps_per_epoch", "total_steps", "warmup_steps", "decay_every_steps")}

    def as_dict(self) -> dict:
        return asdict(self)

    def trainer_arguments(self) -> dict:
        """What Lightning's trainer takes from the effective run (the trainer config holds the hardware)."""
        return dict(max_epochs=self.epochs, gradient_clip_val=self.grad_clip, accumulate_grad_batches=self.accumulate,
                    limit_train_batches=self.limit_train_batches, limit_val_batches=self.limit_val_batches)


def effective_run(cfg: DictConfig, train_size: int | None = None) -> EffectiveRun:
    """The effective run of a composed (or saved) config; ``train_size`` (training images) adds the steps."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    r, b, t = cfg.recipe, cfg.budget, cfg.trainer
    world = world_size(t)
    accumulate = b.accumulate_grad_batches
    batch = b.batch_size * world * accumulate if world else None
    epochs = scaled_epochs(r.epochs, b.epoch_scale)
    warm = warmup_epochs(r, batch) if batch else r.warmup_epochs
    run = dict(epochs=epochs, effective_batch=batch, peak_lr=scaled_lr(r, batch) if batch else None,
               lr_floor=scaled_lr_floor(r, batch) if batch else None,
               warmup_epochs=warm * epochs / r.epochs, schedule=r.schedule, precision=str(t.precision),
               grad_clip=r.grad_clip, limit_train_batches=b.limit_train_batches,
               limit_val_batches=b.limit_val_batches if r.get("validate", True) else 0, accumulate=accumulate)
    if train_size is None or not world:
        return EffectiveRun(**run)
    batches = batches_per_epoch(b.limit_train_batches, train_size // world // b.batch_size)  # drop_last
    return with_steps(EffectiveRun(**run), r, math.ceil(batches / accumulate))  # Lightning steps at an epoch's end


def with_steps(run: EffectiveRun, recipe, steps_per_epoch: int) -> EffectiveRun:
    """``run`` with its schedule in optimizer steps, at ``steps_per_epoch``."""
    total = steps_per_epoch * run.epochs
    decay = max(1, round(total * recipe.step_every / recipe.epochs)) if run.schedule == "step" else None
    return replace(run, steps_per_epoch=steps_per_epoch, total_steps=total,
                   warmup_steps=round(run.warmup_epochs * steps_per_epoch), decay_every_steps=decay)
