"""Roadmap steps as Hydra configs: compose a step, list a regime's steps, build a step's model."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from roadmap.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
REGIMES = ("r50", "r200")


@dataclass(frozen=True)
class StepInfo:
    """One row of the paper's roadmap table (Table 10 for r50, Table 11 for r200)."""

    name: str
    change: str
    adopted: bool
    paper_top1: float
    paper_top1_std: float | None
    paper_gflops: float


def _check_regime(regime: str) -> None:
    if regime not in REGIMES:
        raise ConfigError(f"unknown regime {regime!r}; choose one of: {', '.join(REGIMES)}")


def available_steps() -> list[str]:
    """Every step config under conf/step/ (the regime tables' steps and any a user added)."""
    return sorted(p.stem for p in (CONF_DIR / "step").glob("*.yaml"))


def check_step(step: str) -> None:
    if step not in available_steps():
        raise ConfigError(f"unknown step {step!r}; valid steps: {', '.join(available_steps())} "
                          f"(or add conf/step/{step}.yaml)")


def regime_table(regime: str = "r50") -> DictConfig:
    """The regime's config: its paper table in roadmap order, its ResNet depths, its reference model."""
    _check_regime(regime)
    return OmegaConf.load(CONF_DIR / "regime" / f"{regime}.yaml")


def list_steps(regime: str = "r50") -> list[StepInfo]:
    """The regime's steps in roadmap order, with their one change and the paper's numbers."""
    return [StepInfo(name=name, change=row.change, adopted=row.adopted, paper_top1=row.top1,
                     paper_top1_std=row.get("top1_std"), paper_gflops=row.gflops)
            for name, row in regime_table(regime).steps.items()]


def compose_config(step: str | None = None, regime: str = "r50", overrides: list[str] | tuple = (),
                   as_run: bool = False) -> DictConfig:
    """Compose conf/config.yaml with ``+step=<step> regime=<regime>`` and command-line style overrides.

    ``as_run=True`` also composes and installs Hydra's own config, as ``run.py`` would have it, so the
    result can be passed to :func:`roadmap.train.train` (the tests' way of running run.py in-process).
    """
    _check_regime(regime)
    if step is not None:
        check_step(step)
    args = [f"regime={regime}", *([f"+step={step}"] if step else []), *overrides]
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app (or a test): compose with a fresh instance
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=args, return_hydra_config=as_run)
    except HydraException as err:
        raise ConfigError(f"bad override in {args}: {str(err).splitlines()[0]}") from err
    if as_run:
        HydraConfig.instance().set_config(cfg)
    return cfg


def model_knobs(cfg: DictConfig) -> list[str]:
    return [k for k in cfg.model if k != "_target_"]


def build_model(step: str, regime: str = "r50", **overrides):
    """The step's model (its architecture; training knobs such as drop_path_rate come as overrides).

    >>> build_model("inverted_bottleneck", num_classes=10)
    """
    cfg = compose_config(step, regime)
    unknown = sorted(set(overrides) - set(model_knobs(cfg)))
    if unknown:
        raise ConfigError(f"unknown model knob(s) {unknown}; known: {', '.join(model_knobs(cfg))}")
    return instantiate_model(cfg.model, **overrides)


def instantiate_model(model_cfg: DictConfig, **overrides):
    """``hydra.utils.instantiate`` that surfaces the builder's ConfigError instead of Hydra's wrapper."""
    try:
        return instantiate(model_cfg, **overrides)
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise
