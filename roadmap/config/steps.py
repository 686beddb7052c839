"""Roadmap steps as Hydra configs: discover regimes and steps, compose a step, build a step's model.

Config folders: ``conf/`` and those of ``$ROADMAP_CONFIG_PATH`` (:mod:`roadmap.config.files`). A regime is any
``regime/<name>.yaml``; a step is any ``step/<name>.yaml``. The roadmap order is the steps' parent
chain (each step file's first default is the step it changes), siblings in natural name order, all of a
step's children listed before their own children (kernel 5, 7, 9, 11, then GELU on top of kernel 7).
"""
from __future__ import annotations

import copy
import re
from collections import defaultdict
from dataclasses import dataclass

import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from roadmap.config.command_line import check_overrides, command_line
from roadmap.config.files import (CONF_DIR, broken_yaml, check_choice, config_dirs, config_groups, options, read_yaml,
                                  step_parent)
from roadmap.config.identity import flatten, run_dir, run_variant
from roadmap.config.schema import check_regime_file, target_arguments, validate
from roadmap.errors import ConfigError, nearest_key

GROUP_NAMES = ("regime", "recipe", "data", "budget")  # groups whose <group>.name is their Hydra choice (config.yaml)


def on_cuda(accelerator: str) -> bool:
    """Whether a trainer with this accelerator runs on CUDA (synchronized BatchNorm exists only there)."""
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


OmegaConf.register_new_resolver("roadmap_searchpath", lambda: [f"file://{d}" for d in config_dirs()[1:]], replace=True)
OmegaConf.register_new_resolver("run_variant", run_variant, replace=True)
OmegaConf.register_new_resolver("run_dir", run_dir, replace=True)
OmegaConf.register_new_resolver("hydra_subdir", lambda mode: ".hydra" if mode == "train" else None, replace=True)
OmegaConf.register_new_resolver("plus_one", lambda n: n + 1, replace=True)
OmegaConf.register_new_resolver("on_cuda", on_cuda, replace=True)


@dataclass(frozen=True)
class StepInfo:
    """One row of a regime's roadmap table; the paper's numbers are None where the regime has none."""

    name: str
    change: str
    adopted: bool
    parent: str | None
    paper_top1: float | None
    paper_gflops: float | None


def available_regimes() -> list[str]:
    return sorted(options("regime"))


def available_steps() -> list[str]:
    """Every step config (the paper's and any a user added under conf/step/ or $ROADMAP_CONFIG_PATH)."""
    return sorted(options("step"))


def check_regime(regime: str) -> None:
    check_regime_file(check_choice("regime", regime))


def regime_table(regime: str = "r50") -> DictConfig:
    """The regime's config: ResNet depths, widths, the paper's numbers (optional), its reference model."""
    check_regime(regime)
    return OmegaConf.create(read_yaml(options("regime")[regime]))


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def roadmap_order(parents: dict[str, str | None]) -> list[str]:
    """Steps in roadmap order from their parents: each step's children (natural order), then theirs."""
    children = defaultdict(list)
    for step, parent in parents.items():
        children[parent if parent in parents else None].append(step)
    order: list[str] = []

    def visit(parent):
        kids = sorted(children[parent], key=_natural)
        order.extend(kids)
        for kid in kids:
            visit(kid)

    visit(None)
    return order


def family_of_steps() -> dict[str, str]:
    """The steps a family regime lists (``steps:``, e.g. conf/regime/family.yaml), each with its regime."""
    return {step: name for name, path in options("regime").items() for step in read_yaml(path).get("steps") or []}


def check_step_regime(step: str, regime: str) -> None:
    """A family's members run under their family's regime, and a family runs its members only."""
    own = regime_table(regime).get("steps")
    check_choice("step", step)  # an unknown one named with the nearest
    if own and step not in own:
        raise ConfigError(f"regime {regime} runs its own steps ({', '.join(own)}), not {step}: +step={own[0]}, or "
                          f"regime=r50 for the roadmap's")
    claimed = family_of_steps().get(step)
    if not own and claimed:
        raise ConfigError(f"{step} is a member of regime {claimed}: add regime={claimed}")


@dataclass(frozen=True)
class PaperColumns:
    """Which of a step's paper numbers (``regime.paper``) a run is set beside, in words and in a column header's few;
    None: the paper has none."""

    top1: str | None = "top1"
    gflops: str | None = "gflops"
    label: str = "trained on ImageNet-1K at 224²"
    short: str = "1K, 224²"


def paper_columns(recipe: str | None = None, img_size: int = 224, fine_tuned: bool = False) -> PaperColumns:
    """The paper's numbers comparable with runs of ``recipe`` at ``img_size`` (at or above 384: the paper's 384²
    numbers; any other size is a proxy of the 224² ones): fine-tuned from 22K (``convnext_ft_in22k``) or from 1K
    (``convnext_ft_in1k``, 384² only), pre-trained on 22K (no top-1: it is not evaluated), else trained from scratch on
    1K. Runs that started from other weights under another recipe (``fine_tuned``) have no paper top-1."""
    big = img_size >= 384
    gflops = "gflops_384" if big else "gflops"
    if recipe == "convnext_ft_in22k":
        size = 384 if big else 224
        return PaperColumns("top1_22k_384" if big else "top1_22k", gflops,
                            f"pre-trained on ImageNet-22K, fine-tuned on 1K at {size}² (official README)", f"22K→1K, {size}²")
    if recipe == "convnext_ft_in1k":
        return PaperColumns("top1_384" if big else None, gflops, "trained on ImageNet-1K, fine-tuned at 384² (Table 1)",
                            "1K→384²")
    if recipe == "convnext_in22k":
        return PaperColumns(None, gflops, "pre-trained on ImageNet-22K: no ImageNet-1K top-1 (never evaluated)", "none")
    if fine_tuned:
        return PaperColumns(None, gflops, "started from other weights: the paper has no top-1 of that", "none")
    return PaperColumns(None if big else "top1", gflops, "trained on ImageNet-1K at 224²", "1K, 224²")


def list_steps(regime: str = "r50", columns: PaperColumns = PaperColumns()) -> list[StepInfo]:
    """A regime's steps: a family's members in its own order, else every roadmap step in roadmap order (the
    members of families left out), each with its one change (from its own file) and the regime's paper numbers
    (``columns``: which; the ImageNet-1K ones at 224² unless given)."""
    table = regime_table(regime)
    paper = table.get("paper") or {}
    files = {name: read_yaml(path) for name, path in options("step").items()}
    parents = {name: step_parent(f) for name, f in files.items()}
    members = family_of_steps()
    order = list(table.steps) if table.get("steps") else roadmap_order({s: p for s, p in parents.items() if s not in members})
    rows = []
    for name in order:
        own = (files[name].get("lineage") or {}).get(name) or {}
        change = OmegaConf.create({"regime": table, "change": own.get("change", name)}).change  # ${regime.*} resolved
        numbers = paper.get(name) or {}
        rows.append(StepInfo(name=name, change=change, adopted=bool(own.get("adopted", True)), parent=parents[name],
                             paper_top1=numbers.get(columns.top1) if columns.top1 else None,
                             paper_gflops=numbers.get(columns.gflops) if columns.gflops else None))
    return rows


def split_command(overrides: list[str]) -> tuple[str | None, str, list[str]]:
    """``run.py``'s overrides as :func:`compose_config` takes them: (the ``+step=`` choice or None, the regime, the
    rest)."""
    step = next((o.split("=", 1)[1] for o in overrides if o.startswith("+step=")), None)
    regime = next((o.split("=", 1)[1] for o in overrides if o.startswith("regime=")), "r50")
    return step, regime, [o for o in overrides if not o.startswith(("+step=", "regime="))]


def compose_config(step: str | None = None, regime: str = "r50", overrides: list[str] | tuple = (),
                   as_run: bool = False) -> DictConfig:
    """Compose conf/config.yaml with ``+step=<step> regime=<regime>`` and command-line style overrides,
    then check it (:func:`roadmap.config.schema.validate`).

    ``as_run=True`` also composes and installs Hydra's own config, as ``run.py`` would have it, so the
    result can be passed to :func:`roadmap.run.train.train` (the tests' way of running run.py in-process).
    """
    if step:
        check_step_regime(step, regime)
    args = [f"regime={regime}", *([f"+step={step}"] if step else []), *overrides]
    check_overrides(args, repeats=True)  # a later override of the Python API's list replaces an earlier one
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app (or a test): compose with a fresh instance
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=args, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        for group in GROUP_NAMES:  # Hydra's choices, fixed now: a later compose replaces Hydra's config
            cfg[group].name = cfg[group].name
    except (HydraException, OmegaConfBaseException) as err:
        raise composition_error(err, args) from None
    except yaml.YAMLError as err:
        raise broken_yaml(err) from None
    if not as_run:
        with open_dict(cfg):
            del cfg["hydra"]
    validate(cfg)
    return cfg


def _first_of_each_sweep(overrides: list[str]) -> list[str]:
    """The overrides of a multirun's first job (each sweep's first value): what one job composes."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    first = []
    for text, override in zip(overrides, OverridesParser.create().parse_overrides(overrides)):
        if override.is_sweep_override():
            prefix = text[:len(text) - len(text.lstrip("+~"))]
            text = f"{prefix}{override.key_or_group}={next(iter(override.sweep_string_iterator()))}"
        first.append(text)
    return first


def check_composition(argv: list[str]) -> None:
    """Hydra's composition of ``run.py`` overrides (a multirun's first job), its errors in one line
    (:func:`composition_error`); in a sweep, every later value of a swept key is checked too (:func:`_check_sweep_values`),
    so that no job trains before a bad value of a later one is refused."""
    overrides = [o for o in command_line(argv)[0] if "=" in o]
    args = _first_of_each_sweep(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=args, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise composition_error(err, args) from None
    except yaml.YAMLError as err:  # a config file Hydra reads
        raise broken_yaml(err) from None
    finally:
        GlobalHydra.instance().clear()
    _check_sweep_values(cfg, overrides)


def _check_sweep_values(first_job: DictConfig, overrides: list[str]) -> None:
    """Each later value of a swept key (group choices are checked by :func:`roadmap.config.schema.check_overrides`) put in the
    first job's config and checked as a job checks its own (:func:`roadmap.config.schema.validate`): one config per value,
    not per job, and no second composition."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    later = [(o.key_or_group, value) for o in OverridesParser.create().parse_overrides(overrides)
             if o.is_sweep_override() and not o.key_or_group.startswith("hydra.") and o.key_or_group not in config_groups()
             for value in list(o.sweep_iterator())[1:]]
    if not later:
        return
    HydraConfig.instance().set_config(first_job)
    validate(first_job)  # what is wrong with every job is said without naming one
    for key, value in later:
        job = copy.deepcopy(first_job)
        with open_dict(job):
            OmegaConf.update(job, key, value, force_add=True)
        try:
            validate(job)
        except ConfigError as err:
            raise ConfigError(f"{err} (in the sweep's job {key}={value}: no job has run)") from None


def composition_error(err: Exception, args: list[str]) -> ConfigError:
    """Hydra's composition error as one line: a key no config has, given without ``+``, is an unknown key like one
    given with it (:func:`roadmap.config.schema.validate`), with the nearest key; a group not in the defaults needs ``+``."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    key = re.match(r"Could not override '([^']+)'\.( No match in the defaults list\.)?$", first)
    if key and key[2]:
        value = next(a.split("=", 1)[1] for a in args if a.split("=", 1)[0] == key[1])
        return ConfigError(f"{key[1]} is added with +: +{key[1]}={value} (no {key[1]} is in the defaults)")
    if key and key[1].startswith("hydra.launcher."):
        return ConfigError(f"{key[1]} is not a key of this command's launcher (Hydra's local one): the SLURM "
                           f"launcher's keys come with trainer=slurm")
    if not key:
        return ConfigError(f"cannot compose the config: {first}")
    rest = [a for a in args if a.lstrip("+~").split("=", 1)[0] != key[1]]
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        known = compose("config", overrides=rest)
    parent, _, leaf = key[1].rpartition(".")
    target = OmegaConf.select(known, f"{parent}._target_") if parent else None
    if target and leaf in (target_arguments(target, parent) or {leaf}):  # an argument its file leaves out
        return ConfigError(f"{key[1]} is an argument of {target} that this config does not set: add it with "
                           f"+{key[1]}=...")
    return ConfigError(f"unknown key {key[1]}{nearest_key(key[1], flatten(OmegaConf.to_container(known, resolve=False))) or ': no config has it'}")


def chosen_step() -> str:
    """The step of the running Hydra app or :func:`compose_config` (``+step=<name>``)."""
    step = HydraConfig.get().runtime.choices.get("step") if HydraConfig.initialized() else None
    if not step:
        raise ConfigError(f"no step chosen: add +step=<name>; valid steps: {', '.join(available_steps())}")
    return step


def model_knobs(cfg: DictConfig) -> list[str]:
    return [k for k in cfg.model if k != "_target_"]


def build_model(step: str, regime: str = "r50", overrides: list[str] | tuple = (), bare: bool = False, **knobs):
    """The step's model exactly as ``run.py +step=<step> [overrides]`` trains it (the recipe's layer scale
    and drop path included, 1000 classes unless ``num_classes`` is given); ``bare=True`` gives the
    architecture alone (no layer scale, no drop path). Any model knob can be given as a keyword.

    >>> build_model("separate_downsampling", overrides=["budget=paper"])   # timm's convnext_tiny, γ = 1e-6
    """
    cfg = compose_config(step, regime, overrides)
    unknown = sorted(set(knobs) - set(model_knobs(cfg)) - {"init_from"})
    if unknown:
        raise ConfigError(f"unknown model knob(s) {unknown}; known: {', '.join(model_knobs(cfg))}")
    if bare:
        knobs = {"layer_scale_init": None, "drop_path_rate": 0.0, **knobs}
    return instantiate_model(cfg.model, cfg.recipe.init_from_ema, **{"num_classes": 1000, **knobs})


def instantiate_model(model_cfg: DictConfig | dict, init_from_ema: bool = False, **overrides):
    """``hydra.utils.instantiate`` of the builder (its ConfigError surfaced instead of Hydra's wrapper), then
    the weights of ``init_from`` when set (:func:`roadmap.models.weights.init_from`, its EMA weights with ``init_from_ema``;
    not on the meta device)."""
    from roadmap.models.weights import init_from

    if isinstance(model_cfg, DictConfig):
        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    model_cfg = {**model_cfg, **overrides}
    source = model_cfg.pop("init_from", None)
    try:
        model = instantiate(model_cfg)
    except InstantiationException as err:  # the builder's own refusal, or Hydra's: a knob's _target_ that fails
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        reason = re.sub(r",? set env var HYDRA_FULL_ERROR.*", "", " ".join(str(err).split()))  # Hydra's advice
        raise ConfigError(f"cannot build the model: {reason[:300]}") from None
    if source and next(model.parameters()).device.type != "meta":
        init_from(model, str(source), ema=init_from_ema)
    return model
