"""Why a step's depthwise convs are as fast as they are: each op's chosen path, beside every path's time and error.

    python -m roadmap.depthwise_report --step kernel_11 [--regime r50] [--batch-size 8] [--img-size 128]
        [--device auto|cpu|cuda] [--channels-last] [--retune] [--format table|markdown|csv]

One training iteration of the step (forward, backward) at that batch and size runs with ``depthwise=auto``, as
training runs it (on CUDA: bf16 autocast), so every (op, layout, shape, kernel, stride) it meets is measured
or read from the store (``roadmap.models.depthwise.cache_file``); ``--retune`` measures each of them again. A row per
op: how often one iteration calls it, the chosen path, each path's median ± IQR (ms) or why it was rejected,
and the margin of the choice over the runner-up. The last lines add up one iteration's depthwise time on
the chosen paths against ``native`` (plain ``nn.Conv2d``).
"""
from __future__ import annotations

import argparse

import pandas as pd
import torch

from roadmap.config.steps import available_regimes, compose_config, instantiate_model, list_steps
from roadmap.errors import ConfigError, exit_on_config_error
from roadmap.models import depthwise
from roadmap.models.depthwise_paths import PATHS
from roadmap.models.shapes import check_input_size
from roadmap.utils.cli import Parser, positive_int, render
from roadmap.utils.cpu_allocator import retain_freed_memory
from roadmap.utils.devices import chosen_device, device_name
from roadmap.utils.files import unwritable_folder


def one_iteration(step: str, regime: str, batch_size: int, img_size: int, device: torch.device,
                  channels_last: bool) -> None:
    """Forward and backward of the step's model (as it trains) on one seeded batch."""
    cfg = compose_config(step, regime, [])
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = instantiate_model(cfg.model, num_classes=1000)
    check_input_size(model, img_size, f"--img-size {img_size}", step)
    model = model.to(device, memory_format=memory_format).train()
    x = torch.randn(batch_size, 3, img_size, img_size, device=device).contiguous(memory_format=memory_format)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = model(x).float().logsumexp(1).mean()
    loss.backward()


def report(calls: dict[str, int], choices: dict[str, dict]) -> pd.DataFrame:
    """A row per key: op, layouts, input, k, stride, calls, chosen, margin, and per path ``ms ± iqr``."""
    rows = []
    for key, n in calls.items():
        op, _, _, layouts, shape, k, stride, _, _ = key.split("|")
        entry = choices[key]
        row = {"op": op, "layouts": layouts, "input": shape, "k": int(k[1:]), "stride": int(stride[1:]),
               "calls": n, "chosen": entry["path"], "margin": entry["margin"]}
        for path in PATHS:
            if path in entry["ms"]:
                row[path] = f"{entry['ms'][path]:.3f} ± {entry['iqr_ms'][path]:.3f}"
            elif path in entry["max_abs_error"]:
                error = entry["max_abs_error"][path]
                row[path] = f"rejected: error {error:.2g} > {entry['tolerance']:.2g}" if isinstance(error, float) \
                    else f"failed: {error[:60]}"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def totals(calls: dict[str, int], choices: dict[str, dict]) -> dict[str, tuple[float, float]]:
    """Per op, one iteration's depthwise ms on the chosen paths and on ``native``."""
    out: dict[str, tuple[float, float]] = {}
    for key, n in calls.items():
        op, entry = key.split("|")[0], choices[key]
        chosen, native = out.get(op, (0.0, 0.0))
        out[op] = (chosen + n * entry["ms"][entry["path"]], native + n * entry["ms"].get("native", float("nan")))
    return out


@exit_on_config_error
def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = Parser(prog="python -m roadmap.depthwise_report", description=__doc__.splitlines()[0])
    parser.add_argument("--step", required=True)
    parser.add_argument("--regime", default="r50", choices=available_regimes())
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--img-size", type=positive_int, default=128)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="default: on for CUDA, off on CPU (as the benchmark and the trainer)")
    parser.add_argument("--retune", action="store_true", help="measure every op again and store the new choices")
    parser.add_argument("--format", default="table", choices=("table", "csv", "markdown"))
    args = parser.parse_args(argv)
    steps = [s.name for s in list_steps(args.regime)]
    if args.step not in steps:
        raise ConfigError(f"unknown step {args.step!r} for regime {args.regime}; valid: {', '.join(steps)}")
    problem = unwritable_folder(depthwise.cache_file().parent)
    if problem:  # measured for nothing: training would measure again
        raise ConfigError(f"cannot store the measured paths in {depthwise.cache_file()}: {problem}; set "
                          f"ROADMAP_CACHE_DIR to a writable folder")
    device = chosen_device(args.device)
    channels_last = device.type == "cuda" if args.channels_last is None else args.channels_last
    retain_freed_memory()
    tuner = depthwise.AUTOTUNER = depthwise.Autotuner(retune=args.retune)  # this process's: only this iteration
    one_iteration(args.step, args.regime, args.batch_size, args.img_size, device, channels_last)
    calls, choices = dict(tuner.calls), tuner.choices or {}
    if not calls:
        raise ConfigError(f"{args.step} ({args.regime}) has no depthwise convolution: nothing to report; choose a step "
                          f"that has them, e.g. --step {steps[-1]}")
    print(f"depthwise paths of {args.step} ({args.regime}), batch {args.batch_size}, {args.img_size}², "
          f"{'bf16 autocast' if device.type == 'cuda' else 'float32'}, channels_last={channels_last}, "
          f"{device_name(device)}, {torch.get_num_threads()} threads, paths code {depthwise.paths_version()}; "
          f"store {depthwise.cache_file()}")
    df = report(calls, choices)
    print(render(df, args.format))
    for op, (chosen, native) in totals(calls, choices).items():
        print(f"{op}: {chosen:.2f} ms per iteration on the chosen paths, {native:.2f} ms native "
              f"({native / chosen:.2f}×)")
    return df


if __name__ == "__main__":
    main()
