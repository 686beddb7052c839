"""A run's identity and folder, from its config alone: which overrides name its group (:func:`run_variant`), its
folder (:class:`RunKey`, ``run.dir``), and what a saved ``config.yaml`` must match before its folder is reused
(:func:`identity`). The record that lives in that folder is :mod:`roadmap.run.record`'s.

Layout (one folder per run, stable across restarts and requeues; ``run.dir`` is :meth:`RunKey.path`)::

    <run.root>/<data>-<budget>[+<key@value>...]/<regime>/<step>/seed<k>/
        config.yaml  metrics.json  checkpoints/{last,previous,best}.ckpt  weights/*.safetensors  csv/  wandb/  wandb_id

``+<key@value>`` names each command-line override that changes a run's result (anything but the step,
seed, regime, the data/budget/experiment choice that names the group, hardware, logging and paths), so
``recipe.base_lr=0.5`` gets its own folder and its own analysis group.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from roadmap.utils.files import sha256_once


# Config keys that do not change what a run computes: never in a run's folder name or identity. Under
# ``trainer`` only the hardware and the display; any other trainer key (precision, ...) names its own folder
# when overridden (the loop's length, clipping and limits are the recipe's and budget's, roadmap.config.effective).
NOT_IDENTITY = ("step", "seed", "regime", "data", "budget", "experiment", "logger", "run", "callbacks", "mode", "ckpt",
                "hydra", "compile", "compile_cache", "channels_last", "depthwise", "lineage", "data.root",
                "data.download", "data.verify_images", "data.index_dir", "data.max_bad_fraction", "data.train_tar",
                "data.val_tar", "budget.num_workers", "budget.name", "budget.proxy",
                "recipe.name", "trainer", "trainer._target_", "trainer.accelerator", "trainer.devices",
                "trainer.num_nodes", "trainer.strategy", "trainer.sync_batchnorm", "trainer.plugins",
                "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
                "trainer.num_sanity_val_steps", "budget.accumulate_grad_batches")



# The hardware layout: free to change while the effective batch (their product) stays the same
LAYOUT = ("budget.batch_size", "budget.accumulate_grad_batches")



# Knobs whose value here changes nothing (a record saved before they existed computed the same): left out of the
# identity at this value
NEUTRAL = {"recipe.layer_decay": None, "recipe.head_init_scale": 1.0, "model.head_init_scale": 1.0,
           "recipe.init_from_ema": False, "recipe.validate": True, "recipe.fine_tune": False}



_MAX_VARIANT = 100



def _is_identity(key: str) -> bool:
    return not any(key == k or key.startswith(f"{k}.") and k not in ("data", "budget", "recipe", "trainer", "regime")
                   for k in NOT_IDENTITY)



def result_overrides(task_overrides) -> list[str]:
    """The command-line overrides that change the result (``key=value``, sorted): they name a run's group."""
    return sorted(o.lstrip("+~") for o in task_overrides if _is_identity(o.lstrip("+~").split("=", 1)[0]))



def run_variant(task_overrides) -> str:
    """``+key@value+key@value`` of the command-line overrides that change the result ('' when none), in
    characters Hydra accepts unquoted (a run folder can be passed back as ``ckpt=`` or ``run.dir=``); names
    over 100 characters are cut and end in a short hash of the whole."""
    kept = [_weights_by_content(o) for o in result_overrides(task_overrides)]
    if not kept:
        return ""
    name = re.sub(r"[^\w.\-@%+]", "_", "+".join(o.replace("=", "@", 1) for o in kept))
    if len(name) > _MAX_VARIANT:
        name = f"{name[:_MAX_VARIANT - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return f"+{name}"



def _weights_by_content(override: str) -> str:
    """``model.init_from=<file>`` as ``model.init_from=<file's stem>-<first 8 of its SHA-256>``: other weights at the
    same path train another run, in another folder (the path itself is in config.yaml)."""
    key, _, value = override.partition("=")
    file = Path(value.removeprefix("timm:")).expanduser()
    if key != "model.init_from" or not file.is_file():
        return override
    return f"{key}={file.stem}-{sha256_once(file)[:8]}"



def flatten(tree, prefix: str = "") -> dict:
    """A nested dict's leaves by dotted key."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}



def resolved(config: DictConfig) -> dict:
    """The run's config as plain values, without Hydra's own node: what ``config.yaml`` and the loggers get."""
    return OmegaConf.to_container(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]), resolve=True)



def identity(config: DictConfig | dict) -> dict:
    """What a run computes: the resolved model, recipe, data, budget and seed (flattened, the hardware layout
    left out) and its effective run (:mod:`roadmap.config.effective`: epochs, effective batch, lr, precision, ...)."""
    from roadmap.config.effective import effective_run

    tree = resolved(config) if isinstance(config, DictConfig) else config
    parts = {k: tree.get(k) for k in ("seed", "model", "recipe", "data", "budget")}
    flat = {k: v for k, v in flatten(parts).items()
            if _is_identity(k) and k not in LAYOUT and not (k in NEUTRAL and v == NEUTRAL[k])}
    return {**flat, **{f"effective.{k}": v for k, v in effective_run(tree).identity().items()}}



def identity_differences(saved: dict, requested: dict) -> list[str]:
    """``key: saved → requested`` for every identity value that differs."""
    keys = sorted(set(saved) | set(requested))
    return [f"{k}: {saved.get(k, '(absent)')} → {requested.get(k, '(absent)')}" for k in keys
            if saved.get(k) != requested.get(k)]



@dataclass(frozen=True)
class RunKey:
    """A run's place in the layout: its folder is :meth:`path` (``run.dir`` in ``conf/config.yaml``)."""

    group: str
    regime: str
    step: str
    seed: int

    def path(self, root: Path | str) -> Path:
        return Path(root) / self.group / self.regime / self.step / f"seed{self.seed}"

    @classmethod
    def of_folder(cls, run_dir: Path) -> RunKey:
        """The key a run folder's place says (:meth:`path` read backwards): used only for a folder whose run
        left no record to say it."""
        group, regime, step, folder = Path(run_dir).parts[-4:]
        seed = folder.removeprefix("seed")
        return cls(group, regime, step, int(seed) if seed.isdigit() else seed)



def run_dir(root: str, group: str, regime: str, step: str, seed: int) -> str:
    """``run.dir``: the folder of a run (Hydra resolver; no step yet when none was chosen: run.py refuses that)."""
    return str(RunKey(str(group), str(regime), str(step), seed).path(str(root)))
