"""A model's shapes without its numbers: one forward on meta tensors (no memory, no kernel, no weights touched) gives
its GFLOPs (the paper's count), and whether it can take an image size; its parameter count."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from roadmap.errors import ConfigError


def meta_parameters(model: torch.nn.Module, num_classes: int | None = None) -> dict[str, torch.Tensor]:
    """``model``'s parameters as meta tensors; ``num_classes``: a RoadmapNet as it would be with that head (the
    paper's: 1000)."""
    state = {k: torch.empty_like(v, device="meta") for k, v in model.named_parameters()}
    if num_classes is not None and "fc.weight" in state:
        state["fc.weight"] = torch.empty(num_classes, state["fc.weight"].shape[1], device="meta")
        state["fc.bias"] = torch.empty(num_classes, device="meta")
    return state


def meta_forward(model: torch.nn.Module, img_size: int, in_chans: int = 3, num_classes: int | None = None):
    """One eval-mode forward of ``model`` on a meta image (shapes only: no memory, no kernel, no weights
    touched), with a ``num_classes`` head where given (:func:`meta_parameters`)."""
    state = {**meta_parameters(model, num_classes),
             **{k: torch.empty_like(v, device="meta") for k, v in model.named_buffers()}}
    was_training = model.training
    try:
        with torch.no_grad():
            return torch.func.functional_call(model.eval(), state, torch.empty(1, in_chans, img_size, img_size,
                                                                                device="meta"))
    finally:
        model.train(was_training)


def count_gflops(model: torch.nn.Module, img_size: int = 224, in_chans: int = 3, num_classes: int | None = None) -> float:
    """Multiply-accumulates (G) of one forward pass on an ``img_size``² image (:func:`meta_forward`)."""
    counter = FlopCounterMode(display=False)
    with counter:
        meta_forward(model, img_size, in_chans, num_classes)
    return counter.get_total_flops() / 2e9


def check_input_size(model: torch.nn.Module, img_size: int, option: str | None = None, step: str = "this step") -> None:
    """Refuse an image size too small for the model (e.g. separate downsampling at 28 px), naming the
    smallest size it accepts and the option that sets it (default ``data.img_size``)."""
    def fits(size: int) -> bool:
        try:
            meta_forward(model, size)
            return True
        except RuntimeError:
            return False

    if not fits(img_size):
        smallest = next((s for s in range(img_size + 1, 4 * img_size + 512) if fits(s)), None)
        if option is None:
            raise ConfigError(f"{step} needs images of at least {smallest} px, data.img_size is {img_size}: "
                              f"set data.img_size={smallest} (or larger)")
        raise ConfigError(f"{step} needs images of at least {smallest} px: {option} is too small")


def count_params_m(model: torch.nn.Module, num_classes: int | None = None) -> float:
    """Parameters (M), with a ``num_classes`` head where given (:func:`meta_parameters`)."""
    return sum(p.numel() for p in meta_parameters(model, num_classes).values()) / 1e6
