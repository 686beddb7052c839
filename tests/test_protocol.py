"""What is set beside the paper's numbers is measured the paper's way: each setting compared with the official code
(facebookresearch/ConvNeXt: datasets.py, main.py, optim_factory.py, TRAINING.md; ../shared/reference/paper-facts.md)."""
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from roadmap.compare_models import ROWS, eval_transform
from roadmap.config.recipe import BatchTransform, build_transform
from roadmap.config.steps import compose_config

IMAGENET = ["data=imagefolder", "data.root=/imagenet"]


def _official_eval(size: int):
    """The official ``datasets.py`` evaluation transform before ToTensor: at 384² and above a warp to size × size,
    below it the shorter side to int(size / (224 / 256)) and a centre crop; bicubic in both."""
    if size >= 384:
        return T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC)
    return T.Compose([T.Resize(int(size / (224 / 256)), interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)])


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory) -> Image.Image:
    """A landscape JPEG (500 × 333, ImageNet's typical aspect), read back as PIL reads any dataset image."""
    rng = np.random.default_rng(0)
    pixels = (rng.random((333, 500, 3)) * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("jpeg") / "image.JPEG"
    Image.fromarray(pixels).resize((500, 333)).save(path, quality=90)
    return Image.open(path).convert("RGB")


@pytest.mark.parametrize("size", [224, 384])
def test_the_evaluation_transform_is_the_official_one_pixel_for_pixel(jpeg, size):
    cfg = compose_config("convnext_b", "family", [*IMAGENET, f"data.img_size={size}"])
    ours = torch.as_tensor(build_transform(cfg.recipe, cfg.data, is_training=False)(jpeg))  # uint8, channels first
    official = torch.from_numpy(np.asarray(_official_eval(size)(jpeg)).transpose(2, 0, 1).copy())
    assert ours.shape == official.shape == (3, size, size)
    assert torch.equal(ours, official)
    normalized = BatchTransform()(ours[None])[0]  # then to float and ImageNet's mean/std
    reference = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(T.ToTensor()(_official_eval(size)(jpeg)))
    torch.testing.assert_close(normalized, reference, atol=1e-5, rtol=0)
    # Table 1's rows without timm weights (the family at 384²) are evaluated the same way by compare_models
    row = ROWS["convnext_b_384" if size == 384 else "convnext_b"]
    transform = eval_transform(replace(row, weights=None))
    torch.testing.assert_close(transform(jpeg), reference, atol=1e-5, rtol=0)


def test_a_centre_crop_at_384_is_not_the_official_warp(jpeg):
    """The comparison above can fail: resizing the shorter side and cropping gives other pixels at 384²."""
    cfg = compose_config("convnext_b", "family", [*IMAGENET, "data.img_size=384", "data.eval_warp_from=null"])
    cropped = np.asarray(build_transform(cfg.recipe, cfg.data, is_training=False)(jpeg))
    assert not np.array_equal(cropped, np.asarray(_official_eval(384)(jpeg)).transpose(2, 0, 1))


TINY_B = ["model.width=8", "model.depths=[1,1,27,1]"]  # ConvNeXt-B's layout (27 blocks in stage 3), narrow


def test_the_python_api_starts_from_the_weights_training_starts_from(tmp_path):
    """``roadmap.build_model`` with ``recipe.init_from_ema`` loads a run's EMA weights, as training does: one loader."""
    from roadmap.config.steps import build_model

    raw = build_model("convnext_b", "family", TINY_B, num_classes=8).state_dict()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in raw.items()}
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {**{f"model.{k}": v for k, v in raw.items()},
                               **{f"ema.module.{k}": v for k, v in ema.items()}}}, ckpt)
    for recipe, expected in (("convnext_ft_in1k", ema), ("convnext_ft_in22k", raw)):  # from 1K: EMA; from 22K: raw
        model = build_model("convnext_b", "family", [*TINY_B, f"recipe={recipe}", f"model.init_from={ckpt}"],
                            num_classes=8)
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, expected[key], msg=f"{recipe}: {key}")


def _marked(text: str) -> dict[str, str]:
    """``roadmap.explain``'s marked rows: what → the line under it (the paper's value and what set ours)."""
    lines = text.splitlines()
    return {line[2:18].strip(): lines[i + 1].strip() for i, line in enumerate(lines)
            if line.startswith("* ") and not line.startswith("* =")}


@pytest.mark.parametrize("extra, row, paper, origin", [
    (["data.img_size=384", "data.eval_warp_from=null"], "crop", "eval: the whole image resized to 384×384",
     "command line (data.eval_warp_from=null)"),                                                    # 1: the 384² warp
    (["recipe.ema.enabled=false"], "EMA", "paper: 0.9999", "command line (recipe.ema.enabled=false)"),  # 3: XL's EMA
    (["recipe.lr_min=1e-5"], "schedule", "cosine to 0.02 × the peak", "command line (recipe.lr_min=1e-5)"),  # 5
    ([], "precision", "paper: 32-true", "conf/trainer/slurm.yaml"),                                  # 7: bf16 presets
])
def test_explain_marks_each_difference_from_the_papers_run(extra, row, paper, origin):
    from roadmap.explain import explain

    text = explain(["regime=family", "+step=convnext_xl", "+experiment=paper_finetune", "data.root=/in", *extra])
    marked = _marked(text)
    assert row in marked and paper in marked[row] and origin in marked[row], text
    floor = {"peak lr"} if row == "schedule" else set()  # the peak lr row gives the floor's value
    assert set(marked) == {row, "precision", *floor}, text  # nothing else differs from the official XL 22K→1K command


def test_layer_decay_on_convnext_t_is_refused_as_the_official_code_refuses_it():
    from roadmap.errors import ConfigError
    from roadmap.explain import explain

    for decide in (lambda a: explain(a), lambda a: compose_config("convnext_t", "family", a[2:])):
        with pytest.raises(ConfigError, match=r"main.py refuses any other model; this one has depths \[3, 3, 9, 3\]"):
            decide(["regime=family", "+step=convnext_t", "recipe=convnext_ft_in22k", "recipe.drop_path_rate=0.1"])


@pytest.mark.parametrize("recipe, official_ratio", [("convnext_ft_in22k", 1e-6 / 5e-5), ("convnext_in1k", 1e-6 / 4e-3)])
def test_the_lr_floor_keeps_the_official_ratio_to_the_peak_at_batch_32(recipe, official_ratio):
    """Official: lr 5e-5 → 1e-6 at batch 512 (fine-tuning), 4e-3 → 1e-6 at 4096; here at batch 32 the schedule ends at
    the same fraction of its peak (a fixed 1e-6 would be 32 % of a fine-tune's peak of 3.1e-6)."""
    from roadmap.config.effective import effective_run
    from roadmap.config.steps import instantiate_model
    from roadmap.run.module import RoadmapModule

    cfg = compose_config("convnext_b", "family", [*TINY_B, f"recipe={recipe}", "budget=paper", "budget.batch_size=32",
                                                   "data.train_size=320", "data.num_classes=8", "data.img_size=32"])
    run = effective_run(cfg, 320)
    assert run.effective_batch == 32
    optimizer = RoadmapModule(instantiate_model(cfg.model), cfg.recipe, num_classes=8, run=run).configure_optimizers()
    scheduler, head = optimizer["lr_scheduler"]["scheduler"], optimizer["optimizer"].param_groups[-1]
    scheduler.step_update(num_updates=run.total_steps)
    assert head["lr"] / run.peak_lr == pytest.approx(official_ratio, rel=1e-6)
    scheduler.step_update(num_updates=run.warmup_steps + 1)
    assert head["lr"] == pytest.approx(run.peak_lr, rel=1e-3)  # the head group is at the peak (layer decay 13 → × 1)


def _finished_run(root, group: str, step: str, recipe: str, epochs: list[dict], img_size: int = 224, **fields):
    """A family run's record as training finishes it (``RunRecord.finished`` by the recipe's metric)."""
    from roadmap.config.identity import RunKey
    from roadmap.run.record import RunRecord, table_metric

    cfg = compose_config(step, "family", [f"recipe={recipe}", "recipe.drop_path_rate=0.1"])
    folder = RunKey(group, "family", step, 0).path(root)
    header = RunRecord(status="running", step=step, regime="family", seed=0, group=group, data="imagefolder",
                       budget="paper", recipe=cfg.recipe.name, run_dir=str(folder), img_size=img_size, **fields)
    header.finished(epochs, table_metric(cfg.recipe), wall_s=60.0, gflops_224=15.4).write(folder)


def test_the_family_table_shows_the_papers_metric_the_best_ema_top1(tmp_path):
    """The official loop reports the best epoch's EMA top-1 where the EMA is on (the released weights are the EMA
    ones): a record whose last raw top-1 is 11.0 and whose EMA top-1 peaked at 55.0 is shown as 55.0, named so."""
    from analysis.roadmap import headed, load_runs, roadmap_table

    _finished_run(tmp_path, "imagefolder-paper", "convnext_b", "convnext_in1k",
                  [{"epoch": 1, "val/top1": 9.0, "val/top1_ema": 55.0}, {"epoch": 2, "val/top1": 11.0, "val/top1_ema": 54.0}])
    _finished_run(tmp_path, "imagefolder-roadmap", "convnext_b", "convnext",  # EMA off: the best raw top-1
                  [{"epoch": 1, "val/top1": 30.0}, {"epoch": 2, "val/top1": 25.0}])
    runs = load_runs(tmp_path)
    table = roadmap_table(runs[runs.group == "imagefolder-paper"], "family").set_index("step")
    assert table.loc["convnext_b", "top1_mean"] == 55.0 and table.loc["convnext_b", "paper_top1"] == 83.8
    assert "top1_mean (best-epoch EMA top-1)" in headed(table).columns
    plain = roadmap_table(runs[runs.group == "imagefolder-roadmap"], "family")
    assert plain.set_index("step").loc["convnext_b", "top1_mean"] == 30.0
    assert "top1_mean (best-epoch top-1)" in headed(plain).columns


@pytest.mark.parametrize("recipe, img_size, paper", [
    ("convnext_ft_in22k", 224, 85.8), ("convnext_ft_in22k", 384, 86.8),   # 22K → 1K (official README)
    ("convnext_ft_in1k", 384, 85.1),                                       # 1K → 384² (Table 1)
    ("convnext_in22k", 224, None),                                         # 22K pre-training: never evaluated
])
def test_each_group_is_set_beside_the_papers_number_of_its_setting(tmp_path, recipe, img_size, paper):
    from analysis.roadmap import describe, load_runs, roadmap_table

    weights = {} if recipe == "convnext_in22k" else {"weights_from": {"source": "/runs/pre/weights/final.safetensors"}}
    epochs = [{"epoch": 1, "train/loss": 2.0}] if recipe == "convnext_in22k" else [{"epoch": 1, "val/top1": 70.0}]
    _finished_run(tmp_path, "imagefolder-paper", "convnext_b", recipe, epochs, img_size, **weights)
    runs = load_runs(tmp_path)
    table = roadmap_table(runs, "family")
    b = table.set_index("step").loc["convnext_b"]
    assert (b.paper_top1 == paper) if paper else pd.isna(b.paper_top1)
    assert table.paper_top1.notna().sum() == (5 if recipe == "convnext_ft_in22k" else 2 if recipe == "convnext_ft_in1k"
                                              else 0)  # every member the paper gives that number of
    label = describe(runs, "imagefolder-paper")
    assert ("22K" in label) == ("22k" in recipe) and ("384²" in label) == (img_size == 384 or recipe == "convnext_ft_in1k")
    from analysis.agreement import agreement
    from analysis.chart import roadmap_figure

    figure = roadmap_figure(table, "family, test", None, agreement(table))
    drawn = [label for ax in figure.axes for label in ax.get_legend_handles_labels()[1]]
    assert ("paper top-1" in drawn) == (paper is not None), drawn  # no paper top-1 beside runs that have none


def test_profile_at_384_sets_each_count_beside_the_papers_384_numbers():
    """``roadmap.profile --img-size 384`` takes Table 1's 384² rows (tests/test_family.py counts each member's GFLOPs
    there), none at a size the paper has not."""
    from roadmap.config.steps import list_steps
    from roadmap.profile import profile_columns

    paper = {s.name: (s.paper_gflops, s.paper_top1) for s in list_steps("family", profile_columns(384))}
    assert paper["convnext_b"] == (45.0, 85.1) and paper["convnext_l"] == (101.0, 85.5)
    assert paper["convnext_s"] == (None, None)  # the paper gives no 384² S
    assert {s.paper_gflops for s in list_steps("family", profile_columns(256))} == {None}

