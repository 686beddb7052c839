"""The recipe's pieces that timm builds from names: the optimizer and the image transforms.

Training builds them here, and the config check (:func:`roadmap.config.schema.validate`) builds them here too, on a
one-parameter model and the data's image size, so a name timm would refuse mid-run (an optimizer, a RandAugment
string, an interpolation) is refused before the run starts, by timm's own registry and parser.
"""
from __future__ import annotations

import difflib
import math
import random

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.optim import create_optimizer_v2, list_optimizers

from roadmap.errors import ConfigError


HEAD_LAYER = 13  # the official ConvNeXt's layer-wise lr decay: layers 0-12 of the trunk, 13 the head


def convnext_layer(name: str) -> int:
    """The official ConvNeXt's layer of a :class:`roadmap.models.net.RoadmapNet` parameter (``optim_factory.py``,
    ``get_num_layer_for_convnext``, 12 layers + the head): the stem 0; stages 1 and 2 (their downsampling included)
    1 and 2; stage 3's downsampling 3 and its blocks 3 + block // 3 (27 blocks: 3–11); stage 4 12; the head 13."""
    parts = name.split(".")
    if parts[0] == "stem":
        return 0
    if parts[0] != "stages":
        return HEAD_LAYER
    stage = int(parts[1])
    if stage == 3:
        return 12
    if stage < 2 or parts[2] == "downsample":
        return stage + 1
    return 3 + int(parts[3]) // 3


def layer_decay_groups(model: torch.nn.Module, decay: float, weight_decay: float, no_decay_1d: bool) -> list[dict]:
    """Parameter groups with timm's ``lr_scale`` (its schedulers multiply each group's lr by it) of
    ``decay ** (13 - layer)`` by :func:`convnext_layer`, and no weight decay on 1-D parameters when ``no_decay_1d``.
    timm's own ``param_groups_layer_decay`` numbers every block a layer and closes up empty ones, so its scales
    are not the official ones (tests/test_family.py compares them)."""
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = convnext_layer(name.removeprefix("_orig_mod."))  # torch.compile's wrapper
        no_decay = no_decay_1d and (param.ndim <= 1 or name.endswith(".bias"))
        group = groups.setdefault((layer, no_decay), {"params": [], "weight_decay": 0.0 if no_decay else weight_decay,
                                                      "lr_scale": decay ** (HEAD_LAYER - layer), "layer": layer})
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def build_optimizer(model: torch.nn.Module, optimizer, lr: float, layer_decay: float | None = None) -> torch.optim.Optimizer:
    """timm's optimizer ``optimizer.name`` (``recipe.optimizer``) at ``lr``; no decay on 1-D parameters when
    ``no_decay_1d``; with ``layer_decay``, the official ConvNeXt's layer-wise lr decay (:func:`layer_decay_groups`)."""
    params = (layer_decay_groups(model, layer_decay, optimizer.weight_decay, optimizer.no_decay_1d)
              if layer_decay else model)
    return create_optimizer_v2(params, opt=optimizer.name, lr=lr, weight_decay=optimizer.weight_decay,
                               momentum=optimizer.momentum, filter_bias_and_bn=optimizer.no_decay_1d,
                               **({"betas": tuple(optimizer.betas)} if optimizer.betas else {}))


OFFICIAL_WARP_FROM = 384  # the official datasets.py warps at 384² and above (conf/data/imagefolder.yaml: eval_warp_from)


def eval_resize(img_size: int, crop_pct: float, warp_from: int | None) -> dict:
    """The evaluation's resize as the official ConvNeXt code does it (``datasets.py``), in timm's terms: below
    ``warp_from`` resize the shorter side to ``img_size / crop_pct`` and centre-crop; from ``warp_from`` on (384²)
    resize the whole image to ``img_size × img_size``, a warp without a crop (timm's ``squash`` at crop_pct 1)."""
    if warp_from is not None and img_size >= warp_from:
        return {"crop_pct": 1.0, "crop_mode": "squash"}
    return {"crop_pct": crop_pct, "crop_mode": "center"}


def describe_eval_resize(data) -> str:
    """:func:`eval_resize` in words, for ``roadmap.explain``."""
    size = data.img_size
    if eval_resize(size, data.crop_pct, data.eval_warp_from)["crop_mode"] == "squash":
        return f"eval: the whole image resized to {size}×{size} (a warp, no crop)"
    return f"eval: shorter side to {math.floor(size / data.crop_pct)}, centre crop {size} (crop_pct {data.crop_pct:g})"


def build_transform(recipe, data, is_training: bool):
    """timm's training transform (random-resized crop, flip, RandAugment) or its evaluation transform
    (:func:`eval_resize`), at the data's image size, ending in uint8 (timm's prefetcher form: the per-pixel rest is
    :class:`BatchTransform`'s, on the device)."""
    if is_training:
        return create_transform(data.img_size, is_training=True, scale=tuple(recipe.train_crop_scale),
                                auto_augment=recipe.auto_augment, color_jitter=recipe.color_jitter or None,
                                interpolation=recipe.interpolation, use_prefetcher=True)
    return create_transform(data.img_size, is_training=False, interpolation=recipe.interpolation, use_prefetcher=True,
                            **eval_resize(data.img_size, data.crop_pct, data.eval_warp_from))


class ErasingBox:
    """Where random erasing erases one image, drawn in the worker from the sample's seeded RNGs, so an image's box
    depends on (seed, epoch, index) only, not on the batch or the process layout: ``(top, left, height, width,
    noise_seed)``, height 0 for none. The draw is timm's ``RandomErasing`` (one box of 2–33 % of the area, aspect
    0.3–3.3, ten tries), which draws and fills in one call on a whole batch; the fill is :class:`BatchTransform`'s."""

    NONE = (0, 0, 0, 0, 0)

    def __init__(self, probability: float, min_area: float = 0.02, max_area: float = 1 / 3, min_aspect: float = 0.3):
        self.probability, self.min_area, self.max_area = probability, min_area, max_area
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def __call__(self, height: int, width: int) -> tuple[int, int, int, int, int]:
        if random.random() > self.probability:
            return self.NONE
        for _ in range(10):
            area = random.uniform(self.min_area, self.max_area) * height * width
            aspect = math.exp(random.uniform(*self.log_aspect))
            h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if w < width and h < height:
                return (random.randint(0, height - h), random.randint(0, width - w), h, w, random.getrandbits(62))
        return self.NONE


class BatchTransform:
    """The transform's per-pixel part on a uint8 device batch, as timm's ``PrefetchLoader`` does it: to float,
    normalized by ImageNet's mean and std, then (training) each image's :class:`ErasingBox` filled with normal noise
    from a generator seeded by the box (timm's pixel mode)."""

    def __init__(self):
        self._stats, self._generators = {}, {}

    def __call__(self, x: torch.Tensor, erase=()) -> torch.Tensor:
        if x.device not in self._stats:
            self._stats[x.device] = [torch.tensor([v * 255 for v in s], device=x.device).view(1, 3, 1, 1)
                                     for s in (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)]
            self._generators[x.device] = torch.Generator(x.device)
        mean, std = self._stats[x.device]
        x = x.float().sub_(mean).div_(std)
        generator = self._generators[x.device]
        for i, (top, left, h, w, noise_seed) in enumerate(erase):
            if h:
                generator.manual_seed(noise_seed)
                x[i, :, top:top + h, left:left + w] = torch.randn((x.shape[1], h, w), generator=generator,
                                                                  device=x.device)
        return x


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
