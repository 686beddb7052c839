"""GFLOPs and parameters of every roadmap step, beside the paper's numbers.

    python -m roadmap.profile [--regime r50|r200] [--format table|csv|markdown] [--img-size 224]

Each step is built as it trains (its recipe's layer scale), with the paper's 1000-class head.
GFLOPs = conv + linear multiply-accumulates for one image, counted by ``torch.utils.flop_counter``
(FLOPs / 2), the paper's convention, on meta tensors: no memory, no weights, no kernel runs.
"""
from __future__ import annotations

import argparse

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from roadmap.errors import ConfigError, exit_on_config_error
from roadmap.steps import available_regimes, build_model, list_steps


def meta_forward(model: torch.nn.Module, img_size: int, in_chans: int = 3, num_classes: int | None = None):
    """One eval-mode forward of ``model`` on a meta image (shapes only: no memory, no kernel, no weights
    touched); ``num_classes`` counts a RoadmapNet as it would be with that head (the paper's: 1000)."""
    state = {k: torch.empty_like(v, device="meta") for k, v in [*model.named_parameters(), *model.named_buffers()]}
    if num_classes is not None and "fc.weight" in state:
        state["fc.weight"] = torch.empty(num_classes, state["fc.weight"].shape[1], device="meta")
        state["fc.bias"] = torch.empty(num_classes, device="meta")
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


def check_input_size(model: torch.nn.Module, img_size: int, in_chans: int = 3) -> None:
    """Refuse an image size too small for the model (e.g. separate downsampling at 28 px), naming the
    smallest size it accepts."""
    def fits(size: int) -> bool:
        try:
            meta_forward(model, size, in_chans)
            return True
        except RuntimeError:
            return False

    if not fits(img_size):
        smallest = next((s for s in range(img_size + 1, 4 * img_size + 512) if fits(s)), None)
        raise ConfigError(f"this step needs images of at least {smallest} px, data.img_size is {img_size}: "
                          f"set data.img_size={smallest} (or larger)")


def count_params_m(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def profile_table(regime: str = "r50", img_size: int = 224) -> pd.DataFrame:
    """One row per step in roadmap order: step, change, adopted, gflops, params_m, paper_gflops, paper_top1."""
    rows = []
    for info in list_steps(regime):
        with torch.device("meta"):
            model = build_model(info.name, regime)
        rows.append({"step": info.name, "change": info.change, "adopted": info.adopted,
                     "gflops": round(count_gflops(model, img_size), 3), "params_m": round(count_params_m(model), 3),
                     "paper_gflops": info.paper_gflops, "paper_top1": info.paper_top1})
    return pd.DataFrame(rows)


def render(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "markdown":
        return df.to_markdown(index=False)
    return df.to_string(index=False)


@exit_on_config_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m roadmap.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--regime", default="r50", choices=available_regimes())
    parser.add_argument("--format", default="table", choices=("table", "csv", "markdown"))
    parser.add_argument("--img-size", type=int, default=224)
    args = parser.parse_args(argv)
    print(render(profile_table(args.regime, args.img_size), args.format))


if __name__ == "__main__":
    main()
