"""The Trainer's arguments and the process it runs in: which of Lightning's ``Trainer`` arguments a trainer config may
set (the switches; every loop argument, read from Lightning's own signature, is refused: the effective run sets the
loop), the values Lightning resolves (precision, accelerator, strategy) checked by Lightning, and what this process
must provide for a run (:func:`check_environment`: its launcher, a device, its data's folder, writable run paths)."""
from __future__ import annotations

import functools
import inspect
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from roadmap.errors import ConfigError, nearest_key, one_line
from roadmap.utils.files import unwritable_folder


# The arguments of Lightning's Trainer that leave what a run computes as it is: the hardware and how it computes
# (precision, determinism, kernels), and what is shown. Every other argument of its signature (:func:`loop_arguments`,
# a new Lightning's new ones included) belongs to the loop (its length, batches, sampling, validation cadence or
# stopping), which the effective run (roadmap/config/effective.py) alone decides from the recipe and budget: refused.
TRAINER_SWITCHES = ("accelerator", "strategy", "devices", "num_nodes", "precision", "plugins", "sync_batchnorm",
                    "deterministic", "benchmark", "inference_mode", "detect_anomaly", "profiler", "enable_progress_bar",
                    "enable_model_summary", "log_every_n_steps", "num_sanity_val_steps", "enable_autolog_hparams",
                    "model_registry")



# where a loop argument's value comes from here
EFFECTIVE_RUN_ARGUMENTS = {"max_epochs": "budget.epoch_scale (or recipe.epochs)", "gradient_clip_val": "recipe.grad_clip",
                           "gradient_clip_algorithm": "recipe.grad_clip (by norm)",
                           "accumulate_grad_batches": "budget.accumulate_grad_batches",
                           "limit_train_batches": "budget.limit_train_batches",
                           "limit_val_batches": "budget.limit_val_batches",
                           "fast_dev_run": "budget=smoke (a few batches, checkpoints and records kept)",
                           "max_steps": "budget.epoch_scale or budget.limit_train_batches",
                           "min_steps": "budget.epoch_scale", "min_epochs": "budget.epoch_scale",
                           "max_time": "budget.epoch_scale (a stopped run resumes: trainer=slurm's time limit)",
                           "overfit_batches": "budget.limit_train_batches (the seeded sampler stays)",
                           "check_val_every_n_epoch": "recipe.validate (every epoch or none)",
                           "val_check_interval": "recipe.validate (every epoch or none)"}



@functools.cache
def loop_arguments() -> dict[str, str]:
    """Every argument of Lightning's ``Trainer`` but :data:`TRAINER_SWITCHES` and those training sets itself
    (:data:`SET_BY_TRAIN`), each with what to set instead (None: nothing here does what it does): the loop's, refused
    as a trainer key."""
    import lightning

    return {name: EFFECTIVE_RUN_ARGUMENTS.get(name) for name in inspect.signature(lightning.Trainer).parameters
            if name not in TRAINER_SWITCHES and name not in SET_BY_TRAIN}



# Lightning trainer arguments that roadmap.run.train sets itself (besides the effective run's loop arguments)
SET_BY_TRAIN = {"callbacks": "add a callback as +callbacks.NAME._target_=pkg.Class",
                "logger": "choose the loggers with logger=csv|default", "default_root_dir": "it is run.dir",
                "enable_checkpointing": "checkpoints are always on (run.checkpoint_every_n_steps adds more)",
                "use_distributed_sampler": "the data module shards the data itself"}



def loop_key_refused(key: str) -> ConfigError:
    instead = loop_arguments()[key]
    return ConfigError(f"trainer.{key} is set by the effective run from the recipe and budget: " +
                       (f"set {instead} instead" if instead else
                        "the loop has no such setting here (python -m roadmap.explain shows the run's loop)"))



def refuse_loop_overrides(overrides: list[str]) -> None:
    """A command-line ``trainer.<loop key>=N``, with or without ``+``, refused before Hydra composes (Hydra would
    answer the plain form with its struct error and the advice to add ``+``)."""
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key.startswith("trainer.") and key.removeprefix("trainer.") in loop_arguments():
            raise loop_key_refused(key.removeprefix("trainer."))



def check_trainer_values(trainer) -> None:
    from lightning.fabric.connector import _convert_precision_to_unified_args
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    try:
        _convert_precision_to_unified_args(trainer.get("precision"))
    except ValueError as err:
        raise ConfigError(f"trainer.precision={trainer.get('precision')}: Lightning refuses it ({one_line(err)})") from None
    for key, known in (("accelerator", {"auto", "gpu", *AcceleratorRegistry.available_accelerators()}),
                       ("strategy", {"auto", *StrategyRegistry.available_strategies()})):
        value = trainer.get(key)
        if isinstance(value, str) and value not in known:
            raise ConfigError(f"trainer.{key}={value}: not one of Lightning's{nearest_key(value, known) or ''} "
                              f"(known: {', '.join(sorted(known)[:12])}, ...)")



def data_root(data, validate: bool = True) -> Path:
    """The folder a data config reads (not the synthetic kind's: it has none), which must exist; an image folder's
    holds ``train/`` and, for a run that validates, ``val/``."""
    root = Path(data.root).expanduser() if data.root else None
    if root is None or not root.exists():
        raise ConfigError(f"data.root {data.root!r} does not exist: set data.root=/path/to/{data.name}")
    for split in ("train", "val")[:1 + validate] if data.kind == "imagefolder" else ():
        if not (root / split).is_dir():
            raise ConfigError(f"missing dataset folder {root / split}: data.root must contain train/ and val/ "
                              f"with one sub-folder per class (the ImageNet layout)")
    for split in ("train", "val") if data.kind == "tar" else ():
        if not (root / data[f"{split}_tar"]).is_file():
            raise ConfigError(f"no tar file {root / data[f'{split}_tar']}: set data.root to the folder of ImageNet's "
                              f"tars and data.{split}_tar to its {split} tar's name")
    return root



# Cluster environments a trainer file may ask for, and how to start a process that has one
LAUNCHERS = {"SLURMEnvironment": "it runs as SLURM jobs: add -m to submit them (python run.py -m trainer=slurm ...), "
                                 "or start it with srun inside an allocation",
             "TorchElasticEnvironment": "it runs under torchrun: torchrun --nproc-per-node=N run.py trainer=torchrun ..."}



def _detected(environment) -> bool:
    with warnings.catch_warnings():  # SLURMEnvironment warns that srun exists but is not used: what we refuse
        warnings.simplefilter("ignore")
        return environment.detect()



def _check_launcher(trainer) -> None:
    """A cluster environment the trainer names must be this process's; more than one node needs one (Lightning's
    own, without a launcher, would wait for the other nodes forever)."""
    from hydra._internal.utils import _locate
    from lightning.pytorch.plugins import environments

    named = [_locate(plugin["_target_"]) for plugin in trainer.get("plugins") or []]
    for environment in (e for e in named if hasattr(e, "detect")):
        if not _detected(environment):
            base = next((c.__name__ for c in environment.__mro__ if c.__name__ in LAUNCHERS), None)
            how = LAUNCHERS.get(base, f"{environment.__name__}.detect() is false in this process")
            raise ConfigError(f"trainer.plugins has {environment.__name__}, but this process was not started by its "
                              f"launcher: {how}")
    detectable = (environments.SLURMEnvironment, environments.TorchElasticEnvironment,  # what Lightning detects
                  environments.LSFEnvironment)
    if trainer.get("num_nodes", 1) > 1 and not any(hasattr(e, "detect") for e in named) \
            and not any(_detected(e) for e in detectable):
        raise ConfigError(f"trainer.num_nodes={trainer.num_nodes} needs a launcher that starts every node: "
                          f"trainer=slurm with -m, or trainer=torchrun under torchrun")



def check_environment(cfg: DictConfig) -> None:
    """What this process must provide for the run: its trainer's launcher (torchrun, SLURM), a device for its
    accelerator, its data's folder, writable run paths; and ``ckpt`` only where it is read (``mode=eval``)."""
    import torch
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.utilities import rank_zero_only

    from roadmap.config.effective import world_size

    if cfg.mode == "train" and cfg.ckpt:
        raise ConfigError(f"ckpt={cfg.ckpt} is read by mode=eval only: to start training from weights, set "
                          f"model.init_from={cfg.ckpt}")
    _check_launcher(cfg.trainer)
    if world_size(cfg.trainer) is None:
        raise ConfigError(f"trainer.devices={cfg.trainer.devices} (all visible) but no CUDA device is visible: set "
                          f"trainer.devices=N, and trainer.accelerator=cpu on a machine without GPUs")
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={cfg.trainer.accelerator} but no CUDA device is visible: add "
                          f"trainer.accelerator=cpu trainer.precision=32-true on a machine without GPUs")
    if cfg.trainer.accelerator in AcceleratorRegistry and not AcceleratorRegistry[cfg.trainer.accelerator][
            "accelerator"].is_available():
        raise ConfigError(f"trainer.accelerator={cfg.trainer.accelerator}: Lightning finds no such device on this "
                          f"machine; use trainer.accelerator=cpu (or auto)")
    if cfg.data.kind != "synthetic":
        data_root(cfg.data, cfg.recipe.validate)
    for key in ("run.root", "run.dir") if rank_zero_only.rank == 0 else ():  # the run folder is global rank 0's
        problem = unwritable_folder(Path(OmegaConf.select(cfg, key)).expanduser())
        if problem:
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)}: {problem}: choose another {key}")
