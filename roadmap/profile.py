"""GFLOPs and parameters of every roadmap step, beside the paper's numbers.

    python -m roadmap.profile [--regime r50|r200] [--format table|csv|markdown] [--img-size 224]

Each step is built as it trains (its recipe's layer scale), with the paper's 1000-class head.
GFLOPs = conv + linear multiply-accumulates for one image, counted by ``torch.utils.flop_counter``
(FLOPs / 2), the paper's convention, on meta tensors: no memory, no weights, no kernel runs.
"""
from __future__ import annotations

import pandas as pd
import torch

from roadmap.config.steps import PaperColumns, available_regimes, build_model, list_steps, paper_columns
from roadmap.errors import exit_on_config_error
from roadmap.models.shapes import check_input_size, count_gflops, count_params_m
from roadmap.utils.cli import Parser, positive_int, render


def profile_columns(img_size: int) -> PaperColumns:
    """The paper's numbers a count at ``img_size`` is set beside: Table 1's at 224², its 384² rows (the 1K models
    fine-tuned there) at 384², none at a size the paper has not."""
    if img_size == 384:
        return paper_columns("convnext_ft_in1k", 384)
    return paper_columns() if img_size == 224 else PaperColumns(None, None, "none at this size", "none")


def profile_table(regime: str = "r50", img_size: int = 224) -> pd.DataFrame:
    """One row per step in roadmap order: step, change, adopted, gflops, params_m, and the paper's GFLOPs and top-1 at
    this size (Table 1's at 384², the 1K models fine-tuned there; none at a size the paper has not)."""
    models = {}
    # every step checked before any is counted, the last first: it holds every change, so a size too small for any
    # step is most likely refused before the others are built
    for info in reversed(list_steps(regime, profile_columns(img_size))):
        with torch.device("meta"):
            models[info] = build_model(info.name, regime, ["recipe.drop_path_rate=0"])  # any member, whatever its recipe
        check_input_size(models[info], img_size, f"--img-size {img_size}", info.name)
    return pd.DataFrame([{"step": info.name, "change": info.change, "adopted": info.adopted,
                          "gflops": round(count_gflops(model, img_size), 3), "params_m": round(count_params_m(model), 3),
                          "paper_gflops": info.paper_gflops, "paper_top1": info.paper_top1}
                         for info, model in reversed(models.items())])


@exit_on_config_error
def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m roadmap.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--regime", default="r50", choices=available_regimes())
    parser.add_argument("--format", default="table", choices=("table", "csv", "markdown"))
    parser.add_argument("--img-size", type=positive_int, default=224)
    args = parser.parse_args(argv)
    print(render(profile_table(args.regime, args.img_size), args.format))


if __name__ == "__main__":
    main()
