"""The LightningModule: the paper's Table 5 recipe on timm's pieces (Mixup/CutMix, AdamW with no decay
on 1-D parameters, per-iteration warm-up + cosine, EMA), with raw and EMA top-1/top-5 validation."""
from __future__ import annotations

import os
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler, StepLRScheduler
from timm.utils import ModelEmaV3, accuracy
from torch import nn
from torchmetrics import MeanMetric, SumMetric

from roadmap.config.effective import EffectiveRun
from roadmap.config.recipe import BatchTransform, build_optimizer
from roadmap.models import depthwise
from roadmap.models.depthwise import set_depthwise_impl


def use_compile_cache(root: Path) -> None:
    """Inductor's and Triton's caches under ``root``, where a sweep's seeds and requeued jobs find them, unless the
    user set their own (torch writes its default into TORCHINDUCTOR_CACHE_DIR on first use: that one is moved)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    if os.environ.get("TORCHINDUCTOR_CACHE_DIR", default_cache_dir()) in (default_cache_dir(),
                                                                          os.path.abspath(default_cache_dir())):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root.resolve() / "inductor")
    os.environ.setdefault("TRITON_CACHE_DIR", str(root.resolve() / "triton"))


class RoadmapModule(L.LightningModule):
    """``run`` (:func:`roadmap.config.effective.effective_run` with its steps) sizes the optimizer and schedule; None
    for evaluation only."""

    def __init__(self, model: nn.Module, recipe, num_classes: int, run: EffectiveRun | None = None,
                 seed: int = 0, channels_last: bool = False, compile: bool = False, compile_cache: str | None = None,
                 depthwise: str = "auto"):
        super().__init__()
        self.model, self.recipe, self.num_classes = model, recipe, num_classes
        self.run, self.seed = run, seed
        self.channels_last, self.compile, self.compile_cache = channels_last, compile, compile_cache
        set_depthwise_impl(model, depthwise)
        self.mixup = (Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, prob=1.0, switch_prob=0.5,
                            mode="batch", label_smoothing=recipe.label_smoothing, num_classes=num_classes)
                      if recipe.mixup > 0 or recipe.cutmix > 0 else None)
        if self.mixup is not None:
            self.train_loss = SoftTargetCrossEntropy()  # Mixup folds label smoothing into the soft targets
        elif recipe.label_smoothing > 0:
            self.train_loss = LabelSmoothingCrossEntropy(recipe.label_smoothing)
        else:
            self.train_loss = nn.CrossEntropyLoss()
        self.batch_transform = BatchTransform()
        # timm leaves the EMA copy in eval mode; Lightning sets every module's mode itself (eval in validation, the
        # only place the copy runs) and warns about a module in eval mode when training starts
        self.ema = ModelEmaV3(model, decay=recipe.ema.decay).requires_grad_(False).train() if recipe.ema.enabled else None
        self.ema_step = 0
        self.topk = (1, min(5, num_classes))
        names = ["val_loss", *(f"val_top{k}{s}" for k in (1, 5) for s in ("", "_ema"))]
        self.val_metrics = nn.ModuleDict({n: MeanMetric() for n in names} | {"val_images": SumMetric()})

    def configure_model(self) -> None:
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.compile and not isinstance(self.model, torch._dynamo.eval_frame.OptimizedModule):
            if self.compile_cache:
                use_compile_cache(Path(self.compile_cache))
            self.model = torch.compile(self.model)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["depthwise_paths"] = depthwise.AUTOTUNER.used()  # a resumed run takes the same paths

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        depthwise.AUTOTUNER.pin(checkpoint.get("depthwise_paths", {}))

    def prepare(self, x: torch.Tensor, erase=()) -> torch.Tensor:
        """A uint8 batch as the model takes it: normalized and its images' ``erase`` boxes (training: random erasing,
        :class:`roadmap.config.recipe.ErasingBox`) filled, on its device, in the model's memory format."""
        x = self.batch_transform(x, erase)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # Mixup and drop path draw from RNGs reseeded by (seed, epoch, batch, rank) before every batch, and
        # each sample's augmentation by (seed, epoch, index) (roadmap.data.datamodule.Samples): a run resumed from
        # any checkpoint, mid-epoch included, replays exactly what the uninterrupted run does.
        seed = ((self.seed * 1_000 + self.current_epoch) * 1_000_003 + batch_idx) * 1_000 + self.global_rank
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.default_generator.manual_seed(seed)
        if torch.cuda.is_initialized():  # torch.manual_seed would queue a traceback per batch where CUDA never starts
            torch.cuda.manual_seed_all(seed)

    def training_step(self, batch, batch_idx):
        x, y = self.prepare(batch.images, batch.erase), batch.labels  # before Mixup
        if self.mixup is not None:
            x, y = self.mixup(x, y)
        loss = self.train_loss(self.model(x), y)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(x), sync_dist=True)
        # the peak (head) group's: under layer-wise lr decay the first group is the stem's, 0.8^13 of it
        self.log("train/lr", max(g["lr"] for g in self.optimizers().param_groups), on_step=True, on_epoch=False)
        return loss

    def on_train_start(self) -> None:
        self.ema_step = self.global_step  # a resumed run continues from its restored step
        # the schedule was sized by the effective run; asked here, after a resume has restored the loader's
        # position (asked in configure_optimizers, Lightning would build the loader before the restore)
        if self.trainer.estimated_stepping_batches != self.run.total_steps:
            raise RuntimeError(f"the effective run has {self.run.total_steps} optimizer steps, Lightning takes "
                               f"{self.trainer.estimated_stepping_batches}: the trainer is not the config's")

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # the EMA follows optimizer steps, not micro-batches (timm train.py, ConvNeXt engine.py): under
        # gradient accumulation global_step moves once per accumulate_grad_batches batches
        if self.ema is not None and self.global_step != self.ema_step:
            self.ema.update(self.model, step=self.global_step)
            self.ema_step = self.global_step

    def _log_accuracy(self, logits, y, suffix: str) -> None:
        for k, percent in zip(self.topk, accuracy(logits, y, topk=self.topk)):
            name = f"val/top{k if k == 1 else 5}{suffix}"  # top-5 is top-k below 5 classes
            self.val_metrics[name.replace("/", "_")].update(percent, weight=len(y))  # a mean over images
            self.log(name, self.val_metrics[name.replace("/", "_")], on_epoch=True, prog_bar=k == 1)

    def validation_step(self, batch, batch_idx):
        # per-image sums across processes (torchmetrics), over a split that each image is in once (roadmap.data.datamodule)
        if not len(batch.labels):  # every image of the batch unreadable (roadmap.run.callbacks.BadFiles names them)
            return
        x, y = self.prepare(batch.images), batch.labels
        logits = self.model(x)
        self.val_metrics["val_loss"].update(nn.functional.cross_entropy(logits, y, reduction="none"))
        self.log("val/loss", self.val_metrics["val_loss"], on_epoch=True)
        self.val_metrics["val_images"].update(len(y))
        self.log("val/images", self.val_metrics["val_images"], on_epoch=True)
        self._log_accuracy(logits, y, "")
        if self.ema is not None:
            self._log_accuracy(self.ema.module(x), y, "_ema")

    def configure_optimizers(self):
        r, run = self.recipe, self.run
        if run is None or run.total_steps is None:
            raise ValueError("RoadmapModule needs the effective run with its steps to train (effective_run(cfg, train_size))")
        opt = build_optimizer(self.model, r.optimizer, run.peak_lr, r.get("layer_decay"))
        if run.schedule == "cosine":
            sched = CosineLRScheduler(opt, t_initial=run.total_steps - run.warmup_steps, lr_min=run.lr_floor,
                                      warmup_t=run.warmup_steps, warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False)
        else:  # torchvision's step decay: ×0.1 every step_every of the recipe's epochs (30 of 90)
            sched = StepLRScheduler(opt, decay_t=run.decay_every_steps, decay_rate=0.1, warmup_t=run.warmup_steps,
                                    t_in_epochs=False)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        scheduler.step_update(num_updates=self.global_step)
