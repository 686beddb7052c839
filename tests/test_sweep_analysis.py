"""A smoke sweep of every step through run.py's multirun (what `make roadmap` runs) on the tiny regime
(``tests.helpers.TINY_REGIME``: every step's plumbing, small checkpoints), with one step forced to fail; the
roadmap table, chart, re-run behaviour, broken run dirs and the notebook."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from analysis.compare import main as compare_main
from analysis.notebook import NOTEBOOK, main as notebook_main
from analysis.roadmap import groups, load_runs, main as analysis_main, roadmap_table
from roadmap import list_steps
from roadmap.config.identity import RunKey
from roadmap.profile import profile_table
from roadmap.run.outcome import sweep_size
from roadmap.run.record import RunRecord
from tests.helpers import write_run

pytestmark = [pytest.mark.slow,  # trains through run.py subprocesses (make test-fast leaves these out)
              pytest.mark.usefixtures("tiny_regime")]  # tests/conftest.py: the sweep runs on REGIME
REPO = Path(__file__).resolve().parent.parent
STEPS = [s.name for s in list_steps("r50")]  # every regime has the same steps
REGIME = "tiny"
GROUP = "synthetic-smoke+data.train_size@16+data.val_size@8"  # the data sizes are part of the runs' identity


SMOKE = ["budget=smoke", "logger=csv", "data.train_size=16", "data.val_size=8", "trainer.enable_progress_bar=false",
         "run.export_weights=false", "+callbacks.fail._target_=tests.helpers.FailOnStep", "+callbacks.fail.step=kernel_9",
         "depthwise=native"]  # measuring the paths took 79 of 95 s for 3 steps (tests/test_depthwise.py checks them)


def sweep(root, steps):
    cmd = [sys.executable, "run.py", "-m", f"+step={','.join(steps)}", f"regime={REGIME}", "seed=0",
           f"run.root={root}", *SMOKE]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The README's ``make roadmap``: every step, then the table, the comparison and the executed notebook."""
    root = tmp_path_factory.mktemp("sweep")
    proc = subprocess.run(["make", "roadmap", f"REGIME={REGIME}", f"OUTPUTS={root}", f"VENV={Path(sys.executable).parents[1]}",
                           f"ARGS={' '.join(SMOKE)}"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert "Error 1" in proc.stderr, proc.stderr[-3000:]  # every step ran, one failed: make fails with the sweep's 1
    assert f"sweep: {len(STEPS) - 1} of {len(STEPS)} steps done" in proc.stdout
    assert f"{REGIME}/kernel_9 seed 0: failed: RuntimeError: forced failure of kernel_9" in proc.stdout
    assert f"{REGIME}/kernel_11 seed 0: done" in proc.stdout
    yield root, proc
    shutil.rmtree(root, ignore_errors=True)


def test_sweep_table_in_roadmap_order_with_measured_gflops(swept):
    root, proc = swept
    assert f"[1/{len(STEPS)}] {REGIME}/original_recipe" in proc.stdout and "ETA" in proc.stdout
    table = roadmap_table(load_runs(root).query("group == @GROUP"), REGIME)
    assert table.step.tolist() == STEPS
    expected = profile_table(REGIME).set_index("step").gflops
    done = table[table.status == "done"]
    assert len(done) == len(STEPS) - 1
    for step in done.step:  # every step trained end to end: its resumable checkpoint, config and CSV log
        run_dir = root / GROUP / REGIME / step / "seed0"
        assert RunRecord.read(run_dir).key == RunKey(GROUP, REGIME, step, 0)
        assert (run_dir / "checkpoints" / "last.ckpt").exists() and (run_dir / "config.yaml").exists()
        assert list(run_dir.glob("csv/version_*/metrics.csv"))
    for row in done.itertuples():
        assert row.gflops == pytest.approx(expected[row.step], abs=1e-3)
        assert row.n_seeds == 1 and row.top1_mean is not None


def test_a_sweep_prints_each_library_line_once(swept):
    """Lightning's console handler (``INFO: ...``) does not repeat what Hydra's job logging prints."""
    _, proc = swept
    output = proc.stdout + proc.stderr
    assert "GPU available: False" in output and not [line for line in output.splitlines() if line.startswith("INFO: ")]


def test_failed_step_is_recorded_with_its_error(swept):
    root, _ = swept
    table = roadmap_table(load_runs(root), REGIME).set_index("step")
    assert table.loc["kernel_9", "status"] == "failed"
    assert "RuntimeError: forced failure of kernel_9" in table.loc["kernel_9", "error"]
    assert table.loc["kernel_11", "status"] == "done"  # the sweep went on


def test_analysis_cli_writes_table_and_chart(swept, capsys):
    root, _ = swept
    analysis_main([str(root)])
    out_dir = root / GROUP / REGIME
    for suffix in ("csv", "md", "tex", "png", "svg"):
        assert (out_dir / f"roadmap.{suffix}").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "PROXY" in printed and "kernel_9: failed" in printed
    assert (root / f"compare-{REGIME}.md").exists()  # make roadmap compared the groups
    assert "PROXY" in (out_dir / "roadmap.md").read_text()


def test_rerun_trains_nothing_and_reproduces_the_table(swept):
    root, _ = swept
    before = roadmap_table(load_runs(root), REGIME)
    stamps = {p: p.stat().st_mtime for p in root.glob(f"{GROUP}/{REGIME}/*/seed0/metrics.json")
              if json.loads(p.read_text())["status"] == "done"}
    proc = sweep(root, ["original_recipe", "kernel_9", "separate_downsampling"])  # done, failed, done
    assert proc.returncode == 1  # kernel_9 fails again
    assert proc.stdout.count("already done, not retraining") == 2
    assert {p: p.stat().st_mtime for p in stamps} == stamps
    after = roadmap_table(load_runs(root), REGIME)
    assert before.drop(columns=["error"]).equals(after.drop(columns=["error"]))


def test_broken_run_dirs_are_reported_not_fatal(tmp_path):
    write_run(tmp_path, "synthetic-smoke", "r50", "kernel_5", final={"top1": 50.0})
    for step, content in (("gelu", '{"status": "done", "final": {"top1'), ("fewer_norms", None),
                          ("kernel_7", '{"status": "done", "renamed_key": 1}')):
        run = tmp_path / "synthetic-smoke" / "r50" / step / "seed0"
        run.mkdir(parents=True)
        if content is not None:
            (run / "metrics.json").write_text(content)
    table = roadmap_table(load_runs(tmp_path), "r50").set_index("step")
    assert table.loc["gelu", "status"] == "corrupt" and "unreadable metrics.json" in table.loc["gelu", "error"]
    assert table.loc["fewer_norms", "status"] == "missing"
    assert table.loc["kernel_7", "status"] == "corrupt" and "renamed_key" in table.loc["kernel_7", "error"]
    assert table.loc["kernel_5", "status"] == "done" and table.loc["kernel_5", "top1_mean"] == 50.0
    assert table.loc["bn_to_ln", "status"] == "missing" and table.loc["bn_to_ln", "n_seeds"] == 0


def test_seeds_aggregate_to_mean_sample_std_and_delta(tmp_path):
    for step, top1s in (("modern_recipe", [40.0]), ("stage_ratio", [41.0, 43.0, 45.0])):
        for seed, top1 in enumerate(top1s):
            write_run(tmp_path, "synthetic-smoke", "r50", step, seed, final={"top1": top1}, gflops_224=4.0)
    table = roadmap_table(load_runs(tmp_path), "r50").set_index("step")
    assert table.loc["stage_ratio", ["top1_mean", "top1_std", "n_seeds"]].tolist() == [43.0, 2.0, 3]
    assert table.loc["stage_ratio", "delta_top1"] == pytest.approx(3.0)
    assert pd.isna(table.loc["modern_recipe", "top1_std"])  # one seed: no spread to report


def test_notebook_command_rejects_a_missing_outputs_folder(tmp_path, capsys):
    for outputs, message in ((tmp_path / "nowhere", "does not exist; run `make roadmap OUTPUTS=...` first"),
                             (tmp_path, f"no runs under {tmp_path}")):
        with pytest.raises(SystemExit) as stop:
            notebook_main([str(outputs)])
        assert stop.value.code == 2 and message in capsys.readouterr().err


def test_the_analysis_targets_analyse_what_is_there(tmp_path, capsys):
    """Outputs that hold family runs only: the comparison covers the family (no --regime needed), and the make targets
    pass a regime only where one is given."""
    for step in ("convnext_t", "convnext_s"):
        write_run(tmp_path, "synthetic-smoke", "family", step, final={"top1": 50.0})
    compare_main([str(tmp_path)])
    assert (tmp_path / "compare-family.csv").exists() and not (tmp_path / "compare-r50.csv").exists()
    with pytest.raises(SystemExit) as stop:
        compare_main([str(tmp_path), "--regime", "r50"])
    assert stop.value.code == 2 and "no r50 runs under" in capsys.readouterr().err
    for target in ("analysis", "notebook"):
        plain = subprocess.run(["make", "-n", target, f"OUTPUTS={tmp_path}"], cwd=REPO, capture_output=True, text=True)
        given = subprocess.run(["make", "-n", target, f"OUTPUTS={tmp_path}", "REGIME=r200"], cwd=REPO,
                               capture_output=True, text=True)
        assert "--regime" not in plain.stdout and "--regime r200" in given.stdout, (plain.stdout, given.stdout)


def test_an_unknown_status_is_flagged_and_a_folder_without_a_record_shows_nothing(tmp_path):
    write_run(tmp_path, "synthetic-smoke", "r50", "gelu", status="finished", final={"top1": 50.0})
    (tmp_path / "synthetic-paper" / "r50" / "gelu" / "seed0").mkdir(parents=True)  # a folder no run wrote
    runs = load_runs(tmp_path)
    flagged = runs[runs.group == "synthetic-smoke"].iloc[0]
    assert flagged.status == "corrupt" and "unknown status 'finished'" in flagged.error
    assert groups(runs) == [("synthetic-smoke", "r50")]


def test_groups_never_mix(tmp_path):
    groups = {"synthetic-smoke": 40.0, "synthetic-smoke+recipe.base_lr@0.5": 60.0}
    for group, top1 in groups.items():
        write_run(tmp_path, group, "r50", "gelu", final={"top1": top1}, overrides=group.split("+")[1:])
    analysis_main([str(tmp_path)])
    for group, top1 in groups.items():  # one table per group, each with its own run only
        table = pd.read_csv(tmp_path / group / "r50" / "roadmap.csv").set_index("step")
        assert table.loc["gelu", "top1_mean"] == top1 and table.loc["gelu", "n_seeds"] == 1
    with pytest.raises(SystemExit):
        analysis_main([str(tmp_path), "--group", "cifar10-paper"])


def test_sweep_size():
    assert sweep_size(["+step=a,b,c", "seed=0,1", "regime=r50"]) == 6


def test_notebook_runs_top_to_bottom(swept):
    root, _ = swept
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")  # stripped in git
    executed = nbformat.read(root / GROUP / REGIME / "roadmap.ipynb", as_version=4)  # make roadmap executed it
    (injected,) = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]  # papermill's
    assert f'group = "{GROUP}"' in injected.source and f'regime = "{REGIME}"' in injected.source  # the swept group
    figures = [c for c in executed.cells if c.cell_type == "code" and ("display(Image" in c.source or "plt." in c.source)]
    assert len(figures) == 2 and all(any("image/png" in o.get("data", {}) for o in c.outputs) for c in figures)


def test_make_help_lists_the_targets_and_an_unknown_regime_is_one_line(tmp_path):
    venv = f"VENV={Path(sys.executable).parents[1]}"
    make = ["make", "--no-print-directory"]  # also under make test (make[1]: Entering directory ...)
    shown = subprocess.run([*make, "-s", "help", venv], cwd=REPO, capture_output=True, text=True)
    listed = [line.split()[1] for line in shown.stdout.splitlines()]
    phony = re.search(r"^\.PHONY: (.*)$", (REPO / "Makefile").read_text(), flags=re.M).group(1).split()
    assert shown.returncode == 0 and sorted(listed) == sorted(phony)  # every target, with its line
    typo = subprocess.run([*make, "roadmap", "REGIME=typo", f"OUTPUTS={tmp_path}", venv], cwd=REPO,
                          capture_output=True, text=True)
    ours = [line for line in typo.stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", line)]  # make's
    assert typo.returncode == 2 and typo.stdout == "" and not list(tmp_path.iterdir())
    assert len(ours) == 1 and ours[0].startswith("error: argument regime: invalid choice: 'typo' (choose from "), typo.stderr
