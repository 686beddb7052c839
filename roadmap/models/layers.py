"""The norm and activation a knob names: the roadmap's short names, else timm's factories. The builder
(:mod:`roadmap.models.net`) and the config check (:mod:`roadmap.config.schema`, before a run starts) both resolve names here."""
from __future__ import annotations

from collections.abc import Callable

from timm.layers import GroupNorm, LayerNorm2d, get_act_layer, get_norm_layer
from torch import nn

from roadmap.errors import ConfigError

# Short names of the roadmap; any other name goes to timm's norm / activation factories
NORM_ALIASES = {"bn": nn.BatchNorm2d, "ln": lambda dim: LayerNorm2d(dim, eps=1e-6), "group": GroupNorm}
ACT_ALIASES = {"relu": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU}


def norm_factory(norm: str | Callable) -> Callable[[int], nn.Module]:
    """``bn``, ``ln`` (LayerNorm over channels, eps 1e-6), ``group`` (32 groups), any timm norm name
    (``batchnorm2d``, ``groupnorm1``, ``rmsnorm2d``, ...) or a callable taking the channel count."""
    if callable(norm):
        return norm
    try:
        return NORM_ALIASES.get(norm) or get_norm_layer(norm)
    except (KeyError, AssertionError, AttributeError):
        raise ConfigError(f"unknown norm {norm!r}; use bn, ln, group, a timm norm name (batchnorm2d, groupnorm1, "
                          f"rmsnorm2d, ...) or {{_target_: pkg.Class, _partial_: true}}") from None


def act_factory(act: str | Callable) -> Callable[[], nn.Module]:
    """``relu`` (in place), ``gelu``, any timm activation name (``silu``, ``mish``, ``hard_swish``, ...) or a
    callable returning a module."""
    if callable(act):
        return act
    try:
        return ACT_ALIASES.get(act) or get_act_layer(act)
    except (KeyError, AttributeError):
        raise ConfigError(f"unknown act {act!r}; use relu, gelu, a timm activation name (silu, mish, hard_swish, "
                          f"...) or {{_target_: pkg.Class, _partial_: true}}") from None
