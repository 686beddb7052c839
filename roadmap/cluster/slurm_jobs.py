"""SLURM jobs that end by SLURM's own word, for the roadmap's Hydra launcher
(``hydra_plugins/roadmap_slurm_launcher``).

Why: hydra-submitit-launcher waits with submitit's ``Job.results()``, which learns that a job ended from its result
pickle or from ``sacct``. A job that dies without a signal to catch (SIGKILL from the OOM killer, a segfault)
writes no pickle: without accounting ``sacct`` fails and submitit polls forever ("Bypassing sacct error" at each
poll); with accounting it raises ``UncompletedJobError`` and the sweep ends in Hydra's traceback. Nor is a pickle
the end: a job that SLURM requeues after losing one of its nodes leaves one per attempt (its surviving ranks
return), and the next attempt may still turn it into ``done``.

Here a job is finished once SLURM says so: ``scontrol`` (or ``sacct`` once the controller has forgotten the
job) shows it in a final state at two polls in a row. Its result pickle then gives Hydra's return as before;
without one the job died, and :func:`record_death` turns its ``running`` outcome and run record into ``failed``
with what SLURM said (state, exit code or signal, the log), so the sweep reports it and goes on. Where srun says
that one of a job's tasks died (a signal, a segfault, a non-zero exit), the record names that rank, its node, how it
died and its log instead of what the surviving ranks said after it.
"""
from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from submitit.slurm.slurm import SlurmJob

# SLURM job states after which the job runs no more (the rest are pending, running or on their way to a requeue)
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED", "SPECIAL_EXIT"}
POLL_S = 5.0


@dataclass(frozen=True)
class JobEnd:
    """How SLURM says a job ended: ``state`` (COMPLETED, FAILED, ...), ``exit_code`` as ``code:signal``."""

    job_id: str
    state: str
    exit_code: str
    source: str  # scontrol | sacct | gone (neither knows the job any more)

    def describe(self) -> str:
        code, _, sig = self.exit_code.partition(":")
        number = int(sig) if sig.isdigit() and int(sig) else (int(code) - 128 if code.isdigit() and int(code) > 128 else 0)
        cause = ""
        if number:
            name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else f"signal {number}"
            cause = {"SIGKILL": " (killed: SIGKILL, what the OOM killer sends)",
                     "SIGSEGV": " (a segmentation fault)"}.get(name, f" ({name})")
        return f"SLURM job {self.job_id}: {self.state}, exit code {self.exit_code or '?'}{cause} (from {self.source})"


_sacct_said = set()  # what a failing sacct said, once per message


def job_end(job_id: str) -> JobEnd | None:
    """The job's final state, or None while SLURM may still run it."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    if out.returncode == 0 and out.stdout.strip():
        fields = dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)
        state = fields.get("JobState", "")
        return JobEnd(job_id, state, fields.get("ExitCode", ""), "scontrol") if state in FINAL else None
    acct = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode"], capture_output=True,
                          text=True)
    rows = [line.split("|") for line in acct.stdout.splitlines() if "|" in line]
    if acct.returncode == 0 and rows:
        state = rows[-1][0].split()[0]  # "CANCELLED by 0"
        return JobEnd(job_id, state, rows[-1][1], "sacct") if state in FINAL else None
    message = " ".join(acct.stderr.split())[:200]
    if acct.returncode and message not in _sacct_said:
        _sacct_said.add(message)
        print(f"slurm: sacct fails ({message}): a job the controller has forgotten counts as ended", file=sys.stderr)
    return JobEnd(job_id, "UNKNOWN", "", "gone")


@dataclass(frozen=True)
class Died:
    """A job that ended without a result, or one of whose ranks died: what SLURM said, and the log to read (the
    dead rank's, else task 0's)."""

    end: JobEnd
    log: Path
    trace: str | None = None  # the job's own exception, when submitit caught one
    rank: str | None = None   # "rank 1 on node n2 died: Segmentation fault", from srun (:func:`dead_rank`)

    def error(self) -> str:
        if self.rank:
            return f"{self.rank} (its log: {self.log}); {self.end.describe()}"
        said = f": {self.trace}" if self.trace else ""
        return f"{self.end.describe()}{said}; log {self.log}"


# srun's word on a task that died (in the batch script's stderr: task 0's log under submitit), e.g.
# "srun: error: n2: task 1: Segmentation fault", "srun: error: n1: tasks 0-1: Killed"
SRUN_TASK_DIED = re.compile(r"^srun: error: (?P<node>\S+): (?P<tasks>tasks? [\d,\-]+): (?P<how>.+)$", re.MULTILINE)


def dead_rank(job_log: Path) -> tuple[str, str] | None:
    """The first task srun saw die, from the job's log: (its task number, "rank N on node X died: how")."""
    try:
        found = SRUN_TASK_DIED.search(job_log.read_text(errors="replace"))
    except OSError:
        return None
    if found is None:
        return None
    tasks = found["tasks"].split()[1]
    plural = "ranks" if found["tasks"].startswith("tasks") else "rank"
    return re.split(r"[,\-]", tasks)[0], f"{plural} {tasks} on node {found['node']} died: {found['how'].strip()}"


def settled_end(job_id: str) -> JobEnd | None:
    """:func:`job_end`, believed only when it says the same after another poll: a node failure passes through a
    final-looking state on its way to a requeue."""
    if job_end(job_id) is None:
        return None
    time.sleep(POLL_S)
    return job_end(job_id)


def results_by_slurm_state(job: SlurmJob) -> list:
    """``SlurmJob.results`` that returns when SLURM says the job ended: rank 0's result where it wrote one, else
    :class:`Died` (submitit's would hang without accounting, or raise with it)."""
    end = settled_end(job.job_id)
    while end is None:
        time.sleep(POLL_S)
        end = settled_end(job.job_id)
    first = job._sub_jobs[0] if job._sub_jobs else job  # rank 0: the Hydra job's return
    died = dead_rank(first.paths.stderr) if end.state in ("FAILED", "OUT_OF_MEMORY") else None
    if died:  # what the other ranks said after it (a collective's "connection closed") is not the cause
        task, said = died
        tasks = job._sub_jobs or [job]
        log = next((t.paths.stderr for t in tasks if t.task_id == int(task)), first.paths.stderr)
        return [Died(end, log, rank=said)]
    if first.paths.result_pickle.exists():
        outcome, result = first._get_outcome_and_result()
        if outcome == "success":
            return [result]
        return [Died(end, first.paths.stderr, str(result).strip().splitlines()[-1])]
    return [Died(end, first.paths.stderr)]


@contextlib.contextmanager
def jobs_ended_by_slurm_state():
    """Inside the block, submitit's SLURM jobs are done and give results by :func:`results_by_slurm_state`
    (a job array's jobs are ``SlurmJob`` whatever the executor's ``job_class``: the class is patched)."""
    saved = SlurmJob.results, SlurmJob.done
    SlurmJob.results = results_by_slurm_state
    SlurmJob.done = lambda job, force_check=False: settled_end(job.job_id) is not None
    try:
        yield
    finally:
        SlurmJob.results, SlurmJob.done = saved


def record_death(job_dir: Path, overrides: list[str], error: str, replaces_failed: bool = False) -> None:
    """The dead job's outcome (``running`` since it started, or none if it died before) and its run record
    become ``failed`` with ``error``; a record that already says how the run ended is kept, except a ``failed``
    one where ``replaces_failed`` (a rank died: the survivors' error is not the cause)."""
    from roadmap.run.outcome import OUTCOME_FILE
    from roadmap.run.record import RunRecord
    from roadmap.utils.files import write_text

    path = job_dir / OUTCOME_FILE
    try:
        outcome = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        given = dict(o.lstrip("+").split("=", 1) for o in overrides if "=" in o)
        outcome = {"step": given.get("step", "?"), "seed": given.get("seed", "?"), "run_dir": None}
    ending = ("running", "failed") if replaces_failed else ("running",)
    if outcome.get("status", "running") not in ending:
        return
    write_text(path, json.dumps({**outcome, "status": "failed", "error": error}, indent=2))
    run = RunRecord.read(Path(outcome["run_dir"])) if outcome.get("run_dir") else None
    if run is not None and run.status in ending:
        run.with_status("failed", error, run.history, run.wall_s or 0.0).write(Path(outcome["run_dir"]))
