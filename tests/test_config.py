"""The config architecture, by composition (no training unless said): each knob has one home and one merge
point, the paper-scale runs are the paper's, regimes and steps are YAML files only, bad values fail in one line."""
import dataclasses
import subprocess
import sys
from unittest import mock
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from analysis.roadmap import main as analysis_main
from roadmap import ConfigError, build_model, list_steps
from roadmap.config.effective import effective_run, scaled_lr, warmup_epochs, with_steps
from roadmap.config.files import CONF_DIR, CONFIG_PATH_ENV
from roadmap.config.steps import compose_config, instantiate_model
from roadmap.explain import explain
from roadmap.run.module import RoadmapModule
from roadmap.run.train import train
from tests.helpers import TINY_REGIME, tiny_run_config

REPO = Path(__file__).resolve().parent.parent
R50_STEPS = [s.name for s in list_steps("r50")]
BUDGETS = sorted(p.stem for p in (CONF_DIR / "budget").glob("*.yaml"))
PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
TABLE_10_ORDER = ["original_recipe", "modern_recipe", "stage_ratio", "patchify_stem", "depthwise_conv",
                  "increase_width", "inverted_bottleneck", "move_up_depthwise", "kernel_5", "kernel_7", "kernel_9",
                  "kernel_11", "gelu", "fewer_activations", "fewer_norms", "bn_to_ln", "separate_downsampling"]


def _raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) if path.exists() else {}


def _group_file(group: str, name: str) -> dict:
    """A group's file over the files of that group its defaults name (a recipe preset on Table 5), unresolved."""
    raw = _raw(CONF_DIR / group / f"{name}.yaml")
    merged = OmegaConf.create()
    for parent in [d for d in raw.pop("defaults", []) if d != "_self_"]:
        merged = OmegaConf.merge(merged, _group_file(group, parent))
    return OmegaConf.to_container(OmegaConf.merge(merged, raw), resolve=False)


def _expected_recipe(cfg) -> dict:
    """The recipe file (over its parents), then its specialisation for the budget
    (conf/recipe_budget/<recipe>_<budget>.yaml), only."""
    expected = {"name": cfg.recipe.name, **_group_file("recipe", cfg.recipe.name)}
    expected.update(_raw(CONF_DIR / "recipe_budget" / f"{cfg.recipe.name}_{cfg.budget.name}.yaml").get("recipe", {}))
    interpolated = lambda v: OmegaConf.select(cfg, v[2:-1]) if v.startswith("${") else v  # noqa: E731
    return {k: interpolated(v) if isinstance(v, str) else v for k, v in expected.items()}


# the family's experiments, on the members the paper gives each one's recipe for
FAMILY_PRESETS = {"paper_in22k": ["convnext_t", "convnext_s", "convnext_b", "convnext_l", "convnext_xl"],
                  "paper_finetune": ["convnext_b", "convnext_l", "convnext_xl"]}


# the steps where the recipe or the init changes, and the last
TURNS = ["original_recipe", "modern_recipe", "stage_ratio", "separate_downsampling"]


@pytest.mark.parametrize("choice", [f"budget={b}" for b in BUDGETS] + [f"+experiment={p}" for p in PRESETS])
def test_every_step_has_one_merge_point_per_knob(choice):
    """Every step under the default budget; under the other budgets and presets, the steps where what a budget or
    preset meets changes (a step file sets model knobs only, so the rest compose the same way)."""
    family = FAMILY_PRESETS.get(choice.partition("=")[2])
    for step in family or (R50_STEPS if choice == "budget=cpu_proxy" else TURNS):
        cfg = compose_config(step, "family" if family else "r50", [choice, "data.root=/data"])
        expected = _expected_recipe(cfg)
        assert set(cfg.recipe) == set(expected), (step, choice)
        for key, value in expected.items():
            assert cfg.recipe[key] == value, (step, choice, key)
        assert cfg.model.layer_scale_init == cfg.recipe.layer_scale_init  # the model reads the recipe's knobs
        assert cfg.model.drop_path_rate == cfg.recipe.drop_path_rate
        assert effective_run(cfg).epochs == max(1, round(cfg.recipe.epochs * cfg.budget.epoch_scale))
        assert list(cfg.data.train_crop_scale) == _group_file("data", cfg.data.name)["train_crop_scale"]
        assert cfg.model.init == ("torchvision" if step in ("original_recipe", "modern_recipe") else "convnext")
        assert cfg.recipe.validate == (choice != "+experiment=paper_in22k")


def _schedule(cfg, effective_batch=4096, steps_per_epoch=10):
    """The optimizer and scheduler RoadmapModule builds for this config at the given effective batch."""
    model = instantiate_model(cfg.model, num_classes=10)
    run = dataclasses.replace(effective_run(cfg), effective_batch=effective_batch,
                              peak_lr=scaled_lr(cfg.recipe, effective_batch),
                              warmup_epochs=warmup_epochs(cfg.recipe, effective_batch) * effective_run(cfg).epochs / cfg.recipe.epochs)
    module = RoadmapModule(model, cfg.recipe, num_classes=10, run=with_steps(run, cfg.recipe, steps_per_epoch))
    module.trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False)
    with mock.patch.object(L.Trainer, "estimated_stepping_batches", new_callable=mock.PropertyMock,
                           return_value=effective_run(cfg).epochs * steps_per_epoch):
        out = module.configure_optimizers()
    return out["optimizer"], out["lr_scheduler"]["scheduler"]


@pytest.mark.parametrize("paper", [["budget=paper"], ["+experiment=paper_in1k", "data.root=/data/imagenet"]])
def test_row_0_is_torchvisions_recipe_at_paper_scale(paper):
    cfg = compose_config("original_recipe", overrides=paper)
    assert effective_run(cfg).epochs == 90
    assert warmup_epochs(cfg.recipe, 4096) == 5 and warmup_epochs(cfg.recipe, 256) == 0  # Goyal et al. above 256
    assert scaled_lr(cfg.recipe, 4096) == pytest.approx(1.6)
    opt, sched = _schedule(cfg)
    assert type(opt).__name__ == "SGD" and opt.defaults["nesterov"] is False and opt.defaults["momentum"] == 0.9
    assert {g["weight_decay"] for g in opt.param_groups} == {1e-4}
    assert sched.warmup_t == 5 * 10 and sched.decay_t == 30 * 10 and sched.decay_rate == 0.1
    assert cfg.model.init == "torchvision" and cfg.model.layer_scale_init is None and cfg.model.drop_path_rate == 0
    assert (cfg.recipe.mixup, cfg.recipe.cutmix, cfg.recipe.auto_augment, cfg.recipe.re_prob) == (0, 0, None, 0)


@pytest.mark.parametrize("regime,drop_path", [("r50", 0.1), ("r200", 0.5)])
def test_convnext_is_table_5_at_paper_scale(regime, drop_path):
    cfg = compose_config("separate_downsampling", regime, ["+experiment=paper_in1k", "data.root=/data/imagenet"])
    assert effective_run(cfg).epochs == 300
    assert cfg.budget.batch_size * cfg.trainer.devices * cfg.trainer.num_nodes == 4096
    opt, sched = _schedule(cfg)
    assert type(opt).__name__ == "AdamW" and opt.defaults["lr"] == pytest.approx(4e-3)
    assert sched.warmup_t == 20 * 10 and type(sched).__name__ == "CosineLRScheduler"
    r = cfg.recipe
    assert (r.auto_augment, r.mixup, r.cutmix, r.re_prob, r.label_smoothing) == ("rand-m9-mstd0.5-inc1", 0.8, 1.0, 0.25, 0.1)
    assert list(cfg.recipe.train_crop_scale) == [0.08, 1.0] and cfg.data.crop_pct == 0.875
    assert cfg.model.layer_scale_init == 1e-6 and cfg.model.drop_path_rate == drop_path and not r.ema.enabled


def test_proxy_budget_changes_only_table_5():
    original = compose_config("original_recipe")  # default budget: cpu_proxy
    assert dict(original.recipe) == _raw(CONF_DIR / "recipe" / "resnet_original.yaml") | {
        "name": "resnet_original", "optimizer": original.recipe.optimizer, "ema": original.recipe.ema,
        "train_crop_scale": original.recipe.train_crop_scale}
    assert list(original.recipe.train_crop_scale) == [0.35, 1.0] and effective_run(original).epochs == 2  # 90 / 60
    modern = compose_config("modern_recipe")
    assert (modern.recipe.base_batch, modern.recipe.mixup, modern.model.layer_scale_init) == (1024, 0.0, 0.1)
    assert list(modern.recipe.train_crop_scale) == [1.0, 1.0] and effective_run(modern).epochs == 5
    assert list(modern.data.train_crop_scale) == [0.35, 1.0]  # the data's own range stays the data's


def test_trainer_files_hold_hardware_and_switches_one_level_deep():
    for path in sorted((CONF_DIR / "trainer").glob("*.yaml")):
        raw = _raw(path)
        assert not set(raw) & {"max_epochs", "gradient_clip_val", "accumulate_grad_batches", "limit_train_batches",
                               "limit_val_batches", "trainer", "run", "channels_last"}, path.name
        assert path.stem == "default" or raw["defaults"][0] == "default", path.name  # one level over the default
    for trainer, on_gpu in (("cpu", False), ("gpu", True), ("ddp", True), ("slurm", True)):
        cfg = compose_config("gelu", overrides=[f"trainer={trainer}"], as_run=True)
        assert cfg.channels_last is on_gpu and (cfg.trainer.precision == "bf16-mixed") is on_gpu
    with pytest.raises(ConfigError, match=r"^trainer.max_epochs is set by the effective run .*budget.epoch_scale"):
        compose_config("gelu", overrides=["+trainer.max_epochs=3"])


def test_step_parents_follow_the_roadmap():
    for regime in ("r50", "r200"):
        steps = list_steps(regime)
        assert [s.name for s in steps] == TABLE_10_ORDER
        adopted = [s for s in steps if s.adopted]
        assert adopted[0].parent is None
        assert all(b.parent == a.name for a, b in zip(adopted, adopted[1:]))  # each adopted step on the previous
        order = [s.name for s in steps]
        for branch in (s for s in steps if not s.adopted):  # branches hang off an adopted step, after it
            parent = next(s for s in steps if s.name == branch.parent)
            assert parent.adopted and order.index(parent.name) < order.index(branch.name)
    assert [s.name for s in list_steps("r50") if not s.adopted] == ["kernel_5", "kernel_9", "kernel_11"]
    assert list_steps("r200")[2].change == "stage ratio [3, 24, 36, 3] → [3, 3, 27, 3], stage-1 width 84"




@pytest.fixture
def user_conf(tmp_path, monkeypatch):
    """A config folder of the user's own on $ROADMAP_CONFIG_PATH (regime/ and step/)."""
    folder = tmp_path / "myconf"
    (folder / "regime").mkdir(parents=True)
    (folder / "step").mkdir()
    monkeypatch.setenv(CONFIG_PATH_ENV, str(folder))
    return folder


def test_new_regime_is_one_yaml_file(user_conf, tmp_path):
    (user_conf / "regime" / "tiny.yaml").write_text(TINY_REGIME)
    steps = list_steps("tiny")
    assert [s.name for s in steps] == TABLE_10_ORDER and steps[0].change == "ResNet-26, original torchvision recipe"
    assert all(s.paper_top1 is None and s.paper_gflops is None for s in steps)
    profile = subprocess.run([sys.executable, "-m", "roadmap.profile", "--regime", "tiny", "--format", "csv"],
                             cwd=REPO, capture_output=True, text=True)
    assert profile.returncode == 0, profile.stderr[-2000:]
    lines = profile.stdout.strip().splitlines()
    assert len(lines) == 1 + len(TABLE_10_ORDER) and lines[-1].startswith("separate_downsampling,")
    assert lines[-1].endswith(",,")  # blank paper GFLOPs and top-1
    result = train(tiny_run_config("separate_downsampling", tmp_path / "out", regime="tiny"))
    assert result.status == "done" and result.regime == "tiny"
    analysis_main([str(tmp_path / "out"), "--regime", "tiny"])
    out_dir = Path(result.run_dir).parents[2] / "tiny"
    table = (out_dir / "roadmap.csv").read_text().splitlines()
    assert len(table) == 1 + len(TABLE_10_ORDER)
    assert (out_dir / "roadmap.png").stat().st_size > 0


def test_custom_step_from_a_yaml_file_alone(user_conf, tmp_path):
    (user_conf / "step" / "silu_groupnorm.yaml").write_text(
        "# @package _global_\n# My step: SiLU and GroupNorm on top of kernel_7.\ndefaults: [kernel_7, _self_]\n"
        "lineage:\n  silu_groupnorm: {change: \"SiLU + GroupNorm\"}\nmodel:\n  act: silu\n  norm: group\n")
    info = next(s for s in list_steps("r50") if s.name == "silu_groupnorm")
    assert info.parent == "kernel_7" and info.change == "SiLU + GroupNorm" and info.paper_top1 is None
    model = build_model("silu_groupnorm")
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"SiLU", "GroupNorm"} <= kinds and not {"ReLU", "BatchNorm2d"} & kinds
    result = train(tiny_run_config("silu_groupnorm", tmp_path / "out"))
    assert result.status == "done" and result.final["top1"] is not None


def test_bad_values_through_the_python_api():
    with pytest.raises(ConfigError, match=r"^recipe.label_smoothing=1.5: must be in \[0, 1\)$"):
        compose_config("gelu", overrides=["recipe.label_smoothing=1.5"])
    with pytest.raises(ConfigError, match=r"^data.train_crop_scale=\[0.9, 0.1\]: must be \[min, max\]"):
        compose_config("gelu", overrides=["data.train_crop_scale=[0.9,0.1]"])


def test_explain_marks_what_differs_from_the_paper_and_who_set_it():
    paper = explain(["+experiment=paper_in1k", "+step=original_recipe", "data.root=/data/imagenet"])
    rows = paper.splitlines()
    assert any(r.startswith("  epochs") and " 90 " in r for r in rows)
    assert any(r.startswith("  optimizer") and "no Nesterov" in r for r in rows)
    assert any(r.startswith("  warm-up") and "5 epochs" in r for r in rows)
    # the paper's run differs from itself in its precision only: the presets' bf16, the official commands' fp32
    assert [r.split()[1] for r in rows[3:] if r.startswith("*")] == ["precision"]
    proxy = explain(["+step=inverted_bottleneck", "recipe.re_prob=0.5"]).splitlines()
    marked = {r[2:18].strip(): proxy[i + 1] for i, r in enumerate(proxy) if r.startswith("* ") and i > 2}
    assert "conf/recipe_budget/convnext_cpu_proxy.yaml" in marked["mixup / cutmix"]
    assert "conf/recipe_budget/convnext_cpu_proxy.yaml" in marked["layer scale"]  # through model's interpolation
    assert "conf/budget/cpu_proxy.yaml" in marked["epochs"]
    assert "command line (recipe.re_prob=0.5)" in marked["random erasing"]
    assert "drop path" not in marked and "optimizer" not in marked


def test_saved_config_is_the_model_that_trained(tmp_path):
    cfg = tiny_run_config("separate_downsampling", tmp_path, overrides=["budget=paper", "budget.batch_size=8",
                          "budget.epoch_scale=0.001", "budget.num_workers=0", "budget.limit_train_batches=1",
                          "budget.limit_val_batches=1"])
    run_dir = Path(train(cfg).run_dir)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["layer_scale_init"] == 1e-6 and saved["model"]["drop_path_rate"] == 0.1
    assert saved["model"]["num_classes"] == 8
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    rebuilt = instantiate_model(saved["model"])
    rebuilt.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()})


def test_synchronized_batchnorm_only_where_cuda_is():
    assert compose_config("gelu", overrides=["trainer=ddp"]).trainer.sync_batchnorm is True  # accelerator=gpu
    assert compose_config("gelu", overrides=["trainer=slurm", "trainer.accelerator=cpu"]).trainer.sync_batchnorm is False
