"""The paper's Table 1 side by side: every row's model at its resolution, its parameters, GFLOPs, inference speed and
top-1 measured here, beside the paper's (speed on a V100; ours on this machine's device), and its Figure 1.

    python -m roadmap.compare_models [--rows in1k|in22k|all|convnext_t,swin_t,...] [--device auto|cpu|cuda]
        [--batch-size 8] [--warmup 1] [--repeats 3] [--no-speed] [--val ROOT --weights cache|FOLDER]
        [--max-images N] [--out FOLDER]

Rows: Table 1's ImageNet-1K rows (timm's RegNetY, EfficientNet(V2), DeiT and Swin beside the family at 224² and 384²;
the default) and its ImageNet-22K → 1K rows at 384² (ConvNeXt-T/S/B/L/XL, Swin-B/L). The family's members are built
by the roadmap's builder (regime=family). GFLOPs are counted as :mod:`roadmap.profile` counts (conv, linear and
attention matmuls: ``torch.utils.flop_counter``, FLOPs / 2) on meta tensors.

Speed is the paper's protocol (eval, no grad, a fixed batch, the median of ``--repeats`` timed batches), timed in
rounds: each round visits every model once (``--warmup`` untimed batches, then one timed), so the drift of a busy
machine hits every row alike, while only one model is in memory at a time. The first visit builds a model as timm
does; later visits allocate it empty and fill its weights with random values (the time of a forward pass does not
depend on them). Rows of the same model at the same size (ConvNeXt-B 384² trained on 1K or 22K) share one timing.
Each model's first visit prints a line with the time left; each later round, one line. Timings are called unreliable
when this process got under 80 % of its threads' time on a CPU (other processes ran), or a model's repeats spread
more than 20 %: the ratios at equal FLOPs (ConvNeXt-T / Swin-T, ...) are shown beside the paper's V100 ratios.

With ``--val`` (an ImageNet-layout folder: ``val/<class>/``) each row that has weights is evaluated after the timing,
one model at a time: ``--weights cache`` reads the paper's weights from this machine's Hugging Face cache (never a
download), ``--weights FOLDER`` reads ``<row>.safetensors`` or ``<row>.pth`` (a timm state dict of the row's model).
A cell that cannot be measured says why. Writes table.csv, table.md, ratios.csv and figure1.png (the paper's Figure 1:
ImageNet-1K models at 224², ImageNet-22K models at 384², top-1 against GFLOPs, bubble area ∝ GFLOPs; every row of
Table 1 in it, whichever were timed) to ``--out``.
"""
from __future__ import annotations

import functools
import gc
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import timm
import torch

from roadmap.config.recipe import OFFICIAL_WARP_FROM, eval_resize
from roadmap.errors import ConfigError, exit_on_config_error
from roadmap.models.shapes import count_gflops, count_params_m
from roadmap.utils.cli import Parser, existing_folder, non_negative_int, output_folder, positive_int
from roadmap.utils.devices import chosen_device, device_name
from roadmap.utils.files import atomic_path
from roadmap.utils.timing import call_seconds


@dataclass(frozen=True)
class Row:
    """One row of Table 1: the model (timm's name, or ``family:<member>``), its resolution, the paper's numbers
    (``v100_img_s`` None where the paper gives none), the timm tag of the paper's weights (None: timm has none) and
    the data it was trained on (``in1k``, or ``in22k``: pre-trained on ImageNet-22K, fine-tuned on 1K)."""

    key: str
    label: str
    arch: str
    img_size: int
    params_m: float
    gflops: float
    v100_img_s: float | None
    top1: float
    weights: str | None
    pretrain: str = "in1k"

    @property
    def model(self) -> tuple[str, int]:
        """What is timed: two rows of one architecture at one size are one model."""
        return self.arch, self.img_size


TABLE_1 = [  # the paper's Table 1; its ImageNet-22K rows' top-1 and GFLOPs as the official README gives them
    Row("regnety_16g", "RegNetY-16G", "regnety_160", 224, 84, 16.0, 334.7, 82.9, "regnety_160.deit_in1k"),
    Row("effnet_b7", "EffNet-B7", "tf_efficientnet_b7", 600, 66, 37.0, 55.1, 84.3, "tf_efficientnet_b7.aa_in1k"),
    Row("effnetv2_l", "EffNetV2-L", "tf_efficientnetv2_l", 480, 120, 53.0, 83.7, 85.7, "tf_efficientnetv2_l.in1k"),
    Row("deit_s", "DeiT-S", "deit_small_patch16_224", 224, 22, 4.6, 978.5, 79.8, "deit_small_patch16_224.fb_in1k"),
    Row("deit_b", "DeiT-B", "deit_base_patch16_224", 224, 87, 17.6, 302.1, 81.8, "deit_base_patch16_224.fb_in1k"),
    Row("swin_t", "Swin-T", "swin_tiny_patch4_window7_224", 224, 28, 4.5, 757.9, 81.3,
        "swin_tiny_patch4_window7_224.ms_in1k"),
    Row("convnext_t", "ConvNeXt-T", "family:convnext_t", 224, 29, 4.5, 774.7, 82.1, "convnext_tiny.fb_in1k"),
    Row("swin_s", "Swin-S", "swin_small_patch4_window7_224", 224, 50, 8.7, 436.7, 83.0,
        "swin_small_patch4_window7_224.ms_in1k"),
    Row("convnext_s", "ConvNeXt-S", "family:convnext_s", 224, 50, 8.7, 447.1, 83.1, "convnext_small.fb_in1k"),
    Row("swin_b", "Swin-B", "swin_base_patch4_window7_224", 224, 88, 15.4, 286.6, 83.5,
        "swin_base_patch4_window7_224.ms_in1k"),
    Row("convnext_b", "ConvNeXt-B", "family:convnext_b", 224, 89, 15.4, 292.1, 83.8, "convnext_base.fb_in1k"),
    Row("swin_b_384", "Swin-B 384²", "swin_base_patch4_window12_384", 384, 88, 47.1, 85.1, 84.5,
        "swin_base_patch4_window12_384.ms_in1k"),
    Row("convnext_b_384", "ConvNeXt-B 384²", "family:convnext_b", 384, 89, 45.0, 95.7, 85.1, None),
    Row("convnext_l", "ConvNeXt-L", "family:convnext_l", 224, 198, 34.4, 146.8, 84.3, "convnext_large.fb_in1k"),
    Row("convnext_l_384", "ConvNeXt-L 384²", "family:convnext_l", 384, 198, 101.0, 50.4, 85.5, None),
    # ImageNet-22K pre-trained, fine-tuned on 1K at 384². Swin's numbers: microsoft/Swin-Transformer's README.
    Row("swin_b_22k", "Swin-B 22K 384²", "swin_base_patch4_window12_384", 384, 88, 47.1, 85.1, 86.4,
        "swin_base_patch4_window12_384.ms_in22k_ft_in1k", "in22k"),
    Row("swin_l_22k", "Swin-L 22K 384²", "swin_large_patch4_window12_384", 384, 197, 103.9, None, 87.3,
        "swin_large_patch4_window12_384.ms_in22k_ft_in1k", "in22k"),
    Row("convnext_t_22k", "ConvNeXt-T 22K 384²", "family:convnext_t", 384, 29, 13.1, None, 84.1,
        "convnext_tiny.fb_in22k_ft_in1k_384", "in22k"),
    Row("convnext_s_22k", "ConvNeXt-S 22K 384²", "family:convnext_s", 384, 50, 25.5, None, 85.8,
        "convnext_small.fb_in22k_ft_in1k_384", "in22k"),
    Row("convnext_b_22k", "ConvNeXt-B 22K 384²", "family:convnext_b", 384, 89, 45.0, 95.7, 86.8,
        "convnext_base.fb_in22k_ft_in1k_384", "in22k"),
    Row("convnext_l_22k", "ConvNeXt-L 22K 384²", "family:convnext_l", 384, 198, 101.0, 50.4, 87.5,
        "convnext_large.fb_in22k_ft_in1k_384", "in22k"),
    Row("convnext_xl_22k", "ConvNeXt-XL 22K 384²", "family:convnext_xl", 384, 350, 179.0, None, 87.8,
        "convnext_xlarge.fb_in22k_ft_in1k_384", "in22k"),
]
ROWS = {row.key: row for row in TABLE_1}
GROUPS = {"all": list(ROWS), **{name: [r.key for r in TABLE_1 if r.pretrain == name] for name in ("in1k", "in22k")}}
EQUAL_FLOPS = [("convnext_t", "swin_t"), ("convnext_s", "swin_s"), ("convnext_b", "swin_b"),
               ("convnext_b_384", "swin_b_384"), ("convnext_l_22k", "swin_l_22k")]  # the paper's comparisons
# GFLOPs the count here does not reproduce within 2 %, and why (docs/measurements.md, "Table 1 side by side")
GFLOPS_NOTES = {"effnet_b7": "the paper copies EfficientNet's own count (TF profiler); conv+linear MACs at 600² give "
                             "2.0 % more, not from squeeze-excite (0.01 G)",
                "effnetv2_l": "the paper copies EfficientNetV2's own count; conv+linear MACs at 480² give 5.8 % more "
                              "(53.0 G is what 464² gives here)"}
NO_WEIGHTS = "timm has no weights of the paper's training of this model"
MIN_CPU_SHARE, MAX_SPREAD = 0.8, 0.2  # below / above these, the timings are called unreliable


def build(row: Row, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The row's model (random weights), in eval mode, on ``device`` (``meta``: shapes only)."""
    with torch.device(device):
        if row.arch.startswith("family:"):
            from roadmap.config.steps import build_model

            model = build_model(row.arch.partition(":")[2], "family", ["recipe.drop_path_rate=0"])
        else:
            model = timm.create_model(row.arch)
    return model.eval()


def refill(row: Row, device: torch.device, buffers: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The row's model again without building it: allocated empty from its meta shapes, its weights random
    (uniform ±0.02: no denormals, no NaN) and its buffers (normalisation statistics, Swin's relative position
    indices and masks) those of a model built before. Seconds faster than timm's initialisation of a large model."""
    model = build(row, "meta").to_empty(device=device)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.02, 0.02)
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    return model.eval()


class NoWeights(ConfigError):
    """A row without weights to evaluate: its cell says why; the table goes on."""


def weights_file(row: Row, weights: str) -> Path:
    """The file of the row's weights: in ``weights`` (a folder) or this machine's Hugging Face cache (``cache``);
    :class:`NoWeights` where there is none."""
    if weights != "cache":
        found = [p for p in (Path(weights) / f"{row.key}.safetensors", Path(weights) / f"{row.key}.pth") if p.is_file()]
        if not found:
            raise NoWeights(f"no {row.key}.safetensors or {row.key}.pth in {weights}")
        return found[0]
    if row.weights is None:
        raise NoWeights(NO_WEIGHTS)
    from huggingface_hub import try_to_load_from_cache  # the cache only: no request

    hub_id = timm.models.get_pretrained_cfg(row.weights).hf_hub_id
    cached = [p for name in ("model.safetensors", "pytorch_model.bin")
              if isinstance(p := try_to_load_from_cache(hub_id, name), str)]
    if not cached:
        raise NoWeights(f"{row.weights} is not in the Hugging Face cache")
    return Path(cached[0])


def fitting_weights(model: torch.nn.Module, row: Row, file: Path) -> dict[str, torch.Tensor]:
    """The row's weights (a timm state dict of its model), renamed for ``model`` (meta tensors will do); a file of
    another model is refused in one line naming both."""
    from roadmap.models.weights import read_state_dict

    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = _as_ours(row, read_state_dict(file))
    theirs = {k: tuple(v.shape) for k, v in state.items()}
    if own != theirs:
        differ = sorted(set(own) ^ set(theirs)) or [k for k in own if own[k] != theirs[k]]
        raise ConfigError(f"{file} does not hold {row.label}'s weights ({row.arch}): {len(differ)} tensors differ in "
                          f"name or shape, e.g. {differ[0]}")
    return state


def load_weights(model: torch.nn.Module, row: Row, file: Path) -> None:
    """The row's weights into ``model``, strictly (:func:`fitting_weights`)."""
    model.load_state_dict(fitting_weights(model, row, file), strict=True)


def _as_ours(row: Row, state: dict) -> dict:
    """A timm state dict of the row's model, renamed for the family's builder where the row is a member."""
    if row.arch.startswith("family:"):
        from roadmap.models.key_maps import convert_reference_state_dict

        return convert_reference_state_dict(state)
    return state


def check_imagenet_classes(folder: Path) -> None:
    """Refuse a val folder whose classes are not ImageNet-1K's 1,000 synsets (timm's ``ImageNetInfo``), sorted as the
    weights' classifier orders them: another folder's labels would be scored against the wrong classes."""
    from timm.data import ImageNetInfo

    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    expected = ImageNetInfo().label_names()
    if found != expected:
        other = sorted(set(found) - set(expected))
        raise ConfigError(f"--val {folder.parent}: val/ holds {len(found)} class folders"
                          + (f" ({', '.join(other[:3])}{', ...' if len(other) > 3 else ''} not ImageNet-1K synsets)"
                             if other else "") + f"; the weights classify ImageNet-1K's {len(expected)} "
                          f"(n01440764 ... n15075141): give an ImageNet-1K val folder")


def eval_transform(row: Row):
    """The row's timm evaluation transform (its crop, interpolation and mean/std at its resolution): the paper's weights
    as timm configures them; a ConvNeXt without a timm tag as the official code evaluates it
    (:func:`roadmap.config.recipe.eval_resize`: bicubic, and at 384² the whole image resized, a warp without a crop)."""
    from timm.data import create_transform, resolve_data_config

    pretrained = (timm.models.get_pretrained_cfg(row.weights).to_dict() if row.weights
                  else {"interpolation": "bicubic", **eval_resize(row.img_size, 0.875, OFFICIAL_WARP_FROM)})
    return create_transform(**resolve_data_config({"input_size": (3, row.img_size, row.img_size)},
                                                  pretrained_cfg=pretrained))


def top1_top5(model: torch.nn.Module, row: Row, val_root: Path, max_images: int | None, device: torch.device,
              batch_size: int) -> tuple[float, float, int]:
    """Top-1 and top-5 (%) on ``val_root/val`` with the row's :func:`eval_transform`, and how many images."""
    from timm.data import ImageDataset, ImageNetInfo

    classes = {name: i for i, name in enumerate(ImageNetInfo().label_names())}  # labels by synset, not by folders found
    dataset = ImageDataset(str(val_root / "val"), class_map=classes, transform=eval_transform(row))
    indices = range(min(len(dataset), max_images or len(dataset)))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size)
    correct1 = correct5 = 0
    with torch.inference_mode():
        for x, y in loader:
            top = model(x.to(device)).topk(5, dim=1).indices.cpu()
            correct1 += (top[:, 0] == y).sum().item()
            correct5 += (top == y[:, None]).any(dim=1).sum().item()
    return 100 * correct1 / len(indices), 100 * correct5 / len(indices), len(indices)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _inference(model: torch.nn.Module, x: torch.Tensor):
    def call():
        with torch.inference_mode():
            model(x)
    return call


def say(line: str) -> None:
    """A progress line, shown at once also when stdout is a file or a pipe (a SLURM log, ``| tee``)."""
    print(line, flush=True)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


@dataclass
class Timings:
    """Seconds per batch of each model over the rounds, and how much of its threads' time this process got."""

    seconds: dict[tuple[str, int], list[float]]
    cpu_share: float | None  # None on a GPU

    def median(self, row: Row) -> float:
        return statistics.median(self.seconds[row.model])

    def spread(self, row: Row) -> float:
        """(slowest - fastest) / median of the model's timed batches."""
        times = self.seconds[row.model]
        return (max(times) - min(times)) / statistics.median(times)

    def unreliable(self, rows: list[Row]) -> str:
        """Why these timings are not to be trusted, or ''."""
        why = []
        if self.cpu_share is not None and self.cpu_share < MIN_CPU_SHARE:
            why.append(f"this process got {100 * self.cpu_share:.0f} % of its {torch.get_num_threads()} threads' time "
                       f"while timing (other processes were running)")
        spread = max(rows, key=self.spread)
        if self.spread(spread) > MAX_SPREAD:
            why.append(f"{spread.label}'s {len(self.seconds[spread.model])} timed batches spread "
                       f"{100 * self.spread(spread):.0f} %")
        return "; ".join(why)


def time_rows(rows: list[Row], gflops: dict[str, float], device: torch.device, batch_size: int, warmup: int,
              repeats: int, log=say) -> Timings:
    """Seconds per batch of each distinct model of ``rows``, in ``repeats`` rounds that visit every model once,
    one model in memory at a time (see the module's docstring). Prints a line per model in the first round and one
    per later round, each with the time left (estimated from ``gflops``, by row key, until a model is visited)."""
    models = list({row.model: row for row in rows}.values())
    work = {r.model: gflops[r.key] for r in models}
    buffers: dict[tuple[str, int], dict] = {}
    seconds: dict[tuple[str, int], list[float]] = {r.model: [] for r in models}
    visit_s: dict[tuple[str, int], float] = {}
    cpu_s = thread_s = 0.0

    def left(round_i: int, model_i: int) -> float:
        """Seconds left after this visit: a visited model's last visit again, the others by GFLOPs."""
        per_gflop = sum(visit_s.values()) / sum(work[m] for m in visit_s)
        cost = {r.model: visit_s.get(r.model, work[r.model] * per_gflop) for r in models}
        return sum(cost[r.model] for r in models[model_i + 1:]) + (repeats - round_i - 1) * sum(cost.values())

    log(f"timing {len(models)} models on {device_name(device)}: batch {batch_size}, {repeats} rounds of "
        f"{warmup} untimed + 1 timed batch each, one model in memory at a time")
    for round_i in range(repeats):
        for model_i, row in enumerate(models):
            start = time.perf_counter()
            torch.manual_seed(0)
            if row.model in buffers:
                model = refill(row, device, buffers[row.model])
            else:
                model = build(row, device)
                buffers[row.model] = {n: b.detach().clone() for n, b in model.named_buffers()}
            infer = _inference(model, torch.randn(batch_size, 3, row.img_size, row.img_size, device=device))
            for _ in range(warmup):
                infer()
            cpu = time.process_time()
            seconds[row.model].append(call_seconds(infer))
            cpu_s += time.process_time() - cpu
            thread_s += seconds[row.model][-1] * torch.get_num_threads()
            del model, infer
            _free(device)
            visit_s[row.model] = time.perf_counter() - start
            if round_i == 0:
                log(f"  [{model_i + 1:>2}/{len(models)}] {row.label}: "
                    f"{batch_size / seconds[row.model][-1]:.2f} img/s; about {_minutes(left(round_i, model_i))} left")
        if round_i > 0:
            log(f"  round {round_i + 1} of {repeats} done; about {_minutes(left(round_i, len(models) - 1))} left")
    return Timings(seconds, cpu_s / thread_s if device.type == "cpu" else None)


def count(rows: list[Row]) -> dict[str, tuple[float, float]]:
    """Each row's parameters (M) and GFLOPs, counted on meta tensors (once per row and process)."""
    return {row.key: _count(row) for row in rows}


@functools.cache
def _count(row: Row) -> tuple[float, float]:
    meta = build(row, "meta")
    return count_params_m(meta), count_gflops(meta, row.img_size)


def figure_table(table: pd.DataFrame) -> pd.DataFrame:
    """What :func:`figure_1` draws: ``table``'s rows, and every other row of Table 1 with its GFLOPs counted here
    and the paper's top-1 (the figure has both of the paper's panels whichever rows were timed)."""
    others = [r for r in TABLE_1 if r.label not in set(table.model)]
    extra = [{"model": r.label, "pretrain": r.pretrain, "img_size": r.img_size, "gflops": round(gflops, 2),
              "paper_top1": r.top1, "top1": None} for r, (_, gflops) in zip(others, count(others).values())]
    columns = ["model", "pretrain", "img_size", "gflops", "paper_top1", "top1"]
    return pd.concat([table[columns], pd.DataFrame(extra, columns=columns)], ignore_index=True)


def compare(rows: list[Row], device: str = "auto", batch_size: int = 8, warmup: int = 1, repeats: int = 3,
            speed: bool = True, val: Path | None = None, weights: str | None = None, max_images: int | None = None,
            log=say) -> tuple[pd.DataFrame, Timings | None]:
    """One row per model: ours (params, GFLOPs, img/s, top-1, top-5) beside the paper's, its notes (why a cell is
    empty, why GFLOPs differ, a shared timing); and the timings (None: ``speed`` off)."""
    dev = chosen_device(device)
    files, why_not = {}, {row.key: [] for row in rows}
    for row in rows if val is not None else []:  # every weights file found and checked before any timing
        try:
            files[row.key] = weights_file(row, weights or "cache")
        except NoWeights as err:
            why_not[row.key].append(f"top-1: {err}")
            continue
        fitting_weights(build(row, "meta"), row, files[row.key])  # read again to evaluate: one model in memory
    counted = count(rows)
    timings = time_rows(rows, {k: g for k, (_, g) in counted.items()}, dev, batch_size, warmup, repeats, log) \
        if speed else None
    first_of = {}
    out = []
    for row in rows:
        params_m, gflops = counted[row.key]
        notes = [GFLOPS_NOTES[row.key]] if row.key in GFLOPS_NOTES else []
        if speed and first_of.setdefault(row.model, row) is not row:
            notes.append(f"speed: the model of {first_of[row.model].label}, timed once")
        entry = {"model": row.label, "pretrain": row.pretrain, "arch": row.arch, "img_size": row.img_size,
                 "params_m": round(params_m, 2), "paper_params_m": row.params_m,
                 "gflops": round(gflops, 2), "paper_gflops": row.gflops, "gflops_agree": abs(gflops / row.gflops - 1) <= 0.02,
                 "img_s": round(batch_size / timings.median(row), 2) if timings else None,
                 "img_s_spread": round(timings.spread(row), 3) if timings else None,
                 "paper_v100_img_s": row.v100_img_s, "top1": None, "top5": None, "paper_top1": row.top1,
                 "notes": "; ".join(notes + why_not[row.key])}
        if row.key in files:  # one model in memory at a time, after the timing
            torch.manual_seed(0)
            model = build(row)
            load_weights(model, row, files[row.key])
            entry["top1"], entry["top5"], n = top1_top5(model.to(dev), row, val, max_images, dev, batch_size)
            log(f"  {row.label}: top-1 {entry['top1']:.2f}, top-5 {entry['top5']:.2f} on {n} images")
            del model
            _free(dev)
        out.append(entry)
    return pd.DataFrame(out), timings


def ratios(table: pd.DataFrame, rows: list[Row]) -> pd.DataFrame:
    """Throughput ratios at equal FLOPs (ConvNeXt / Swin), ours beside the paper's V100 ones."""
    by_key = dict(zip((r.key for r in rows), table.to_dict("records")))
    found = []
    for ours, theirs in EQUAL_FLOPS:
        if ours in by_key and theirs in by_key:
            a, b = by_key[ours], by_key[theirs]
            paper = (round(a["paper_v100_img_s"] / b["paper_v100_img_s"], 3)
                     if a["paper_v100_img_s"] and b["paper_v100_img_s"] else None)
            found.append({"pair": f"{a['model']} / {b['model']}",
                          "ratio": round(a["img_s"] / b["img_s"], 3) if a["img_s"] and b["img_s"] else None,
                          "paper_v100_ratio": paper})
    return pd.DataFrame(found)


FAMILIES = (("ConvNeXt", "#c0392b", "o"), ("Swin", "#2c6fbb", "s"), ("DeiT", "#7f8c8d", "s"),
            ("RegNetY", "#27ae60", "o"), ("EffNet", "#8e44ad", "o"))  # ConvNets round, Transformers square


def figure_1(table: pd.DataFrame):
    """The paper's Figure 1: ImageNet-1K top-1 against GFLOPs (counted here), bubble area ∝ GFLOPs; left, the
    ImageNet-1K models at 224² (EfficientNets at their own size, as in Table 1); right, the ImageNet-22K models at
    384². The paper's top-1 filled, ours (where evaluated) hollow."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left as it is
    from matplotlib.lines import Line2D

    panels = [("ImageNet-1K trained: 224² (EfficientNets at their own size)",
               table[(table.pretrain == "in1k") & ((table.img_size == 224) | table.model.str.startswith("EffNet"))]),
              ("ImageNet-22K pre-trained, fine-tuned on 1K: 384²", table[table.pretrain == "in22k"])]
    panels = [(title, part) for title, part in panels if not part.empty]
    fig = Figure(figsize=(6.2 * max(1, len(panels)), 5.4), layout="constrained")
    if not panels:
        fig.text(0.5, 0.5, "No row of Figure 1's settings (ImageNet-1K at 224², ImageNet-22K at 384²) was chosen:\n"
                 "see table.md", ha="center", va="center")
    axes = fig.subplots(1, len(panels), squeeze=False)[0] if panels else []
    handles = {}
    for ax, (title, part) in zip(axes, panels):
        scale = 900 / table.gflops.max()  # one bubble scale for both panels
        for family, colour, marker in FAMILIES:
            rows = part[part.model.str.startswith(family)].sort_values("gflops")
            if rows.empty:
                continue
            ax.scatter(rows.gflops, rows.paper_top1, s=scale * rows.gflops, color=colour, marker=marker, alpha=0.55,
                       edgecolors=colour)
            joined = len(rows) > 1 and rows.img_size.nunique() == 1  # a line joins a family's sizes at one resolution
            if joined:
                ax.plot(rows.gflops, rows.paper_top1, color=colour, lw=1)
            handles[family] = Line2D([], [], color=colour, marker=marker, lw=1 if joined else 0,
                                     label=f"{family} (paper's top-1)")
            measured = rows.dropna(subset=["top1"])
            if not measured.empty:
                ax.scatter(measured.gflops, measured.top1.astype(float), s=scale * measured.gflops, marker=marker,
                           facecolors="none", edgecolors=colour, linestyles="--")
                handles["measured"] = Line2D([], [], color="black", marker="o", markerfacecolor="none", lw=0,
                                             label="top-1 measured here (hollow)")
            for r in rows.itertuples():
                name = r.model.replace(" 22K 384²", "").replace(" 384²", "")
                name += f" {r.img_size}²" if r.img_size not in (224, 384) else ""
                below = family != "ConvNeXt"  # ConvNeXt's labels above its points, the others' below
                gap = (scale * r.gflops) ** 0.5 / 2 + 2  # the bubble's radius in points, and a little
                ax.annotate(name, (r.gflops, r.paper_top1), fontsize=7, ha="center", va="top" if below else "bottom",
                            xytext=(0, -gap if below else gap), textcoords="offset points")
        low, high = part.paper_top1.min(), part.paper_top1.max()
        ax.set_ylim(low - 0.12 * (high - low) - 0.5, high + 0.12 * (high - low) + 0.5)
        ax.set_xlim(-0.06 * part.gflops.max(), part.gflops.max() * 1.12)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("GFLOPs (counted here: conv + linear + attention matmuls)", fontsize=8)
        ax.set_ylabel("ImageNet-1K top-1 (%; not from 0)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Figure 1 beside Table 1: top-1 against compute (bubble area ∝ GFLOPs; round: ConvNets, "
                 "square: Transformers)", fontsize=10)
    if handles:
        fig.legend(handles=list(handles.values()), loc="outside lower center", ncol=min(len(handles), 4), fontsize=7)
    return fig


def markdown(table: pd.DataFrame, pairs: pd.DataFrame, device: str, unreliable: str, cpu_share: float | None,
             not_measured: list[str]) -> str:
    """The table with each cell "ours (paper)", its notes as numbered footnotes below it (not a column as wide as
    they are), what no row measured (``not_measured``), and the ratios at equal FLOPs."""
    def pair(ours, paper, digits=2):
        ours = "—" if ours is None or pd.isna(ours) else f"{ours:.{digits}f}"
        return f"{ours} ({'—' if paper is None or pd.isna(paper) else f'{paper:g}'})"

    notes, shown = [], []
    for r in table.to_dict("records"):
        if r["notes"]:
            notes.append(r["notes"])
        shown.append({"model": r["model"], "res": r["img_size"], "params M": pair(r["params_m"], r["paper_params_m"]),
                      "GFLOPs": pair(r["gflops"], r["paper_gflops"]), "img/s": pair(r["img_s"], r["paper_v100_img_s"]),
                      "top-1": pair(r["top1"], r["paper_top1"]), "top-5": "—" if r["top5"] is None or pd.isna(r["top5"])
                      else f"{r['top5']:.2f}", "notes": f"[{len(notes)}]" if r["notes"] else ""})
    warning = [f"**Timings unreliable**: {unreliable}. Rerun on an idle machine before reading the ratios.", ""] \
        if unreliable else []
    share = f" This process got {100 * cpu_share:.0f} % of its threads' time while timing." if cpu_share else ""
    return "\n".join([
        f"Table 1 side by side: each cell ours (the paper's). HARDWARE: measured here on {device}; the paper's speed "
        f"is a V100's. Speeds compare across rows of this table only (one process, in alternation), not with the "
        f"paper's.{share}" + "".join(f" Not measured: {why}." for why in not_measured), "", *warning,
        pd.DataFrame(shown).to_markdown(index=False), "",
        *(f"[{i}] {note}" for i, note in enumerate(notes, 1)), "",
        "Throughput at equal FLOPs:", "", pairs.to_markdown(index=False) if not pairs.empty else "(no pair chosen)",
        ""])


def chosen_rows(spec: str) -> list[Row]:
    """``--rows``: a group (all, in1k, in22k) or comma-separated rows; anything else refused in one line."""
    keys = [k for part in spec.split(",") if part for k in GROUPS.get(part, [part])]
    if not keys:
        raise ConfigError(f"--rows {spec!r} names no row; rows: {', '.join(GROUPS)} or {', '.join(ROWS)}")
    unknown = [k for k in keys if k not in ROWS]
    if unknown:
        raise ConfigError(f"--rows: unknown row(s) {', '.join(unknown)}; rows: {', '.join(GROUPS)} or {', '.join(ROWS)}")
    return [ROWS[k] for k in dict.fromkeys(keys)]


@exit_on_config_error
def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m roadmap.compare_models", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="in1k", help=f"in1k (Table 1's ImageNet-1K rows), in22k (its 22K → 1K rows "
                        f"at 384²), all, or comma-separated rows: {', '.join(ROWS)}")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--warmup", type=non_negative_int, default=1, help="untimed batches at each visit of a model")
    parser.add_argument("--repeats", type=positive_int, default=3, help="rounds, each timing one batch of every model")
    parser.add_argument("--no-speed", action="store_true", help="count params and GFLOPs only")
    parser.add_argument("--val", type=existing_folder, help="an ImageNet-layout folder holding val/<class>/")
    parser.add_argument("--weights", default="cache", help="cache (the Hugging Face cache) or a folder of <row>.pth")
    parser.add_argument("--max-images", type=positive_int, help="evaluate the first N val images only")
    parser.add_argument("--out", type=output_folder, default=Path("outputs/compare_models"))
    args = parser.parse_args(argv)
    rows = chosen_rows(args.rows)
    if args.weights != "cache" and not Path(args.weights).is_dir():
        parser.error(f"--weights {args.weights}: no folder (give cache, or a folder of <row>.safetensors/.pth)")
    if args.val is not None and not (args.val / "val").is_dir():
        parser.error(f"--val {args.val}: no val/ folder in it (the ImageNet layout: val/<class>/<image>)")
    if args.val is not None:
        check_imagenet_classes(args.val / "val")
    table, timings = compare(rows, args.device, args.batch_size, args.warmup, args.repeats, not args.no_speed,
                             args.val, args.weights, args.max_images)
    pairs = ratios(table, rows)
    unreliable = timings.unreliable(rows) if timings else ""
    not_measured = ["speed (--no-speed)"] * args.no_speed + ["top-1 (no --val folder)"] * (args.val is None)
    text = markdown(table, pairs, device_name(chosen_device(args.device)), unreliable,
                    timings.cpu_share if timings else None, not_measured)
    print(text)
    if unreliable:
        print(f"WARNING: timings unreliable: {unreliable}; rerun on an idle machine before reading the ratios")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, content in (("table.csv", table.to_csv(index=False)), ("table.md", text),
                          ("ratios.csv", pairs.to_csv(index=False))):
        with atomic_path(args.out / name) as tmp:
            tmp.write_text(content)
    with atomic_path(args.out / "figure1.png") as tmp:
        figure_1(figure_table(table)).savefig(tmp, dpi=130, format="png")
    print(f"wrote {args.out}/table.csv, table.md, ratios.csv, figure1.png")


if __name__ == "__main__":
    main()
