"""GFLOPs and parameters of every roadmap step, beside the paper's numbers.

    python -m roadmap.profile [--regime r50|r200] [--format table|csv|markdown] [--img-size 224]

Each step is built as it trains (its recipe's layer scale), with the paper's 1000-class head.
GFLOPs = conv + linear multiply-accumulates for one image, counted by ``torch.utils.flop_counter``
(FLOPs / 2), the paper's convention. Models are built on the meta device: no memory, no weights.
"""
from __future__ import annotations

import argparse

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from roadmap.errors import exit_on_config_error
from roadmap.steps import available_regimes, build_model, list_steps


def count_gflops(model: torch.nn.Module, img_size: int = 224, in_chans: int = 3) -> float:
    """Multiply-accumulates (G) of one forward pass on an ``img_size``² image, on the model's device."""
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    was_training = model.training
    with counter, torch.no_grad():
        model.eval()(torch.empty(1, in_chans, img_size, img_size, device=device))
    model.train(was_training)
    return counter.get_total_flops() / 2e9


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
