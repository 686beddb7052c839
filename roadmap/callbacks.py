"""Lightning callbacks of a roadmap run: training throughput and the per-epoch validation history."""
from __future__ import annotations

import signal
import time

import lightning as L
import torch


class Throughput(L.Callback):
    """Training images/s (forward + backward + optimizer step, data loading excluded) after ``warmup_batches``,
    and the seconds those first batches took: ``torch.compile``, depthwise path measurement, cuDNN autotuning."""

    def __init__(self, warmup_batches: int = 2):
        self.warmup_batches = warmup_batches
        self.images, self.seconds, self.warmup_seconds, self._seen, self._start = 0, 0.0, 0.0, 0, None

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
        else:
            self.warmup_seconds += time.perf_counter() - self._start

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


class Preempted(Exception):
    """The run stopped on a preemption/timeout signal after saving a resumable checkpoint."""


class Preemption(L.Callback):
    """On SLURM's preemption/timeout signal, save ``last.ckpt`` at the next optimizer-step boundary (an
    exact resume point), report it (``on_preempt``: the run record says ``preempted``), then hand the
    signal to whoever owned it before: submitit's handler requeues the job and exits. Without one the
    run raises :class:`Preempted`. submitit owns the requeue (see conf/trainer/slurm.yaml); this owns the
    checkpoint. ``signals`` are names such as ``SIGUSR2`` (submitit's) or ``SIGTERM``."""

    def __init__(self, checkpoint_path, on_preempt, signals=("SIGUSR2",)):
        self.checkpoint_path, self.on_preempt = checkpoint_path, on_preempt
        self.signals = [getattr(signal, name) for name in signals]
        self.requested, self.preempted, self.previous = None, False, {}

    def _request(self, signum, frame) -> None:
        self.requested = signum

    def setup(self, trainer, pl_module, stage) -> None:
        for sig in self.signals:
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._request)

    def teardown(self, trainer, pl_module, stage) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.fit_loop.epoch_loop._should_accumulate():  # mid-accumulation: gradients would be lost
            return
        if not trainer.strategy.reduce_boolean_decision(self.requested is not None, all=False):
            return
        trainer.save_checkpoint(self.checkpoint_path)
        self.preempted = True
        if trainer.is_global_zero:
            self.on_preempt()
        previous = self.previous.get(self.requested)
        if callable(previous):
            previous(self.requested, None)  # submitit: requeue this job, then sys.exit
        raise Preempted(f"signal {signal.Signals(self.requested or self.signals[0]).name}: saved "
                        f"{self.checkpoint_path}; the same command resumes from it")
