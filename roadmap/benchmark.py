"""Throughput of every roadmap step beside timm's reference models, and of the training data loader.

    python -m roadmap.benchmark [--regime r50|r200] [--device auto|cpu|cuda] [--batch-size N]
        [--img-size 224] [--compile] [--steps a,b] [--warmup 2] [--repeats 5] [--csv PATH] [overrides...]

Each step is built as it trains (its recipe's layer scale and drop path). For each model, after
``--warmup`` untimed iterations, the median of ``--repeats`` timed iterations gives
* inference images/s: eval mode, ``torch.inference_mode``, a fixed batch;
* training images/s: forward + cross-entropy + backward + AdamW step;
* peak memory of one training iteration beyond what is resident before it (weights, optimizer state):
  CUDA ``max_memory_allocated`` growth; on CPU the growth of the process's peak RSS (Linux ``VmHWM``,
  approximate).
On CUDA the models run under bf16 autocast in channels_last (``--no-channels-last`` turns it off), on CPU
in float32. The regime's ``timm_references`` (timm ``resnet50``/``convnext_tiny``, ``resnet200``/
``convnext_base``) are timed in alternation with their matching step (same batch, same drop path), and
that step's row gets the ratio ours/timm (> 1: ours is faster). The data loader row is the real training loader's
images/s per core (``--workers`` single-threaded worker processes, the copy to the device and the per-pixel work
there; ``--data-only`` times it alone, beside timm's loader and the decode floor: :mod:`roadmap.data.bench`). Hydra
overrides (``data=imagefolder data.root=...``) select the data it reads; the default synthetic data is generated
at ``--img-size``. ``--summary`` adds each step's device-hours and the loader cores per device it needs.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import math
from pathlib import Path

import pandas as pd
import timm
import torch
from torch import nn

from roadmap.config.effective import effective_run
from roadmap.config.files import options
from roadmap.config.steps import available_regimes, compose_config, instantiate_model, list_steps, regime_table
from roadmap.data.bench import data_throughput
from roadmap.errors import ConfigError, exit_on_config_error
from roadmap.models.depthwise import set_depthwise_impl
from roadmap.models.depthwise_paths import IMPLS
from roadmap.models.shapes import check_input_size, count_gflops, count_params_m
from roadmap.run.record import benchmark_file
from roadmap.utils.cli import Parser, non_negative_int, output_file, output_folder, positive_int, render
from roadmap.utils.cpu_allocator import retain_freed_memory
from roadmap.utils.devices import chosen_device, device_name
from roadmap.utils.files import atomic_path
from roadmap.utils.timing import median_seconds

COLUMNS = ["model", "step", "gflops", "params_m", "infer_img_s", "train_img_s", "train_peak_mib",
           "timm_model", "infer_ratio", "train_ratio", "img_size", "batch_size", "device"]


class PeakMemory:
    """Peak memory (MiB) of what runs inside the ``with``: CUDA allocator peak, or CPU peak-RSS growth."""

    def __init__(self, device: torch.device):
        self.device, self.mib = device, float("nan")

    @staticmethod
    def _status_kib(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise OSError(field)

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back so the baseline is what is live
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
            self.base = self._status_kib("VmRSS")
        except OSError:  # not Linux/glibc: no CPU figure
            self.base = None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        elif self.base is not None:
            self.mib = (self._status_kib("VmHWM") - self.base) / 2**10
        return False


class ModelBench:
    """Inference and training throughput of one model at a fixed batch."""

    def __init__(self, device: torch.device, warmup: int, repeats: int, batch_size: int, img_size: int,
                 channels_last: bool, compile: bool):
        self.warmup, self.repeats, self.batch_size, self.img_size = warmup, repeats, batch_size, img_size
        self.channels_last, self.compile = channels_last, compile
        self.device = device

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else torch.autocast(
            "cpu", enabled=False)

    def _closures(self, model: nn.Module):
        """(inference call, training-iteration call) of ``model`` on a fixed random batch."""
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        model = model.to(self.device, memory_format=memory_format)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(self.batch_size, 3, self.img_size, self.img_size, generator=gen)
        x = x.to(self.device).contiguous(memory_format=memory_format)
        y = torch.randint(0, model.num_classes, (self.batch_size,), generator=gen).to(self.device)
        run = torch.compile(model) if self.compile else model
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def infer():
            model.eval()
            with torch.inference_mode(), self._autocast():
                run(x)

        def train():
            model.train()
            with self._autocast():
                loss = nn.functional.cross_entropy(run(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return infer, train

    def __call__(self, *models: nn.Module) -> list[dict]:
        """Throughput of each model; several models are timed in alternation (a fair ratio)."""
        closures = [self._closures(m) for m in models]
        timing = dict(warmup=self.warmup, repeats=self.repeats)
        infer_s = median_seconds(*[infer for infer, _ in closures], **timing)
        train_s = median_seconds(*[train for _, train in closures], **timing)
        peaks = []
        for _, train in closures:  # one more (warm) training iteration each, alone
            with PeakMemory(self.device) as peak:
                train()
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
            peaks.append(peak.mib)
        return [{"infer_img_s": self.batch_size / i, "train_img_s": self.batch_size / t, "train_peak_mib": p}
                for i, t, p in zip(infer_s, train_s, peaks)]


def _model_row(name: str, step: str | None, model: nn.Module, img_size: int) -> dict:
    return {"model": name, "step": step, "gflops": round(count_gflops(model, img_size), 3),
            "params_m": round(count_params_m(model), 3)}


def run_benchmark(regime: str = "r50", steps: list[str] | None = None, device: str = "auto",
                  batch_size: int | None = None, img_size: int = 224, channels_last: bool | None = None,
                  compile: bool = False, warmup: int = 2, repeats: int = 5, references: bool = True,
                  data_batches: int = 4, overrides: list[str] = (), depthwise: str = "auto", workers: int = 2,
                  log=print) -> pd.DataFrame:
    """One table: a row per step (in roadmap order), a row per timm reference, and the training loader's images/s
    per core (``workers`` worker processes; :mod:`roadmap.data.bench`)."""
    device = chosen_device(device)
    batch_size = batch_size or (128 if device.type == "cuda" else 16)
    channels_last = device.type == "cuda" if channels_last is None else channels_last
    table = regime_table(regime)
    order = [s.name for s in list_steps(regime)]
    steps = steps or order
    unknown = [s for s in steps if s not in order]
    if unknown:
        raise ConfigError(f"unknown step(s) {unknown} for regime {regime}; valid: {', '.join(order)}")
    configs = {step: compose_config(step, regime, list(overrides)) for step in steps}
    for step, cfg in configs.items():  # every size and config refused before the first measurement
        with torch.device("meta"):
            check_input_size(instantiate_model(cfg.model, num_classes=1000), img_size, f"--img-size {img_size}", step)
    data_cfg = compose_config(None, regime, [f"data.img_size={img_size}", *overrides]) if data_batches > 0 else None
    bench = ModelBench(device, warmup, repeats, batch_size, img_size, channels_last, compile)
    log(f"benchmark: regime {regime}, device {device} ({device_name(device)}), batch {batch_size}, {img_size}px, "
        f"{'bf16 autocast' if device.type == 'cuda' else 'float32'}, channels_last={channels_last}, "
        f"compile={compile}, depthwise={depthwise}, torch threads {torch.get_num_threads()}, median of {repeats} after {warmup} warm-up")
    rows = []
    for step in sorted(steps, key=order.index):
        cfg = configs[step]
        torch.manual_seed(0)
        model = instantiate_model(cfg.model, num_classes=1000)  # as it trains, with the paper's 1000-class head
        set_depthwise_impl(model, depthwise)
        row = _model_row("roadmap", step, model, img_size)
        reference = (table.get("timm_references") or {}).get(step) if references else None
        if reference:  # the same architecture in timm, timed in alternation with ours
            timm_model = timm.create_model(reference, drop_path_rate=cfg.model.drop_path_rate)
            ref_row = _model_row(f"timm {reference}", None, timm_model, img_size)
            timings = bench(model, timm_model)
            row.update(timings[0])
            ref_row.update(timings[1])
            row.update(timm_model=reference, infer_ratio=row["infer_img_s"] / ref_row["infer_img_s"],
                       train_ratio=row["train_img_s"] / ref_row["train_img_s"])
            rows += [row, ref_row]
            del timm_model
        else:
            row.update(bench(model)[0])
            rows.append(row)
        del model
        log(f"  {step}: infer {row['infer_img_s']:.1f} img/s, train {row['train_img_s']:.1f} img/s"
            + (f" (timm {reference}: ×{row['infer_ratio']:.2f} infer, ×{row['train_ratio']:.2f} train)"
               if reference else ""))
    if data_cfg is not None:
        loader = data_throughput(_sized(data_cfg, data_batches, batch_size), workers, batch_size, data_batches, 1,
                                 device)[0]
        rows.append({"model": f"{DATA_ROW} ({data_cfg.data.name}, recipe {data_cfg.recipe.name}, {workers} workers)",
                     "infer_img_s": float("nan"), "train_img_s": loader["img_s_per_core"]})
    return (pd.DataFrame(rows).assign(img_size=img_size, batch_size=batch_size, device=device_name(device))
            .reindex(columns=COLUMNS))


DATA_ROW = "data loader per core"


def _sized(cfg, batches: int, batch_size: int):
    """The synthetic data at the size the timed batches need (and no more: it is generated)."""
    if cfg.data.kind == "synthetic":
        cfg.data.train_size = (batches + 2) * batch_size
    return cfg


def data_only(regime: str, device: str, batch_size: int | None, img_size: int, workers: int, batches: int,
              repeats: int, overrides: list[str], log=print) -> pd.DataFrame:
    """``--data-only``: the training loader beside timm's and the decode floor (:func:`roadmap.data.bench.data_throughput`)."""
    device = chosen_device(device)
    batch_size = batch_size or (128 if device.type == "cuda" else 32)
    cfg = _sized(compose_config(None, regime, [f"data.img_size={img_size}", *overrides]), batches, batch_size)
    log(f"data benchmark: {cfg.data.name} at {img_size}px, recipe {cfg.recipe.name}, batch {batch_size}, {workers} "
        f"workers, device {device}, median of {repeats} alternating passes of {batches} batches")
    return pd.DataFrame(data_throughput(cfg, workers, batch_size, batches, repeats, device))


IMAGENET_TRAIN, IMAGENET_VAL = 1_281_167, 50_000


def sweep_cost(df: pd.DataFrame, regime: str, budget: str = "paper", train_images: int = IMAGENET_TRAIN,
               val_images: int = IMAGENET_VAL, overrides: list[str] = ()) -> tuple[pd.DataFrame, str]:
    """Each step's device-hours at ``budget`` from its measured images/s — its recipe's epochs at that budget ×
    (``train_images`` / training img/s + ``val_images`` / inference img/s) — as columns ``epochs`` and
    ``sweep_h``, and one line with the roadmap's total (the steps in ``df``; all of them by default)."""
    df = df.copy()
    ours = df.model == "roadmap"
    df.loc[ours, "epochs"] = [effective_run(compose_config(step, regime, [f"budget={budget}", *overrides])).epochs
                              for step in df.step[ours]]
    df["sweep_h"] = df.epochs * (train_images / df.train_img_s + val_images / df.infer_img_s) / 3600
    loader = df[df.model.astype(str).str.startswith(DATA_ROW)]
    workers = compose_config(None, regime, [f"budget={budget}", *overrides]).budget.num_workers
    if not loader.empty:  # the cores per device a step's training rate needs from this loader
        df.loc[ours, "data_cores"] = (df.train_img_s[ours] / loader.train_img_s.iloc[0]).apply(math.ceil)
        df.loc[ours, "data_fed"] = df.data_cores[ours] <= workers
    steps = df[ours]
    total, epochs = steps.sweep_h.sum(), steps.epochs.astype(int)
    priciest = steps.nlargest(3, "sweep_h")
    device, batch = df.device.iloc[0], df.batch_size.iloc[0]
    line = (f"sweep cost at budget {budget}: {len(steps)} {regime} steps × 1 seed = {total:,.0f} device-hours on "
            f"{device} ({total / 24:,.1f} device-days; epochs {epochs.min()}–{epochs.max()} × {train_images:,} "
            f"train + {val_images:,} val images, at the measured img/s of batch {batch}); priciest: "
            + ", ".join(f"{r.step} {r.sweep_h:,.0f} h" for r in priciest.itertuples())
            + ". An estimate: data loading, EMA, checkpoints and start-up not included.")
    if not loader.empty:
        starved = steps[~steps.data_fed.astype(bool)]
        line += (f"\ndata: the loader makes {loader.train_img_s.iloc[0]:.0f} img/s per core at {df.img_size.iloc[0]}px; "
                 f"budget {budget} gives {workers} workers per device; "
                 + (f"it cannot feed {len(starved)} step(s) at their measured rate: "
                    + ", ".join(f"{r.step} (needs {int(r.data_cores)} cores)" for r in starved.itertuples())
                    if len(starved) else "it feeds every step at its measured rate"))
    if df.img_size.iloc[0] != 224:
        line += f"\nmeasured at {df.img_size.iloc[0]}px, not the paper's 224px: the hours above are at that size"
    return df, line


@exit_on_config_error
def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = Parser(prog="python -m roadmap.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--regime", default="r50", choices=available_regimes())
    parser.add_argument("--steps", help="comma-separated subset of the regime's steps (default: all)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch-size", type=positive_int, help="default: 128 on CUDA, 16 on CPU")
    parser.add_argument("--img-size", type=positive_int, default=224)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="default: on for CUDA, off on CPU")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model (warm-up compiles)")
    parser.add_argument("--depthwise", default="auto", choices=IMPLS,
                        help="depthwise conv path (roadmap/models/depthwise.py); auto measures each on first use")
    parser.add_argument("--warmup", type=non_negative_int, default=2)
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--no-reference", action="store_true", help="skip the timm reference models")
    parser.add_argument("--data-batches", type=non_negative_int, default=4, help="batches timed for the data loader (0: skip)")
    parser.add_argument("--data-only", action="store_true", help="time only the training data loader, beside timm's "
                                                                  "loader and the decode floor (roadmap/data/bench.py)")
    parser.add_argument("--workers", type=positive_int, default=2, help="loader worker processes (one core each)")
    parser.add_argument("--summary", metavar="BUDGET", nargs="?", const="paper", choices=sorted(options("budget")),
                        help="add each step's device-hours at this budget (default paper: 300 epochs, 90 for row 0) "
                             "and the whole roadmap's in one line")
    parser.add_argument("--train-images", type=positive_int, default=IMAGENET_TRAIN, help="--summary: images per epoch")
    parser.add_argument("--val-images", type=positive_int, default=IMAGENET_VAL, help="--summary: validation images")
    parser.add_argument("--csv", type=output_file, help="also write the table here (atomically)")
    parser.add_argument("--outputs", type=output_folder, help="also write the table where analysis of the runs under this "
                                                     "outputs folder finds it (OUTPUTS/benchmark/<regime>.csv)")
    parser.add_argument("--format", default="table", choices=("table", "csv", "markdown"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the data loader, e.g. data=cifar10 data.root=...")
    args = parser.parse_args(argv)
    retain_freed_memory()
    if args.compile and args.warmup < 1:
        raise ConfigError("--compile needs --warmup >= 1 (the first call compiles)")
    if args.data_only:
        df = data_only(args.regime, args.device, args.batch_size, args.img_size, args.workers,
                       args.data_batches or 4, args.repeats, args.overrides)
        print(render(df.round(3), args.format))
        if args.csv:
            with atomic_path(args.csv) as tmp:
                df.to_csv(tmp, index=False)
            print(f"wrote {args.csv}")
        return df
    df = run_benchmark(args.regime, args.steps.split(",") if args.steps else None, args.device, args.batch_size,
                       args.img_size, args.channels_last, args.compile, args.warmup, args.repeats,
                       not args.no_reference, args.data_batches, args.overrides, args.depthwise, args.workers)
    summary = None
    if args.summary:
        df, summary = sweep_cost(df, args.regime, args.summary, args.train_images, args.val_images, args.overrides)
    print(render(df.drop(columns=["img_size", "batch_size", "device"]).round(3), args.format))  # in the log line
    if summary:
        print(summary)
    for path in filter(None, (args.csv, args.outputs and benchmark_file(args.outputs, args.regime))):
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
        print(f"wrote {path}")
    return df


if __name__ == "__main__":
    main()
