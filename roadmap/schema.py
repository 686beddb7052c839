"""The typed schema of a composed run config: every bad value fails at composition, in one line.

Types are checked by merging the config into OmegaConf structured configs (the dataclasses below: keys
they do not name pass through unchecked, so a data config may add its own); ranges and choices by
:data:`RULES`. :func:`validate` raises :class:`~roadmap.errors.ConfigError` naming the key, the bad value
and what it accepts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from roadmap.depthwise_paths import IMPLS
from roadmap.errors import ConfigError


@dataclass
class Budget:
    name: str = MISSING
    proxy: bool = MISSING
    epoch_scale: float = MISSING
    batch_size: int = MISSING
    num_workers: int = MISSING
    accumulate_grad_batches: int = MISSING
    limit_train_batches: float = MISSING
    limit_val_batches: float = MISSING


@dataclass
class Optimizer:
    name: str = MISSING
    betas: Optional[list[float]] = MISSING
    weight_decay: float = MISSING
    momentum: Optional[float] = MISSING
    no_decay_1d: bool = MISSING


@dataclass
class Ema:
    enabled: bool = MISSING
    decay: float = MISSING


@dataclass
class Recipe:
    name: str = MISSING
    epochs: int = MISSING
    warmup_epochs: float = MISSING
    warmup_above_batch: int = MISSING
    optimizer: Optimizer = field(default_factory=Optimizer)
    base_lr: float = MISSING
    base_batch: int = MISSING
    lr_min: float = MISSING
    schedule: str = MISSING
    step_every: Optional[int] = MISSING
    auto_augment: Optional[str] = MISSING
    color_jitter: float = MISSING
    interpolation: str = MISSING
    re_prob: float = MISSING
    mixup: float = MISSING
    cutmix: float = MISSING
    label_smoothing: float = MISSING
    grad_clip: Optional[float] = MISSING
    ema: Ema = field(default_factory=Ema)
    layer_scale_init: Optional[float] = MISSING
    drop_path_rate: float = MISSING
    train_crop_scale: list[float] = MISSING


@dataclass
class Data:
    name: str = MISSING
    kind: str = MISSING
    root: Optional[str] = MISSING
    img_size: int = MISSING
    num_classes: int = MISSING
    train_crop_scale: list[float] = MISSING
    crop_pct: float = MISSING


@dataclass
class Run:
    root: str = MISSING
    resume: bool = MISSING
    force: bool = MISSING
    export_weights: bool = MISSING
    checkpoint_every_n_steps: Optional[int] = MISSING


@dataclass
class Schema:
    """What every composed config has, with its type; no defaults: the config files are the defaults."""

    seed: int = MISSING
    mode: str = MISSING
    compile: bool = MISSING
    channels_last: bool = MISSING
    depthwise: str = MISSING
    budget: Budget = field(default_factory=Budget)
    recipe: Recipe = field(default_factory=Recipe)
    data: Data = field(default_factory=Data)
    run: Run = field(default_factory=Run)


# Lightning trainer arguments that the effective run (roadmap/effective.py) sets from the recipe and budget
EFFECTIVE_RUN_ARGUMENTS = {"max_epochs": "budget.epoch_scale (or recipe.epochs)", "gradient_clip_val": "recipe.grad_clip",
                           "accumulate_grad_batches": "budget.accumulate_grad_batches",
                           "limit_train_batches": "budget.limit_train_batches",
                           "limit_val_batches": "budget.limit_val_batches"}


RULES = [  # (key, check, what it must be)
    ("seed", lambda v: v >= 0, "a non-negative integer"),
    ("mode", lambda v: v in ("train", "eval"), "train or eval (evaluate ckpt=PATH)"),
    ("depthwise", lambda v: v in IMPLS, f"one of {', '.join(IMPLS)} (roadmap/depthwise.py)"),
    ("budget.epoch_scale", lambda v: v > 0, "> 0 (the fraction of each recipe's epochs to train)"),
    ("budget.batch_size", lambda v: v >= 1, "a positive integer (per device)"),
    ("budget.num_workers", lambda v: v >= 0, "a non-negative integer"),
    ("budget.accumulate_grad_batches", lambda v: v >= 1, "a positive integer"),
    ("budget.limit_train_batches", lambda v: v > 0, "> 0 (a fraction ≤ 1.0 or a number of batches)"),
    ("budget.limit_val_batches", lambda v: v > 0, "> 0 (a fraction ≤ 1.0 or a number of batches)"),
    ("recipe.epochs", lambda v: v >= 1, "a positive integer"),
    ("recipe.warmup_epochs", lambda v: v >= 0, ">= 0"),
    ("recipe.warmup_above_batch", lambda v: v >= 0, ">= 0 (0: always warm up)"),
    ("recipe.base_lr", lambda v: v > 0, "> 0"),
    ("recipe.base_batch", lambda v: v >= 1, "a positive integer"),
    ("recipe.lr_min", lambda v: v >= 0, ">= 0"),
    ("recipe.schedule", lambda v: v in ("cosine", "step"), "cosine or step"),
    ("recipe.mixup", lambda v: v >= 0, ">= 0 (a Beta alpha; 0 = off)"),
    ("recipe.cutmix", lambda v: v >= 0, ">= 0 (a Beta alpha; 0 = off)"),
    ("recipe.label_smoothing", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("recipe.re_prob", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("recipe.ema.decay", lambda v: 0 < v < 1, "in (0, 1)"),
    ("recipe.drop_path_rate", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("recipe.layer_scale_init", lambda v: v is None or v > 0, "> 0 or null (no layer scale)"),
    ("data.img_size", lambda v: v >= 1, "a positive integer"),
    ("data.num_classes", lambda v: v >= 1, "a positive integer"),
    ("data.train_crop_scale", lambda v: len(v) == 2 and 0 < v[0] <= v[1] <= 1, "[min, max] with 0 < min <= max <= 1"),
    ("recipe.train_crop_scale", lambda v: len(v) == 2 and 0 < v[0] <= v[1] <= 1, "[min, max] with 0 < min <= max <= 1"),
    ("data.crop_pct", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("run.checkpoint_every_n_steps", lambda v: v is None or v >= 1, "a positive integer or null"),
    ("trainer.num_nodes", lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
]


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split("\n")[0].split())


def _checked_part(cfg: DictConfig) -> dict:
    """The values the schema checks, interpolations resolved (run.dir needs Hydra's runtime: not included)."""
    part = {key: OmegaConf.select(cfg, key) for key in ("seed", "mode", "compile", "channels_last", "depthwise")}
    part.update({key: OmegaConf.to_container(cfg[key], resolve=True, throw_on_missing=True)
                 for key in ("budget", "recipe", "data")})
    part["run"] = {key: cfg.run.get(key) for key in Run.__dataclass_fields__}
    part["trainer"] = {key: cfg.trainer.get(key) for key in ("num_nodes",)}
    return part


def _loop_key_refused(key: str) -> ConfigError:
    return ConfigError(f"trainer.{key} is set by the effective run from the recipe and budget: set "
                       f"{EFFECTIVE_RUN_ARGUMENTS[key]} instead")


def refuse_loop_overrides(overrides: list[str]) -> None:
    """A command-line ``trainer.<loop key>=N``, with or without ``+``, refused before Hydra composes (Hydra would
    answer the plain form with its struct error and the advice to add ``+``)."""
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key.startswith("trainer.") and key.removeprefix("trainer.") in EFFECTIVE_RUN_ARGUMENTS:
            raise _loop_key_refused(key.removeprefix("trainer."))


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError (one line) for the first value of ``cfg`` of the wrong type or out of range."""
    for key in EFFECTIVE_RUN_ARGUMENTS:
        if key in cfg.trainer:  # a trainer file of the user's
            raise _loop_key_refused(key)
    schema = OmegaConf.structured(Schema)
    for node in (schema, schema.budget, schema.recipe, schema.recipe.optimizer, schema.recipe.ema, schema.data, schema.run):
        OmegaConf.set_struct(node, False)  # keys the schema does not name pass through unchecked
    try:
        checked = OmegaConf.merge(schema, _checked_part(cfg))
    except MissingMandatoryValue as err:
        raise ConfigError(f"{err.full_key} is not set: add {err.full_key}=... to the command line") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{err.full_key or 'config'}={err.value}: {_one_line(err)}") from None
    missing = sorted(OmegaConf.missing_keys(checked))
    if missing:
        raise ConfigError(f"{missing[0]} is not set: add it to its config file or {missing[0]}=... to the command line")
    if checked.recipe.schedule == "step" and not (checked.recipe.step_every or 0) >= 1:
        raise ConfigError(f"recipe.step_every={checked.recipe.step_every}: the step schedule needs a positive "
                          f"number of epochs between ×0.1 decays")
    for key, check, requirement in RULES:
        value = OmegaConf.select(checked, key)
        if not check(value):
            shown = list(value) if OmegaConf.is_list(value) else value
            raise ConfigError(f"{key}={shown}: must be {requirement}")
    if (checked.recipe.mixup > 0 or checked.recipe.cutmix > 0) and checked.budget.batch_size % 2:
        raise ConfigError(f"budget.batch_size={checked.budget.batch_size}: mixup/cutmix pair the images of a batch, "
                          f"so it must be even (or set recipe.mixup=0 recipe.cutmix=0)")
