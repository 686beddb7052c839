"""A sweep's jobs and their outcomes: each job of a multirun (local, or a SLURM job through submitit) writes its
outcome to ``outcome.json`` in its Hydra job folder (``<sweep dir>/<job number>/``); the launching process reads them
all when the sweep ends (:class:`SweepReport`: progress before each job, then one line per step and an exit code that
says whether every step is done)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback

from roadmap.utils.files import write_text


OUTCOME_FILE = "outcome.json"



# run.py's exit code for each outcome; a sweep exits with the first of failed/missing, refused, stopped it has
# A job's Hydra files (.hydra/, the job log) are global rank 0's: the overrides the other ranks' Hydra runs with
OTHER_RANKS_HYDRA = ["hydra.output_subdir=null", "hydra/job_logging=stdout"]



EXIT = {"done": 0, "failed": 1, "missing": 1, "refused": 2, "preempted": 3, "cancelled": 3}



def write_outcome(cfg, status: str, error: str | None) -> None:
    """This job's outcome, for the sweep's report (in the Hydra job folder, atomically; by global rank 0)."""
    from hydra.core.hydra_config import HydraConfig
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    outcome = {"step": HydraConfig.get().runtime.choices.get("step"), "regime": cfg.regime.name, "seed": cfg.seed,
               "status": status, "error": error, "run_dir": str(Path(cfg.run.dir).resolve())}
    write_text(Path(HydraConfig.get().runtime.output_dir) / OUTCOME_FILE, json.dumps(outcome, indent=2))



def sweep_report(sweep_dir: Path, jobs: int) -> tuple[list[str], int]:
    """One line per job of a sweep (``step seed k: status[: error]``) and the sweep's exit code."""
    lines, codes = [], []
    for num in range(jobs):
        try:
            o = json.loads((Path(sweep_dir) / str(num) / OUTCOME_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            o = {"step": f"job {num}", "seed": "?", "status": "missing",
                 "error": f"no outcome: the job died before it could write one (its log: {sweep_dir})"}
        lines.append(f"{o['regime'] + '/' if 'regime' in o else ''}{o['step']} seed {o['seed']}: {o['status']}"
                     + (f": {o['error']}" if o.get("error") and o["status"] != "done" else ""))
        codes.append(EXIT.get(o["status"], 1))
    worst = next((c for c in (1, 2, 3) if c in codes), 0)
    return lines, worst



def sweep_size(task_overrides) -> int:
    """Number of jobs of a basic-sweeper multirun: the product of the comma-list lengths."""
    parsed = OverridesParser.create().parse_overrides(list(task_overrides))
    return math.prod(len(list(o.sweep_iterator())) if o.is_sweep_override() else 1 for o in parsed)



class SweepReport(Callback):
    """Prints ``[n/N] <step> seed <k> | elapsed | ETA`` before each job of a local multirun; when the sweep ends,
    one line per step (done / failed with its error / preempted / cancelled / refused / missing) and exits with
    :data:`EXIT`'s code for the worst of them (0: every step done)."""

    def on_multirun_start(self, config, **kwargs) -> None:
        self.total = sweep_size(config.hydra.overrides.task)
        self.started, self.done = time.time(), 0
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def on_multirun_end(self, config, **kwargs) -> None:
        lines, code = sweep_report(self.sweep_dir, self.total)
        done = sum(line.endswith(": done") for line in lines)
        print(f"sweep: {done} of {len(lines)} steps done ({self.sweep_dir})", *(f"  {line}" for line in lines),
              sep="\n", flush=True)
        if code:
            raise SystemExit(code)

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
