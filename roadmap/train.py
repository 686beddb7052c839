"""Train one roadmap step from a composed config (run.py's job), with results that last.

The run folder and ``metrics.json`` are :mod:`roadmap.record`'s. A finished run is not retrained
(``run.force=true`` retrains); an unfinished or preempted one resumes from ``last.ckpt`` (``run.resume=false``
restarts); a folder whose saved config is another run's is refused. At the end the final, best and EMA
weights are exported as plain state dicts under ``weights/``.
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
import uuid
from pathlib import Path

import lightning as L
import timm
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from roadmap import record, weights
from roadmap.callbacks import History, Preemption, ResumableProgressBar, Throughput
from roadmap.data import RoadmapDataModule
from roadmap.devices import device_name
from roadmap.effective import EffectiveRun, effective_run
from roadmap.errors import ConfigError
from roadmap.files import write_text
from roadmap.lit import RoadmapModule
from roadmap.profile import count_gflops, count_params_m
from roadmap.schema import validate
from roadmap.steps import available_steps, instantiate_model


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


def metric_name(cfg: DictConfig) -> str:
    """The table's metric: EMA top-1 when the EMA is on, else top-1."""
    return "val/top1_ema" if cfg.recipe.ema.enabled else "val/top1"


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    """Every ``cfg.logger`` node; one with an ``id`` key (wandb) keeps the id stored in the run folder."""
    loggers = []
    for node in cfg.logger.values():
        extra = {}
        if "id" in node and node.id is None:
            id_file = run_dir / "wandb_id"
            if not id_file.exists():
                write_text(id_file, uuid.uuid4().hex[:12])
            extra["id"] = id_file.read_text().strip()
            (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        loggers.append(instantiate(node, **extra))
    return loggers


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: list) -> L.Trainer:
    extra = [instantiate(c) for c in cfg.get("callbacks", {}).values()]
    if cfg.trainer.get("enable_progress_bar", True):
        extra.append(ResumableProgressBar())
    return instantiate(cfg.trainer, callbacks=[*callbacks, *extra], logger=build_loggers(cfg, run_dir),
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


def _header(cfg: DictConfig, step: str, run_dir: Path, run: EffectiveRun, status: str, error: str | None = None) -> dict:
    """The fields every metrics.json has, whatever the run's status."""
    return {"status": status, "error": error, "step": step, "regime": cfg.regime.name, "seed": cfg.seed,
            "data": cfg.data.name, "budget": cfg.budget.name, "group": cfg.run.group,
            "proxy": proxy_label(cfg), "run_dir": str(run_dir), "effective_run": run.as_dict()}


def _result(cfg, step, run_dir, run, trainer, model, history, throughput, wall_s, status, exported) -> dict:
    last = history[-1] if history else {}
    metric = metric_name(cfg)
    best = max(history, key=lambda row: row.get(metric, -1)) if history else {}
    with torch.device("meta"):  # the paper's count: the step's architecture with 1000 classes at 224²
        paper_arch, trained_arch = instantiate_model(cfg.model, num_classes=1000), instantiate_model(cfg.model)
    return {
        **_header(cfg, step, run_dir, run, status), "img_size": cfg.data.img_size,
        "final": {k: last.get(f"val/{k}") for k in ("top1", "top5", "top1_ema", "top5_ema")},
        "best": {"top1": best.get(metric), "epoch": best.get("epoch"), "metric": metric},
        "epochs": last.get("epoch", 0), "history": history,
        "checkpoints": {"last": "checkpoints/last.ckpt", "best": "checkpoints/best.ckpt"}, "weights": exported,
        "gflops_224": round(count_gflops(paper_arch, 224), 4),
        "gflops_run": round(count_gflops(trained_arch, cfg.data.img_size), 5),
        "params_m": round(count_params_m(model), 4), "train_images_per_s": throughput.images_per_s,
        "warmup_batches_s": round(throughput.warmup_seconds, 2),  # the first 2 batches: compile, autotuning
        "wall_s": round(wall_s, 1),
        "hardware": {"device": device_name(trainer.strategy.root_device), "devices": trainer.world_size},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
                     "lightning": L.__version__},
        "git_commit": _git_commit(),
    }


def export_weights(module: RoadmapModule, run_dir: Path) -> dict[str, str]:
    """weights/{final,best,ema}.safetensors: plain RoadmapNet state dicts (best from best.ckpt)."""
    model = getattr(module.model, "_orig_mod", module.model)  # torch.compile's wrapper
    out = {"final": weights.export(model.state_dict(), run_dir / "weights" / "final.safetensors")}
    best = run_dir / "checkpoints" / "best.ckpt"
    if best.exists():
        which = "ema" if module.ema is not None else "model"
        out["best"] = weights.export(weights.read_state_dict(best, which), run_dir / "weights" / "best.safetensors")
    if module.ema is not None:
        out["ema"] = weights.export(module.ema.module.state_dict(), run_dir / "weights" / "ema.safetensors")
    return {k: str(v.relative_to(run_dir)) for k, v in out.items()}


def checkpoint_callbacks(cfg: DictConfig, checkpoints: Path) -> list[ModelCheckpoint]:
    """``last.ckpt`` at every epoch end and, with ``run.checkpoint_every_n_steps``, every n optimizer steps too (a
    second callback: Lightning's triggers are exclusive within one); ``best.ckpt`` by the table's metric."""
    newest = dict(dirpath=checkpoints, filename="last", save_top_k=1,  # no monitor: the newest only,
                  enable_version_counter=False)  # overwritten in place
    found = [ModelCheckpoint(**newest, every_n_epochs=1)]
    if cfg.run.checkpoint_every_n_steps:
        found.append(ModelCheckpoint(**newest, every_n_train_steps=cfg.run.checkpoint_every_n_steps))
    found.append(ModelCheckpoint(dirpath=checkpoints, filename="best", monitor=metric_name(cfg), mode="max",
                                 save_top_k=1, save_weights_only=True, enable_version_counter=False, every_n_epochs=1))
    return found


def _fit(cfg: DictConfig, run_dir: Path, datamodule: RoadmapDataModule, run: EffectiveRun, callbacks: list):
    """Build model, module and trainer from the config and fit (resuming from last.ckpt if any)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = instantiate_model(cfg.model)
    checkpoints = run_dir / "checkpoints"
    trainer = build_trainer(cfg, run_dir, [*callbacks, *checkpoint_callbacks(cfg, checkpoints)])
    module = RoadmapModule(model, cfg.recipe, num_classes=cfg.data.num_classes, run=run, seed=cfg.seed,
                           channels_last=cfg.channels_last, compile=cfg.compile, depthwise=cfg.depthwise)
    for logger in trainer.loggers:  # the resolved run config reaches every logger (wandb: filterable)
        logger.log_hyperparams(record.resolved(cfg))
    last_ckpt = checkpoints / "last.ckpt"
    resume = last_ckpt if cfg.run.resume and last_ckpt.exists() and not cfg.run.force else None
    if resume:
        print(f"resuming from {resume}")
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    return module, trainer


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


def check_identity(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse to reuse a run folder whose saved config computes something else (run.force=true overwrites)."""
    saved = record.read_config(run_dir)
    if saved is None or cfg.run.force:
        return
    differences = record.identity_differences(record.identity(saved), record.identity(cfg))
    if differences:
        layout_changed = any(d.startswith("effective.effective_batch") for d in differences)
        # the config values that differ; the effective run's only where nothing else does (it follows from them)
        differences = [d for d in differences if not d.startswith("effective.")] or differences
        shown = "; ".join(differences[:4]) + (f"; and {len(differences) - 4} more" if len(differences) > 4 else "")
        layout = (" (per-device batch × devices × nodes × accumulation may change, their product may not)"
                  if layout_changed else "")
        raise ConfigError(f"{run_dir} holds a run of another config ({shown}){layout}: run.force=true "
                          f"overwrites it, or change run.root")


def use_compile_cache(root: Path) -> None:
    """Inductor's and Triton's caches under ``root``, where a sweep's seeds and requeued jobs find them, unless the
    user set their own (torch writes its default into TORCHINDUCTOR_CACHE_DIR on first use: that one is moved)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    if os.environ.get("TORCHINDUCTOR_CACHE_DIR", default_cache_dir()) in (default_cache_dir(),
                                                                          os.path.abspath(default_cache_dir())):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root.resolve() / "inductor")
    os.environ.setdefault("TRITON_CACHE_DIR", str(root.resolve() / "triton"))


def _interrupted(err: BaseException) -> tuple[str, str]:
    """(status, error) of a run that ended by ``err`` before a stop signal could save a checkpoint: a signal's
    exit (submitit requeueing a job that had not reached its first step, Ctrl-C) resumes from the last
    checkpoint; anything else is a failure."""
    if isinstance(err, (SystemExit, KeyboardInterrupt)):
        status = "preempted" if isinstance(err, SystemExit) and os.environ.get("SLURM_JOB_ID") else "cancelled"
        return status, f"{status} before a checkpoint ({type(err).__name__}): the same command resumes from the last one"
    message = str(err).strip().splitlines()[-1] if str(err).strip() else ""
    return "failed", f"{type(err).__name__}: {message}"


STOPPED = {"preempted": "preempted: the requeued job resumes from checkpoints/last.ckpt",
           "cancelled": "cancelled: the same command resumes from checkpoints/last.ckpt"}


def train(cfg: DictConfig) -> dict:
    """Train, validate and record one step (or evaluate a checkpoint: mode=eval); returns the record.

    Everything that can refuse the run (config, input size, identity, data) runs before its record says
    ``running``; after that the record ends as done, failed, preempted or cancelled."""
    validate(cfg)
    step = step_name(cfg)
    check_input_size(cfg.model, cfg.data.img_size)
    if cfg.mode == "eval":
        from roadmap.evaluate import evaluate

        return evaluate(cfg)
    run_dir = Path(cfg.run.dir).resolve()
    check_identity(cfg, run_dir)
    previous = record.read_record(run_dir)
    if previous and previous.get("status") == "done" and not cfg.run.force:
        print(f"already done, not retraining (run.force=true retrains)\n{summary(previous)}")
        return previous
    if effective_run(cfg).effective_batch is None:
        raise ConfigError(f"trainer.devices={cfg.trainer.devices} (all visible) but no CUDA device is visible: set "
                          f"trainer.devices=N, and trainer.accelerator=cpu on a machine without GPUs")
    datamodule = RoadmapDataModule(cfg.data, cfg.recipe, cfg.budget.batch_size, cfg.budget.num_workers, cfg.seed)
    datamodule.setup()
    run = effective_run(cfg, train_size=len(datamodule.train_set))
    if not run.total_steps:
        raise ConfigError(f"{len(datamodule.train_set)} training images give no full batch of "
                          f"{cfg.budget.batch_size} × {run.effective_batch // cfg.budget.batch_size} (processes × "
                          f"accumulation): lower budget.batch_size or add data")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / record.CONFIG_FILE, OmegaConf.to_yaml(record.resolved(cfg)))

    if cfg.compile:
        use_compile_cache(Path(cfg.compile_cache))
    started = time.time()
    history, throughput = History(), Throughput()
    preemption = Preemption(run_dir / "checkpoints" / "last.ckpt", lambda status: record.write_record(run_dir, {
        **_header(cfg, step, run_dir, run, status, STOPPED[status]),
        "history": history.epochs, "wall_s": round(time.time() - started, 1)}))
    if rank_zero_only.rank == 0:
        record.write_record(run_dir, _header(cfg, step, run_dir, run, "running"))
    try:
        module, trainer = _fit(cfg, run_dir, datamodule, run, [history, throughput, preemption])
    except BaseException as err:  # recorded, then re-raised: a sweep shows the step as failed with its error
        # after a stop signal the record already says so; submitit's handler ends the job with SystemExit
        if not preemption.stopped and rank_zero_only.rank == 0:
            record.write_record(run_dir, {**_header(cfg, step, run_dir, run, *_interrupted(err)),
                                          "history": history.epochs, "wall_s": round(time.time() - started, 1)})
        raise
    finally:
        if "wandb" in cfg.logger:
            import wandb

            wandb.finish()
    if not trainer.is_global_zero:
        return {}
    exported = export_weights(module, run_dir) if cfg.run.export_weights else {}
    result = _result(cfg, step, run_dir, run, trainer, module.model, history.epochs, throughput,
                     time.time() - started, "done", exported)
    record.write_record(run_dir, result)
    print(summary(result))
    return result
