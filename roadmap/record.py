"""The run record: where a run lives, what its ``metrics.json`` says, and how both are written and read.

Layout (one folder per run, stable across restarts and requeues)::

    <run.root>/<data>-<budget>[+<key@value>...]/<regime>/<step>/seed<k>/
        config.yaml  metrics.json  checkpoints/{last,best}.ckpt  weights/*.safetensors  csv/  wandb/

``+<key@value>`` names each command-line override that changes a run's result (anything but the step,
seed, regime, the data/budget/experiment choice that names the group, hardware, logging and paths), so
``recipe.base_lr=0.5`` gets its own folder and its own analysis group; :func:`identity` is what a saved
``config.yaml`` must match before its folder is reused. ``metrics.json`` carries ``schema``
(:data:`SCHEMA_VERSION`) and ``status``: running → done | failed | preempted | cancelled. Every file here is
written atomically (:mod:`roadmap.files`).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from roadmap.files import write_text

SCHEMA_VERSION = 2
RESULT_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
STATUSES = ("running", "done", "failed", "preempted", "cancelled")
# Config keys that do not change what a run computes: never in a run's folder name or identity. Under
# ``trainer`` only the hardware and the display; every other trainer key (epochs, precision, clipping, batch
# limits, ...) names its own folder when overridden.
NOT_IDENTITY = ("step", "seed", "regime", "data", "budget", "experiment", "logger", "run", "callbacks", "mode", "ckpt",
                "hydra", "compile", "compile_cache", "channels_last", "depthwise", "lineage", "data.root",
                "data.download", "data.verify_images", "budget.num_workers", "budget.name", "budget.proxy",
                "recipe.name", "trainer", "trainer._target_", "trainer.accelerator", "trainer.devices",
                "trainer.num_nodes", "trainer.strategy", "trainer.sync_batchnorm", "trainer.plugins",
                "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
                "trainer.num_sanity_val_steps", "budget.accumulate_grad_batches", "trainer.accumulate_grad_batches")
# The hardware layout: free to change while the effective batch (their product) stays the same
LAYOUT = ("budget.batch_size", "budget.accumulate_grad_batches")
_MAX_VARIANT = 100


def _is_identity(key: str) -> bool:
    return not any(key == k or key.startswith(f"{k}.") and k not in ("data", "budget", "recipe", "trainer")
                   for k in NOT_IDENTITY)


def run_variant(task_overrides) -> str:
    """``+key@value+key@value`` of the command-line overrides that change the result ('' when none), in
    characters Hydra accepts unquoted (a run folder can be passed back as ``ckpt=`` or ``run.dir=``); names
    over 100 characters are cut and end in a short hash of the whole."""
    kept = sorted(o.lstrip("+~") for o in task_overrides if _is_identity(o.lstrip("+~").split("=", 1)[0]))
    if not kept:
        return ""
    name = re.sub(r"[^\w.\-@%+]", "_", "+".join(o.replace("=", "@", 1) for o in kept))
    if len(name) > _MAX_VARIANT:
        name = f"{name[:_MAX_VARIANT - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return f"+{name}"


def _flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def resolved(config: DictConfig) -> dict:
    """The run's config as plain values, without Hydra's own node: what ``config.yaml`` and the loggers get."""
    return OmegaConf.to_container(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]), resolve=True)


def identity(config: DictConfig | dict) -> dict:
    """What a run computes: the resolved model, recipe, data, budget and seed (flattened, the hardware layout
    left out) and its effective run (:mod:`roadmap.effective`: epochs, effective batch, lr, precision, ...)."""
    from roadmap.effective import effective_run

    tree = resolved(config) if isinstance(config, DictConfig) else config
    parts = {k: tree.get(k) for k in ("seed", "model", "recipe", "data", "budget")}
    flat = {k: v for k, v in _flatten(parts).items() if _is_identity(k) and k not in LAYOUT}
    return {**flat, **{f"effective.{k}": v for k, v in effective_run(tree).identity().items()}}


def identity_differences(saved: dict, requested: dict) -> list[str]:
    """``key: saved → requested`` for every identity value that differs."""
    keys = sorted(set(saved) | set(requested))
    return [f"{k}: {saved.get(k, '(absent)')} → {requested.get(k, '(absent)')}" for k in keys
            if saved.get(k) != requested.get(k)]


def write_record(run_dir: Path, payload: dict) -> None:
    """Write ``metrics.json`` atomically, stamped with the schema version."""
    write_text(Path(run_dir) / RESULT_FILE, json.dumps({"schema": SCHEMA_VERSION, **payload}, indent=2))


def read_record(run_dir: Path) -> dict | None:
    """The run's ``metrics.json`` or None when it has none or it is unreadable (see :func:`load`)."""
    try:
        return json.loads((Path(run_dir) / RESULT_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def read_config(run_dir: Path) -> dict | None:
    path = Path(run_dir) / CONFIG_FILE
    return yaml.safe_load(path.read_text()) if path.exists() else None


@dataclass(frozen=True)
class RunKey:
    """A run folder's place in the layout."""

    group: str
    regime: str
    step: str
    seed: str

    def path(self, root: Path) -> Path:
        return Path(root) / self.group / self.regime / self.step / f"seed{self.seed}"


def find_runs(root: Path) -> list[tuple[RunKey, Path]]:
    """Every run folder under ``root`` in layout order."""
    found = []
    for run_dir in sorted(Path(root).glob("*/*/*/seed*")):
        if run_dir.is_dir():
            group, regime, step = run_dir.parts[-4:-1]
            found.append((RunKey(group, regime, step, run_dir.name.removeprefix("seed")), run_dir))
    return found


def load(run_dir: Path) -> dict:
    """The record with its status, or a synthesised one saying why there is none (missing / corrupt)."""
    path = Path(run_dir) / RESULT_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {"status": "missing", "error": "no metrics.json (never started or killed before writing it)"}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return {"status": "corrupt", "error": f"unreadable metrics.json ({err}); re-run the step to rewrite it"}
