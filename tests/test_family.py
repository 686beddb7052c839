"""The ConvNeXt family (regime=family): each member is timm's model, its params and GFLOPs are the paper's at 224²
and 384², the recipe presets are the paper's and TRAINING.md's values, layer-wise lr decay groups as the official
code, and a pre-training run without validation hands its weights to a fine-tuning run that resumes exactly."""
import csv
from pathlib import Path

import pytest
import timm
import torch

from roadmap import ConfigError, build_model, list_steps
from roadmap.config.effective import effective_run
from roadmap.config.identity import run_variant
from roadmap.config.recipe import HEAD_LAYER, convnext_layer
from roadmap.config.steps import compose_config, instantiate_model
from roadmap.explain import explain
from roadmap.fake_imagenet import write_jpegs
from roadmap.models.key_maps import convert_reference_state_dict, load_reference_weights
from roadmap.models.shapes import count_gflops, count_params_m
from roadmap.run.module import RoadmapModule
from roadmap.run.record import RunRecord
from roadmap.sweep import finished_weights
from roadmap.utils import files
from tests.helpers import assert_same_weights_and_history, one_each, run_commands

MEMBERS = {"convnext_t": "convnext_tiny", "convnext_s": "convnext_small", "convnext_b": "convnext_base",
           "convnext_l": "convnext_large", "convnext_xl": "convnext_xlarge"}
# params (M) and GFLOPs as the paper prints them: Table 1 at 224²; at 384² the seed's table (B, L) and the official
# README (T from its 22K table, XL)
PAPER = {"convnext_t": (28.6, 4.5, 13.1), "convnext_s": (50, 8.7, None), "convnext_b": (89, 15.4, 45.0),
         "convnext_l": (198, 34.4, 101.0), "convnext_xl": (350, 60.9, 179.0)}


def _meta(step, **knobs):
    with torch.device("meta"):
        return build_model(step, "family", ["recipe.drop_path_rate=0"], **knobs)


def test_the_family_lists_its_members_and_the_roadmap_leaves_them_out():
    assert [s.name for s in list_steps("family")] == list(MEMBERS)
    assert not set(MEMBERS) & {s.name for s in list_steps("r50")}
    with pytest.raises(ConfigError, match="convnext_s is a member of regime family: add regime=family"):
        compose_config("convnext_s", "r50")
    with pytest.raises(ConfigError, match="regime family runs its own steps"):
        compose_config("gelu", "family")
    with pytest.raises(ConfigError, match=r"unknown step 'convnext_m' \(did you mean convnext_t\?\)"):
        compose_config("convnext_m", "family")


@pytest.mark.parametrize("step", MEMBERS)
def test_each_member_is_timms_model(step):
    """Strict load of timm's weights (every key and shape) and, for T, S and B, the same logits at 32² with random
    weights in which every tensor matters. L and XL differ from B in their widths alone, so their shapes are checked
    on the meta device (XL's random weights alone took 20 s)."""
    with torch.device("meta"):
        reference = timm.create_model(MEMBERS[step])
        ours = build_model(step, "family", ["recipe.drop_path_rate=0"])
    load_reference_weights(ours, reference.state_dict())  # strict: every key and shape
    if step in ("convnext_l", "convnext_xl"):
        return
    reference, ours = reference.to_empty(device="cpu"), ours.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in reference.state_dict().items():
            noise = torch.rand(tensor.shape, generator=gen) if tensor.ndim == 1 else torch.randn(tensor.shape, generator=gen)
            tensor.copy_(0.5 + 0.5 * noise if tensor.ndim == 1 else 0.02 * noise)
    load_reference_weights(ours, reference.state_dict())
    x = torch.randn(1, 3, 32, 32, generator=gen)
    with torch.no_grad():
        expected, got = reference.eval()(x), ours.eval()(x)
    assert expected.abs().mean() > 1e-2 and (got - expected).abs().max() < 1e-3 * expected.abs().max()


@pytest.mark.parametrize("step", MEMBERS)
def test_params_and_gflops_are_the_papers_at_224_and_384(step):
    params, gflops_224, gflops_384 = PAPER[step]
    model = _meta(step)
    assert count_params_m(model) == pytest.approx(params, rel=0.012)  # "50M", "89M": rounded to the unit
    assert count_gflops(model, 224) == pytest.approx(gflops_224, abs=0.05)
    if gflops_384:
        assert count_gflops(model, 384) == pytest.approx(gflops_384, rel=0.005)


# Every value a preset sets, as the paper and TRAINING.md give it (per member: stochastic depth; None: not given)
PRESETS = {
    "convnext_in1k": dict(epochs=300, warmup_epochs=20, base_lr=4e-3, base_batch=4096, weight_decay=0.05, mixup=0.8,
                          cutmix=1.0, ema=True, layer_decay=None, head_init_scale=1.0, init_from_ema=False, validate=True,
                          drop_path={"convnext_t": 0.1, "convnext_s": 0.4, "convnext_b": 0.5, "convnext_l": 0.5}),
    "convnext_in22k": dict(epochs=90, warmup_epochs=5, base_lr=4e-3, base_batch=4096, weight_decay=0.05, mixup=0.8,
                           cutmix=1.0, ema=False, layer_decay=None, head_init_scale=1.0, init_from_ema=False,
                           validate=False, drop_path={"convnext_t": 0.0, "convnext_s": 0.0, "convnext_b": 0.1,
                                                      "convnext_l": 0.1, "convnext_xl": 0.2}),
    "convnext_ft_in1k": dict(epochs=30, warmup_epochs=0, base_lr=5e-5, base_batch=512, weight_decay=1e-8, mixup=0.0,
                             cutmix=0.0, ema=False, layer_decay=0.7, head_init_scale=0.001, init_from_ema=True,
                             validate=True, drop_path={"convnext_b": 0.8, "convnext_l": 0.95}),
    "convnext_ft_in22k": dict(epochs=30, warmup_epochs=0, base_lr=5e-5, base_batch=512, weight_decay=1e-8, mixup=0.0,
                              cutmix=0.0, ema={"convnext_b": False, "convnext_l": False, "convnext_xl": True}, layer_decay=0.8, head_init_scale=0.001, init_from_ema=False,
                              validate=True, drop_path={"convnext_b": 0.2, "convnext_l": 0.3, "convnext_xl": 0.4}),
}


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_is_the_papers(preset):
    expected = PRESETS[preset]
    for step in MEMBERS:
        if step not in expected["drop_path"]:
            with pytest.raises(ConfigError, match="the paper gives no stochastic depth for this model"):
                compose_config(step, "family", [f"recipe={preset}"])
            continue
        r = compose_config(step, "family", [f"recipe={preset}", "+experiment=paper_in1k", "data.root=/in"]).recipe
        got = dict(epochs=r.epochs, warmup_epochs=r.warmup_epochs, base_lr=r.base_lr, base_batch=r.base_batch,
                   weight_decay=r.optimizer.weight_decay, mixup=r.mixup, cutmix=r.cutmix, ema=r.ema.enabled,
                   layer_decay=r.layer_decay, head_init_scale=r.head_init_scale, init_from_ema=r.init_from_ema,
                   validate=r.validate)
        assert got == {k: v[step] if k == "ema" and isinstance(v, dict) else v for k, v in expected.items()
                       if k != "drop_path"}, step
        assert r.drop_path_rate == expected["drop_path"][step]
        # what Table 5 shares with every preset
        assert (r.optimizer.name, list(r.optimizer.betas), r.schedule, r.auto_augment, r.re_prob, r.label_smoothing,
                r.layer_scale_init, r.ema.decay) == ("adamw", [0.9, 0.999], "cosine", "rand-m9-mstd0.5-inc1", 0.25, 0.1,
                                                     1e-6, 0.9999)


@pytest.mark.parametrize("command", [
    ["+step=convnext_s", "+experiment=paper_in1k", "recipe=convnext_in1k"],
    ["+step=convnext_b", "+experiment=paper_in22k"],
    ["+step=convnext_l", "+experiment=paper_finetune", "data.img_size=384"],
    ["+step=convnext_b", "+experiment=paper_finetune", "recipe=convnext_ft_in1k", "data.img_size=384"],
])
def test_explain_shows_each_preset_under_its_paper_experiment_as_the_papers_run(command):
    text = explain(["regime=family", *command, "data.root=/data"])
    marked = [line.split()[1] for line in text.splitlines() if line.startswith("* ") and not line.startswith("* =")]
    assert marked == ["precision"], text  # the presets' bf16, where the official commands train in fp32
    assert "layer decay" in text and "validation" in text


def _official_layer(timm_key: str) -> int:
    """The official ConvNeXt's ``get_num_layer_for_convnext`` (optim_factory.py) on a timm convnext key, renamed to
    the official model's names (stem = downsample_layers.0, stages.i.blocks.j = stages.i.j, head.norm = norm)."""
    parts = timm_key.split(".")
    if parts[0] == "stem" or parts[:3] == ["stages", parts[1], "downsample"]:
        stage = 0 if parts[0] == "stem" else int(parts[1])
        return {0: 0, 1: 2, 2: 3, 3: 12}[stage]
    if parts[0] == "stages":
        stage, block = int(parts[1]), int(parts[3])
        return stage + 1 if stage < 2 else 3 + block // 3 if stage == 2 else 12
    return 13


@pytest.mark.parametrize("step", ["convnext_t", "convnext_b"])
def test_layer_decay_groups_are_the_official_ones_and_not_timms(step):
    with torch.device("meta"):
        reference = timm.create_model(MEMBERS[step])
    for key in reference.state_dict():
        (ours,) = convert_reference_state_dict({key: torch.empty(0)})
        assert convnext_layer(ours) == _official_layer(key), key
    from timm.optim import param_groups_layer_decay  # timm's grouping on its own convnext: one layer per block

    scales = {id(p): g["lr_scale"] for g in param_groups_layer_decay(reference, layer_decay=0.8) for p in g["params"]}
    official = {name: 0.8 ** (HEAD_LAYER - _official_layer(name)) for name, _ in reference.named_parameters()}
    differ = [n for n, p in reference.named_parameters() if scales[id(p)] != pytest.approx(official[n])]
    assert len(differ) > len(official) // 2


def _tiny(*extra: str) -> list[str]:
    return ["regime=family", "+step=convnext_b", "model.width=8", "model.depths=[1,1,27,1]", "budget=smoke",
            "logger=csv", "trainer.enable_progress_bar=false", "depthwise=native", "budget.limit_train_batches=4",
            *extra]


def test_fine_tuning_groups_its_lrs_by_layer_and_starts_a_small_head(tmp_path):
    cfg = compose_config("convnext_b", "family", _tiny("recipe=convnext_ft_in22k", "data.train_size=32",
                                                         "data.val_size=16", f"run.root={tmp_path}")[2:])
    run = effective_run(cfg, 32)
    module = RoadmapModule(instantiate_model(cfg.model), cfg.recipe, num_classes=8, run=run)
    optimizer = module.configure_optimizers()["optimizer"]
    names = {id(p): n for n, p in module.model.named_parameters()}
    for group in optimizer.param_groups:
        for param in group["params"]:
            assert group["lr"] == pytest.approx(run.peak_lr * 0.8 ** (13 - convnext_layer(names[id(param)])))
            assert group["weight_decay"] == (0.0 if param.ndim == 1 else 1e-8)
    assert {g["layer"] for g in optimizer.param_groups} == set(range(14))
    head = module.model.fc.weight
    assert head.std().item() == pytest.approx(0.02 * 0.001, rel=0.2)  # trunc-normal(.02) × head init scale


def _case(root: Path, *args: str) -> dict:
    """A run.py command of the tiny member (tests/command_runner.py's case)."""
    return {"tool": "run", "argv": one_each(*_tiny(*args), f"run.root={root}")}


def _stopped_and_resumed(root: Path, *args: str) -> list[dict]:
    """A run stopped at optimizer step 2 (SIGUSR2, as SLURM's warning), then the same command again."""
    stop = ["+callbacks.stop._target_=tests.helpers.SignalAtStep", "+callbacks.stop.step=2"]
    return [_case(root, *args, "run.checkpoint_every_n_steps=1", *extra) for extra in (stop, [])]


def _resumed_run(root: Path, stopped: dict, resumed: dict) -> Path:
    assert stopped["code"] == 3 and "preempted: " in stopped["stderr"], stopped["stderr"][-2000:]
    assert resumed["code"] == 0 and "resuming from" in resumed["stdout"], resumed["stderr"][-2000:]
    (run_dir,) = root.glob("*/family/convnext_b/seed0")
    return run_dir


@pytest.mark.slow
def test_pretraining_without_validation_then_fine_tuning_at_another_size_and_class_count(tmp_path):
    """22K-style pre-training on an image folder without val/ (3 classes, 32²) checkpoints, resumes and ends done with
    no validation; fine-tuning its weights on the embedded data (8 classes, 64²) resumes exactly, and its record and
    folder name the weights it started from. Each stage's runs share a process (tests/command_runner.py)."""
    write_jpegs(tmp_path / "in22k", classes=3, train_per_class=12, val_per_class=0)
    assert not (tmp_path / "in22k" / "val").exists()  # ImageNet-22K has none
    pretrain = ["recipe=convnext_in22k", "data=imagenet22k", f"data.root={tmp_path / 'in22k'}", "data.num_classes=3",
                "data.img_size=32", "budget.batch_size=8"]
    pre_dir = _resumed_run(tmp_path / "pre", *run_commands(_stopped_and_resumed(tmp_path / "pre", *pretrain), tmp_path))
    pre = RunRecord.read(pre_dir)
    assert pre.status == "done" and pre.final["top1"] is None and [r["epoch"] for r in pre.history] == [1]
    assert "train/loss" in pre.history[0] and not (pre_dir / "checkpoints" / "best.ckpt").exists()
    assert pre.weights == {"final": "weights/final.safetensors"}
    named = finished_weights(one_each(*_tiny(*pretrain), f"run.root={tmp_path / 'pre'}"))
    assert named == pre_dir / "weights" / "final.safetensors"  # make family-22k's link between the stages

    finetune = ["recipe=convnext_ft_in22k", "data.img_size=64", "data.train_size=32", "data.val_size=16",
                f"model.init_from={pre_dir / 'weights' / 'final.safetensors'}"]
    once, *stopped_and_resumed = run_commands([_case(tmp_path / "once", *finetune, "trainer.log_every_n_steps=1"),
                                               *_stopped_and_resumed(tmp_path / "ft", *finetune)], tmp_path)
    assert once["code"] == 0, once["stderr"][-2000:]
    (once_dir,) = (tmp_path / "once").glob("*/family/convnext_b/seed0")
    ft_dir = _resumed_run(tmp_path / "ft", *stopped_and_resumed)
    assert_same_weights_and_history(ft_dir, once_dir)
    record = RunRecord.read(ft_dir)
    assert record.status == "done" and record.final["top1"] is not None
    assert record.weights_from["run"] == "the convnext_b (family) run"
    assert record.weights_from["sha256"] == files.sha256_of(pre_dir / "weights" / "final.safetensors")
    assert (record.weights_from["weights"], record.weights_from["head"]) == ("raw", "new: 8 classes (the weights have 3)")
    # its log says what it loaded and how it trains it; the logged lr is the head's, the peak
    shown = next(line for line in once["stdout"].splitlines() if line.startswith("init: "))
    assert shown.startswith(f"init: raw weights of {pre_dir / 'weights' / 'final.safetensors'} (the convnext_b (family) "
                            f"run) | head new: 8 classes (the weights have 3) | layer decay 0.8 over 14 layer groups")
    lrs = [float(row["train/lr"]) for row in csv.DictReader(open(next(once_dir.glob("csv/**/metrics.csv"))))
           if row.get("train/lr")]
    peak = record.effective_run["peak_lr"]
    assert lrs and max(lrs) <= peak * (1 + 1e-6) and max(lrs) > peak * 0.8 ** 13 * 2  # not the stem's
    assert "M params with the paper's 1000-class head (" in once["stdout"]


def test_other_weights_at_the_same_path_name_another_folder(tmp_path):
    """The folder names ``model.init_from`` by its file's content: the path stays in config.yaml."""
    weights = tmp_path / "pretrained.safetensors"
    weights.write_bytes(b"one")
    first = run_variant([f"model.init_from={weights}", "+step=convnext_b"])
    assert first == f"+model.init_from@pretrained-{files.sha256_of(weights)[:8]}"
    weights.write_bytes(b"other weights")
    assert run_variant([f"model.init_from={weights}"]) != first


def test_a_regime_value_given_on_the_command_line_names_the_runs_folder():
    """A member's stochastic depth changed on the command line is another run: seed 1 at 0.3 never lands beside seed 0
    at the paper's 0.1, where the analysis would average them as seeds of one run."""
    assert run_variant(["regime=family", "+step=convnext_b", "seed=1", "regime.drop_path.in1k=0.3"]) == \
        "+regime.drop_path.in1k@0.3"
    assert run_variant(["regime=family", "+step=convnext_b", "seed=1"]) == ""


def test_a_fine_tuned_group_is_not_set_beside_the_papers_training_from_scratch(tmp_path):
    from analysis.roadmap import describe, load_runs, roadmap_table
    from tests.helpers import write_run

    for step, top1 in (("convnext_t", 84.0), ("convnext_s", 85.0)):
        write_run(tmp_path, "imagefolder-paper", "family", step, final={"top1": top1}, weights_from={"source": "/w.pt"})
        write_run(tmp_path, "imagefolder-scratch", "family", step, final={"top1": top1})
    runs = load_runs(tmp_path)
    tuned = runs[runs.group == "imagefolder-paper"]
    assert roadmap_table(tuned, "family").paper_top1.isna().all()
    assert "started from other weights: the paper has no top-1 of that" in describe(runs, "imagefolder-paper")
    scratch = roadmap_table(runs[runs.group == "imagefolder-scratch"], "family").set_index("step")
    assert scratch.loc["convnext_t", "paper_top1"] == 82.1


def test_make_family_22k_defaults_to_the_members_both_its_recipes_can_train(capsys):
    """T and S have no stochastic depth for fine-tuning from 22K in the paper: ``make family-22k``'s members
    (``roadmap.sweep --recipe``) are B, L and XL, each a run that can finish."""
    from roadmap.sweep import main as sweep_main

    sweep_main(["family", "--recipe", "convnext_in22k", "convnext_ft_in22k"])
    assert capsys.readouterr().out.strip() == "convnext_b,convnext_l,convnext_xl"
    sweep_main(["family", "--recipe", "convnext_in1k"])
    assert capsys.readouterr().out.strip() == "convnext_t,convnext_s,convnext_b,convnext_l"  # XL: 22K only
