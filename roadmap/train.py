"""Train one roadmap step from a composed config (run.py's job), with results that last.

A run directory ``<run.root>/<data>-<budget>/<regime>/<step>/seed<k>/`` holds ``config.yaml`` (resolved),
``checkpoints/last.ckpt``, ``metrics.csv`` (per-step/epoch log), ``wandb/`` (offline) and
``metrics.json`` (written atomically: status running → done | failed). A finished run is not retrained
(``run.force=true`` retrains); an unfinished one resumes from ``last.ckpt`` (``run.resume=false`` restarts).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import lightning as L
import timm
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from roadmap.callbacks import History, Throughput
from roadmap.data import RoadmapDataModule
from roadmap.errors import ConfigError
from roadmap.lit import RoadmapModule
from roadmap.profile import count_gflops, count_params_m
from roadmap.schema import validate
from roadmap.steps import available_steps, instantiate_model

RESULT_FILE = "metrics.json"


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False))
    os.replace(tmp, path)


def read_result(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / RESULT_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def step_name(cfg: DictConfig) -> str:
    step = HydraConfig.get().runtime.choices.get("step") if HydraConfig.initialized() else None
    if not step:
        raise ConfigError(f"no step chosen: add +step=<name>; valid steps: {', '.join(available_steps())}")
    return step


def proxy_label(cfg: DictConfig) -> str | None:
    """A warning for every output when the run is not the paper's setting (ImageNet-1K, full recipe)."""
    if cfg.budget.get("proxy", True):
        return (f"PROXY: {cfg.data.name} data at {cfg.data.img_size}px, {cfg.trainer.max_epochs} epochs "
                f"({cfg.budget.name} budget) - not comparable to the paper's ImageNet-1K numbers")
    return None


def build_trainer(cfg: DictConfig, run_dir: Path, step: str, callbacks: list) -> L.Trainer:
    loggers = [CSVLogger(save_dir=str(run_dir), name="csv")]  # csv/version_<n>/metrics.csv, one per attempt
    if cfg.logger.wandb.enabled:
        (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        loggers.append(WandbLogger(project=cfg.logger.wandb.project, entity=cfg.logger.wandb.entity,
                                   mode=cfg.logger.wandb.mode, save_dir=str(run_dir), group=cfg.run.group,
                                   name=f"{cfg.regime.name}/{step}/seed{cfg.seed}", id=cfg.logger.wandb.get("id"),
                                   tags=[cfg.regime.name, step, cfg.data.name, cfg.budget.name]))
    extra = [instantiate(c) for c in cfg.get("callbacks", {}).values()]
    return instantiate(cfg.trainer, callbacks=[*callbacks, *extra], logger=loggers,
                       default_root_dir=str(run_dir), enable_checkpointing=True, use_distributed_sampler=False)


def summary(result: dict) -> str:
    ema = (f" | EMA top-1 {result['final']['top1_ema']:.2f} top-5 {result['final']['top5_ema']:.2f}"
           if result["final"].get("top1_ema") is not None else " | EMA off")
    ips = f"{result['train_images_per_s']:.1f}" if result.get("train_images_per_s") else "n/a"
    lines = [f"== {result['step']} ({result['regime']}, seed {result['seed']}): {result['status']} ==",
             *([result["proxy"]] if result.get("proxy") else []),
             f"top-1 {result['final']['top1']:.2f} top-5 {result['final']['top5']:.2f} (best top-1 "
             f"{result['best']['top1']:.2f}){ema} | {result['epochs']} epochs",
             f"{result['gflops_224']:.3f} GFLOPs at 224² as in the paper ({result['gflops_run']:.4f} as trained at {result['img_size']}²) | "
             f"{result['params_m']:.2f} M params | train {ips} img/s | wall {result['wall_s']:.0f} s",
             f"results: {result['run_dir']}"]
    return "\n".join(lines)


def _header(cfg: DictConfig, step: str, run_dir: Path, status: str, error: str | None = None) -> dict:
    """The fields every metrics.json has, whatever the run's status."""
    return {"status": status, "error": error, "step": step, "regime": cfg.regime.name, "seed": cfg.seed,
            "data": cfg.data.name, "budget": cfg.budget.name, "proxy": proxy_label(cfg), "run_dir": str(run_dir)}


def _result(cfg, step, run_dir, model, history, throughput, wall_s, status) -> dict:
    last = history[-1] if history else {}
    metric = "val/top1_ema" if cfg.recipe.ema.enabled else "val/top1"
    best = max(history, key=lambda row: row.get(metric, -1)) if history else {}
    with torch.device("meta"):  # the paper's count: the step's architecture with 1000 classes at 224²
        paper_arch, trained_arch = instantiate_model(cfg.model, num_classes=1000), instantiate_model(cfg.model)
    return {
        **_header(cfg, step, run_dir, status), "img_size": cfg.data.img_size,
        "final": {k: last.get(f"val/{k}") for k in ("top1", "top5", "top1_ema", "top5_ema")},
        "best": {"top1": best.get(metric), "epoch": best.get("epoch")},
        "epochs": last.get("epoch", 0), "history": history,
        "gflops_224": round(count_gflops(paper_arch, 224), 4),
        "gflops_run": round(count_gflops(trained_arch, cfg.data.img_size), 5),
        "params_m": round(count_params_m(model), 4), "train_images_per_s": throughput,
        "wall_s": round(wall_s, 1),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
                     "lightning": L.__version__},
        "git_commit": _git_commit(),
    }


def _fit(cfg: DictConfig, step: str, run_dir: Path, history: History, throughput: Throughput):
    """Build data, model, module and trainer from the config and fit (resuming from last.ckpt if any)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = RoadmapDataModule(cfg.data, cfg.recipe, cfg.budget.batch_size, cfg.budget.num_workers, cfg.seed)
    datamodule.setup()
    model = instantiate_model(cfg.model)
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1,  # no monitor:
                                 enable_version_counter=False,  # keeps only the newest, overwritten in place
                                 every_n_epochs=1, every_n_train_steps=cfg.run.checkpoint_every_n_steps)
    trainer = build_trainer(cfg, run_dir, step, [history, throughput, checkpoint])
    effective_batch = cfg.budget.batch_size * trainer.world_size * trainer.accumulate_grad_batches
    module = RoadmapModule(model, cfg.recipe, num_classes=cfg.data.num_classes, epochs=trainer.max_epochs,
                           effective_batch=effective_batch, seed=cfg.seed, channels_last=cfg.channels_last,
                           compile=cfg.compile)
    last_ckpt = run_dir / "checkpoints" / "last.ckpt"
    resume = last_ckpt if cfg.run.resume and last_ckpt.exists() and not cfg.run.force else None
    if resume:
        print(f"resuming from {resume}")
    if trainer.is_global_zero:
        write_json_atomic(run_dir / RESULT_FILE, _header(cfg, step, run_dir, "running"))
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    return model, trainer


def check_input_size(model_cfg: DictConfig, img_size: int) -> None:
    """Refuse, before any data is loaded, an image size too small for the step (e.g. separate downsampling
    at 28 px), naming the smallest size it accepts."""
    with torch.device("meta"):
        model = instantiate_model(model_cfg).eval()

    def fits(size: int) -> bool:
        try:
            model(torch.empty(1, model_cfg.in_chans, size, size, device="meta"))
            return True
        except RuntimeError:
            return False

    if not fits(img_size):
        smallest = next((s for s in range(img_size + 1, 4 * img_size + 512) if fits(s)), None)
        raise ConfigError(f"this step needs images of at least {smallest} px, data.img_size is {img_size}: "
                          f"set data.img_size={smallest} (or larger)")


def train(cfg: DictConfig) -> dict:
    """Train, validate and record one step; returns the metrics.json payload."""
    validate(cfg)
    step = step_name(cfg)
    check_input_size(cfg.model, cfg.data.img_size)
    run_dir = Path(cfg.run.dir).resolve()
    previous = read_result(run_dir)
    if previous and previous.get("status") == "done" and not cfg.run.force:
        print(f"already done, not retraining (run.force=true retrains)\n{summary(previous)}")
        return previous
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml({k: v for k, v in cfg.items() if k != "hydra"}, resolve=True))

    started = time.time()
    history, throughput = History(), Throughput()
    try:
        model, trainer = _fit(cfg, step, run_dir, history, throughput)
    except BaseException as err:  # recorded, then re-raised: a sweep shows the step as failed with its error
        message = str(err).strip().splitlines()[-1] if str(err).strip() else ""
        if rank_zero_only.rank == 0:
            write_json_atomic(run_dir / RESULT_FILE, {
                **_header(cfg, step, run_dir, "failed", f"{type(err).__name__}: {message}"),
                "history": history.epochs, "wall_s": round(time.time() - started, 1)})
        raise
    finally:
        if cfg.logger.wandb.enabled:
            import wandb
            wandb.finish()
    result = _result(cfg, step, run_dir, model, history.epochs, throughput.images_per_s,
                     time.time() - started, "done")
    if trainer.is_global_zero:
        write_json_atomic(run_dir / RESULT_FILE, result)
        print(summary(result))
    return result
