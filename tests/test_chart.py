"""The roadmap chart as a reviewer reads it: for 1, 5 and 17 steps, with one seed and with three, no label overlaps
another, error bars stay within 0–100 %, and the axes say where they start."""
import itertools

import numpy as np
import pytest

from analysis.agreement import agreement
from analysis.chart import roadmap_figure
from analysis.roadmap import load_runs, roadmap_table
from roadmap import list_steps
from roadmap.config.steps import regime_table
from tests.helpers import write_run

STEPS = [s.name for s in list_steps("r50")]


def _overlapping(texts, renderer) -> list[tuple[str, str]]:
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_text() and t.get_visible()]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]


@pytest.mark.parametrize("seeds", [1, 3])
@pytest.mark.parametrize("n_steps", [1, 5, 17])
def test_no_label_overlaps_and_error_bars_stay_in_range(tmp_path, n_steps, seeds):
    rng = np.random.default_rng(n_steps * 10 + seeds)
    for step, seed in itertools.product(STEPS[:n_steps], range(seeds)):  # close top-1s (a short proxy's), one near 0
        top1 = 1.0 if step == "original_recipe" and n_steps > 1 else 37.5 + rng.uniform(-0.3, 0.3)
        write_run(tmp_path, "synthetic-cpu_proxy", "r50", step, seed, final={"top1": top1, "top5": 90.0},
                  gflops_224=4.0, params_m=25.0)
    table = roadmap_table(load_runs(tmp_path), "r50")
    fig = roadmap_figure(table, "r50 roadmap, PROXY: test", regime_table("r50").get("reference"), agreement(table))
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    ours, scatter = fig.axes[:2]
    assert not _overlapping(scatter.texts, renderer)  # the per-step labels of the right panel
    assert not _overlapping(ours.texts, renderer)  # a line of numbers per row
    assert not _overlapping(ours.get_yticklabels(), renderer)
    assert "not 0" in ours.get_xlabel()
    for line in ours.collections:  # error bars: never below 0 % or above 100 %
        for segment in getattr(line, "get_segments", lambda: [])():
            assert all(0 <= x <= 100 for x, _ in segment)
