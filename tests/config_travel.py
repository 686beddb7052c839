"""How a run's config travels: ``python -m tests.config_travel`` runs one smoke run in-process, as ``run.py`` does (the
Hydra callback's pass, then ``train``), and follows every call that receives the config (a ``DictConfig``) into a
project file. It prints the files in the order the config enters them and three counts: the files entered, the
returns (entering a file it had left), and the climbs (entering a file that imports, directly or not, the file it
comes from: a step back up the house)."""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from tests.test_architecture import REPO, import_graph

PROJECT = str(REPO / "roadmap")


def _above(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Each module → the modules that import it, directly or not."""
    reaches = {}
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        reaches[start] = seen
    return {m: {a for a in graph if m in reaches[a]} for m in graph}


def follow(run) -> list[str]:
    """The project modules the config enters while ``run()`` runs, consecutive repeats merged."""
    visits: list[str] = []

    def profile(frame, event, _arg):
        if event != "call" or not frame.f_code.co_filename.startswith(PROJECT):
            return
        if any(isinstance(v, DictConfig) for v in frame.f_locals.values()):
            module = ".".join(Path(frame.f_code.co_filename).relative_to(REPO).with_suffix("").parts)
            module = module.removesuffix(".__init__")
            if not visits or visits[-1] != module:
                visits.append(module)

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return visits


def counts(visits: list[str]) -> dict[str, int]:
    above = _above(import_graph())
    entered, returns, climbs = set(), 0, 0
    for before, now in zip([None, *visits], visits):
        returns += now in entered
        climbs += before is not None and now in above.get(before, set())
        entered.add(now)
    return {"stays": len(visits), "files": len(entered), "returns": returns, "climbs": climbs}


def smoke_run():
    """A composed smoke run, and what ``run.py`` does with it: the Hydra callback's pass, then training."""
    from roadmap.config.steps import compose_config
    from roadmap.run.plan import ResolveBeforeRun
    from roadmap.run.train import train

    root = tempfile.mkdtemp(prefix="config-travel-")
    cfg = compose_config("gelu", "r50", ["budget=smoke", "logger=csv", f"run.root={root}"], as_run=True)

    def run():
        try:
            ResolveBeforeRun().on_run_start(cfg)  # the Hydra callback of a single run
            train(cfg)
        finally:
            shutil.rmtree(root, ignore_errors=True)  # a full-size r50's checkpoints: ~0.5 GB
    return run


if __name__ == "__main__":
    path = follow(smoke_run())
    print(" → ".join(m.removeprefix("roadmap.") for m in path))
    print(counts(path))
