"""Run many command lines of the project's tools in this one process and report how each ended, as JSON.

    python -m tests.command_runner CASES.json RESULTS.json

A case is ``{"tool": ..., "argv": [...], "env": {...}, "root": PATH}``. Its tool is ``run`` (``run.py``), a module
with ``main(argv)``, ``python`` (``argv[0]`` is a Python program) or ``shell`` (``argv[0]`` is a bash command line,
run in a process of its own). Its result is its exit code, what it wrote on stdout and stderr, and every file that
exists under ``root`` afterwards (a refused command leaves none). Each case runs as its tool's ``__main__`` would,
with ``sys.argv`` and the environment set for it, in the current folder; Hydra is reset between cases.
"""
import contextlib
import importlib
import io
import json
import os
import runpy
import subprocess
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_case(case: dict) -> dict:
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    saved_env = dict(os.environ)
    os.environ.update(case.get("env", {}))
    out, err, code = io.StringIO(), io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if case["tool"] == "run":
                sys.argv = [str(REPO / "run.py"), *case["argv"]]
                runpy.run_path(sys.argv[0], run_name="__main__")
            elif case["tool"] == "python":
                exec(compile(case["argv"][0], "<case>", "exec"), {"__name__": "__main__"})  # noqa: S102 - a test's own program
            elif case["tool"] == "shell":
                proc = subprocess.run(["bash", "-c", case["argv"][0]], capture_output=True, text=True)
                out.write(proc.stdout)
                err.write(proc.stderr)
                code = proc.returncode
            else:
                tool = importlib.import_module(case["tool"])
                if hasattr(tool, "__path__"):  # a package's command: python -m roadmap.data runs its __main__
                    tool = importlib.import_module(f"{case['tool']}.__main__")
                tool.main(case["argv"])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if isinstance(stop.code, str):
            err.write(stop.code + "\n")
    except BaseException:  # noqa: BLE001 - a traceback is what the table must never see: reported as such
        code = 1
        err.write(traceback.format_exc())
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    root = Path(case["root"]) if case.get("root") else None
    left = sorted([str(root), *(str(p) for p in root.rglob("*"))]) if root and root.exists() else []  # root included
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "left": left}


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    cases, results = map(Path, sys.argv[1:3])
    results.write_text(json.dumps([run_case(case) for case in json.loads(cases.read_text())]))
