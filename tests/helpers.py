"""Test-only helpers: tiny training configs and callbacks that a run can load through +callbacks."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch

from roadmap.config.files import CONFIG_PATH_ENV
from roadmap.config.identity import RunKey
from roadmap.run.record import RunRecord

from roadmap.config.steps import compose_config

REPO = Path(__file__).resolve().parent.parent
TINY_REGIME = """# A small roadmap with no paper numbers: ResNet-26-ish bottlenecks to a narrow ConvNeXt
resnet: ResNet-26
convnext: ConvNeXt-tiny-ish
resnet_depths: [2, 2, 2, 2]
stage_ratio: {depths: [1, 1, 3, 1], width: 16}
wide_width: 24
drop_path_rate: 0.05
"""


def tiny_regime_on_config_path(folder: Path):
    """Put the tiny regime on $ROADMAP_CONFIG_PATH (this process, its subprocesses, SLURM jobs); a generator
    for a module fixture: restores the variable after."""
    (folder / "regime").mkdir(parents=True)
    (folder / "regime" / "tiny.yaml").write_text(TINY_REGIME)
    before = os.environ.get(CONFIG_PATH_ENV)
    os.environ[CONFIG_PATH_ENV] = str(folder)
    yield
    if before is None:
        del os.environ[CONFIG_PATH_ENV]
    else:
        os.environ[CONFIG_PATH_ENV] = before


def write_run(root: Path, group: str, regime: str, step: str, seed: int = 0, **fields) -> Path:
    """A run folder holding a record made through the record's own API (analysis tests' hand-made runs); a ``final``
    without a ``best`` is that of a run with the EMA off whose last epoch was its best."""
    key = RunKey(group, regime, step, seed)
    if "final" in fields and "best" not in fields:
        fields["best"] = {"top1": fields["final"].get("top1"), "epoch": 1, "metric": "val/top1"}
    data, _, budget = group.partition("+")[0].partition("-")
    RunRecord(**{"status": "done", "step": step, "regime": regime, "seed": seed, "group": group, "data": data,
                 "budget": budget, **fields}).write(key.path(root))
    return key.path(root)


TINY = ["budget=smoke", "logger=csv", "trainer.enable_progress_bar=false", "run.export_weights=false",
        "depthwise=native"]  # no path measurement per run: tests/test_depthwise.py and the lifecycle tests' own runs do it
TINY_SYNTHETIC = ["data.train_size=32", "data.val_size=16"]
TINY_VARIANT = "+".join(o.replace("=", "@") for o in TINY_SYNTHETIC)  # what these overrides add to the run's group folder


def run_commands(cases: list[dict], files: Path, cwd: Path = REPO, env: dict | None = None) -> list[dict]:
    """Each case of tests/command_runner.py in turn, in one process started in ``cwd`` (``files``: where the cases
    and results are written): how each ended."""
    (files / "cases.json").write_text(json.dumps(cases))
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", "tests.command_runner", str(files / "cases.json"),
                           str(files / "results.json")], cwd=cwd, env={**os.environ, **(env or {}), "PYTHONPATH": path},
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((files / "results.json").read_text())


def one_each(*overrides: str) -> list[str]:
    """Overrides gathered from several lists for one command line, a later one replacing an earlier one of the same
    key (as in the Python API): run.py refuses a key given twice."""
    merged: dict[str, str] = {}
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        merged.pop(key, None)
        merged[key] = override
    return list(merged.values())


def last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The model state of a run's ``checkpoints/last.ckpt``."""
    return torch.load(Path(run_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def assert_same_weights_and_history(run_dir: Path, reference: Path) -> None:
    """``run_dir`` ended with ``reference``'s weights, bit for bit, and the same per-epoch validation history."""
    a, b = last_weights(reference), last_weights(run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _computed(RunRecord.read(run_dir).history) == _computed(RunRecord.read(reference).history)


def _computed(history: list[dict]) -> list[dict]:
    """History rows without what was timed (the share of an epoch spent waiting for data)."""
    return [{k: v for k, v in row.items() if k != "data/wait_share"} for row in history]


def tiny_run_config(step, tmp_path, regime="r50", overrides=()):
    """A run config of ``step`` for a couple of batches on tiny synthetic images, writing under tmp_path."""
    other_data = any(o.startswith(("data=", "+experiment=")) for o in overrides)
    sizes = [] if other_data else TINY_SYNTHETIC
    experiment = any(o.startswith("+experiment=") for o in overrides)  # its own budget, made small by budget.* keys
    tiny = [o for o in TINY if not (experiment and o.startswith("budget="))]
    return compose_config(step, regime, [*tiny, *sizes, f"run.root={tmp_path}", *overrides], as_run=True)


class KillAfterSteps(L.Callback):
    """SIGKILL the training process after ``steps`` optimizer steps: a hard crash, no clean-up."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.steps:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAtStep(L.Callback):
    """Send this process ``signal`` (SLURM's preemption warning, as submitit asks for it) once, right after
    optimizer step ``step``; a run resumed past that step is not signalled again (a requeue's rerun)."""

    def __init__(self, step: int, name: str = "SIGUSR2"):
        self.step, self.signum, self.sent = step, getattr(signal, name), False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


class RecordLR(L.Callback):
    """The lr of the first param group before every optimizer step."""

    def __init__(self):
        self.lrs = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


class FailOnStep(L.Callback):
    """Raise at the start of training when the run's step is ``step``: a forced failure inside a sweep."""

    def __init__(self, step: str):
        self.step = step

    def on_train_start(self, trainer, pl_module):
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.get().runtime.choices.get("step") == self.step:
            raise RuntimeError(f"forced failure of {self.step}")


class SlowFirstAttempt(L.Callback):
    """Sleep ``seconds`` after every batch of a SLURM job's first attempt (``SLURM_RESTART_COUNT`` unset or 0),
    so that a signal, a preemption or a scancel finds it training; a requeued attempt runs at full speed."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if int(os.environ.get("SLURM_RESTART_COUNT", "0")) == 0:
            import time

            time.sleep(self.seconds)


class DieOnStep(L.Callback):
    """The training process of step ``step`` dies without a word after optimizer step ``after`` (global rank
    ``rank`` alone where given), once (a marker file ``<markers>/<step>`` remembers it, so the same command run
    again, or a restarted worker, trains): ``how`` is ``SIGKILL`` (the OOM killer's signal) or ``segfault`` (a
    read of address 0)."""

    def __init__(self, step: str, how: str, markers: str, after: int = 1, rank: int | None = None):
        self.step, self.how, self.marker, self.after, self.rank = step, how, Path(markers) / step, after, rank

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.get().runtime.choices.get("step") != self.step or self.marker.exists():
            return
        if trainer.global_step < self.after or self.rank not in (None, trainer.global_rank):
            return
        self.marker.write_text(self.how)
        if self.how == "segfault":
            import ctypes

            ctypes.string_at(0)
        os.kill(os.getpid(), signal.SIGKILL)


class DieDuringSave(L.Callback):
    """SIGKILL this process in the middle of writing the checkpoint of optimizer step ``step``: half of its bytes
    are in the file being written (``torch.save`` is swapped for one that stops there), as a death during the
    save leaves it."""

    def __init__(self, step: int):
        self.step = step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.global_step < self.step:
            return
        import io

        save = torch.save

        def half_then_die(obj, f, *args, **kwargs):
            buffer = io.BytesIO()
            save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = half_then_die
