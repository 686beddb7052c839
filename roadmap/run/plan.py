"""A run resolved once: every refusal of ``run.py``'s job before it does any work, and what the checks found, kept
for the work itself.

:func:`resolve_run` checks the composed config (:func:`roadmap.config.schema.validate`), the step and regime, this
process (:func:`roadmap.config.trainer.check_environment`), the model's knobs and input size (built on the meta
device), the data (:func:`roadmap.data.datamodule.check_data`: its index built and checked once), and then for
``mode=eval`` weights that are the chosen step's (:func:`roadmap.run.record.check_evaluation_target`), else a run
folder that holds no other config's run or other data's (:func:`roadmap.run.record.check_identity`), the checkpoint
it resumes from and a readable ``model.init_from``. The result, a :class:`RunPlan`, holds the run's folder, its
record as found, the data's identity, the weights it starts from and the checkpoint it resumes from: each file is
read here once. A single run is resolved by the Hydra callback :class:`ResolveBeforeRun` (before Hydra makes the
run's folder, so a refused command leaves nothing); :func:`take_plan` hands that plan to training or evaluation in
the same process, and resolves a sweep's job (no callback runs per job) itself.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from roadmap.config.identity import resolved
from roadmap.config.schema import validate
from roadmap.config.steps import check_step_regime, chosen_step, instantiate_model
from roadmap.config.trainer import check_environment
from roadmap.errors import ConfigError
from roadmap.run.record import (RunPaths, RunRecord, check_evaluation_target, check_identity, note_run_root,
                                source_run, table_metric, weights_source)


@dataclass(frozen=True)
class RunPlan:
    """What :func:`resolve_run` found: the step, the run folder's paths and its record as it was (None: none, or
    unreadable), the data's identity (None for data the config names fully), ``model.init_from`` as the record keeps
    it and as messages name it, the checkpoint training resumes from (None: from scratch), the config resolved to
    plain values (what ``config.yaml`` and the loggers get) and the metric the best epoch is chosen by."""

    key: tuple
    step: str
    paths: RunPaths
    previous: RunRecord | None
    data: dict | None
    init: dict | None
    init_named: str | None
    resume_from: Path | None
    resolved: dict | None
    metric: str


def _key(cfg: DictConfig) -> tuple:
    overrides = tuple(HydraConfig.get().overrides.task) if HydraConfig.initialized() else ()
    return str(cfg.run.dir), cfg.mode, str(cfg.ckpt), overrides


def resolve_run(cfg: DictConfig) -> RunPlan:
    """Every refusal of the run in one line (``ConfigError``), before any work; the :class:`RunPlan` it leaves."""
    step = chosen_step()
    check_step_regime(step, cfg.regime.name)
    validate(cfg)
    check_environment(cfg)
    from roadmap.models.shapes import check_input_size

    with torch.device("meta"):  # every knob the builder checks, and the input size, on shapes only
        model = instantiate_model(cfg.model, init_from=None)
    check_input_size(model, cfg.data.img_size)
    if cfg.recipe.fine_tune and not cfg.model.init_from and cfg.mode == "train":
        raise ConfigError(f"recipe={cfg.recipe.name} fine-tunes pre-trained weights, but model.init_from is "
                          f"{'empty' if cfg.model.init_from == '' else 'not set'}: point it at the pre-trained run's "
                          f"checkpoints/last.ckpt or weights/*.safetensors (python -m roadmap.sweep --weights-of "
                          f"<its run.py overrides> prints them)")
    from roadmap.data.datamodule import data_identity

    # the data's classes and val images checked (an evaluation needs them whatever the recipe), its index built once
    data = data_identity(cfg.data, cfg.recipe.validate, cfg.mode)
    paths = RunPaths(Path(cfg.run.dir).resolve())
    if cfg.mode == "eval":
        check_evaluation_target(cfg, step)
        return RunPlan(_key(cfg), step, paths, None, data, None, None, None, None, table_metric(cfg.recipe))
    previous = RunRecord.read(paths.root)
    check_identity(cfg, data, previous)
    resume_from = None
    if cfg.run.resume and not cfg.run.force and (previous is None or previous.status != "done"):
        from roadmap.run.checkpoints import resume_point

        resume_from = resume_point(paths)  # an unfinished run's checkpoints: one it can resume from
    source = str(cfg.model.init_from) if cfg.model.init_from else None
    if source:
        from roadmap.models.weights import check_init_source

        check_init_source(model, source, cfg.recipe.init_from_ema)
    init_named = f"{source}{source_run(source.removeprefix('timm:'))}" if source else None
    return RunPlan(_key(cfg), step, paths, previous, data, weights_source(source), init_named, resume_from,
                   resolved(cfg), table_metric(cfg.recipe))


_RESOLVED: RunPlan | None = None  # the Hydra callback's plan, until this process's job takes it


def take_plan(cfg: DictConfig) -> RunPlan:
    """The plan the Hydra callback resolved for this run (once: a later run in this process resolves its own), or
    this run resolved now (a sweep's job, or a run started from Python)."""
    global _RESOLVED
    plan, _RESOLVED = _RESOLVED, None
    return plan if plan is not None and plan.key == _key(cfg) else resolve_run(cfg)


class ResolveBeforeRun(Callback):
    """Hydra callback: a single run resolved (:func:`resolve_run`) before Hydra makes the run's folder
    (``hydra.run.dir`` is the run folder), so a refused command leaves nothing behind: ``error: <one line>``, exit 2.
    A multirun's jobs are resolved by ``run.py`` itself, each refused one recorded as ``refused``."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        global _RESOLVED
        HydraConfig.instance().set_config(config)
        try:
            _RESOLVED = resolve_run(config)
            note_run_root(config.run.root)  # where a later refusal (in the job) removes what Hydra made
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
