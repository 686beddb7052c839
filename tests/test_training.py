"""Training: every step through run.py's code path, the Table 5 knobs reaching their objects,
results on disk, and real-data loaders with one-line errors (a run's lifecycle: tests/test_lifecycle.py)."""
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from roadmap import ConfigError
from roadmap.config.effective import effective_run, scaled_lr
from roadmap.config.recipe import ErasingBox, build_transform
from roadmap.config.steps import compose_config, instantiate_model
from roadmap.config.trainer import refuse_loop_overrides
from roadmap.data.datamodule import RoadmapDataModule, SyntheticShapes, generate_shapes
from roadmap.run.module import RoadmapModule
from roadmap.run.train import train
from tests.helpers import RecordLR, tiny_run_config

REPO = Path(__file__).resolve().parent.parent
# every step trains in tests/test_sweep_analysis.py's sweep (run.py -m, on the tiny regime); full-size
# architectures are checked in tests/test_model_zoo.py


@pytest.mark.slow
def test_run_py_cli_trains_and_skips_finished_run(tmp_path):
    """With the default loggers (CSV, wandb offline): every log line once, no advertising, wandb quiet, Lightning's
    lines in the run's log file too."""
    cmd = [sys.executable, "run.py", "+step=gelu", "budget=smoke", "data.train_size=16",
           "data.val_size=8", "depthwise=native", f"run.root={tmp_path}"]  # auto's measurement: tests/test_lifecycle.py
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "== gelu (r50, seed 0): done ==" in first.stdout and "PROXY" in first.stdout
    lines = [line.split("] - ")[-1] for line in (first.stdout + first.stderr).splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), [line for line in lines if lines.count(line) > 1]
    assert not [line for line in lines if "Tip" in line or line.startswith("wandb:") or "eval mode" in line]
    assert not [line for line in lines if "srun" in line or "LeafSpec" in line]
    (run_log,) = tmp_path.glob("*/r50/gelu/seed0/run.log")
    assert "GPU available" in run_log.read_text() and sum("GPU available" in line for line in lines) == 1
    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert "already done, not retraining" in second.stdout
    assert "Restoring states" not in second.stdout + second.stderr


def test_every_loop_argument_of_lightnings_trainer_is_refused_with_or_without_plus():
    """Every argument of Lightning's Trainer signature that is neither a reviewed switch nor one training sets is
    refused, on the command line (before Hydra composes: it would answer the plain form with its struct error) and in
    a trainer file: an argument a new Lightning adds is refused until it is reviewed as a switch."""
    import inspect

    import lightning

    from roadmap.config.schema import validate
    from roadmap.config.trainer import SET_BY_TRAIN, TRAINER_SWITCHES, loop_arguments

    signature = set(inspect.signature(lightning.Trainer).parameters)
    assert set(TRAINER_SWITCHES) <= signature and set(SET_BY_TRAIN) <= signature  # no stale name
    loop = signature - set(TRAINER_SWITCHES) - set(SET_BY_TRAIN)
    assert set(loop_arguments()) == loop
    assert {"max_time", "overfit_batches", "check_val_every_n_epoch", "val_check_interval", "max_epochs",
            "limit_train_batches", "fast_dev_run", "reload_dataloaders_every_n_epochs", "barebones"} <= loop
    from omegaconf import open_dict

    composed = compose_config("gelu")
    for key in sorted(loop):
        for override in (f"trainer.{key}=3", f"+trainer.{key}=3", f"++trainer.{key}=3"):
            with pytest.raises(ConfigError, match=f"^trainer.{key} is set by the effective run from the recipe and "
                                                  f"budget: "):
                refuse_loop_overrides(["+step=gelu", override])
        cfg = composed.copy()
        with open_dict(cfg.trainer):
            cfg.trainer[key] = 3  # as a trainer file of the user's would have it
        with pytest.raises(ConfigError, match=f"^trainer.{key} is set by the effective run"):
            validate(cfg)
    refuse_loop_overrides(["+step=gelu", "trainer.devices=2", "budget.limit_train_batches=3"])


def test_unknown_step_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown step 'gelu2' \(did you mean gelu\?\); valid steps: .*gelu"):
        compose_config("gelu2", overrides=["budget=smoke"])


@pytest.mark.slow
def test_short_training_learns_well_above_chance(tiny_regime, tmp_path):
    """Proof that the loop learns: 8 classes (chance 12.5%), 3 short epochs of the recipe (mixup/cutmix
    off so that 96 steps suffice) on CPU, on the tiny regime's ResNet; measured 40%, asserted at least 2× chance."""
    cfg = tiny_run_config("modern_recipe", tmp_path, regime="tiny", overrides=[
        "budget.epoch_scale=0.01", "budget.batch_size=32", "budget.limit_train_batches=1.0", "budget.limit_val_batches=1.0",
        "data.train_size=1024", "data.val_size=256", "recipe.base_lr=2e-3", "recipe.base_batch=32",
        "recipe.mixup=0", "recipe.cutmix=0"])
    result = train(cfg)
    assert result.final["top1"] >= 2 * 12.5, result.history


def _module(overrides=(), num_classes=8):
    cfg = compose_config("separate_downsampling", overrides=["budget=smoke", *overrides])
    model = instantiate_model(cfg.model, num_classes=num_classes)
    run = effective_run(cfg, train_size=cfg.data.train_size)
    return cfg, RoadmapModule(model, cfg.recipe, num_classes=num_classes, run=run)


def _fit(module, cfg, tmp_path, epochs, batches, callbacks=()):
    dm = RoadmapDataModule(cfg.data, cfg.recipe, cfg.budget.batch_size, 0, seed=0)
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, limit_train_batches=batches, limit_val_batches=2,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        num_sanity_val_steps=0, callbacks=list(callbacks), default_root_dir=tmp_path,
                        use_distributed_sampler=False)
    trainer.fit(module, datamodule=dm)
    return trainer


def test_no_weight_decay_on_1d_params(tmp_path):
    cfg, module = _module(["data.train_size=16"])
    module.trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False)
    module.trainer.fit_loop.max_batches = 2
    module.trainer.__dict__["estimated_stepping_batches"] = 2  # the optimizer needs only a schedule length
    opt = module.configure_optimizers()["optimizer"]
    by_decay = {g["weight_decay"]: g["params"] for g in opt.param_groups}
    assert set(by_decay) == {0.0, 0.05}
    assert all(p.ndim <= 1 for p in by_decay[0.0]) and all(p.ndim > 1 for p in by_decay[0.05])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(p.numel() for p in module.model.parameters())
    assert opt.defaults["betas"] == (0.9, 0.999) and type(opt).__name__ == "AdamW"
    assert opt.defaults["lr"] == pytest.approx(4e-3 * 8 / 4096)


def test_lr_follows_warmup_then_cosine_per_iteration(tmp_path):
    cfg, module = _module(["recipe.epochs=10", "recipe.warmup_epochs=2", "budget.epoch_scale=0.5", "data.train_size=32",
                           "budget.limit_train_batches=4"])
    recorder = RecordLR()
    _fit(module, cfg, tmp_path, epochs=5, batches=4, callbacks=[recorder])
    base = scaled_lr(cfg.recipe, 8)
    lr_min = base * cfg.recipe.lr_min / cfg.recipe.base_lr  # the floor keeps its ratio to the peak (1e-6 : 4e-3)
    total, warmup = 20, 4  # 5 epochs × 4 batches; warm-up 2/10 of the budget's epochs → 1 epoch
    expected = [base * t / warmup if t < warmup else
                lr_min + 0.5 * (base - lr_min) * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))
                for t in range(total)]
    assert recorder.lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_mixup_cutmix_and_label_smoothing_make_soft_targets():
    cfg, module = _module()
    assert (module.mixup.mixup_alpha, module.mixup.cutmix_alpha, module.mixup.label_smoothing) == (0.8, 1.0, 0.1)
    assert type(module.train_loss).__name__ == "SoftTargetCrossEntropy"
    np.random.seed(0)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8)
    mixed_x, soft = module.mixup(x.clone(), y)
    assert soft.shape == (8, 8) and torch.allclose(soft.sum(1), torch.ones(8))
    assert (soft.max(1).values < 0.95).all() and not torch.equal(mixed_x, x)


def test_recipe_model_knobs_drop_path_and_layer_scale():
    _, module = _module()
    blocks = [b for stage in module.model.stages for b in stage.blocks]
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in blocks]
    assert rates == pytest.approx(list(np.linspace(0, 0.1, len(blocks))))
    assert all(torch.all(b.gamma == 1e-6) for b in blocks)


def test_train_transform_is_the_papers():
    cfg, module = _module()
    steps = build_transform(cfg.recipe, cfg.data, is_training=True).transforms
    names = [type(t).__name__ for t in steps]
    assert names[:3] == ["RandomResizedCropAndInterpolation", "RandomHorizontalFlip", "RandAugment"], names
    crop, augment = steps[0], steps[2]
    assert crop.scale == (0.35, 1.0) and "bicubic" in repr(crop)  # the data's crop range, Table 5's interpolation
    assert augment.num_layers == 2 and {(op.magnitude, op.magnitude_std) for op in augment.ops} == {(9, 0.5)}
    assert type(steps[-1]).__name__ == "MaybePILToTensor"  # uint8 out of the workers; per-pixel work on the device
    batch = torch.full((64, 3, 8, 8), 128, dtype=torch.uint8)
    random.seed(0)
    boxes = [ErasingBox(cfg.recipe.re_prob)(8, 8) for _ in range(64)]
    erased, plain = module.prepare(batch, boxes), module.prepare(batch)
    assert torch.allclose(plain[:, 0], torch.tensor((128 - 0.485 * 255) / (0.229 * 255)))  # ImageNet mean/std
    changed = (erased != plain).flatten(1).any(1)  # random erasing, per image, p = 0.25, where its box says
    assert 0.1 < changed.float().mean() < 0.45 and changed.tolist() == [box[2] > 0 for box in boxes]
    assert torch.equal(module.prepare(batch, boxes), erased)  # the noise is the box's: the same in any batch


def test_ema_weights_differ_and_are_validated(tmp_path):
    cfg, module = _module(["recipe.ema.enabled=true", "recipe.ema.decay=0.5", "data.train_size=32",
                           "budget.limit_train_batches=3"])
    trainer = _fit(module, cfg, tmp_path, epochs=1, batches=3)
    raw = dict(module.model.named_parameters())
    ema = dict(module.ema.module.named_parameters())
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)
    assert all(not p.requires_grad for p in module.ema.parameters())
    # the logged EMA accuracy is the EMA model's accuracy on the validation set
    dm = trainer.datamodule
    logged = trainer.validate(module, datamodule=dm, verbose=False)[0]["val/top1_ema"]
    module.ema.module.eval()
    with torch.no_grad():
        hits = [(module.ema.module(module.prepare(b.images)).argmax(1) == b.labels).float() for b in dm.val_dataloader()]
    assert logged == pytest.approx(torch.cat(hits)[:16].mean().item() * 100, abs=1e-4)


def test_grad_clip_and_trainer_knobs_reach_the_trainer():
    cfg = compose_config("gelu", overrides=["recipe.grad_clip=1.0"])
    assert effective_run(cfg).trainer_arguments()["gradient_clip_val"] == 1.0
    gpu = compose_config("gelu", overrides=["trainer=gpu"])
    assert gpu.trainer.precision == "bf16-mixed" and gpu.channels_last is True
    ddp = compose_config("gelu", overrides=["trainer=ddp"])
    assert ddp.trainer.strategy == "ddp" and ddp.trainer.sync_batchnorm
    slurm = compose_config("gelu", overrides=["trainer=slurm"], as_run=True)
    assert "SlurmLauncher" in slurm.hydra.launcher._target_
    assert slurm.hydra.launcher.nodes == 4 and slurm.hydra.launcher.tasks_per_node == 8
    assert slurm.trainer.plugins[0].auto_requeue is False


def test_synthetic_data_is_deterministic_and_not_colour_separable():
    x1, y1 = generate_shapes(400, 32, seed=3)
    x2, y2 = generate_shapes(400, 32, seed=3)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert np.bincount(y1).tolist() == [50] * 8
    # a linear classifier on mean colour stays near chance (12.5%)
    xt, yt = generate_shapes(2000, 32, seed=4)
    xv, yv = generate_shapes(1000, 32, seed=5)
    feats = lambda x: torch.tensor(x.reshape(len(x), -1, 3).mean(1) / 255, dtype=torch.float32)
    clf = torch.nn.Linear(3, 8)
    opt = torch.optim.Adam(clf.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(clf(feats(xt)), torch.tensor(yt)).backward()
        opt.step()
    acc = (clf(feats(xv)).argmax(1).numpy() == yv).mean()
    assert acc < 0.20, acc


def _write_image_folder(root: Path, mode: str = "RGB"):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(8):
                arr = rng.integers(0, 255, (20, 20, 3 if mode == "RGB" else 1), dtype=np.uint8).squeeze()
                Image.fromarray(arr, mode=None).convert(mode).save(root / split / cls / f"{i}.png")
    return root


def test_imagefolder_trains_grayscale(tmp_path):
    root = _write_image_folder(tmp_path / "data", mode="L")
    cfg = tiny_run_config("bn_to_ln", tmp_path / "out", overrides=[
        "data=imagefolder", f"data.root={root}", "data.img_size=32", "data.num_classes=2"])
    result = train(cfg)
    assert result.status == "done" and result.data == "imagefolder"


def _write_idx(path: Path, array: np.ndarray):
    magic = {3: 0x0803, 1: 0x0801}[array.ndim]
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_fashion_mnist_from_local_root(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 32), ("t10k", 16)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    cfg = tiny_run_config("patchify_stem", tmp_path / "out", overrides=["data=fashion_mnist", f"data.root={tmp_path}"])
    assert train(cfg).status == "done"
    missing = compose_config("gelu", overrides=["data=cifar10", f"data.root={tmp_path}", "budget=smoke"])
    with pytest.raises(ConfigError, match=r"CIFAR10 not found under .*data.download=true"):
        RoadmapDataModule(missing.data, missing.recipe, 8, 0, seed=0).setup()


def test_synthetic_dataset_returns_pil_images():
    ds = SyntheticShapes(16, 32, seed=0)
    img, label = ds[0]
    assert img.size == (32, 32) and img.mode == "RGB" and 0 <= label < 8


@pytest.mark.parametrize("experiment", ["paper_in1k", "paper_in1k_1gpu", "gpu_proxy_imagenette", None])
def test_experiment_presets_compose(experiment):
    chosen = [f"+experiment={experiment}", "data.root=/data"] if experiment else []  # None: the default, cpu_proxy
    cfg = compose_config("gelu", overrides=chosen, as_run=True)
    if experiment and experiment.startswith("paper_in1k"):
        run = effective_run(cfg)
        assert run.epochs == 300 and cfg.recipe.ema.enabled is False
        assert run.effective_batch == 4096 and cfg.data.name == "imagefolder" and cfg.budget.proxy is False
        one_gpu = experiment.endswith("1gpu")
        assert ("SlurmLauncher" in cfg.hydra.launcher._target_) != one_gpu
        assert one_gpu or cfg.hydra.launcher.cpus_per_task == 11  # 10 loader workers and the training process
        assert (cfg.trainer.devices, cfg.trainer.precision, cfg.channels_last) == (1, "bf16-mixed", True) or not one_gpu
    if experiment is None:  # the short-budget proxy recipe (conf/recipe_budget/convnext_cpu_proxy.yaml)
        assert cfg.budget.name == "cpu_proxy" and cfg.recipe.mixup == 0 and cfg.recipe.auto_augment is None
        assert cfg.model.layer_scale_init == 0.1 and list(cfg.recipe.train_crop_scale) == [1.0, 1.0]
    else:  # Table 5's regularization as in recipe=convnext
        assert cfg.recipe.mixup == 0.8 and cfg.recipe.cutmix == 1.0 and cfg.recipe.auto_augment.startswith("rand-m9")
        assert cfg.model.layer_scale_init == 1e-6 and cfg.recipe.train_crop_scale[0] == 0.08


@pytest.mark.parametrize("preset,hardware", [("paper_in1k", ["trainer=cpu"]),
                                             ("paper_in1k_1gpu", ["trainer.accelerator=cpu"])])
def test_paper_preset_runs_a_few_batches_on_cpu(preset, hardware, tmp_path):
    """The paper presets end to end on CPU; the one-GPU preset keeps its bf16 autocast and accumulation."""
    root = _write_image_folder(tmp_path / "data")
    cfg = tiny_run_config("separate_downsampling", tmp_path / "out", overrides=[
        f"+experiment={preset}", *hardware, f"data.root={root}", "data.img_size=32", "data.num_classes=2",
        "budget.batch_size=4", "budget.num_workers=0", "budget.limit_train_batches=4", "budget.limit_val_batches=1",
        "budget.epoch_scale=0.001", *(["budget.accumulate_grad_batches=2"] if preset.endswith("1gpu") else [])])
    result = train(cfg)
    assert result.status == "done" and result.data == "imagefolder"


@pytest.mark.parametrize("preset, expected", [
    (None, "{root}/inductor"),                         # unset
    ("torch-default", "{root}/inductor"),              # torch wrote its own default on first use: moved
    ("/users/own/cache", "/users/own/cache"),          # the user's choice: kept
])
def test_compile_cache_goes_where_a_sweep_shares_it(preset, expected, tmp_path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from roadmap.run.module import use_compile_cache

    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    if preset is None:
        monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    else:
        monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR",
                           str(Path(default_cache_dir()).absolute()) if preset == "torch-default" else preset)
    use_compile_cache(tmp_path / "cache")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == expected.format(root=tmp_path.resolve() / "cache")
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path.resolve() / "cache" / "triton")


def test_a_warm_up_as_long_as_the_run_is_refused_before_training(tmp_path):
    """9 of 10 recipe epochs of warm-up, scaled to 1 epoch of 2 steps: round(1.8) = 2 warm-up steps, none left."""
    cfg = tiny_run_config("gelu", tmp_path, overrides=["recipe.epochs=10", "recipe.warmup_epochs=9",
                                                       "budget.epoch_scale=0.1"])
    with pytest.raises(ConfigError, match=r"the warm-up \(0.9 of 1 epochs\) takes 2 of the run's 2 optimizer steps"):
        train(cfg)
    assert not list(tmp_path.rglob("metrics.json"))
