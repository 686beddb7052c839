"""The depthwise conv paths' names and the layout and shape rules every path follows (:mod:`roadmap.models.depthwise`
and :mod:`roadmap.models.triton_depthwise` import them): a leaf that registers no op, so validating a config
(:mod:`roadmap.config.schema`) loads no kernel."""
from __future__ import annotations

import torch
from torch import Tensor

PATHS = ("native", "switch", "crop", "flip", "fft", "triton")
IMPLS = ("auto", *PATHS)


def layout(t: Tensor) -> str:
    if t.is_contiguous():
        return "nchw"
    return "cl" if t.is_contiguous(memory_format=torch.channels_last) else "strided"


def memory_format_of(t: Tensor) -> torch.memory_format:
    """channels_last for a channels-last tensor, else contiguous: the layout every path returns."""
    return torch.channels_last if layout(t) == "cl" else torch.contiguous_format


def out_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel_size) // stride + 1
