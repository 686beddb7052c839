"""The README's commands as a user runs them from a fresh clone after the set-up command (``.venv`` active): every
line of its bash blocks, and its Python block, runs here on CPU with a smoke budget, or is named in :data:`NOT_HERE`
with what it needs that this machine lacks (data, GPUs, nodes) or the test that runs it. A line that needs data is
composed and validated as written."""
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from roadmap.config.steps import _first_of_each_sweep, compose_config, split_command
from tests.helpers import run_commands

pytestmark = pytest.mark.slow  # trains through run.py (make test-fast leaves these out)
REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
PYTHON_BLOCK = "\n".join(re.findall(r"```python\n(.*?)```", README, flags=re.S))

# The lines that do not run here, and why (the first pattern that matches a line)
NOT_HERE = {
    r"^make test": "the suite itself",
    r"^make roadmap$": "every r50 step: tests/test_sweep_analysis.py runs this target on the tiny regime",
    r"trainer=slurm": "a SLURM cluster: tests/test_cluster.py submits it to the suite's own",
    r"^torchrun": "several nodes (NODE0, rank R): tests/test_cluster.py runs two torchrun agents on this machine",
    r"^make notebook OUTPUTS=runs": "the runs of the Imagenette sweep above (data): tests/test_sweep_analysis.py "
                                    "executes the notebook on the sweep it trains",
    r"roadmap\.depthwise_report": "times every depthwise path at 128 px (24 s here): tests/test_benchmark.py runs "
                                  "the report at 16 px, tests/test_depthwise.py times the paths",
    r"^(?!python -m roadmap\.explain).*(/data/|\$HOME/data)": "data this machine lacks (a run.py line is composed as written)",
}
SMOKE = ["budget=smoke", "depthwise=native"]  # a few batches; timing the depthwise paths is tests/test_depthwise.py's


def readme_lines() -> list[str]:
    """The README's shell command lines, continuations joined, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = [re.sub(r"(^|\s+)#\s.*$", "", line) for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [" ".join(line.split()) for line in lines if line.strip()]


def why_not_here(line: str) -> str | None:
    return next((why for pattern, why in NOT_HERE.items() if re.search(pattern, line)), None)


def with_smoke_budget(line: str) -> str:
    """The line as this suite runs it: a smoke budget (a line's own budget stays), and a run folder of the default
    budget (``synthetic-cpu_proxy``) named as the smoke runs of the lines before it made it."""
    if line.startswith("make train"):
        return f'{line} ARGS="{" ".join(SMOKE)}"'
    if line.startswith("python run.py"):
        line = line.replace("synthetic-cpu_proxy", "synthetic-smoke")
        return " ".join([line, *(a for a in SMOKE if f" {a.split('=')[0]}=" not in line and
                                 not (a.startswith("budget") and "mode=eval" in line))])
    return line


def as_case(line: str) -> dict:
    """A case of tests/command_runner.py: run.py and ``python -m`` tools in its process, the rest in a shell."""
    if line.startswith("python run.py "):
        return {"tool": "run", "argv": line.split()[2:]}
    if line.startswith("python -m roadmap."):
        return {"tool": line.split()[2], "argv": line.split()[3:]}
    return {"tool": "shell", "argv": [line]}


RUN_HERE = [line for line in readme_lines() if why_not_here(line) is None]


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """Every line of RUN_HERE in README order, then the Python block, in a folder laid out as a fresh clone (the
    repository's files, ``.venv`` the suite's environment, no outputs): one process for them all
    (tests/command_runner.py; ``make`` and ``cat`` in a shell of their own)."""
    clone = tmp_path_factory.mktemp("clone")
    for entry in REPO.iterdir():
        if entry.name not in (".venv", "outputs", ".git"):
            (clone / entry.name).symlink_to(entry)
    (clone / ".venv").symlink_to(Path(sys.executable).parents[1])
    cases = [as_case(with_smoke_budget(line)) for line in RUN_HERE] + [{"tool": "python", "argv": [PYTHON_BLOCK]}]
    results = run_commands(cases, tmp_path_factory.mktemp("cases"), cwd=clone,
                           env={"PATH": f"{clone / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    yield clone, dict(zip([*RUN_HERE, "python block"], results))
    shutil.rmtree(clone / "outputs", ignore_errors=True)


def test_every_line_runs_here_or_says_why_not():
    lines = readme_lines()
    assert len(lines) > 30 and {"make train STEP=inverted_bottleneck", "make help"} <= set(RUN_HERE)
    assert all(re.match(r"(python|make|cat|torchrun) ", line + " ") for line in lines), lines  # nothing unparsed
    assert sum((why_not_here(line) or "").startswith("data this machine lacks")
               for line in lines) >= 10


# What each line that runs must show, beyond exit code 0 and no traceback
SHOWS = {
    "make train STEP=inverted_bottleneck": "== inverted_bottleneck (r50, seed 0): done ==",
    "cat conf/step/gelu.yaml": "act: gelu",
    "python -m roadmap.profile --regime r50": "separate downsampling layers (= ConvNeXt-T)",
    "python run.py regime=family +step=convnext_t recipe=convnext_in1k budget=smoke": "convnext_t (family, seed 0): done",
    "python run.py +step=gelu": "== gelu (r50, seed 0): done ==",
    "python run.py +step=gelu seed=1 recipe.ema.enabled=true": "| EMA top-1",
    "make analysis": "written: outputs/compare-r50.csv",
    "python run.py mode=eval ckpt=outputs/synthetic-cpu_proxy/r50/gelu/seed0/checkpoints/best.ckpt":
        "recorded in ",
    "make help": "make roadmap ",
    "python block": "separate_downsampling",
}


@pytest.mark.parametrize("line", [*RUN_HERE, "python block"])
def test_the_line_runs_as_written_with_a_smoke_budget(ran, line):
    clone, results = ran
    got = results[line]
    assert got["code"] == 0 and "Traceback" not in got["stderr"], (line, got["stderr"][-3000:])
    expected = "effective batch" if "roadmap.explain" in line else SHOWS[line]
    assert expected in got["stdout"], (line, got["stdout"][-3000:])


def test_what_the_lines_left_behind(ran):
    """The runs are where the README says. The evaluation (no ``+step``) took the step from the gelu run's record,
    is in that record, left the run's ``.hydra/`` as training wrote it, and made no folder."""
    clone, results = ran
    outputs = clone / "outputs"
    assert sorted(p.name for p in outputs.iterdir() if p.is_dir()) == [
        "synthetic-smoke", "synthetic-smoke+recipe.ema.enabled@true", "synthetic-smoke+recipe@convnext_in1k"]
    gelu = outputs / "synthetic-smoke" / "r50" / "gelu" / "seed0"
    record = json.loads((gelu / "metrics.json").read_text())
    assert record["status"] == "done" and [e["step"] for e in record["evaluations"]] == ["gelu"]
    assert (gelu / ".hydra" / "overrides.yaml").read_text().split() == ["-", "+step=gelu", "-", "budget=smoke", "-",
                                                                         "depthwise=native"]
    assert sorted(p.name for p in (outputs / "synthetic-smoke" / "r50").iterdir() if p.is_dir()) == [
        "gelu", "inverted_bottleneck"]
    assert (gelu / "weights" / "final.safetensors").exists()
    assert (clone / "outputs" / "synthetic-smoke" / "r50" / "roadmap.md").exists()  # make analysis


@pytest.mark.parametrize("line", [line for line in readme_lines() if "run.py" in line and why_not_here(line)])
def test_a_line_that_cannot_run_here_composes_to_a_valid_config(line):
    """As written, a shell substitution replaced by what it prints (the first step, a weights file)."""
    line = line.replace('"+step=$(python -m roadmap.sweep r50)"', "+step=original_recipe")
    line = re.sub(r"\$\(python -m roadmap\.sweep --weights-of [^)]*\)", "/runs/weights/final.safetensors", line)
    line = line.replace("$HOME", "/home/user")
    args = [a for a in line.split(" run.py ", 1)[1].split() if a != "-m"]
    assert all("$" not in a for a in args), line
    compose_config(*split_command(_first_of_each_sweep(args)))  # a multirun's first job
