"""Session-wide test settings."""
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest

# Triton picks interpreter or compiler when it is first imported (lightning and timm import it). Without a GPU
# its kernels can only run interpreted, on CPU tensors: that is how tests/test_depthwise.py checks them here.
if not Path("/dev/nvidiactl").exists():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Parallel workers (make test: pytest-xdist) share the cores: each worker, and what it starts (run.py, SLURM
# jobs), gets its share of threads, instead of each taking every core (and their threads waiting on each other's).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

# Depthwise convs measure their fastest path once per machine (roadmap/models/depthwise.py): keep the choices of this
# session, subprocess runs included, out of the user's cache.
os.environ.setdefault("ROADMAP_CACHE_DIR", tempfile.mkdtemp(prefix="roadmap-cache-"))


@pytest.fixture(scope="module")
def tiny_regime(tmp_path_factory):
    """The narrow regime (``tests.helpers.TINY_REGIME``) on $ROADMAP_CONFIG_PATH, for this process, its
    subprocesses and the SLURM jobs, while the requesting module runs."""
    from tests.helpers import tiny_regime_on_config_path  # after the settings above: it imports torch and lightning

    yield from tiny_regime_on_config_path(tmp_path_factory.mktemp("conf"))


# The files by their time in the suite, longest first (per-file sums of the durations in a fresh-clone run of
# bash .ci/run, docs/cluster.md): the two workers, each a file at a time, then end together
LONGEST_FIRST = ("test_cluster", "test_lifecycle", "test_training", "test_refusals", "test_readme", "test_model_zoo",
                 "test_sweep_analysis", "test_family", "test_data", "test_protocol", "test_config", "test_depthwise", "test_benchmark",
                 "test_agreement", "test_compare_models")  # agreement: LaTeX's install where it is missing


SUITE_PEAK_GB = 3.7  # the most disk the suite takes at once, 2 workers (docs/cluster.md, 2026-12-07)


def pytest_sessionstart(session):
    """Note the free disk under the temporary folder: a full disk fails a run mid-save (torch.save: "unexpected
    pos"), which the summary then explains."""
    import shutil

    session.config.free_disk_gb = shutil.disk_usage(tempfile.gettempdir()).free / 1e9


def pytest_collection_modifyitems(items):
    """The longest files first (:data:`LONGEST_FIRST`; a file not listed after them, those with tests marked
    ``slurm`` or ``slow`` first), so that parallel workers (``make test``: pytest-xdist) end together."""
    marks = defaultdict(set)
    for item in items:
        marks[item.path] |= set(item.keywords)

    def cost_rank(item) -> tuple:
        listed = item.path.stem in LONGEST_FIRST
        return (not listed, LONGEST_FIRST.index(item.path.stem) if listed else 0, "slurm" not in marks[item.path],
                "slow" not in marks[item.path])

    items.sort(key=cost_rank)  # stable: a file's tests stay in their order


def pytest_sessionfinish(session, exitstatus):
    """Nothing left behind: no SLURM or database daemon, job step, srun or training process of the suite's is
    alive once every fixture has stopped what it started (zombies, which only wait to be reaped, do not count).
    Checked once, by the process that started the session (a pytest-xdist worker would see the other's)."""
    from tests.cluster import leftovers

    if hasattr(session.config, "workerinput"):
        return

    alive = leftovers()
    if alive:
        print("\nthe suite left these processes alive:", *alive, sep="\n  ")
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    """Name the cluster tests (marked ``slurm``) and their outcome, so a CI log shows they ran, not skipped; and say
    when the disk had too little room for the suite."""
    free_gb = getattr(terminalreporter.config, "free_disk_gb", None)
    if free_gb is not None and free_gb < 2 * SUITE_PEAK_GB:
        terminalreporter.section("disk")
        terminalreporter.line(f"{free_gb:.1f} GB were free under {tempfile.gettempdir()} when the suite started; it "
                              f"takes up to {SUITE_PEAK_GB} GB at once: a failed save may be a full disk")
    rows = [(report.nodeid, outcome) for outcome in ("passed", "failed", "skipped")
            for report in terminalreporter.stats.get(outcome, [])
            if "slurm" in getattr(report, "keywords", {}) and (report.when == "call" or outcome == "skipped")]
    if rows:
        terminalreporter.section("cluster tests (real SLURM)")
        for nodeid, outcome in rows:
            terminalreporter.line(f"{outcome.upper():8} {nodeid}")
