"""Lightning callbacks of a roadmap run: throughput and data wait, unreadable files, progress, checkpoints, the
per-epoch validation history and stop signals."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, TQDMProgressBar

from roadmap.errors import ConfigError, Stopped


class Throughput(L.Callback):
    """Training images/s after ``warmup_batches`` (``torch.compile``, depthwise path measurement and cuDNN autotuning
    happen in the first batches, whose seconds are ``warmup_seconds``), and the share of each epoch this process
    spent waiting for data (:meth:`history_row`; the progress lines show it too).

    The device is synchronized only where a timed span of batches starts and ends, never per batch, so the host keeps
    queuing work ahead. Waiting for data is the time between one batch's end and the next one's start (where
    Lightning fetches); images/s counts the span without it (a loader that cannot keep up shows in the wait share)."""

    def __init__(self, warmup_batches: int = 2):
        self.warmup_batches = warmup_batches
        self.images, self.seconds, self.warmup_seconds, self._seen = 0, 0.0, 0.0, 0
        self._span_start = self._batch_end = self._epoch_start = None
        self._span_wait = self._epoch_wait = 0.0
        self._span_images, self._first_start, self.last_wait_share = 0, None, None

    @staticmethod
    def _now(trainer, sync: bool) -> float:
        if sync and trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start, self._epoch_wait, self._batch_end = time.perf_counter(), 0.0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._epoch_start is None:  # resumed mid-epoch: Lightning skips on_train_epoch_start
            self.on_train_epoch_start(trainer, pl_module)
        if self._batch_end is not None:
            waited = now - self._batch_end
            self._epoch_wait += waited
            self._span_wait += waited if self._span_start is not None else 0.0
        self._seen += 1
        if self._seen == 1:
            self._first_start = now
        if self._seen > self.warmup_batches and self._span_start is None:
            self._span_start, self._span_wait, self._span_images = self._now(trainer, sync=True), 0.0, 0
            if self._seen == self.warmup_batches + 1:
                self.warmup_seconds = self._span_start - self._first_start

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._span_start is not None:
            self._span_images += len(batch[0]) * trainer.world_size
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if last:
            self._close_span(trainer)
        self._batch_end = time.perf_counter()
        if last:
            self.last_wait_share, self._epoch_start = self.wait_share, None

    def _close_span(self, trainer) -> None:
        if self._span_start is None:
            return
        self.seconds += self._now(trainer, sync=True) - self._span_start - self._span_wait
        self.images += self._span_images
        self._span_start = None

    def on_train_end(self, trainer, pl_module) -> None:
        self._close_span(trainer)

    def history_row(self) -> dict:
        return {"data/wait_share": round(self.last_wait_share, 4)} if self.last_wait_share is not None else {}

    @property
    def wait_share(self) -> float | None:
        """This epoch's share so far (the progress lines'); between epochs, the last epoch's."""
        if self._epoch_start is None:
            return self.last_wait_share
        elapsed = time.perf_counter() - self._epoch_start
        return self._epoch_wait / elapsed if elapsed else None

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None


class BadFiles(L.Callback):
    """Unreadable files met in training (each replaced by the next readable one) or validation (left out): each is
    named in the log when first met; ``files`` counts them by name, over every process (``metrics.json``; their
    number is ``data/bad_files`` in each epoch's history row). The run stops in one line once an epoch's exceed
    ``max_fraction`` of its training samples (on any process)."""

    def __init__(self, max_fraction: float):
        self.max_fraction, self.files, self._epoch = max_fraction, {}, 0

    def _met(self, trainer, dataset, batch, split: str) -> int:
        bad = batch.bad
        for i in bad:
            name = dataset.name(i)
            if name not in self.files:
                print(f"unreadable image skipped ({split}, rank {trainer.global_rank}): {name}", flush=True)
            self.files[name] = self.files.get(name, 0) + 1
        return len(bad)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._epoch += self._met(trainer, trainer.datamodule.train_set, batch, "train")
        samples = trainer.num_training_batches * len(batch[0])
        if trainer.strategy.reduce_boolean_decision(self._epoch > self.max_fraction * samples, all=False):
            raise ConfigError(f"more than data.max_bad_fraction={self.max_fraction:g} of an epoch's images are "
                              f"unreadable (first: {next(iter(self.files), 'on another process')}): check the data "
                              f"with python -m roadmap.data verify ROOT, or raise data.max_bad_fraction")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self._met(trainer, trainer.datamodule.val_set, batch, "val")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:  # every process's names, for the record global rank 0 writes
            self.files = _merged(trainer, self.files)

    def history_row(self) -> dict:
        return {"data/bad_files": len(self.files)}

    def state_dict(self) -> dict:
        return {"files": self.files}

    def load_state_dict(self, state_dict: dict) -> None:
        self.files = dict(state_dict["files"])


def _merged(trainer, counts: dict) -> dict:
    if trainer.world_size == 1:
        return counts
    gathered = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, counts)
    return {name: max(c.get(name, 0) for c in gathered) for c in gathered for name in c}


class ResumableProgressBar(TQDMProgressBar):
    """Lightning's progress bar, which also knows the epoch's length and position when a run resumes in the
    middle of an epoch (Lightning skips ``on_train_epoch_start`` then)."""

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        if trainer.fit_loop.restarted_mid_epoch:
            self.on_train_epoch_start(trainer, pl_module)
            self.train_progress_bar.initial = trainer.fit_loop.epoch_loop.batch_progress.current.processed


class ProgressLines(ProgressBar):
    """The progress bar where output is not a terminal (a SLURM job's ``.out``, CI): one line per
    ``every_percent`` % of an epoch or per ``every_s`` seconds, whichever comes first, with the epoch, the step,
    the training loss, images/s (all processes), the epoch's share so far spent waiting for data and the run's
    ETA, from global rank 0; instead of a line per update of tqdm's bar (carriage returns)."""

    def __init__(self, every_percent: float = 10, every_s: float = 30):
        super().__init__()
        self.every_percent, self.every_s, self.enabled = every_percent, every_s, True
        self._since = None

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._since = None  # measured from the epoch's (or the resumed run's) first batch on

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not (self.enabled and trainer.is_global_zero):
            return
        done, total, now = trainer.fit_loop.epoch_loop.batch_progress.current.processed, self.total_train_batches, time.time()
        if self._since is None:
            self._since = self._last = (now, done, 0.0)
            return
        percent = 100 * done / total
        if percent - self._last[2] < self.every_percent and now - self._last[0] < self.every_s and done < total:
            return
        self._last = (now, done, percent)
        per_batch = (now - self._since[0]) / max(1, done - self._since[1])
        left = (total - done) + (trainer.max_epochs - trainer.current_epoch - 1) * total
        loss = trainer.callback_metrics.get("train/loss_step")
        waits = [c.wait_share for c in trainer.callbacks if isinstance(c, Throughput) and c.wait_share is not None]
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} step {done}/{total} ({percent:.0f}%) | "
              f"global step {trainer.global_step} | loss {float(loss) if loss is not None else float('nan'):.4f} | "
              f"{len(batch[0]) * trainer.world_size / per_batch:.1f} img/s | "
              + (f"data wait {100 * waits[0]:.0f}% | " if waits else "") + f"ETA {_duration(left * per_batch)}",
              flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class MidEpochCheckpoint(ModelCheckpoint):
    """``every_n_train_steps`` checkpoints, but none at an epoch's last batch: Lightning resumes one saved there in
    the next epoch, before that epoch's validation ran (the epoch-end checkpoint follows it anyway)."""

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            super().on_train_batch_end(trainer, *args, **kwargs)


class LayoutChange(L.Callback):
    """A checkpoint resumed on another layout of the same effective batch (devices × nodes × batch): the data
    module counts the restored epoch's batches in this run's layout (:meth:`RoadmapDataModule.relayout_loop`)."""

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        trainer.datamodule.relayout_loop(checkpoint)


class History(L.Callback):
    """Validation metrics of every epoch (the epoch's training loss where the run does not ``validated``), with what
    each of ``extras`` (callables returning a dict) adds to the row; kept in checkpoints so a resumed run knows its
    past epochs. Global rank 0 prints each row as one line, then calls ``on_epoch`` (the run record, written at every
    epoch). A row is added before the epoch's checkpoints are saved, so they hold it."""

    def __init__(self, extras=(), on_epoch=None, validated: bool = True):
        self.epochs: list[dict] = []
        self.extras, self.on_epoch, self.validated = extras, on_epoch, validated

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._add_row(trainer, "val/")

    def on_train_epoch_end(self, trainer, pl_module):
        if not self.validated:
            self._add_row(trainer, "train/loss_epoch")

    def _add_row(self, trainer, prefix: str) -> None:
        row = {k.removesuffix("_epoch"): round(float(v), 4) for k, v in trainer.callback_metrics.items()
               if k.startswith(prefix)}
        for extra in self.extras:
            row.update(extra())
        self.epochs.append({"epoch": trainer.current_epoch + 1, **row})
        if trainer.is_global_zero:
            print(validation_line(self.epochs[-1], trainer.max_epochs), flush=True)
            if self.on_epoch:
                self.on_epoch()

    def state_dict(self):
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict):
        self.epochs = list(state_dict["epochs"])


def validation_line(row: dict, epochs: int) -> str:
    """``epoch 2/3 validation | top-1 45.20 | top-5 90.10 | loss 1.2345 | EMA top-1 47.00 top-5 91.00``."""
    shown = [f"epoch {row['epoch']}/{epochs} " + ("validation" if "val/loss" in row else "(no validation)")]
    for label, key, form in (("top-1", "val/top1", ".2f"), ("top-5", "val/top5", ".2f"), ("loss", "val/loss", ".4f"),
                             ("train loss", "train/loss", ".4f")):
        if key in row:
            shown.append(f"{label} {row[key]:{form}}")
    if "val/top1_ema" in row:
        shown.append(f"EMA top-1 {row['val/top1_ema']:.2f} top-5 {row.get('val/top5_ema', float('nan')):.2f}")
    return " | ".join(shown)


def stop_reason(signum: int) -> str:
    """``preempted`` or ``cancelled`` for a stop signal. USR1/USR2 are the warnings a scheduler sends before a
    time limit (submitit asks for USR2). SLURM sends SIGTERM both to a preempted job, which stays RUNNING
    through its grace time, and to a cancelled one, which is already ending: ``scontrol`` tells them apart.
    Outside SLURM a SIGTERM is a plain stop."""
    if signum != signal.SIGTERM:
        return "preempted"
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return "cancelled"
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "cancelled"
    return "preempted" if "JobState=RUNNING" in out.split() else "cancelled"


class Preemption(L.Callback):
    """On a stop signal (``SIGUSR2``: submitit's time-limit or preemption warning; ``SIGTERM``: SLURM's
    preemption or ``scancel``), save ``last.ckpt`` at the next optimizer-step boundary (an exact resume point;
    after an epoch's last batch, the next epoch's first: the epoch's validation runs first),
    report it (``on_stop(status)``: the run record says ``preempted`` or ``cancelled``), then end the run.

    A preempted run is requeued by submitit's USR2 handler when one is installed (it launched the job and
    counts its requeues; a job that merely exited inside SLURM's grace time would end COMPLETED and never be
    requeued); a SIGTERM preemption goes to the same handler. A cancelled run is not requeued: the same command
    resumes it. Without submitit the run raises :class:`Stopped`."""

    def __init__(self, checkpoint_path, on_stop, signals=("SIGUSR2", "SIGTERM")):
        self.checkpoint_path, self.on_stop = checkpoint_path, on_stop
        self.signals = [getattr(signal, name) for name in signals]
        self.requested, self.stopped, self.previous = None, None, {}

    def _request(self, signum, frame) -> None:
        self.requested = self.requested or signum

    def on_train_start(self, trainer, pl_module) -> None:
        # installed over Lightning's own SIGTERM handling (registered just before), which stops at the next batch,
        # mid-accumulation too, without a checkpoint and with exit code 0: SLURM would call the job COMPLETED
        for sig in self.signals:
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._request)

    def teardown(self, trainer, pl_module, stage) -> None:
        for sig, handler in self.previous.items():
            if signal.getsignal(sig) == self._request:  # not already restored by Lightning
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.fit_loop.epoch_loop._should_accumulate():  # mid-accumulation: gradients would be lost
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # Lightning would resume a checkpoint saved here in the next epoch, skipping this one's validation
        if not trainer.strategy.reduce_boolean_decision(self.requested is not None, all=False):
            return
        signum = self.requested or self.signals[0]  # every process of a SLURM job gets the signal
        trainer.save_checkpoint(self.checkpoint_path)
        self.stopped = stop_reason(signum)
        if trainer.is_global_zero:
            self.on_stop(self.stopped)
        requeue = self.previous.get(signal.SIGUSR2)
        if self.stopped == "preempted" and callable(requeue):
            requeue(signal.SIGUSR2, None)  # submitit: requeue this job, then sys.exit
        raise Stopped(f"signal {signal.Signals(signum).name}: saved {self.checkpoint_path}; the same command "
                      f"resumes from it", self.stopped)
