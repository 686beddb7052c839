"""Sweeps: the regime's step list for ``make roadmap``, and a Hydra callback that shows sweep progress.

    python -m roadmap.sweep r50     # prints the steps as Hydra sweep values: original_recipe,modern_recipe,...
"""
from __future__ import annotations

import math
import sys
import time

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback

from roadmap.steps import list_steps


def sweep_size(task_overrides) -> int:
    """Number of jobs of a basic-sweeper multirun: the product of the comma-list lengths."""
    parsed = OverridesParser.create().parse_overrides(list(task_overrides))
    return math.prod(len(list(o.sweep_iterator())) if o.is_sweep_override() else 1 for o in parsed)


class SweepProgress(Callback):
    """Prints ``[n/N] <step> seed <k> | elapsed | ETA`` before each job of a local multirun."""

    def on_multirun_start(self, config, **kwargs) -> None:
        self.total = sweep_size(config.hydra.overrides.task)
        self.started, self.done = time.time(), 0

    def on_job_start(self, config, **kwargs) -> None:
        if not hasattr(self, "total"):  # a single run, not a sweep
            return
        elapsed = time.time() - self.started
        eta = f"{elapsed / self.done * (self.total - self.done):.0f} s" if self.done else "?"
        step = config.hydra.runtime.choices.get("step")
        print(f"[{self.done + 1}/{self.total}] {config.regime.name}/{step} seed {config.seed} | "
              f"elapsed {elapsed:.0f} s | ETA {eta}", flush=True)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if hasattr(self, "total"):
            self.done += 1


if __name__ == "__main__":
    print(",".join(s.name for s in list_steps(sys.argv[1] if len(sys.argv) > 1 else "r50")))
