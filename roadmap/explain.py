"""Print the effective run of a step in one screen, every value that differs from the paper's marked with
the file (or command-line override) that set it. Read this before launching a month of GPU time.

    python -m roadmap.explain +step=original_recipe +experiment=paper_in1k [any run.py override ...]

The reference is the same step and regime under ``+experiment=paper_in1k`` (ImageNet-1K, each recipe at
its own length, effective batch 4096): Table 5 for the modern recipe, torchvision's recipe for row 0; under the
command's own paper experiment (``paper_in22k``, ``paper_finetune``) where it names one, with its recipe preset;
in fp32 as the official commands train (the presets' bf16 is marked).
Attribution follows Hydra's defaults list (the order files are merged in) and interpolations.
"""
from __future__ import annotations

import re
import sys
import textwrap

import yaml
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from roadmap.config.command_line import check_overrides
from roadmap.config.effective import effective_run
from roadmap.config.files import CONF_DIR, config_dirs
from roadmap.config.recipe import describe_eval_resize
from roadmap.config.steps import compose_config, split_command
from roadmap.errors import ConfigError, exit_on_config_error

REFERENCE = ["+experiment=paper_in1k", "data.root=/imagenet"]
# what the paper's runs had that no preset has: the official TRAINING.md commands pass no --use_amp (fp32, TF32 on A100),
# where the presets train in bf16 autocast for speed
PAPER_PROTOCOL = ["trainer.precision=32-true"]
USAGE = "python -m roadmap.explain +step=<name> [any run.py override ...] (--help: what it shows)"
_INTERPOLATION = re.compile(r"^\$\{([\w.]+)\}$")


def _g(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _optimizer(r) -> str:
    o = r.optimizer
    kind = {"adamw": f"AdamW β={tuple(o.betas) if o.betas else '(0.9, 0.999)'}",
            "momentum": f"SGD momentum {_g(o.momentum)}, no Nesterov",
            "sgd": f"SGD Nesterov momentum {_g(o.momentum)}"}.get(o.name, o.name)
    return f"{kind}, wd {_g(o.weight_decay)} ({'not on 1-D params' if o.no_decay_1d else 'on every param'})"


def _rows(cfg: DictConfig) -> list[tuple[str, str, list[str]]]:
    """(what, effective value, the config keys it comes from) for one composed run."""
    r, d, b, t = cfg.recipe, cfg.data, cfg.budget, cfg.trainer
    run = effective_run(cfg)
    batch = run.effective_batch
    shown_batch = (f"{batch} = " if batch else "? = ") + (f"{b.batch_size}/device × {t.devices} devices × "
                                                          f"{t.num_nodes} nodes × accumulate {run.accumulate}")
    scale = run.epochs / r.epochs
    schedule = (f"cosine to {r.lr_min / r.base_lr:.3g} × the peak" if r.schedule == "cosine" else
                f"step ×0.1 every {r.step_every * scale:.3g} epochs")
    crop = f"random-resized crop {list(r.train_crop_scale)} + flip, {r.interpolation}; {describe_eval_resize(d)}"
    return [
        ("data", f"{d.name}, {d.img_size} px, {d.num_classes} classes", ["data.name", "data.img_size", "data.num_classes"]),
        ("epochs", f"{run.epochs} (recipe {r.epochs} × budget scale {_g(b.epoch_scale)})", ["recipe.epochs", "budget.epoch_scale"]),
        ("effective batch", shown_batch, ["budget.batch_size", "trainer.devices", "trainer.num_nodes",
                                          "budget.accumulate_grad_batches"]),
        ("peak lr", (f"{run.peak_lr:.4g}" if batch else "?") + f" ({_g(r.base_lr)} per {r.base_batch}, linear)"
         + (f", floor {run.lr_floor:.3g}" if batch and r.schedule == "cosine" else ""),
         ["recipe.base_lr", "recipe.base_batch", "recipe.lr_min"]),
        ("warm-up", f"{run.warmup_epochs:.3g} epochs, linear from 0" + (f" (only above batch {r.warmup_above_batch})"
                                                                     if r.warmup_above_batch else ""),
         ["recipe.warmup_epochs", "recipe.warmup_above_batch", "budget.epoch_scale"]),
        ("schedule", f"{schedule}, per iteration", ["recipe.schedule", "recipe.lr_min", "recipe.step_every",
                                                    "budget.epoch_scale"]),
        ("optimizer", _optimizer(r), ["recipe.optimizer"]),
        ("crop", crop, ["recipe.train_crop_scale", "data.train_crop_scale", "recipe.interpolation", "data.crop_pct",
                           "data.eval_warp_from"]),
        ("RandAugment", str(r.auto_augment or "off") + (f", colour jitter {_g(r.color_jitter)}" if not r.auto_augment
                                                          and r.color_jitter else ""),
         ["recipe.auto_augment", "recipe.color_jitter"]),
        ("mixup / cutmix", f"{_g(r.mixup)} / {_g(r.cutmix)}", ["recipe.mixup", "recipe.cutmix"]),
        ("random erasing", _g(r.re_prob), ["recipe.re_prob"]),
        ("label smoothing", _g(r.label_smoothing), ["recipe.label_smoothing"]),
        ("EMA", f"{_g(r.ema.decay)}" if r.ema.enabled else "off", ["recipe.ema.enabled", "recipe.ema.decay"]),
        ("grad clip", _g(r.grad_clip) if r.grad_clip else "off", ["recipe.grad_clip"]),
        ("layer scale", _g(cfg.model.layer_scale_init) if cfg.model.layer_scale_init else "off", ["model.layer_scale_init"]),
        ("drop path", _g(cfg.model.drop_path_rate), ["model.drop_path_rate"]),
        ("layer decay", f"{_g(r.layer_decay)} (official 12 layers + head)" if r.layer_decay else "off", ["recipe.layer_decay"]),
        ("head init", f"× {_g(r.head_init_scale)}" if r.head_init_scale != 1 else "as initialised", ["recipe.head_init_scale"]),
        ("start from", f"{cfg.model.init_from}" + (" (its EMA weights)" if r.init_from_ema else " (its raw weights)")
         if cfg.model.init_from else "pre-trained weights: set model.init_from (run.py refuses a fine-tune without)"
         if r.fine_tune else "random init", ["model.init_from", "recipe.init_from_ema", "recipe.fine_tune"]),
        ("validation", "every epoch" if r.validate else "none (recipe.validate=false)", ["recipe.validate"]),
        ("init", cfg.model.init, ["model.init"]),
        ("precision", f"{t.precision}, channels_last={cfg.channels_last}, compile={cfg.compile}, "
                      f"depthwise={cfg.depthwise}", ["trainer.precision", "channels_last", "compile", "depthwise"]),
        ("checkpoints", "every epoch" + (f" and every {cfg.run.checkpoint_every_n_steps} steps"
                                          if cfg.run.checkpoint_every_n_steps else ""), ["run.checkpoint_every_n_steps"]),
    ]


def _lookup(tree: dict, key: str):
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


class Provenance:
    """Which file of the defaults list (or which command-line override) last set a config key."""

    def __init__(self, overrides: list[str]):
        groups = {p.name for d in config_dirs() if d.is_dir() for p in d.iterdir() if p.is_dir()}
        self.overrides = {key: o for o in overrides if "=" in o  # value overrides; group choices select files
                          for key in [o.lstrip("+~").split("=", 1)[0]] if key not in groups}
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            defaults = GlobalHydra.instance().config_loader().compute_defaults_list(
                "config", overrides, RunMode.RUN).defaults
        self.layers = []  # (file label, its keys placed at their package), in merge order
        for entry in defaults:
            path = next((d / f"{entry.config_path}.yaml" for d in config_dirs()
                         if (d / f"{entry.config_path}.yaml").exists()), None)
            if path is None:  # Hydra's own configs
                continue
            content = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "defaults"}
            for part in reversed(entry.package.split(".") if entry.package else []):
                content = {part: content}
            label = str(path.relative_to(CONF_DIR.parent)) if path.is_relative_to(CONF_DIR.parent) else str(path)
            self.layers.append((label, content))

    def origin(self, key: str, depth: int = 0) -> str:
        for prefix in [key, *(key.rsplit(".", n)[0] for n in range(1, key.count(".") + 1))]:
            if prefix in self.overrides:
                return f"command line ({self.overrides[prefix]})"
        for label, content in reversed(self.layers):
            try:
                value = _lookup(content, key)
            except KeyError:
                continue
            target = _INTERPOLATION.match(value) if isinstance(value, str) else None
            if target and depth < 5:
                return self.origin(target[1], depth + 1)
            return label
        return "?"


def paper_run(overrides: list[str]) -> list[str]:
    """The paper's run of a command's overrides: its paper experiment (``+experiment=paper_*``, else
    :data:`REFERENCE`'s), with the command's recipe choice (a preset) and image size (a fine-tuning's 384²)."""
    experiment = next((o for o in overrides if o.startswith("+experiment=paper_")), REFERENCE[0])
    kept = [o for o in overrides if o.startswith(("recipe=", "data.img_size="))]
    return [experiment, REFERENCE[1], *kept, *PAPER_PROTOCOL]


def explain(overrides: list[str]) -> str:
    """The effective run of ``run.py <overrides>`` beside the paper's, as text."""
    check_overrides(overrides)
    step, regime, rest = split_command(overrides)
    if step is None:
        raise ConfigError(f"no step chosen: add +step=<name> (as for run.py); usage: {USAGE}")
    cfg = compose_config(step, regime, rest)
    paper_args = paper_run(rest)
    try:
        reference = compose_config(step, regime, paper_args)
    except ConfigError as err:  # the command composes (as run.py would run it); the paper never ran this
        reference, no_paper = None, str(err)
    provenance = Provenance([f"regime={regime}", f"+step={step}", *rest])
    lineage = " → ".join(OmegaConf.to_container(cfg.lineage, resolve=False)) if "lineage" in cfg else step
    out = [f"== {step} ({regime}) | {cfg.data.name}-{cfg.budget.name} | "
           f"{'PROXY budget' if cfg.budget.proxy else 'paper budget'} ==",
           *textwrap.wrap(f"lineage: {lineage}", 110, subsequent_indent="  "),
           *(textwrap.wrap(f"no paper run to compare with, nothing marked: the paper never ran this step under "
                           f"{' '.join(o for o in paper_args if o not in (REFERENCE[1], *PAPER_PROTOCOL))} ({no_paper})",
                           110, subsequent_indent="  ") if reference is None else
             [f"* = differs from the paper's run of this step ({' '.join(o for o in paper_args if o != REFERENCE[1])}: "
              f"{reference.data.name}, batch {effective_run(reference).effective_batch}), with what set it"])]
    rows = _rows(cfg)
    for (what, value, keys), (_, paper, _) in zip(rows, _rows(reference) if reference is not None else rows):
        if value == paper:
            out.append(f"  {what:<16} {value}")
            continue
        changed = [k for k in keys if OmegaConf.select(cfg, k) != OmegaConf.select(reference, k)]
        origins = sorted({provenance.origin(k) for k in changed}) or ["derived"]
        out.append(f"* {what:<16} {value}")
        out.append(f"  {'':<16}   paper: {paper} | set by {', '.join(origins)}")
    knobs = ", ".join(f"{k}={_g(v)}" for k, v in OmegaConf.to_container(cfg.model, resolve=True).items()
                      if k not in ("_target_", "layer_scale_init", "drop_path_rate", "init"))
    steps = effective_run(cfg, cfg.data.get("train_size")) if cfg.data.get("train_size") else None
    if steps and steps.total_steps:
        out.append(f"  {'optimizer steps':<16} {steps.total_steps} ({steps.steps_per_epoch}/epoch of {cfg.data.train_size} "
                   f"images), warm-up {steps.warmup_steps}")
    out += textwrap.wrap(f"model: {knobs}", 110, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(out)


@exit_on_config_error
def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return
    if not args:
        print(f"usage: {USAGE}", file=sys.stderr)
        sys.exit(2)
    print(explain(args))


if __name__ == "__main__":
    main()
