"""A smoke sweep of every r50 step through run.py's multirun (what `make roadmap` runs), with one step
forced to fail; the roadmap table, chart, re-run behaviour, broken run dirs and the notebook."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from analysis.notebook import NOTEBOOK, main as notebook_main
from analysis.roadmap import load_runs, main as analysis_main, roadmap_table
from roadmap import list_steps
from roadmap.profile import profile_table
from roadmap.sweep import sweep_size

REPO = Path(__file__).resolve().parent.parent
STEPS = [s.name for s in list_steps("r50")]
GROUP = "synthetic-smoke+data.train_size@16+data.val_size@8"  # the data sizes are part of the runs' identity


def sweep(root):
    cmd = [sys.executable, "run.py", "-m", f"+step={','.join(STEPS)}", "regime=r50", "seed=0",
           "budget=smoke", "logger=csv", "data.train_size=16", "data.val_size=8", f"run.root={root}",
           "trainer.enable_progress_bar=false",
           "run.export_weights=false", "+callbacks.fail._target_=tests.helpers.FailOnStep", "+callbacks.fail.step=kernel_9"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    proc = sweep(root)
    assert proc.returncode == 1, proc.stderr[-3000:]  # every step ran; one failed: the sweep says so
    assert f"sweep: {len(STEPS) - 1} of {len(STEPS)} steps done" in proc.stdout
    assert "r50/kernel_9 seed 0: failed: RuntimeError: forced failure of kernel_9" in proc.stdout
    assert "r50/kernel_11 seed 0: done" in proc.stdout
    yield root, proc
    shutil.rmtree(root, ignore_errors=True)  # ~4.6 GB of full-size checkpoints


def test_sweep_table_in_roadmap_order_with_measured_gflops(swept):
    root, proc = swept
    assert f"[1/{len(STEPS)}] r50/original_recipe" in proc.stdout and "ETA" in proc.stdout
    table = roadmap_table(load_runs(root).query("group == @GROUP"), "r50")
    assert table.step.tolist() == STEPS
    expected = profile_table("r50").set_index("step").gflops
    done = table[table.status == "done"]
    assert len(done) == len(STEPS) - 1
    for step in done.step:  # every r50 step trained end to end: its resumable checkpoint, config and CSV log
        run_dir = root / GROUP / "r50" / step / "seed0"
        assert (run_dir / "checkpoints" / "last.ckpt").exists() and (run_dir / "config.yaml").exists()
        assert list(run_dir.glob("csv/version_*/metrics.csv"))
    for row in done.itertuples():
        assert row.gflops == pytest.approx(expected[row.step], abs=1e-3)
        assert row.n_seeds == 1 and row.top1_mean is not None


def test_failed_step_is_recorded_with_its_error(swept):
    root, _ = swept
    table = roadmap_table(load_runs(root), "r50").set_index("step")
    assert table.loc["kernel_9", "status"] == "failed"
    assert "RuntimeError: forced failure of kernel_9" in table.loc["kernel_9", "error"]
    assert table.loc["kernel_11", "status"] == "done"  # the sweep went on


def test_analysis_cli_writes_table_and_chart(swept, capsys):
    root, _ = swept
    analysis_main([str(root)])
    out_dir = root / GROUP / "r50"
    for suffix in ("csv", "md", "tex", "png", "svg"):
        assert (out_dir / f"roadmap.{suffix}").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "PROXY" in printed and "kernel_9: failed" in printed
    assert "PROXY" in (out_dir / "roadmap.md").read_text()


def test_rerun_trains_nothing_and_reproduces_the_table(swept):
    root, _ = swept
    before = roadmap_table(load_runs(root), "r50")
    stamps = {p: p.stat().st_mtime for p in root.glob(f"{GROUP}/r50/*/seed0/metrics.json")
              if json.loads(p.read_text())["status"] == "done"}
    proc = sweep(root)
    assert proc.returncode == 1  # kernel_9 fails again
    assert proc.stdout.count("already done, not retraining") == len(STEPS) - 1
    assert {p: p.stat().st_mtime for p in stamps} == stamps
    after = roadmap_table(load_runs(root), "r50")
    assert before.drop(columns=["error"]).equals(after.drop(columns=["error"]))


def test_broken_run_dirs_are_reported_not_fatal(tmp_path):
    for step, content in (("gelu", '{"status": "done", "final": {"top1'), ("fewer_norms", None)):
        run = tmp_path / "synthetic-smoke" / "r50" / step / "seed0"
        run.mkdir(parents=True)
        if content is not None:
            (run / "metrics.json").write_text(content)
    table = roadmap_table(load_runs(tmp_path), "r50").set_index("step")
    assert table.loc["gelu", "status"] == "corrupt" and "unreadable metrics.json" in table.loc["gelu", "error"]
    assert table.loc["fewer_norms", "status"] == "missing"
    assert table.loc["bn_to_ln", "status"] == "missing" and table.loc["bn_to_ln", "n_seeds"] == 0


def test_seeds_aggregate_to_mean_sample_std_and_delta(tmp_path):
    for step, top1s in (("modern_recipe", [40.0]), ("stage_ratio", [41.0, 43.0, 45.0])):
        for seed, top1 in enumerate(top1s):
            run = tmp_path / "synthetic-smoke" / "r50" / step / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "metrics.json").write_text(json.dumps({"status": "done", "final": {"top1": top1}, "gflops_224": 4.0}))
    table = roadmap_table(load_runs(tmp_path), "r50").set_index("step")
    assert table.loc["stage_ratio", ["top1_mean", "top1_std", "n_seeds"]].tolist() == [43.0, 2.0, 3]
    assert table.loc["stage_ratio", "delta_top1"] == pytest.approx(3.0)
    assert pd.isna(table.loc["modern_recipe", "top1_std"])  # one seed: no spread to report


def test_notebook_command_rejects_a_missing_outputs_folder(tmp_path):
    with pytest.raises(SystemExit, match="does not exist; run `make roadmap OUTPUTS=...` first"):
        notebook_main([str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit, match="no r50 runs under"):
        notebook_main([str(tmp_path)])


def test_groups_never_mix(swept, tmp_path):
    root, _ = swept
    runs = load_runs(root)
    assert set(runs.group) == {GROUP}
    with pytest.raises(SystemExit):
        analysis_main([str(root), "--group", "cifar10-paper"])


def test_sweep_size_and_make_roadmap_command():
    assert sweep_size(["+step=a,b,c", "seed=0,1", "regime=r50"]) == 6
    dry = subprocess.run(["make", "-n", "roadmap", "SEEDS=0,1,2", "VENV=.venv-dry"], cwd=REPO,
                         capture_output=True, text=True).stdout
    assert "run.py -m" in dry and "seed=0,1,2" in dry and "analysis.roadmap" in dry


def test_notebook_runs_top_to_bottom(swept):
    root, _ = swept
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")  # stripped in git
    notebook_main([str(root), "--regime", "r50"])
    executed = nbformat.read(root / GROUP / "r50" / "roadmap.ipynb", as_version=4)
    assert any(o.get("output_type") == "display_data" for c in executed.cells for o in c.get("outputs", []))
