"""The roadmap chart as a reviewer reads it: for every kind of group (a roadmap, the family, a fine-tuned family, a 22K
pre-training without top-1) and 1, 5 and 17 runs, with one seed and with three, no text box (title block, axis and
tick labels, annotations, legends) overlaps another or leaves the figure, error bars stay within 0–100 %, the axes say
where they start, and nothing is in a legend that is not drawn."""
import itertools

import numpy as np
import pytest

from analysis.agreement import agreement
from analysis.chart import roadmap_figure
from analysis.roadmap import describe, load_runs, roadmap_table
from roadmap import list_steps
from roadmap.config.steps import regime_table
from tests.helpers import write_run

STEPS = [s.name for s in list_steps("r50")]


def text_boxes(fig, renderer) -> list[tuple[str, object]]:
    """Every text a reader sees, with its window box: the title block, each axes' title, axis labels, drawn tick labels
    and annotations, and each legend as one box."""
    found = [t for t in [fig._suptitle, *fig.texts] if t is not None]
    for ax in fig.axes:
        found += [ax.title, ax._left_title, ax._right_title, *ax.texts]
        for axis in (a for a in (ax.xaxis, ax.yaxis) if a.get_visible() and ax.get_visible()):
            found.append(axis.label)
            found += [label for tick in axis._update_ticks() for label in (tick.label1, tick.label2)]
    unique = {id(t): t for t in found}.values()  # a twin axes shares its other axis's labels
    boxes = [(t.get_text().splitlines()[0][:60], t.get_window_extent(renderer)) for t in unique
             if t.get_visible() and t.get_text()]
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    return boxes + [("legend: " + ", ".join(t.get_text() for t in legend.get_texts()), legend.get_window_extent(renderer))
                    for legend in legends]


def _layout_problems(fig) -> list:
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    boxes = text_boxes(fig, renderer)
    width, height = fig.bbox.width, fig.bbox.height
    overlaps = [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]
    outside = [a for a, box in boxes if box.x0 < -1 or box.y0 < -1 or box.x1 > width + 1 or box.y1 > height + 1]
    return overlaps + outside


WEIGHTS = "/runs/imagenet22k-smoke/family/{step}/seed0/weights/final.safetensors"
KINDS = {  # a group kind: its regime, and what its runs' records say
    "roadmap": ("r50", {}),
    "family": ("family", {"recipe": "convnext_in1k"}),
    "fine-tuned": ("family", {"recipe": "convnext_ft_in22k"}),
    "pre-training": ("family", {"recipe": "convnext_in22k", "final": {"top1": None}, "best": {"top1": None}}),
}


@pytest.mark.parametrize("n_runs", [1, 5, 17])
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_group_kind_renders_without_overlapping_text(tmp_path, kind, n_runs):
    regime, fields = KINDS[kind]
    steps = [s.name for s in list_steps(regime)][:n_runs]
    for i, step in enumerate(steps):
        extra = {"weights_from": {"source": WEIGHTS.format(step=step)},
                 "overrides": [f"model.init_from={WEIGHTS.format(step=step)}"]} if kind == "fine-tuned" else {}
        write_run(tmp_path, "imagefolder-smoke", regime, step, **{
            "final": {"top1": 40.0 + 0.3 * i, "top5": 90.0}, "gflops_224": 4.0, "params_m": 25.0, "img_size": 224,
            "proxy": "PROXY: imagefolder data at 224px, 3 epochs (smoke budget) - not comparable to the paper's "
                     "ImageNet-1K numbers", **fields, **extra})
    runs = load_runs(tmp_path)
    table = roadmap_table(runs, regime)
    reference = regime_table(regime).get("reference") if table.attrs.get("from_scratch", True) else None
    fig = roadmap_figure(table, f"{regime} roadmap, {describe(runs, 'imagefolder-smoke')}", reference, agreement(table))
    assert not _layout_problems(fig)
    legend_entries = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    ours, scatter = fig.axes[:2]
    assert ("branch" in " ".join(legend_entries)) == (regime == "r50")  # the family has no branches
    assert "paper top-1" not in legend_entries or kind != "pre-training"  # 22K pre-training: never evaluated
    assert fig._suptitle.get_text().count("/runs/") == 0  # weights named by file, not by absolute path
    if kind == "pre-training":
        assert "nothing to compare" in " ".join(t.get_text() for t in scatter.texts)
        assert "none" in ours.get_xlabel() and len(fig.axes) == 2  # no empty axis for a paper top-1 it has not


@pytest.mark.parametrize("seeds", [1, 3])
@pytest.mark.parametrize("n_steps", [1, 5, 17])
def test_no_label_overlaps_and_error_bars_stay_in_range(tmp_path, n_steps, seeds):
    rng = np.random.default_rng(n_steps * 10 + seeds)
    for step, seed in itertools.product(STEPS[:n_steps], range(seeds)):  # close top-1s (a short proxy's), one near 0
        top1 = 1.0 if step == "original_recipe" and n_steps > 1 else 37.5 + rng.uniform(-0.3, 0.3)
        write_run(tmp_path, "synthetic-cpu_proxy", "r50", step, seed, final={"top1": top1, "top5": 90.0},
                  gflops_224=4.0, params_m=23.5, params_m_1000=25.6)
    table = roadmap_table(load_runs(tmp_path), "r50")
    assert table.params_m.dropna().eq(25.6).all()  # the paper's count (1000 classes), not the 8-class head's
    fig = roadmap_figure(table, "r50 roadmap, PROXY: test", regime_table("r50").get("reference"), agreement(table))
    ours = fig.axes[0]
    assert not _layout_problems(fig)
    assert "not 0" in ours.get_xlabel()
    for line in ours.collections:  # error bars: never below 0 % or above 100 %
        for segment in getattr(line, "get_segments", lambda: [])():
            assert all(0 <= x <= 100 for x, _ in segment)
