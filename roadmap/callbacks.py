"""Lightning callbacks of a roadmap run: training throughput and the per-epoch validation history."""
from __future__ import annotations

import time

import lightning as L
import torch


class Throughput(L.Callback):
    """Training images/s (forward + backward + optimizer step, data loading excluded), after warm-up batches."""

    def __init__(self, warmup_batches: int = 2):
        self.warmup_batches = warmup_batches
        self.images, self.seconds, self._seen, self._start = 0, 0.0, 0, None

    def _sync(self, trainer):
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync(trainer)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync(trainer)
        self._seen += 1
        if self._seen > self.warmup_batches:
            self.seconds += time.perf_counter() - self._start
            self.images += len(batch[0]) * trainer.world_size

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.seconds if self.seconds else None


class History(L.Callback):
    """Validation metrics of every epoch; kept in checkpoints so a resumed run knows its past epochs."""

    def __init__(self):
        self.epochs: list[dict] = []

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        row = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.epochs.append({"epoch": trainer.current_epoch + 1, **row})

    def state_dict(self):
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict):
        self.epochs = list(state_dict["epochs"])
