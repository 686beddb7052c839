"""Evaluate weights without training: ``python run.py +step=X mode=eval ckpt=PATH [data=... data.root=...]``.

Top-1/top-5 of the raw weights (and of the EMA weights when the checkpoint has them) on the data config's
validation split with its eval transform (ImageNet: resize to 224/0.875, centre crop 224, as the paper).
The result names the step, the regime and the weights (path and SHA-256). It is appended to ``evaluations`` in the
record of the run the checkpoint belongs to (``<run>/checkpoints/*.ckpt`` or ``<run>/weights/*.safetensors``), which
must be a run of the same step, regime and model knobs (else refused: :func:`roadmap.run.record.check_evaluation_target`),
or written beside the file as ``<ckpt>.eval.json``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from roadmap.config.recipe import describe_eval_resize
from roadmap.config.steps import instantiate_model
from roadmap.data.datamodule import RoadmapDataModule
from roadmap.errors import ConfigError
from roadmap.models import weights
from roadmap.run.module import RoadmapModule
from roadmap.run.plan import take_plan
from roadmap.run.record import RunPaths, RunRecord
from roadmap.utils.files import sha256_of, write_text


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.ckpt`` on the data's validation split; returns the evaluation (also recorded)."""
    plan = take_plan(cfg)
    ckpt = Path(cfg.ckpt).expanduser().resolve()
    state, ema_state = weights.read_model_and_ema(ckpt)
    if "fc.weight" in state and state["fc.weight"].shape[0] != cfg.data.num_classes:
        raise ConfigError(f"{ckpt.name} has {state['fc.weight'].shape[0]} classes, data {cfg.data.name} has "
                          f"{cfg.data.num_classes}: evaluate on data with the same classes")
    ema = ema_state is not None
    model = instantiate_model(cfg.model, init_from=None)
    weights.load_into(model, state, str(ckpt))
    recipe = cfg.recipe.copy()
    recipe.ema.enabled = ema
    module = RoadmapModule(model, recipe, num_classes=cfg.data.num_classes,
                           channels_last=cfg.channels_last, depthwise=cfg.depthwise)
    if ema:
        weights.load_into(module.ema.module, ema_state, f"{ckpt} (EMA)")
    data = RoadmapDataModule(cfg.data, cfg.recipe, cfg.budget.batch_size, cfg.budget.num_workers, cfg.seed)
    loader = data._loader(data.build_split(train=False))
    trainer = L.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    metrics = trainer.validate(module, dataloaders=loader, verbose=False)[0]
    result = {"step": plan.step, "regime": cfg.regime.name, "ckpt": str(ckpt), "sha256": sha256_of(ckpt),
              "data": cfg.data.name, "img_size": cfg.data.img_size,
              "resize": describe_eval_resize(cfg.data), "images": int(metrics.get("val/images", len(loader.dataset))),
              "data_identity": plan.data,
              **{k: round(float(metrics[f"val/{k}"]), 4) for k in ("top1", "top5", "top1_ema", "top5_ema")
                 if f"val/{k}" in metrics},
              "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    run = RunPaths.holding(ckpt)
    existing = RunRecord.read(run.root) if run else None
    if existing is not None:
        existing.evaluations.append(result)
        existing.write(run.root)
        where = run.metrics
    else:
        where = ckpt.with_name(f"{ckpt.name}.eval.json")
        write_text(where, json.dumps(result, indent=2))
    ema_text = f" | EMA top-1 {result['top1_ema']:.2f} top-5 {result['top5_ema']:.2f}" if ema else ""
    print(f"== eval {ckpt.name} on {cfg.data.name} ({result['images']} images, {cfg.data.img_size} px): "
          f"top-1 {result['top1']:.2f} top-5 {result['top5']:.2f}{ema_text} ==\nrecorded in {where}")
    return result

