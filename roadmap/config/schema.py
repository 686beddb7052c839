"""The schema of a composed run config, and every check that refuses a run before it starts, in one line.

* **Keys**: every key must be one the code reads. The dataclasses below name them (a data config's by its
  ``kind``); the model's are the builder's arguments (``conf/model/roadmap.yaml``); a ``_target_`` node's
  (trainer, loggers, callbacks, plugins) are the arguments of what it builds. An unknown key, with or without
  ``+``, is refused with the nearest known one.
* **Values**: types by merging into OmegaConf structured configs, ranges and choices by :data:`RULES`, and
  every name a library resolves later by that library's own registry or parser: optimizer, RandAugment and
  interpolation (timm, :mod:`roadmap.config.recipe`), activation and norm (:mod:`roadmap.models.layers`), precision,
  accelerator and strategy (Lightning).
* **The command line** (:func:`check_overrides`, before Hydra composes): a key given twice, an unknown group
  choice (step, regime, data, ...), a loop key of the trainer.
* **This process** (:func:`check_environment`): the launcher a trainer needs (torchrun, SLURM), a device for the
  accelerator, writable run paths, ``ckpt`` only with ``mode=eval``.

Each raises :class:`~roadmap.errors.ConfigError` naming the key, the bad value and what it accepts.
"""
from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from roadmap.config.files import builder_arguments, read_yaml
from roadmap.config.identity import flatten
from roadmap.config.trainer import SET_BY_TRAIN, check_trainer_values, loop_arguments, loop_key_refused
from roadmap.errors import ConfigError, nearest_key, one_line
from roadmap.models.depthwise_paths import IMPLS


@dataclass
class StageRatio:
    depths: list[int] = MISSING
    width: int = MISSING


@dataclass
class PaperNumbers:
    """A step's numbers in the paper (conf/regime/family.yaml says which is which)."""

    top1: Optional[float] = None
    gflops: Optional[float] = None
    top1_384: Optional[float] = None
    top1_22k: Optional[float] = None
    top1_22k_384: Optional[float] = None
    gflops_384: Optional[float] = None


@dataclass
class Reference:
    name: str = MISSING
    top1: float = MISSING


@dataclass
class MemberDropPath:
    """A family member's stochastic depth under each recipe (null: the paper gives none)."""

    in1k: Optional[float] = MISSING
    in22k: Optional[float] = MISSING
    ft_in1k: Optional[float] = MISSING
    ft_in22k: Optional[float] = MISSING


@dataclass
class MemberEma:
    """Whether a family member's fine-tuning from 22K keeps an EMA (TRAINING.md: XL's commands)."""

    ft_in22k: bool = MISSING


@dataclass
class Regime:
    """A regime file (``conf/regime/<name>.yaml``) and its ``name`` (the choice)."""

    name: str = MISSING
    convnext: str = MISSING
    drop_path_rate: Optional[float] = MISSING
    # a roadmap's (a regime without ``steps``): its ResNet, the stage-ratio step's depths and width, the wider width
    resnet: Optional[str] = None
    resnet_depths: Optional[list[int]] = None
    stage_ratio: Optional[StageRatio] = None
    wide_width: Optional[int] = None
    # a family's (conf/regime/family.yaml): its members (steps), and each member's stochastic depth per recipe
    steps: Optional[list[str]] = None
    drop_path: Optional[MemberDropPath] = None
    ema: Optional[MemberEma] = None
    # optional: timm's model of a step's architecture, a model to draw beside the roadmap, the paper's numbers
    timm_references: Optional[dict[str, str]] = None
    reference: Optional[Reference] = None
    paper: Optional[dict[str, PaperNumbers]] = None


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
    layer_decay: Optional[float] = MISSING
    head_init_scale: float = MISSING
    fine_tune: bool = MISSING
    init_from_ema: bool = MISSING
    validate: bool = MISSING
    layer_scale_init: Optional[float] = MISSING
    drop_path_rate: Optional[float] = MISSING
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
    eval_warp_from: Optional[int] = MISSING


@dataclass
class ImageFolderData(Data):
    verify_images: bool = MISSING
    max_bad_fraction: float = MISSING
    index_dir: Optional[str] = MISSING


@dataclass
class TarData(ImageFolderData):
    train_tar: str = MISSING
    val_tar: str = MISSING


@dataclass
class TorchvisionData(Data):
    download: bool = MISSING


@dataclass
class SyntheticData(Data):
    train_size: int = MISSING
    val_size: int = MISSING
    seed: int = MISSING


DATA_KINDS = {"imagefolder": ImageFolderData, "tar": TarData, "torchvision": TorchvisionData, "synthetic": SyntheticData}


@dataclass
class Run:
    root: str = MISSING
    group: Optional[str] = None  # derived in conf/config.yaml from Hydra's runtime: not typed here
    dir: Optional[str] = None
    resume: bool = MISSING
    force: bool = MISSING
    export_weights: bool = MISSING
    checkpoint_every_n_steps: Optional[int] = MISSING


@dataclass
class Schema:
    """Every key of a composed config, with its type; no defaults: the config files are the defaults. The
    ``dict`` sections are checked by what reads them (the builder, the ``_target_`` of each node)."""

    seed: int = MISSING
    mode: str = MISSING
    ckpt: Optional[str] = MISSING
    compile: bool = MISSING
    compile_cache: str = MISSING
    channels_last: bool = MISSING
    depthwise: str = MISSING
    callbacks: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)  # a step's chain of changes (none without a step)
    regime: Regime = field(default_factory=Regime)
    model: dict[str, Any] = field(default_factory=dict)
    recipe: Recipe = field(default_factory=Recipe)
    data: Data = field(default_factory=Data)
    budget: Budget = field(default_factory=Budget)
    run: Run = field(default_factory=Run)
    trainer: dict[str, Any] = field(default_factory=dict)
    logger: dict[str, Any] = field(default_factory=dict)


RULES = [  # (key, check, what it must be)
    ("seed", lambda v: v >= 0, "a non-negative integer"),
    ("mode", lambda v: v in ("train", "eval"), "train or eval (evaluate ckpt=PATH)"),
    ("depthwise", lambda v: v in IMPLS, f"one of {', '.join(IMPLS)} (roadmap/models/depthwise.py)"),
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
    ("recipe.optimizer.weight_decay", lambda v: v >= 0, ">= 0"),
    ("recipe.optimizer.momentum", lambda v: v is None or 0 <= v < 1, "in [0, 1) or null"),
    ("recipe.color_jitter", lambda v: v >= 0, ">= 0 (0: none)"),
    ("recipe.grad_clip", lambda v: v is None or v > 0, "> 0 or null (no clipping)"),
    ("recipe.re_prob", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("recipe.ema.decay", lambda v: 0 < v < 1, "in (0, 1)"),
    ("recipe.drop_path_rate", lambda v: v is None or 0 <= v < 1, "in [0, 1)"),
    ("recipe.layer_decay", lambda v: v is None or 0 < v <= 1, "in (0, 1] or null (none)"),
    ("recipe.head_init_scale", lambda v: v > 0, "> 0 (1.0: the init as it is)"),
    ("recipe.layer_scale_init", lambda v: v is None or v > 0, "> 0 or null (no layer scale)"),
    ("data.img_size", lambda v: v >= 1, "a positive integer"),
    ("data.num_classes", lambda v: v >= 1, "a positive integer"),
    ("data.train_crop_scale", lambda v: len(v) == 2 and 0 < v[0] <= v[1] <= 1, "[min, max] with 0 < min <= max <= 1"),
    ("recipe.train_crop_scale", lambda v: len(v) == 2 and 0 < v[0] <= v[1] <= 1, "[min, max] with 0 < min <= max <= 1"),
    ("data.crop_pct", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("data.eval_warp_from", lambda v: v is None or v >= 1, "an image size or null (no warp)"),
    ("data.train_size", lambda v: v is None or v >= 1, "a positive number of images"),  # the synthetic kind's
    ("data.val_size", lambda v: v is None or v >= 1, "a positive number of images"),
    ("data.max_bad_fraction", lambda v: v is None or 0 <= v < 1, "a fraction of an epoch's images in [0, 1)"),
    ("run.checkpoint_every_n_steps", lambda v: v is None or v >= 1, "a positive integer or null"),
    ("trainer.num_nodes", lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
    ("trainer.devices", lambda v: v in (-1, "auto") or OmegaConf.is_list(v) or isinstance(v, int) and v >= 1,
     "a positive number of devices, a list of device ids, or -1 / auto (all visible)"),
    ("model.in_chans", lambda v: v == 3, "3: every data kind gives RGB images (grayscale ones are converted)"),
]


def _dataclass_of(annotation):
    """The dataclass an annotation holds (``X``, ``Optional[X]``), or None."""
    candidates = [annotation, *typing.get_args(annotation)]
    return next((c for c in candidates if is_dataclass(c)), None)


def unknown_keys(tree: dict, cls, prefix: str = "") -> list[tuple[str, list[str]]]:
    """``(key, the keys known beside it)`` for every key of ``tree`` that the dataclass ``cls`` does not name,
    through nested dataclasses and ``dict[str, dataclass]`` fields."""
    hints, found = typing.get_type_hints(cls), []
    for key, value in tree.items():
        if key not in hints:
            found.append((f"{prefix}{key}", [f"{prefix}{k}" for k in hints]))
            continue
        nested = _dataclass_of(hints[key])
        if nested and isinstance(value, dict):
            found += unknown_keys(value, nested, f"{prefix}{key}.")
        elif typing.get_origin(hints[key]) is dict and isinstance(value, dict):
            inner = _dataclass_of(typing.get_args(hints[key])[1])
            for name, item in value.items():
                if inner and isinstance(item, dict):
                    found += unknown_keys(item, inner, f"{prefix}{key}.{name}.")
    return found


def target_arguments(target: str, where: str) -> set[str] | None:
    """The arguments of what a ``_target_`` builds (None: it takes any keyword)."""
    from hydra._internal.utils import _locate  # hydra.utils.get_object, without its error log

    try:
        built = _locate(target)
    except Exception as err:  # noqa: BLE001 - an import can fail many ways
        cause = err.__cause__ or err
        raise ConfigError(f"{where}._target_={target}: cannot import it ({type(cause).__name__}: "
                          f"{one_line(cause)})") from None
    try:
        parameters = inspect.signature(built).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}


HYDRA_KEYS = {"_target_", "_partial_", "_args_", "_recursive_", "_convert_"}


def _check_target_node(node, where: str, refused: dict[str, str] | None = None) -> None:
    """A node Hydra instantiates: its class imports and every key is one of its arguments (``refused``: keys the
    run sets itself, with what to set instead)."""
    refused = refused or {}
    if not isinstance(node, dict) or "_target_" not in node:
        raise ConfigError(f"{where} must be a node with _target_: pkg.Class (and its arguments), got {node!r}")
    arguments = target_arguments(str(node["_target_"]), where)
    for key in node:
        if key in refused:
            raise ConfigError(f"{where}.{key} is set by the run: {refused[key]}")
        if arguments is not None and key not in arguments | HYDRA_KEYS:
            raise ConfigError(f"unknown key {where}.{key}: not an argument of {node['_target_']}"
                              + nearest_key(key, [f"{where}.{a}" for a in arguments]))


def _check_keys(tree: dict) -> None:
    """Every key of the composed config is one that the code (or the library it configures) reads."""
    data_schema = DATA_KINDS.get((tree.get("data") or {}).get("kind"), Data)
    schema_tree = {k: v for k, v in tree.items() if k not in ("data", "hydra")}
    problems = unknown_keys(schema_tree, Schema) + unknown_keys(tree.get("data") or {}, data_schema, "data.")
    model_keys = builder_arguments()
    problems += [(f"model.{k}", [f"model.{m}" for m in model_keys]) for k in tree.get("model") or {} if k not in model_keys]
    if problems:
        key, beside = problems[0]
        known = beside + [k for k in _all_keys(Schema) if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
        raise ConfigError(f"unknown key {key}{nearest_key(key, known) or ': not a key any config or code reads'}"
                          + " (python run.py +step=<name> --cfg job lists every key)")
    trainer = tree.get("trainer") or {}
    _check_target_node(trainer, "trainer", SET_BY_TRAIN)
    for i, plugin in enumerate(trainer.get("plugins") or []):
        _check_target_node(plugin, f"trainer.plugins[{i}]")
    for section in ("logger", "callbacks"):
        for name, node in (tree.get(section) or {}).items():
            _check_target_node(node, f"{section}.{name}")


def _all_keys(cls, prefix: str = "") -> list[str]:
    out = []
    for name, annotation in typing.get_type_hints(cls).items():
        nested = _dataclass_of(annotation)
        out += _all_keys(nested, f"{prefix}{name}.") if nested else [f"{prefix}{name}"]
    return out


def _checked_part(cfg: DictConfig) -> dict:
    """The values the schema types, interpolations resolved (but run.dir and run.group, which need Hydra's runtime;
    the dict sections are checked by what reads them)."""
    part = {key: OmegaConf.select(cfg, key) for key in ("seed", "mode", "ckpt", "compile", "compile_cache", "channels_last",
                                                        "depthwise")}
    part.update({key: OmegaConf.to_container(cfg[key], resolve=True, throw_on_missing=True)
                 for key in ("regime", "budget", "recipe", "data")})
    part["run"] = {key: cfg.run.get(key) for key in ("root", "resume", "force", "export_weights", "checkpoint_every_n_steps")}
    part["trainer"] = {key: cfg.trainer.get(key) for key in ("num_nodes", "devices")}
    part["model"] = {key: cfg.model.get(key) for key in ("in_chans",)}
    return part


# the family's per-member values a recipe reads (conf/step/convnext_t.yaml): what each is, and the key that sets it
MEMBER_COLUMNS = {"drop_path": ("stochastic depth", "recipe.drop_path_rate"), "ema": ("EMA", "recipe.ema.enabled")}


def _typed(cfg: DictConfig) -> DictConfig:
    """The checked part of ``cfg`` merged into :class:`Schema` (a data config by its kind)."""
    schema = OmegaConf.structured(Schema)
    OmegaConf.set_struct(schema, False)  # the dict sections are typed by what reads them
    schema.data = OmegaConf.structured(DATA_KINDS.get(OmegaConf.select(cfg, "data.kind"), Data))
    try:
        return OmegaConf.merge(schema, _checked_part(cfg))
    except MissingMandatoryValue as err:
        raise ConfigError(f"{err.full_key} is not set: add {err.full_key}=... to the command line") from None
    except OmegaConfBaseException as err:
        column = next((c for c in MEMBER_COLUMNS if f"regime.{c}." in str(err)), None)
        if column:  # a recipe that reads the family's per-member column
            what, key = MEMBER_COLUMNS[column]
            raise ConfigError(f"recipe {OmegaConf.select(cfg, 'recipe.name')} takes each family member's {what} "
                              f"(regime.{column}), which regime {OmegaConf.select(cfg, 'regime.name')} has not: "
                              f"regime=family +step=convnext_<t|s|b|l|xl>, or set {key}") from None
        key = err.full_key or "config"
        source = interpolation_source(cfg, key) if err.full_key else key  # the key the user set, through ${...}
        read_as = f" (read as {key})" if source != key else ""
        raise ConfigError(f"{source}={err.value}{read_as}: {one_line(err)}") from None


def _check_library_names(checked: DictConfig, cfg: DictConfig) -> None:
    """The names timm and Lightning resolve later, resolved now by them."""
    from roadmap.config.recipe import check_recipe
    from roadmap.models.layers import act_factory, norm_factory

    check_recipe(checked.recipe, checked.data)
    for knob, factory in (("act", act_factory), ("norm", norm_factory)):
        value = cfg.model.get(knob)
        if isinstance(value, str):
            try:
                factory(value)
            except ConfigError as err:
                raise ConfigError(f"model.{knob}={value}: {err}") from None
    check_trainer_values(cfg.trainer)


LAYER_DECAY_STAGE3_BLOCKS = 27  # optim_factory.py's 12 layers: stage 3's blocks in threes (3-11)


def interpolation_source(cfg: DictConfig, key: str) -> str:
    """The key whose value ``key`` takes through its chain of plain interpolations (``${regime.drop_path.in1k}``)."""
    for _ in range(10):
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        raw = OmegaConf.to_container(node, resolve=False).get(leaf) if isinstance(node, DictConfig) else None
        if not (isinstance(raw, str) and raw.startswith("${") and raw.endswith("}") and ":" not in raw):
            break
        key = raw[2:-1]
    return key


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError (one line) for the first unknown key, or value of the wrong type, out of range, or
    refused by the library that reads it."""
    for key in loop_arguments():
        if key in cfg.trainer:  # a trainer file of the user's
            raise loop_key_refused(key)
    tree = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=False)
    _check_keys(tree)
    checked = _typed(cfg)
    missing = sorted(OmegaConf.missing_keys(checked))
    if len(missing) == 1:
        raise ConfigError(f"{missing[0]} is not set: add it to its config file or {missing[0]}=... to the command line")
    if missing:
        group = missing[0].split(".")[0]
        inherit = (f" (a {group} file of yours can start from one of conf/{group}/: defaults: [<name>, _self_])"
                   if all(m.startswith(f"{group}.") for m in missing) and group in ("data", "budget", "recipe") else "")
        raise ConfigError(f"{', '.join(missing)} are not set: add them to their config file{inherit}")
    if checked.recipe.schedule == "step" and not (checked.recipe.step_every or 0) >= 1:
        raise ConfigError(f"recipe.step_every={checked.recipe.step_every}: the step schedule needs a positive "
                          f"number of epochs between ×0.1 decays")
    if checked.recipe.drop_path_rate is None:
        given = [k for k, v in (checked.regime.drop_path or {}).items() if v is not None]
        home = interpolation_source(cfg, "recipe.drop_path_rate")
        raise ConfigError(f"the paper gives no stochastic depth for this model under recipe {checked.recipe.name} "
                          f"(it gives one for: {', '.join(given) or 'none'}, in regime.drop_path): choose one of those "
                          f"recipes, or set {home}=<rate>")
    for key, check, requirement in RULES:
        value = OmegaConf.select(checked, key)
        if not check(value):
            shown = list(value) if OmegaConf.is_list(value) else value
            raise ConfigError(f"{key}={shown}: must be {requirement}")
    if checked.recipe.warmup_epochs >= checked.recipe.epochs:
        raise ConfigError(f"recipe.warmup_epochs={checked.recipe.warmup_epochs:g} is not shorter than "
                          f"recipe.epochs={checked.recipe.epochs}: the schedule needs epochs after the warm-up")
    for key in ("budget.limit_train_batches", "budget.limit_val_batches"):  # Lightning's rule, on the value as given
        given = OmegaConf.select(cfg, key)
        if isinstance(given, float) and given > 1:
            raise ConfigError(f"{key}={given}: a fraction is at most 1.0; a number of batches is a whole number "
                              f"({int(given)})")
    depths = OmegaConf.select(cfg, "model.depths")
    if checked.recipe.layer_decay and depths is not None and (len(depths) != 4 or depths[2] != LAYER_DECAY_STAGE3_BLOCKS):
        raise ConfigError(f"recipe.layer_decay={checked.recipe.layer_decay:g}: the official ConvNeXt's layer-wise lr decay "
                          f"groups the {LAYER_DECAY_STAGE3_BLOCKS} stage-3 blocks of ConvNeXt-S/B/L/XL in threes, and its "
                          f"main.py refuses any other model; this one has depths {list(depths)}: set "
                          f"recipe.layer_decay=null (no layer decay)")
    if (checked.recipe.mixup > 0 or checked.recipe.cutmix > 0) and checked.budget.batch_size % 2:
        raise ConfigError(f"budget.batch_size={checked.budget.batch_size}: mixup/cutmix pair the images of a batch, "
                          f"so it must be even (or set recipe.mixup=0 recipe.cutmix=0)")
    _check_library_names(checked, cfg)


ROADMAP_KEYS = ("resnet", "resnet_depths", "stage_ratio", "wide_width")  # a regime without ``steps``


def check_regime_file(path: Path) -> None:
    """A regime file against :class:`Regime`: no unknown key, every required one, each of its type."""
    content = read_yaml(path)
    problems = unknown_keys(content, Regime)
    if problems:
        key, beside = problems[0]
        raise ConfigError(f"{path}: unknown key {key}{nearest_key(key, beside)} (a regime's keys: conf/regime/r50.yaml)")
    try:
        checked = OmegaConf.merge(OmegaConf.structured(Regime), {"name": path.stem, **content})
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: {err.full_key}={err.value}: {one_line(err)}") from None
    missing = sorted(k for k, v in flatten(OmegaConf.to_container(checked, resolve=False)).items() if v == "???")
    if not checked.steps:  # a roadmap
        missing += [key for key in ROADMAP_KEYS if checked[key] is None]
    if missing:
        raise ConfigError(f"{path}: {missing[0]} is not set (a roadmap regime's keys: conf/regime/r50.yaml; a family's: "
                          f"conf/regime/family.yaml)")


