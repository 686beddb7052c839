"""The recipe's pieces that timm builds from names: the optimizer and the image transforms.

Training builds them here, and the config check (:func:`roadmap.schema.validate`) builds them here too, on a
one-parameter model and the data's image size, so a name timm would refuse mid-run (an optimizer, a RandAugment
string, an interpolation) is refused before the run starts, by timm's own registry and parser.
"""
from __future__ import annotations

import difflib

import torch
from timm.data import create_transform
from timm.optim import create_optimizer_v2, list_optimizers

from roadmap.errors import ConfigError


def build_optimizer(model: torch.nn.Module, optimizer, lr: float) -> torch.optim.Optimizer:
    """timm's optimizer ``optimizer.name`` (``recipe.optimizer``) at ``lr``; no decay on 1-D parameters when
    ``no_decay_1d``."""
    return create_optimizer_v2(model, opt=optimizer.name, lr=lr, weight_decay=optimizer.weight_decay,
                               momentum=optimizer.momentum, filter_bias_and_bn=optimizer.no_decay_1d,
                               **({"betas": tuple(optimizer.betas)} if optimizer.betas else {}))


def build_transform(recipe, data, is_training: bool):
    """timm's training transform (random-resized crop, flip, RandAugment, random erasing) or its evaluation
    transform (resize to ``img_size / crop_pct``, centre crop), at the data's image size."""
    if is_training:
        return create_transform(data.img_size, is_training=True, scale=tuple(recipe.train_crop_scale),
                                auto_augment=recipe.auto_augment, color_jitter=recipe.color_jitter or None,
                                interpolation=recipe.interpolation, re_prob=recipe.re_prob, re_mode="pixel", re_count=1)
    return create_transform(data.img_size, is_training=False, interpolation=recipe.interpolation,
                            crop_pct=data.crop_pct)


def _first_line(err: Exception) -> str:
    return " ".join(str(err).strip().split("\n")[0].split()) or type(err).__name__


def check_recipe(recipe, data) -> None:
    """Build the optimizer and both transforms as training will; what timm refuses becomes one line naming
    the key (and timm's nearest name for an optimizer)."""
    name = recipe.optimizer.name
    if name not in list_optimizers():
        near = difflib.get_close_matches(str(name), list_optimizers(), n=3)
        raise ConfigError(f"recipe.optimizer.name={name}: not one of timm's optimizers"
                          + (f"; did you mean {' or '.join(near)}?" if near else " (timm.optim.list_optimizers())"))
    try:
        build_optimizer(torch.nn.Linear(1, 1), recipe.optimizer, lr=1.0)
    except Exception as err:  # noqa: BLE001 - timm raises many types for bad arguments
        raise ConfigError(f"recipe.optimizer ({name}): timm refuses its arguments: {_first_line(err)}") from None
    try:
        build_transform(recipe, data, is_training=False)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"recipe.interpolation={recipe.interpolation}: timm refuses it ({_first_line(err)}); "
                          f"use bicubic, bilinear or nearest") from None
    try:
        build_transform(recipe, data, is_training=True)
    except Exception as err:  # noqa: BLE001
        key = f"recipe.auto_augment={recipe.auto_augment}" if recipe.auto_augment else "the training transform"
        raise ConfigError(f"{key}: timm refuses it ({_first_line(err)}); RandAugment strings look like "
                          f"rand-m9-mstd0.5-inc1 (timm.data.auto_augment)") from None
