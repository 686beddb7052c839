"""A run's lifecycle: its identity (folder) is its config, exact resume after a hard kill or a preemption,
real failures recorded, wandb continuity, EMA on optimizer steps, checkpoints and exported weights,
evaluation without training and starting from weights."""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
from PIL import Image

from analysis.roadmap import load_runs, roadmap_table
from roadmap import ConfigError, build_model
from roadmap.config.effective import effective_run
from roadmap.config.identity import identity
from roadmap.config.steps import compose_config, instantiate_model
from roadmap.data.datamodule import RoadmapDataModule
from roadmap.errors import Stopped
from roadmap.models import depthwise, weights
from roadmap.models.key_maps import to_reference_state_dict
from roadmap.run import plan, record
from roadmap.run.evaluate import evaluate
from roadmap.run.module import RoadmapModule
from roadmap.run.record import RunRecord
from roadmap.run.train import train
from roadmap.utils import files
from tests.helpers import TINY, TINY_SYNTHETIC, assert_same_weights_and_history, one_each, tiny_run_config

pytestmark = pytest.mark.slow  # trains through run.py subprocesses (make test-fast leaves these out)
REPO = Path(__file__).resolve().parent.parent
RESUMABLE = [sys.executable, "run.py", "+step=separate_downsampling", "regime=tiny", "budget=smoke", "logger=csv",
             "budget.epoch_scale=0.01", "budget.limit_train_batches=4", "budget.limit_val_batches=2",
             "budget.num_workers=1", "data.train_size=64", "data.val_size=16", "run.export_weights=false",
             "trainer.enable_progress_bar=false"]  # 3 epochs × 4 batches of the narrow regime (tests.helpers.TINY_REGIME)


TINY_CLI = [*TINY, *TINY_SYNTHETIC]  # tiny_run_config's overrides, on run.py's command line


def _run(root, *extra, env=None):
    return subprocess.run([*RESUMABLE[:2], *one_each(*RESUMABLE[2:], f"run.root={root}", *extra)], cwd=REPO,
                          capture_output=True, text=True, env=env)


def _store_with_other_paths(folder: Path) -> dict[str, str]:
    """The environment of a process whose depthwise store is this session's with every case that had a correct
    runner-up switched to it: what another machine, or a retune, may have stored."""
    store = json.loads(depthwise.cache_file().read_text())  # tests/conftest.py's ROADMAP_CACHE_DIR
    switched = 0
    for entry in store.values():
        others = [path for path in entry["ms"] if path != entry["path"]]
        if others:
            entry["path"], switched = others[0], switched + 1
    assert switched
    folder.mkdir()
    (folder / "depthwise.json").write_text(json.dumps(store))
    return {**os.environ, "ROADMAP_CACHE_DIR": str(folder)}


def _depthwise_paths(run_dir: Path) -> dict[str, str]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["depthwise_paths"]


def _run_dir(root) -> Path:
    (run_dir,) = Path(root).glob("*/tiny/separate_downsampling/seed0")
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted(tiny_regime, tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    proc = _run(root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _run_dir(root)


def _assert_same_run(resumed: Path, uninterrupted: Path):
    a, b = RunRecord.read(uninterrupted), RunRecord.read(resumed)
    assert b.status == "done" and b.epochs == a.epochs == 3
    assert_same_weights_and_history(resumed, uninterrupted)


def test_mid_epoch_checkpoint_resumes_exactly_after_a_hard_kill(uninterrupted, tmp_path):
    """``run.checkpoint_every_n_steps=2``, SIGKILL at step 7 (epoch 2, batch 3): the run resumes from step 6's
    checkpoint, its progress lines (not a terminal) know the epoch's length, Lightning does not call the loader unresumable, and
    it ends with the uninterrupted run's weights, on the depthwise paths its checkpoint kept, though the
    resuming process's store holds other choices."""
    every = ["run.checkpoint_every_n_steps=2"]
    killed = _run(tmp_path, *every, "+callbacks.kill._target_=tests.helpers.KillAfterSteps", "+callbacks.kill.steps=7")
    assert killed.returncode == -9
    run_dir = _run_dir(tmp_path)
    assert RunRecord.read(run_dir).status == "running"
    assert [row["epoch"] for row in RunRecord.read(run_dir).history] == [1]  # written at epoch 1's end
    assert "epoch 1/3 validation | top-1 " in killed.stdout and "| loss " in killed.stdout
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 6  # mid-epoch: 4 steps an epoch
    resumed = _run(tmp_path, *every, "trainer.enable_progress_bar=true",
                   env=_store_with_other_paths(tmp_path / "other-store"))
    assert resumed.returncode == 0 and "resuming from" in resumed.stdout, resumed.stderr[-2000:]
    assert _depthwise_paths(run_dir) == _depthwise_paths(uninterrupted)
    bars = [line for line in resumed.stdout.splitlines() if line.startswith("epoch 2/3 step ")]  # not a TTY: lines
    assert "\r" not in resumed.stdout and bars and all("/4 (" in line and "img/s | data wait " in line and "% | ETA " in line for line in bars), bars
    assert len(bars) <= 2  # step 7 starts the resumed run's measurement; 8 ends the epoch
    assert "not resumable" not in resumed.stderr
    _assert_same_run(run_dir, uninterrupted)


def test_a_death_mid_save_leaves_a_checkpoint_to_resume_from(uninterrupted, tmp_path):
    """SIGKILL halfway through writing step 6's checkpoint: ``last.ckpt`` is still step 4's. With it truncated too
    (a disk that lost it), the run resumes from ``previous.ckpt``, and ends with the uninterrupted run's weights."""
    every = ["run.checkpoint_every_n_steps=2"]
    killed = _run(tmp_path, *every, "+callbacks.die._target_=tests.helpers.DieDuringSave", "+callbacks.die.step=6")
    assert killed.returncode == -9
    checkpoints = _run_dir(tmp_path) / "checkpoints"
    (half,) = checkpoints.glob(".last.*.tmp.ckpt")  # the save that died, beside the checkpoint
    assert half.stat().st_size > 0
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 4
    with open(checkpoints / "last.ckpt", "r+b") as f:
        f.truncate(os.path.getsize(checkpoints / "last.ckpt") // 2)
    resumed = _run(tmp_path, *every)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "checkpoints/last.ckpt is unreadable" in resumed.stdout and "resuming from" in resumed.stdout
    assert not half.exists() and not (checkpoints / "previous.ckpt").exists()  # removed: the run is done
    _assert_same_run(_run_dir(tmp_path), uninterrupted)


@pytest.mark.parametrize("name,status,at_step,saved_step", [
    # the next step is an epoch's last: its validation runs, then the run stops at the next (mid-epoch) step;
    # SIGTERM → cancelled is the cluster tests' scancel (tests/test_cluster.py)
    ("SIGUSR2", "preempted", 3, 5),
])
def test_stop_signal_checkpoints_and_the_same_command_resumes_exactly(uninterrupted, tmp_path, name, status,
                                                                     at_step, saved_step):
    """A scheduler's warning (SIGUSR2, as submitit asks for it) or a plain stop (SIGTERM outside SLURM) after
    optimizer step ``at_step`` (4 an epoch): the run saves last.ckpt, says what stopped it and exits 3; the same
    command resumes and ends with the uninterrupted run's weights and every epoch's validation."""
    signalled = ["+callbacks.preempt._target_=tests.helpers.SignalAtStep", f"+callbacks.preempt.step={at_step}",
                 f"+callbacks.preempt.name={name}"]
    first = _run(tmp_path, *signalled)
    assert first.returncode == 3, first.stderr[-2000:]
    assert f"{status}: signal {name}" in first.stderr and "Traceback" not in first.stderr
    run_dir = _run_dir(tmp_path)
    stopped = RunRecord.read(run_dir)
    assert stopped.status == status and len(stopped.history) == 1
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == saved_step
    again = _run(tmp_path, *signalled)
    assert again.returncode == 0 and "resuming from" in again.stdout, again.stderr[-2000:]
    _assert_same_run(run_dir, uninterrupted)


def test_preemption_hands_the_signal_on_and_wandb_continues_its_run(tmp_path, monkeypatch):
    """In-process: a handler installed before the run (submitit's requeue) is called after the checkpoint;
    the resumed run logs to the same wandb run (offline), whose config is the run's."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    overrides = ["logger=default", "budget.limit_train_batches=4", "budget.limit_val_batches=1"]
    try:
        with pytest.raises(Stopped):
            train(tiny_run_config("gelu", tmp_path, overrides=[
                *overrides, "+callbacks.preempt._target_=tests.helpers.SignalAtStep", "+callbacks.preempt.step=1"]))
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert calls == [signal.SIGUSR2]
    (run_dir,) = tmp_path.glob("*/r50/gelu/seed0")
    assert RunRecord.read(run_dir).status == "preempted"
    run_id = (run_dir / "wandb_id").read_text().strip()
    result = train(tiny_run_config("gelu", tmp_path, overrides=overrides))
    assert result.status == "done" and (run_dir / "wandb_id").read_text().strip() == run_id
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(f"-{run_id}") for r in runs)  # one wandb run, two attempts
    logged = (runs[-1] / f"run-{run_id}.wandb").read_bytes()  # wandb's offline log: the config items as JSON
    assert all(key in logged for key in (b"base_lr", b"layer_scale_init", b"epoch_scale", b"lineage"))
    assert f"{Path(result.run_dir).parts[-4]}/r50".encode() in logged  # the wandb group: the sweep


def test_a_run_is_resolved_once_and_a_resume_reads_its_checkpoint_once(tmp_path, monkeypatch):
    """The Hydra callback's plan is the one training uses (one refusal pass per process), and a resumed run reads its
    checkpoint once before Lightning restores it; a second run in the same process resolves its own plan."""
    cfg = tiny_run_config("gelu", tmp_path)
    plan.ResolveBeforeRun().on_run_start(cfg)
    finished = train(cfg)
    record.RunRecord.read(Path(finished.run_dir)).with_status("preempted", None, finished.history, 1.0).write(
        Path(finished.run_dir))  # as if stopped after its last checkpoint
    resolved, events = [], []
    real_resolve, real_load, real_fit = plan.resolve_run, torch.load, L.Trainer.fit
    monkeypatch.setattr(plan, "resolve_run", lambda c: resolved.append(1) or real_resolve(c))
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: events.append(("load", Path(str(f)).name)) or real_load(f, *a, **k))
    monkeypatch.setattr(L.Trainer, "fit", lambda *a, **k: events.append(("fit", None)) or real_fit(*a, **k))
    plan.ResolveBeforeRun().on_run_start(cfg)
    resumed = train(cfg)
    assert resumed.status == "done" and len(resolved) == 1
    before_fit = events[:events.index(("fit", None))]
    assert before_fit.count(("load", "last.ckpt")) == 1, events
    train(cfg)  # already done: resolved again, not the earlier plan
    assert len(resolved) == 2


def test_real_failure_is_recorded_as_failed(tmp_path):
    cfg = tiny_run_config("gelu", tmp_path, overrides=["+callbacks.fail._target_=tests.helpers.FailOnStep",
                                                       "+callbacks.fail.step=gelu"])
    with pytest.raises(RuntimeError, match="forced failure"):
        train(cfg)
    (run_dir,) = tmp_path.glob("*/r50/gelu/seed0")
    failed = RunRecord.read(run_dir)
    assert failed.status == "failed" and failed.error == "RuntimeError: forced failure of gelu"


def test_overrides_get_their_own_run_and_a_changed_config_is_refused(tmp_path):
    base = train(tiny_run_config("gelu", tmp_path))
    tuned = train(tiny_run_config("gelu", tmp_path, overrides=["recipe.base_lr=0.5", "model.kernel_size=9"]))
    assert base.status == tuned.status == "done" and base.run_dir != tuned.run_dir
    assert Path(tuned.run_dir).parts[-4].endswith("+data.train_size@32+data.val_size@16+model.kernel_size@9"
                                                     "+recipe.base_lr@0.5")
    groups = load_runs(tmp_path).groupby("group")
    assert len(groups) == 2  # two groups, each with one seed: never averaged together
    assert all(roadmap_table(runs, "r50").set_index("step").loc["gelu", "n_seeds"] == 1 for _, runs in groups)
    with pytest.raises(ConfigError) as refused:  # the first run's folder asked for with another config
        train(tiny_run_config("gelu", tmp_path, overrides=[f"run.dir={base.run_dir}", "recipe.base_lr=0.5"]))
    message = str(refused.value)
    assert "\n" not in message and "holds a run of another config (recipe.base_lr: 0.004 → 0.5)" in message
    forced = train(tiny_run_config("gelu", tmp_path, overrides=[f"run.dir={base.run_dir}", "recipe.base_lr=0.5",
                                                                "run.force=true"]))
    assert forced.status == "done"


def test_ema_follows_optimizer_steps_under_accumulation(tmp_path):
    cfg = compose_config("separate_downsampling", overrides=["budget=smoke", "recipe.ema.enabled=true",
                                                             "data.train_size=64", "depthwise=native"])
    cfg.budget.accumulate_grad_batches, cfg.budget.limit_train_batches = 4, 8
    module = RoadmapModule(instantiate_model(cfg.model, num_classes=8), cfg.recipe, num_classes=8,
                           run=effective_run(cfg, train_size=64))
    steps = []
    update = module.ema.update
    module.ema.update = lambda model, step=None: (steps.append(step), update(model, step=step))
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=8, limit_val_batches=0,
                        accumulate_grad_batches=4, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, use_distributed_sampler=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=RoadmapDataModule(cfg.data, cfg.recipe, 8, 0, seed=0))
    assert trainer.global_step == 2 and steps == [1, 2]  # 8 micro-batches, 2 optimizer steps, 2 EMA updates


def _image_folder(root: Path, classes: int) -> Path:
    for split in ("train", "val"):
        for c in range(classes):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 40), (30 * c, 7 * i, 90)).save(root / split / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """ConvNeXt-T (the end step) trained for a few batches with EMA on and weights exported."""
    root = tmp_path_factory.mktemp("trained")
    result = train(tiny_run_config("separate_downsampling", root, overrides=[
        "run.export_weights=true", "recipe.ema.enabled=true", "recipe.ema.decay=0.5", "budget.limit_val_batches=2"]))
    return result, Path(result.run_dir)


def test_checkpoints_and_exported_weights(trained):
    result, run_dir = trained
    assert result.checkpoints == {"last": "checkpoints/last.ckpt", "best": "checkpoints/best.ckpt"}
    assert set(result.weights) == {"final", "best", "ema"} and result.best["metric"] == "val/top1_ema"
    # one epoch: the best EMA weights are the final EMA weights, written once and named twice
    assert result.weights["best"] == "weights/ema.safetensors" and not (run_dir / "weights" / "best.safetensors").exists()
    modes = {p.name: p.stat().st_mode & 0o777 for p in [*run_dir.glob("weights/*"), *run_dir.glob("checkpoints/*")]}
    assert set(modes.values()) == {0o666 & ~files._UMASK}, modes  # as open() makes a file (0644 under umask 022)
    ema = weights.read_state_dict(run_dir / "weights" / "ema.safetensors")
    assert all(torch.equal(ema[k], v) for k, v in weights.read_state_dict(run_dir / "checkpoints" / "last.ckpt", "ema").items())
    model = build_model("separate_downsampling", num_classes=8)
    model.load_state_dict(weights.read_state_dict(run_dir / "weights" / "final.safetensors"))  # strict
    reference = timm.create_model("convnext_tiny", num_classes=8)
    reference.load_state_dict(to_reference_state_dict(ema, reference))  # and into timm's model, strictly
    x = torch.randn(2, 3, 32, 32)
    model.load_state_dict(ema)
    assert torch.allclose(model.eval()(x), reference.eval()(x), atol=1e-5)


def test_eval_mode_reproduces_the_recorded_top1_and_runs_on_other_data(trained, tmp_path):
    result, run_dir = trained
    evaluated = evaluate(tiny_run_config("separate_downsampling", tmp_path, overrides=[
        "mode=eval", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", "budget.limit_val_batches=2"]))
    assert evaluated["top1"] == pytest.approx(result.final["top1"], abs=1e-3)
    assert evaluated["top1_ema"] == pytest.approx(result.final["top1_ema"], abs=1e-3)
    recorded = RunRecord.read(run_dir).evaluations[-1]
    assert recorded["top1"] == evaluated["top1"]
    assert (recorded["step"], recorded["regime"]) == ("separate_downsampling", result.regime)  # what it evaluated
    assert recorded["sha256"] == hashlib.sha256((run_dir / "checkpoints" / "last.ckpt").read_bytes()).hexdigest()
    other = _image_folder(tmp_path / "folder", classes=8)  # another data set with the same 8 classes
    on_other = evaluate(tiny_run_config("separate_downsampling", tmp_path, overrides=[
        "mode=eval", f"ckpt={run_dir / result.weights['best']}", "data=imagefolder", f"data.root={other}",
        "data.num_classes=8", "data.img_size=32"]))
    assert on_other["images"] == 16 and 0 <= on_other["top1"] <= 100 and "top1_ema" not in on_other


def test_init_from_a_checkpoint_and_from_timm(trained, tmp_path):
    _, run_dir = trained
    started = build_model("separate_downsampling", num_classes=10, init_from=str(run_dir / "checkpoints" / "last.ckpt"))
    trained_sd = weights.read_state_dict(run_dir / "checkpoints" / "last.ckpt")
    own = started.state_dict()
    assert all(torch.equal(own[k], v) for k, v in trained_sd.items() if not k.startswith("fc."))
    assert own["fc.weight"].shape[0] == 10  # a new head for 10 classes: fine-tuning
    reference = timm.create_model("convnext_tiny")
    torch.save(reference.state_dict(), tmp_path / "convnext_tiny.pth")
    model = build_model("separate_downsampling", overrides=[f"model.init_from=timm:{tmp_path / 'convnext_tiny.pth'}"])
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(model.eval()(x), reference.eval()(x), atol=1e-5)


@pytest.mark.parametrize("step,source,message", [
    ("separate_downsampling", "/no/such/weights.pth", "no weights file /no/such/weights.pth"),
    ("gelu", "timm:/unused.pth", "no timm model has this step's architecture"),
    ("original_recipe", "TRAINED", "do not fit this model (depths 3-4-6-3, stem width 64: missing: ['"),
])
def test_weights_that_are_missing_or_do_not_fit_are_one_line(step, source, message, trained):
    source = source.replace("TRAINED", str(trained[1] / "weights" / "final.safetensors"))
    with pytest.raises(ConfigError) as err:
        build_model(step, num_classes=8, init_from=source)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("override", ["trainer.precision=bf16-mixed", "recipe.grad_clip=0.5", "budget.epoch_scale=0.01",
                                      "budget.limit_train_batches=3", "budget.limit_val_batches=3"])
def test_an_override_that_changes_the_effective_run_gets_its_own_folder(tmp_path, override):
    plain = tiny_run_config("gelu", tmp_path)
    plain_dir, plain_identity = plain.run.dir, identity(plain)  # resolved while its Hydra config is current
    other = tiny_run_config("gelu", tmp_path, overrides=[override])
    assert other.run.dir != plain_dir and override.replace("=", "@") in Path(other.run.dir).parts[-4]
    assert identity(other) != plain_identity


def test_the_effective_batch_is_the_identity_and_the_layout_is_free(tmp_path):
    """Devices, nodes and accumulation are the hardware layout: the same folder. Their product is the effective
    batch: a different one is refused in one line before anything starts (no DDP launch, no record)."""
    base = train(tiny_run_config("gelu", tmp_path))
    for layout in (["trainer.devices=3"], ["budget.accumulate_grad_batches=2"]):
        cfg = tiny_run_config("gelu", tmp_path, overrides=layout)
        assert cfg.run.dir == base.run_dir
        with pytest.raises(ConfigError) as refused:
            train(cfg)
        assert "\n" not in str(refused.value) and "effective_batch: 8 → " in str(refused.value)
        assert "their product may not" in str(refused.value)
    assert RunRecord.read(Path(base.run_dir)).status == "done"
    paper = ["+experiment=paper_in1k", "data.root=/data/imagenet"]  # 4 nodes × 8 GPUs × 128
    one_gpu = [*paper, "trainer.devices=1", "trainer.num_nodes=1", "budget.accumulate_grad_batches=32"]
    a = compose_config("gelu", overrides=paper, as_run=True)
    a_dir, a_identity = a.run.dir, identity(a)
    b = compose_config("gelu", overrides=one_gpu, as_run=True)
    assert b.run.dir == a_dir and identity(b) == a_identity and a_identity["effective.effective_batch"] == 4096


@pytest.mark.parametrize("overrides,message", [
    (["+trainer.max_epochs=2"], "trainer.max_epochs is set by the effective run from the recipe and budget"),
    (["budget.epoch_scale=0"], "budget.epoch_scale=0.0: must be > 0"),
    (["budget.batch_size=7"], "budget.batch_size=7: mixup/cutmix pair the images of a batch"),
    (["data=imagefolder", "data.root=/no/such/data", "data.num_classes=8"], "data.root '/no/such/data' does not exist"),
    (["trainer.precision=17"], "trainer.precision=17: Lightning refuses it (Precision 17 is invalid"),
    pytest.param(["trainer.accelerator=gpu"], "trainer.accelerator=gpu but no CUDA device is visible",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")),
])
def test_a_run_refused_at_start_leaves_no_record(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(tiny_run_config("separate_downsampling", tmp_path, overrides=overrides))
    assert not list(tmp_path.rglob(record.RESULT_FILE))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_all_visible_devices_without_cuda_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer.devices=-1 \(all visible\) but no CUDA device is visible"):
        train(tiny_run_config("gelu", tmp_path, overrides=["trainer=ddp"]))
    assert not list(tmp_path.rglob(record.RESULT_FILE))


def test_a_mid_epoch_position_is_in_samples_and_moves_to_another_layout():
    """Saved by 2 processes at batch 4 after 3 batches: 24 samples, 3 batches at 1 × 8, 6 at 1 × 4 (its loop
    counters follow); a layout whose batches do not divide the position is refused in one line."""
    cfg = compose_config("gelu", overrides=["budget=smoke"])
    saved = {"resume_epoch": 1, "resume_samples": 24, "batch_size": 4, "world_size": 2}
    for batch, batches in ((8, 3), (4, 6)):
        datamodule = RoadmapDataModule(cfg.data, cfg.recipe, batch, 0, seed=0)
        datamodule.trainer = L.Trainer(accelerator="cpu", devices=1, logger=False)
        datamodule.load_state_dict(saved)
        assert (datamodule.resume_epoch, datamodule.resume_batch) == (1, batches)
        counts = {"ready": 3, "started": 3, "processed": 3, "completed": 2}
        progress = {"current": dict(counts), "total": {k: v + 8 for k, v in counts.items()}}
        datamodule.relayout_loop({"RoadmapDataModule": saved, "loops": {"fit_loop": {"epoch_loop.batch_progress": progress}}})
        assert progress["current"] == {"ready": batches, "started": batches, "processed": batches, "completed": batches - 1}
        assert progress["total"]["processed"] == batches + 8
    datamodule = RoadmapDataModule(cfg.data, cfg.recipe, 16, 0, seed=0)
    datamodule.trainer = L.Trainer(accelerator="cpu", devices=1, logger=False)
    with pytest.raises(ConfigError, match="saved 24 samples into epoch 1, not a whole number of this run's batches of "
                                          "16 × 1 processes") as refused:
        datamodule.load_state_dict(saved)
    assert "\n" not in str(refused.value)


def test_a_moved_finished_run_is_not_retrained_and_says_where_it_is_now(tmp_path, capsys):
    import shutil

    first = train(tiny_run_config("gelu", tmp_path / "before"))
    shutil.move(tmp_path / "before", tmp_path / "after")
    again = train(tiny_run_config("gelu", tmp_path / "after"))
    printed = capsys.readouterr().out
    moved = Path(first.run_dir.replace(str(tmp_path / "before"), str(tmp_path / "after")))
    assert "already done, not retraining" in printed and f"results: {moved}" in printed
    assert Path(again.run_dir) == moved and again.final == first.final
