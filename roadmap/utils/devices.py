"""Device names as run records, the benchmark and the depthwise autotuner write them, so their numbers can be
matched: the GPU's model name, or the CPU's with its core count; and the device a CLI's ``--device`` names."""
from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

from roadmap.errors import ConfigError


@functools.cache
def device_name(device: str | torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} ({os.cpu_count()} cores)"


def chosen_device(name: str) -> torch.device:
    """``--device``: ``auto`` (CUDA when visible, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; CUDA that is not
    visible is refused in one line."""
    try:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but no CUDA device is visible; use --device cpu")
    return device
