"""Agreement with the paper on hand-made run folders with known numbers: rank correlations, Δ signs and
noise verdicts checked against values computed here independently; captions, chart, proxy comparison
and the benchmark's throughput column."""
import itertools
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.agreement import agreement
from analysis.compare import compare, main as compare_main
from analysis.roadmap import load_runs, main as analysis_main, roadmap_table
from roadmap import list_steps
from tests.apt import Unavailable, install
from tests.helpers import write_run

PAPER = {s.name: s.paper_top1 for s in list_steps("r50")}
DEVICE = "Test CPU (2 cores)"
# our top-1 per seed; increase_width failed; the other r50 steps have no run
OURS = {"original_recipe": [60.0], "modern_recipe": [61.0, 62.0, 63.0], "stage_ratio": [60.0, 61.0, 62.0],
        "patchify_stem": [66.0], "depthwise_conv": [64.0], "inverted_bottleneck": [63.0]}
CHAIN = ["original_recipe", "modern_recipe", "stage_ratio", "patchify_stem", "depthwise_conv"]


def _write_runs(root: Path, group: str = "synthetic-cpu_proxy", ours=OURS, wall_s=100.0):
    for step, top1s in ours.items():
        for seed, top1 in enumerate(top1s):
            write_run(root, group, "r50", step, seed, final={"top1": top1}, gflops_224=4.0, wall_s=wall_s, img_size=32,
                      train_images_per_s=50.0, hardware={"device": DEVICE, "devices": 1}, proxy="PROXY: test data")
    write_run(root, group, "r50", "increase_width", status="failed", error="RuntimeError: boom", wall_s=wall_s,
              hardware={"device": DEVICE, "devices": 1})


def _ranks(values):
    order = np.argsort(values)
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    return ranks


def _kendall(a, b):
    pairs = list(itertools.combinations(range(len(a)), 2))
    return sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in pairs) / len(pairs)


def test_agreement_equals_independent_computation(tmp_path):
    _write_runs(tmp_path)
    table = roadmap_table(load_runs(tmp_path), "r50")
    measured = agreement(table)
    steps = [s for s in OURS]  # the rows with both top-1s (increase_width failed: left out)
    ours = np.array([np.mean(OURS[s]) for s in steps])
    paper = np.array([PAPER[s] for s in steps])
    assert (measured.n, measured.rows) == (6, 17)
    assert measured.spearman == pytest.approx(np.corrcoef(_ranks(ours), _ranks(paper))[0, 1])
    assert measured.kendall == pytest.approx(_kendall(ours, paper))
    # Kendall's exact two-sided p (no ties): the share of the 720 orderings at least as extreme
    taus = [_kendall(ours[list(p)], paper) for p in itertools.permutations(range(6))]
    assert measured.kendall_p == pytest.approx(np.mean(np.abs(taus) >= abs(measured.kendall) - 1e-12))
    assert measured.spearman_ci_low <= measured.spearman <= measured.spearman_ci_high
    # Δ signs over the steps whose parent also has a result: modern, stage_ratio, patchify, depthwise
    our_delta = {s: np.mean(OURS[s]) - np.mean(OURS[p]) for p, s in zip(CHAIN, CHAIN[1:])}
    paper_delta = {s: PAPER[s] - PAPER[p] for p, s in zip(CHAIN, CHAIN[1:])}
    agree = sum(np.sign(our_delta[s]) == np.sign(paper_delta[s]) for s in our_delta)
    assert (measured.sign_matches, measured.sign_total) == (agree, 4)
    # noise: pooled std over modern_recipe and stage_ratio (3 seeds, std 1 each) = 1
    assert measured.pooled_std == pytest.approx(1.0)
    verdicts = table.set_index("step").delta_verdict
    for step, n_step, n_parent in (("modern_recipe", 3, 1), ("stage_ratio", 3, 3), ("patchify_stem", 1, 3),
                                   ("depthwise_conv", 1, 1)):
        threshold = 2 * 1.0 * math.sqrt(1 / n_step + 1 / n_parent)
        expected = "n.s." if abs(our_delta[step]) <= threshold else "+" if our_delta[step] > 0 else "−"
        assert verdicts[step] == expected
    assert verdicts["patchify_stem"] == "+" and verdicts["modern_recipe"] == "n.s."  # 5 > 2.31; 2 ≤ 2.31
    assert (measured.distinguishable, measured.deltas) == (1, 4)
    assert "over 6 of 17 steps" in measured.summary()


def test_one_seed_has_no_std_and_every_delta_is_not_significant(tmp_path):
    _write_runs(tmp_path, ours={s: [60.0 + i] for i, s in enumerate(CHAIN)})
    table = roadmap_table(load_runs(tmp_path), "r50")
    assert table.top1_std.isna().all()
    assert set(table.delta_verdict.dropna()) == {"n.s."}
    measured = agreement(table)
    assert measured.pooled_std is None and "one seed per step: no noise estimate, every Δ n.s." in measured.summary()
    assert measured.spearman == pytest.approx(np.corrcoef(_ranks(np.arange(5.0)), _ranks(np.array([PAPER[s] for s in CHAIN])))[0, 1])


def test_too_few_rows_to_rank():
    table = pd.DataFrame({"step": ["a", "b"], "adopted": [True, True], "parent": [None, "a"], "top1_mean": [1.0, 2.0],
                          "top1_std": [None, None], "n_seeds": [1, 1], "delta_top1": [None, 1.0],
                          "delta_verdict": [None, "n.s."], "paper_top1": [3.0, 4.0], "paper_delta": [None, 1.0]})
    measured = agreement(table)
    assert measured.spearman is None and "too few to rank" in measured.summary()


LATEX = ("texlive-latex-base", "texlive-latex-recommended")  # pdflatex; booktabs, the one package the table needs


def assert_compiles(table: str, folder: Path) -> None:
    """pdflatex, stopping at the first error, on an article that holds the table and loads booktabs alone."""
    booktabs = shutil.which("kpsewhich") and not subprocess.run(["kpsewhich", "booktabs.sty"], capture_output=True).returncode
    try:
        install(LATEX, [name for name, there in (("pdflatex", shutil.which("pdflatex")), ("booktabs.sty", booktabs))
                        if not there], "compiling roadmap.tex needs LaTeX", recommends=False)
    except Unavailable as err:
        pytest.skip(str(err))
    (folder / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                                    f"{table}\n\\end{{document}}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=folder,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and (folder / "doc.pdf").stat().st_size > 0, proc.stdout[-3000:]


def test_outputs_carry_the_agreement_and_the_benchmark_throughput(tmp_path, capsys):
    _write_runs(tmp_path)
    pd.DataFrame({"model": ["roadmap", "roadmap"], "step": ["original_recipe", "modern_recipe"],
                  "train_img_s": [12.34, 56.78], "img_size": [224, 224], "device": [DEVICE, DEVICE]}
                 ).to_csv(tmp_path / "benchmark_r50.csv", index=False)
    (tmp_path / "benchmark").mkdir()
    (tmp_path / "benchmark_r50.csv").rename(tmp_path / "benchmark" / "r50.csv")
    analysis_main([str(tmp_path)])
    out = tmp_path / "synthetic-cpu_proxy" / "r50"
    side = pd.read_csv(out / "roadmap_agreement.csv")
    expected = agreement(roadmap_table(load_runs(tmp_path), "r50"))
    assert side.spearman[0] == pytest.approx(expected.spearman) and side.n[0] == 6
    assert "Spearman ρ" in (out / "roadmap.md").read_text() and "from make bench on Test CPU" in (out / "roadmap.md").read_text()
    tex = (out / "roadmap.tex").read_text()
    assert r"Spearman $\rho$" in tex and "from make bench on Test CPU" in tex and r"original\_recipe" in tex
    assert_compiles(tex, tmp_path)
    table = pd.read_csv(out / "roadmap.csv").set_index("step")
    assert table.loc["modern_recipe", "images_per_s"] == pytest.approx(56.8)  # 224², from the benchmark
    assert "PROXY" in (out / "roadmap.svg").read_text() and "Spearman" in (out / "roadmap.svg").read_text()
    printed = capsys.readouterr().out
    assert "Agreement with the paper over 6 of 17 steps" in printed


def test_compare_groups_with_their_cost(tmp_path, capsys):
    _write_runs(tmp_path, "synthetic-cpu_proxy", wall_s=360.0)
    _write_runs(tmp_path, "synthetic-smoke", ours={s: [50.0 + 2 * i] for i, s in enumerate(CHAIN)}, wall_s=36.0)
    summary, per_step = compare(load_runs(tmp_path), "r50")
    summary = summary.set_index("group")
    assert summary.loc["synthetic-cpu_proxy", "device_hours"] == pytest.approx(11 * 360 / 3600)  # 10 runs + 1 failed
    assert summary.loc["synthetic-smoke", "device_hours"] == pytest.approx(6 * 36 / 3600)  # 5 runs + 1 failed
    assert summary.loc["synthetic-smoke", "deltas_beyond_noise"] == "n.s. (one seed)"
    assert per_step.loc["patchify_stem", "synthetic-smoke"] == 56.0 and per_step.loc["patchify_stem", "synthetic-cpu_proxy"] == 66.0
    compare_main([str(tmp_path)])
    assert (tmp_path / "compare-r50.md").read_text().count("synthetic-") >= 4
