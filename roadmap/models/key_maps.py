"""Explicit key maps between the roadmap's end points and the reference implementations.

The ResNet steps take torchvision's / timm's ``resnet50`` / ``resnet200`` state dicts; the final step
(separate downsampling, with layer scale) takes timm's ``convnext_tiny`` / ``convnext_base``.
"""
from __future__ import annotations

import re

import torch

from roadmap.errors import ConfigError


def _resnet_block(m: re.Match) -> str:  # torchvision numbers stages from 1 (layer1..layer4)
    return f"stages.{int(m[1]) - 1}.blocks.{m[2]}."


def _convnext_block(m: re.Match) -> str:
    return f"stages.{m[1]}.blocks.{m[2]}."


RESNET_KEYS = [  # torchvision / timm ResNet key prefix → RoadmapNet key prefix
    (r"conv1\.", lambda m: "stem.0."),
    (r"bn1\.", lambda m: "stem.1."),
    (r"layer(\d)\.(\d+)\.conv(\d)\.", lambda m: f"{_resnet_block(m)}convs.{int(m[3]) - 1}.0."),
    (r"layer(\d)\.(\d+)\.bn(\d)\.", lambda m: f"{_resnet_block(m)}convs.{int(m[3]) - 1}.1."),
    (r"layer(\d)\.(\d+)\.downsample\.", lambda m: f"{_resnet_block(m)}shortcut."),
    (r"fc\.", lambda m: "fc."),
]
_BLOCK = r"stages\.(\d)\.blocks\.(\d+)\."
CONVNEXT_KEYS = [  # timm ConvNeXt key prefix → RoadmapNet key prefix
    (r"stem\.", lambda m: "stem."),
    (r"stages\.(\d)\.downsample\.", lambda m: m[0]),
    (_BLOCK + r"conv_dw\.", lambda m: f"{_convnext_block(m)}convs.0.0."),
    (_BLOCK + r"norm\.", lambda m: f"{_convnext_block(m)}convs.0.1."),
    (_BLOCK + r"mlp\.fc1\.", lambda m: f"{_convnext_block(m)}convs.1.0."),
    (_BLOCK + r"mlp\.fc2\.", lambda m: f"{_convnext_block(m)}convs.2.0."),
    (_BLOCK + r"gamma$", lambda m: f"{_convnext_block(m)}gamma"),
    (r"head\.norm\.", lambda m: "head_norm."),
    (r"head\.fc\.", lambda m: "fc."),
]


def _map_key(key: str, rules) -> str:
    for pattern, target in rules:
        m = re.match(pattern, key)
        if m:
            return target(m) + key[m.end():]
    raise ConfigError(f"no mapping for reference key {key!r}: is this a ResNet or ConvNeXt state dict?")


def convert_reference_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision/timm ResNet or timm ConvNeXt state dict, renamed (and 1×1 Linear → Conv) for RoadmapNet."""
    rules = RESNET_KEYS if "conv1.weight" in state_dict else CONVNEXT_KEYS
    converted = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked") and rules is CONVNEXT_KEYS:
            continue
        new_key = _map_key(key, rules)
        if re.search(r"\.convs\.[12]\.0\.weight$", new_key) and value.ndim == 2:  # timm Mlp Linear → 1×1 conv
            value = value[:, :, None, None]
        converted[new_key] = value
    return converted


def load_reference_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a reference state dict into a RoadmapNet strictly: every key must match in name and shape."""
    model.load_state_dict(convert_reference_state_dict(state_dict), strict=True)


def to_reference_state_dict(state_dict: dict[str, torch.Tensor], reference: torch.nn.Module) -> dict[str, torch.Tensor]:
    """RoadmapNet weights renamed (and 1×1 conv → Linear) for ``reference`` (timm/torchvision ResNet, timm
    ConvNeXt), ready for its ``load_state_dict(strict=True)``."""
    theirs = reference.state_dict()
    rules = RESNET_KEYS if "conv1.weight" in theirs else CONVNEXT_KEYS
    try:
        return {key: state_dict[_map_key(key, rules)].reshape(value.shape) for key, value in theirs.items()}
    except (KeyError, RuntimeError) as err:
        raise ConfigError(f"these weights are not {type(reference).__name__}'s architecture ({err})") from None
