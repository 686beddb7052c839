"""Roadmap steps as Hydra configs: discover regimes and steps, compose a step, build a step's model.

Config folders: ``conf/`` and every folder of ``$ROADMAP_CONFIG_PATH`` (``os.pathsep``-separated, same layout:
``regime/``, ``step/``, ...), which Hydra searches too (``hydra.searchpath`` in ``conf/config.yaml``). A regime
is any ``regime/<name>.yaml``; a step is any ``step/<name>.yaml``. The roadmap order is the steps' parent
chain (each step file's first default is the step it changes), siblings in natural name order, all of a
step's children listed before their own children (kernel 5, 7, 9, 11, then GELU on top of kernel 7).
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from roadmap.errors import ConfigError
from roadmap.record import run_dir, run_variant

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
CONFIG_PATH_ENV = "ROADMAP_CONFIG_PATH"
GROUP_NAMES = ("regime", "recipe", "data", "budget")  # groups whose <group>.name is their Hydra choice (config.yaml)


def config_dirs() -> list[Path]:
    """``conf/`` first, then the folders of ``$ROADMAP_CONFIG_PATH``."""
    extra = os.environ.get(CONFIG_PATH_ENV, "")
    return [CONF_DIR, *(Path(p).expanduser().resolve() for p in extra.split(os.pathsep) if p)]


def on_cuda(accelerator: str) -> bool:
    """Whether a trainer with this accelerator runs on CUDA (synchronized BatchNorm exists only there)."""
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


OmegaConf.register_new_resolver("roadmap_searchpath", lambda: [f"file://{d}" for d in config_dirs()[1:]], replace=True)
OmegaConf.register_new_resolver("run_variant", run_variant, replace=True)
OmegaConf.register_new_resolver("run_dir", run_dir, replace=True)
OmegaConf.register_new_resolver("max", max, replace=True)
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


def _options(group: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in config_dirs():
        for path in sorted((folder / group).glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def available_regimes() -> list[str]:
    return sorted(_options("regime"))


def available_steps() -> list[str]:
    """Every step config (the paper's and any a user added under conf/step/ or $ROADMAP_CONFIG_PATH)."""
    return sorted(_options("step"))


def check_regime(regime: str) -> None:
    if regime not in available_regimes():
        raise ConfigError(f"unknown regime {regime!r}; choose one of: {', '.join(available_regimes())} "
                          f"(or add conf/regime/{regime}.yaml)")


def check_step(step: str) -> None:
    if step not in available_steps():
        raise ConfigError(f"unknown step {step!r}; valid steps: {', '.join(available_steps())} "
                          f"(or add conf/step/{step}.yaml)")


def regime_table(regime: str = "r50") -> DictConfig:
    """The regime's config: ResNet depths, widths, the paper's numbers (optional), its reference model."""
    check_regime(regime)
    return OmegaConf.load(_options("regime")[regime])


def step_parent(step_file: dict) -> str | None:
    """The step a step file changes: the first plain entry of its defaults list."""
    return next((d for d in step_file.get("defaults") or [] if isinstance(d, str) and d != "_self_"), None)


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


def list_steps(regime: str = "r50") -> list[StepInfo]:
    """Every step in roadmap order, with its one change (from its own file) and the regime's paper numbers."""
    table = regime_table(regime)
    paper = table.get("paper") or {}
    files = {name: yaml.safe_load(path.read_text()) or {} for name, path in _options("step").items()}
    parents = {name: step_parent(f) for name, f in files.items()}
    rows = []
    for name in roadmap_order(parents):
        own = (files[name].get("lineage") or {}).get(name) or {}
        change = OmegaConf.create({"regime": table, "change": own.get("change", name)}).change  # ${regime.*} resolved
        numbers = paper.get(name) or {}
        rows.append(StepInfo(name=name, change=change, adopted=bool(own.get("adopted", True)), parent=parents[name],
                             paper_top1=numbers.get("top1"),
                             paper_gflops=numbers.get("gflops")))
    return rows


def compose_config(step: str | None = None, regime: str = "r50", overrides: list[str] | tuple = (),
                   as_run: bool = False) -> DictConfig:
    """Compose conf/config.yaml with ``+step=<step> regime=<regime>`` and command-line style overrides,
    then check it (:func:`roadmap.schema.validate`).

    ``as_run=True`` also composes and installs Hydra's own config, as ``run.py`` would have it, so the
    result can be passed to :func:`roadmap.train.train` (the tests' way of running run.py in-process).
    """
    from roadmap.schema import validate

    check_regime(regime)
    if step is not None:
        check_step(step)
    args = [f"regime={regime}", *([f"+step={step}"] if step else []), *overrides]
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app (or a test): compose with a fresh instance
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=args, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        for group in GROUP_NAMES:  # Hydra's choices, fixed now: a later compose replaces Hydra's config
            cfg[group].name = cfg[group].name
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"bad override in {args}: {str(err).splitlines()[0]}") from err
    if not as_run:
        with open_dict(cfg):
            del cfg["hydra"]
    validate(cfg)
    return cfg


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
    return instantiate_model(cfg.model, **{"num_classes": 1000, **knobs})


def instantiate_model(model_cfg: DictConfig | dict, **overrides):
    """``hydra.utils.instantiate`` of the builder (its ConfigError surfaced instead of Hydra's wrapper), then
    the weights of ``init_from`` when set (:func:`roadmap.weights.init_from`; not on the meta device)."""
    from roadmap.weights import init_from

    if isinstance(model_cfg, DictConfig):
        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    model_cfg = {**model_cfg, **overrides}
    source = model_cfg.pop("init_from", None)
    try:
        model = instantiate(model_cfg)
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise
    if source and next(model.parameters()).device.type != "meta":
        init_from(model, str(source))
    return model
