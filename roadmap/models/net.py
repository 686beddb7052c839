"""One parametric network for every step of the ResNet → ConvNeXt roadmap.

Every knob of the paper's roadmap is a named argument of :class:`RoadmapNet`; the defaults give
torchvision's ResNet-50.  A residual block is three convolutions, each optionally followed by a
norm and an activation; the block type only decides their order and widths (paper Fig. 3):

* ``bottleneck``        1×1 C→w,   k×k w→w (stride),   1×1 w→4w          (ResNet, width w)
* ``inverted``          1×1 C→4C,  k×k 4C→4C (stride), 1×1 4C→C          (Fig. 3b)
* ``inverted_dw_first`` k×k C→C (stride), 1×1 C→4C, 1×1 4C→C             (Fig. 3c, "move up")
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from torch import nn

from roadmap.errors import ConfigError
from roadmap.models.depthwise import DepthwiseConv2d
from roadmap.models.layers import NORM_ALIASES, act_factory, norm_factory

BLOCKS = ("bottleneck", "inverted", "inverted_dw_first")
STEMS = ("resnet", "patchify")
CONV_GROUPS = ("dense", "depthwise")
DOWNSAMPLES = ("in_block", "separate")
INITS = ("torchvision", "convnext")


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {name} {value!r}; allowed: {', '.join(map(str, allowed))}")


def _flags(name: str, value: Sequence[bool]) -> tuple[bool, bool, bool]:
    if len(value) != 3:
        raise ConfigError(f"{name} needs one true/false per block conv (3 values), got {list(value)}")
    return tuple(bool(v) for v in value)


def conv_norm_act(in_dim, out_dim, kernel_size=1, stride=1, groups=1, *, norm=None, act=None):
    """Conv, then optional norm and activation factories. The conv has a bias unless a BatchNorm follows it."""
    padding = kernel_size // 2 if kernel_size % 2 else 0  # even kernels are patchify/downsampling convs
    norm_layer = norm(out_dim) if norm is not None else None
    batch_norm = isinstance(norm_layer, nn.modules.batchnorm._BatchNorm)
    if groups > 1 and groups == in_dim == out_dim and kernel_size % 2:  # depthwise: fastest measured path
        conv = DepthwiseConv2d(in_dim, kernel_size, stride, bias=not batch_norm)
    else:
        conv = nn.Conv2d(in_dim, out_dim, kernel_size, stride, padding, groups=groups, bias=not batch_norm)
    layers = [conv]
    if norm_layer is not None:
        layers.append(norm_layer)
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class Block(nn.Module):
    """Residual block: three convs (order set by ``block``), layer scale, drop path, optional act after the add."""

    def __init__(self, in_dim, out_dim, *, stride, block, width, expansion, kernel_size, conv_groups,
                 norm, act, block_norms, block_acts, act_after_add, layer_scale_init, drop_path):
        super().__init__()
        if block == "bottleneck":
            dims = (in_dim, width, width, out_dim)
            spatial = 1
        elif block == "inverted":
            dims = (in_dim, out_dim * expansion, out_dim * expansion, out_dim)
            spatial = 1
        else:  # inverted_dw_first
            dims = (in_dim, in_dim, out_dim * expansion, out_dim)
            spatial = 0
        self.convs = nn.ModuleList()
        for i in range(3):
            k, s = (kernel_size, stride) if i == spatial else (1, 1)
            groups = dims[i] if i == spatial and conv_groups == "depthwise" else 1
            self.convs.append(conv_norm_act(dims[i], dims[i + 1], k, s, groups,
                                            norm=norm if block_norms[i] else None,
                                            act=act if block_acts[i] else None))
        self.gamma = nn.Parameter(torch.full((out_dim,), layer_scale_init)) if layer_scale_init else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.shortcut = (conv_norm_act(in_dim, out_dim, 1, stride, norm=norm)
                         if stride != 1 or in_dim != out_dim else nn.Identity())
        self.act = act() if act_after_add else nn.Identity()
        # ConvNeXt-style blocks (spatial conv first, then pointwise convs, LayerNorm or no norm) run their
        # pointwise part as Linear layers on one channels-last view, as timm's ConvNeXt block does
        self.channels_last_tail = spatial == 0 and norm is NORM_ALIASES["ln"]
        self.add_in_place = not block_acts[2]

    def forward(self, x):
        if self.channels_last_tail:
            out = self.convs[0][0](x).permute(0, 2, 3, 1)  # N, H, W, C after the depthwise conv
            for layer in (*self.convs[0][1:], *self.convs[1], *self.convs[2]):
                out = _channels_last(layer, out)
            if self.gamma is not None:
                out = out * self.gamma
            out = out.permute(0, 3, 1, 2)
        else:
            out = x
            for conv in self.convs:
                out = conv(out)
            if self.gamma is not None:
                out = out * self.gamma.view(1, -1, 1, 1)
        out = self.drop_path(out)
        if self.add_in_place:  # as timm/torchvision: no fresh activation-sized buffer per block
            out += self.shortcut(x)
        else:  # the branch ends in an activation whose output autograd keeps
            out = out + self.shortcut(x)
        return self.act(out)


def _channels_last(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 1×1 conv, a LayerNorm over channels or an activation to an N, H, W, C tensor."""
    if isinstance(layer, nn.Conv2d):
        return nn.functional.linear(x, layer.weight.flatten(1), layer.bias)
    if isinstance(layer, LayerNorm2d):
        return nn.functional.layer_norm(x, layer.normalized_shape, layer.weight, layer.bias, layer.eps)
    return layer(x)


class RoadmapNet(nn.Module):
    """ResNet → ConvNeXt in one class. Defaults: torchvision ResNet-50 (paper Table 10, row 0)."""

    def __init__(self, depths: Sequence[int] = (3, 4, 6, 3), width: int = 64, stem: str = "resnet",
                 block: str = "bottleneck", expansion: int = 4, conv_groups: str = "dense",
                 kernel_size: int = 3, act: str | Callable = "relu", norm: str | Callable = "bn",
                 block_norms: Sequence[bool] = (True, True, True),
                 block_acts: Sequence[bool] = (True, True, False), act_after_add: bool = True,
                 downsample: str = "in_block", head_norm: bool = False,
                 layer_scale_init: float | None = None, drop_path_rate: float = 0.0, init: str = "torchvision",
                 head_init_scale: float = 1.0, num_classes: int = 1000, in_chans: int = 3):
        """Every argument is a roadmap knob (conf/model/roadmap.yaml documents each). ``layer_scale_init`` and
        ``drop_path_rate`` are Table 5's model-side recipe rows; ``init`` is ``torchvision`` (kaiming-normal
        fan-out convs, BN γ=1 β=0, PyTorch's default Linear) or ``convnext`` (trunc-normal .02, zero biases);
        ``head_init_scale`` scales the classifier's initial weights and bias (the fine-tuning recipes' 0.001, as
        timm's and the official ConvNeXt's argument of that name)."""
        super().__init__()
        depths = list(depths)
        if len(depths) != 4 or any(not isinstance(d, int) or d < 1 for d in depths):
            raise ConfigError(f"depths must be 4 positive integers (one per stage), got {depths}")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be a positive odd integer (3, 5, 7, ...), got {kernel_size!r}")
        for knob, value in (("positive integer width", width), ("positive integer expansion", expansion),
                            ("positive integer num_classes", num_classes), ("positive integer in_chans", in_chans)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"expected a {knob}, got {value!r}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ConfigError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        _choice("stem", stem, STEMS)
        _choice("block", block, BLOCKS)
        _choice("conv_groups", conv_groups, CONV_GROUPS)
        _choice("downsample", downsample, DOWNSAMPLES)
        _choice("init", init, INITS)
        act, norm = act_factory(act), norm_factory(norm)
        block_norms, block_acts = _flags("block_norms", block_norms), _flags("block_acts", block_acts)

        widths = [width * 2 ** i for i in range(4)]
        dims = [w * expansion for w in widths] if block == "bottleneck" else widths
        self.num_features, self.num_classes = dims[-1], num_classes

        if stem == "resnet":  # 7×7/2 conv + norm + act + 3×3/2 max-pool
            self.stem = nn.Sequential(*conv_norm_act(in_chans, width, 7, 2, norm=norm, act=act),
                                      nn.MaxPool2d(3, 2, 1))
        else:  # "patchify": 4×4/4 conv + norm (Sec. 2.3)
            self.stem = conv_norm_act(in_chans, width, 4, 4, norm=norm)

        n_blocks = sum(depths)  # drop-path rates linearly spaced 0 → drop_path_rate over all blocks
        drop_rates = iter(drop_path_rate * b / max(n_blocks - 1, 1) for b in range(n_blocks))
        self.stages = nn.ModuleList()
        in_dim = width
        for i, (depth, w, dim) in enumerate(zip(depths, widths, dims)):
            stage = nn.Module()
            separate = downsample == "separate" and i > 0
            # separate downsampling (Sec. 2.6): norm, then 2×2/2 conv between stages
            stage.downsample = (nn.Sequential(norm(in_dim), nn.Conv2d(in_dim, dim, 2, 2))
                                if separate else nn.Identity())
            if separate:
                in_dim = dim
            blocks = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0 and downsample == "in_block") else 1
                blocks.append(Block(in_dim, dim, stride=stride, block=block, width=w, expansion=expansion,
                                    kernel_size=kernel_size, conv_groups=conv_groups, norm=norm, act=act,
                                    block_norms=block_norms, block_acts=block_acts, act_after_add=act_after_add,
                                    layer_scale_init=layer_scale_init, drop_path=next(drop_rates)))
                in_dim = dim
            stage.blocks = nn.Sequential(*blocks)
            self.stages.append(stage)

        self.head_norm = norm(self.num_features) if head_norm else nn.Identity()
        self.fc = nn.Linear(self.num_features, num_classes)
        self.apply(self._convnext_init if init == "convnext" else self._torchvision_init)
        with torch.no_grad():
            self.fc.weight.mul_(head_init_scale)
            self.fc.bias.mul_(head_init_scale)

    @staticmethod
    def _convnext_init(module):
        """Official ConvNeXt init: trunc-normal(std .02) conv/linear weights, zero biases."""
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @staticmethod
    def _torchvision_init(module):
        """torchvision's ResNet init: kaiming-normal (fan-out, ReLU) convs, norms γ=1 β=0, Linear as PyTorch's."""
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward_features(self, x):
        x = self.stem(x)
        for stage in self.stages:
            x = stage.blocks(stage.downsample(x))
        return x

    def forward_head(self, x):
        x = self.head_norm(x.mean((2, 3), keepdim=True))
        return self.fc(x.flatten(1))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))
