"""Clusters for real: the README's SLURM commands through a two-node SLURM with accounting that these tests
start (tests/cluster.py: slurm-wlm, munge, slurmdbd on MariaDB; nodes n1 and n2 of one CPU each; a preemptible
``debug`` partition and a high-priority ``urgent`` one), a small one without accounting, and multi-process DDP
(gloo on CPU) over two SLURM nodes and locally.

Every job is the README's ``python run.py -m ... trainer=slurm`` with the CPU overrides below, on a tiny LN
step (3 epochs × 4 steps) of a narrow regime (``tests.helpers.TINY_REGIME`` on ``$ROADMAP_CONFIG_PATH``:
small checkpoints, quick jobs). SLURM holds a requeued job for about two minutes (reason ``BeginTime``) before
it starts it again; the tests start such jobs at once (``scontrol update StartTime=now``), as an admin could.

    make test-slurm      # only these tests
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from roadmap.run import record
from roadmap.run.record import RunRecord
from tests.apt import Unavailable
from tests.cluster import Cluster
from tests.helpers import assert_same_weights_and_history, last_weights, one_each

REPO = Path(__file__).resolve().parent.parent
REGIME = "tiny"
TINY = [f"regime={REGIME}", "budget=smoke", "logger=csv", "budget.epoch_scale=0.01", "budget.limit_train_batches=4",
        "budget.limit_val_batches=1.0", "data.train_size=64", "data.val_size=15", "recipe.mixup=0", "recipe.cutmix=0",
        "recipe.drop_path_rate=0", "recipe.base_lr=0.5", "run.export_weights=false", "trainer.enable_progress_bar=false",
        "depthwise=native"]  # no path measurement in each job: these tests are about clusters
CPU_SLURM = ["trainer=slurm", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=1",
             "trainer.precision=32-true", "channels_last=false", "hydra.launcher.gpus_per_node=0",
             "hydra.launcher.partition=debug", "hydra.launcher.mem_gb=3", "hydra.launcher.cpus_per_task=1",
             "hydra.launcher.timeout_min=10"]
STEP = "bn_to_ln"  # LN: no batch statistics, so a 2-process run can equal a 1-process one
SLOW = "+callbacks.slow._target_=tests.helpers.SlowFirstAttempt"
AUDIT = REPO / "tests" / "rank_audit"  # its sitecustomize logs, per global rank, every file a process writes
pytestmark = pytest.mark.usefixtures("tiny_regime")  # tests/conftest.py: every job runs on REGIME


@pytest.fixture(scope="module")
def cluster(tiny_regime):
    try:
        started = Cluster().start()
    except Unavailable as err:
        pytest.skip(str(err))
    yield started
    started.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted 1-process run of STEP, locally: what every interrupted, requeued or DDP run must equal."""
    root = tmp_path_factory.mktemp("reference")
    proc = subprocess.run([sys.executable, "run.py", f"+step={STEP}", *TINY, f"run.root={root}"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _run_dir(root, STEP)


def _run_dir(root: Path, step: str) -> Path:
    (found,) = Path(root).glob(f"*/{REGIME}/{step}/seed0")
    return found


_LAUNCHED: list[tuple[subprocess.Popen, Cluster | None]] = []  # this test's background commands


@pytest.fixture(autouse=True)
def _end_what_a_test_launched():
    """After each test, even one that failed halfway: its background commands killed, its cluster's jobs
    cancelled (a hung job would hold its nodes, and its DDP port, for the next test)."""
    yield
    while _LAUNCHED:
        proc, cluster = _LAUNCHED.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if cluster is not None:
            cluster.cancel_jobs()


def _background(command: list[str], cluster: Cluster | None = None, **kwargs) -> subprocess.Popen:
    """``command`` in a session of its own (killed with all its children if the test does not end it)."""
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kwargs)
    _LAUNCHED.append((proc, cluster))
    return proc


def _launch(cluster: Cluster, root: Path, *overrides: str, steps: str = STEP, env: dict | None = None) -> subprocess.Popen:
    """The README's sweep command through submitit, in the background (``env``: more variables for its jobs)."""
    return _background([sys.executable, "run.py", "-m", *one_each(f"+step={steps}", *TINY, *CPU_SLURM,
                                                                  f"run.root={root}", *overrides)],
                       cluster, env={**cluster.env, **(env or {})})


def _jobs(cluster: Cluster, state: str = "") -> list[str]:
    return cluster.run("squeue", "-h", "-o", "%i", *(["-t", state] if state else [])).split()


def _wait(cluster: Cluster, proc: subprocess.Popen, root: Path, timeout_s: float = 420, release: bool = True):
    """Wait for the sweep command, starting requeued jobs at once; returns (exit code, output, every status
    a run record of ``root`` was seen in)."""
    seen, deadline = set(), time.time() + timeout_s
    while proc.poll() is None:
        assert time.time() < deadline, f"the sweep did not end in {timeout_s} s: {cluster.run('squeue')}"
        seen |= {RunRecord.load(p).status for p in record.find_runs(root) if p.name == "seed0"}
        if release:
            for job in cluster.run("squeue", "-h", "-t", "PD", "-o", "%i %r").splitlines():
                job_id, reason = job.split(maxsplit=1)
                if reason == "BeginTime":
                    cluster.run("scontrol", "update", f"JobId={job_id}", "StartTime=now", check=False)
        time.sleep(1)
    return proc.returncode, proc.stdout.read(), seen


def _wait_for_training(root: Path, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    """Until a run under ``root`` has trained a step (its first mid-epoch checkpoint exists)."""
    deadline = time.time() + timeout_s
    while not list(root.glob("*/*/*/seed0/checkpoints/last.ckpt")):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "no run started training"
        time.sleep(0.5)


def _sweep_jobs(root: Path) -> list[str]:
    """The SLURM job ids of the sweeps under ``root`` (submitit's folder per job: ``<array>_<task>``, beside one
    named by the array's id)."""
    found = sorted(p.name for p in root.glob("multirun/*/.submitit/*") if p.is_dir() and p.name[0].isdigit())
    return [j for j in found if "_" in j] or found


@pytest.mark.slurm
def test_a_sweep_survives_a_preemption_and_builds_the_table(cluster, tmp_path, reference):
    """Two steps through submitit, one on each node; a job of the urgent partition takes both nodes and preempts
    them (SLURM: SIGTERM, GraceTime): each saves a checkpoint at once, says `preempted`, is requeued, resumes and
    ends done."""
    steps = f"{STEP},gelu"
    proc = _launch(cluster, tmp_path, SLOW, "+callbacks.slow.seconds=1", "run.checkpoint_every_n_steps=1", steps=steps)
    _wait_for_training(tmp_path, proc)
    cluster.run("sbatch", "-p", "urgent", "-N", "2", "-o", "/dev/null", "--wrap", "sleep 2")  # both nodes
    code, out, seen = _wait(cluster, proc, tmp_path)
    assert code == 0, out[-3000:]
    assert "sweep: 2 of 2 steps done" in out and f"{REGIME}/{STEP} seed 0: done" in out
    assert "preempted" in seen and "failed" not in seen
    jobs = {job: cluster.job(job) for job in _sweep_jobs(tmp_path)}
    assert len(jobs) == 2 and all(j["JobState"] == "COMPLETED" for j in jobs.values()), jobs
    assert any(int(j["Restarts"]) >= 1 for j in jobs.values())  # requeued, not resubmitted
    for step in steps.split(","):
        assert RunRecord.read(_run_dir(tmp_path, step)).status == "done"
    assert_same_weights_and_history(_run_dir(tmp_path, STEP), reference)  # nothing lost: the uninterrupted weights
    table = subprocess.run([sys.executable, "-m", "analysis.roadmap", str(tmp_path), "--regime", REGIME], cwd=REPO,
                           capture_output=True, text=True)
    assert table.returncode == 0 and STEP in table.stdout, table.stderr[-2000:]


@pytest.mark.slurm
def test_a_two_node_time_limit_requeues_mid_epoch_and_resumes(cluster, tmp_path, reference):
    """A 2-node job (one task on each node) with a 2-minute time limit; submitit asks for SIGUSR2 60 s before it.
    The first attempt (slowed down) is training then: every task gets the signal, one checkpoint is written at
    the next step, submitit requeues the job once, and the requeued job resumes on both nodes and ends within
    float tolerance of the 1-process run; the sweep exits 0."""
    proc = _launch(cluster, tmp_path, SLOW, "+callbacks.slow.seconds=8", "hydra.launcher.timeout_min=2",
                   "hydra.launcher.signal_delay_s=60", "trainer.num_nodes=2", "budget.batch_size=4")
    code, out, seen = _wait(cluster, proc, tmp_path)
    assert code == 0 and "sweep: 1 of 1 steps done" in out and f"{REGIME}/{STEP} seed 0: done" in out, out[-3000:]
    assert "preempted" in seen and "failed" not in seen
    (job,) = _sweep_jobs(tmp_path)
    state = cluster.job(job)
    assert state["JobState"] == "COMPLETED" and state["Restarts"] == "1" and state["NumNodes"] == "2", state
    logs = [p.read_text() for p in sorted(tmp_path.glob(f"multirun/*/.submitit/{job}/{job}_*_log.err"))]
    assert len(logs) == 2 and all("Caught signal SIGUSR2" in log for log in logs), [log[-1500:] for log in logs]
    assert "timed-out" in logs[0]
    _assert_same_within_float_tolerance(_run_dir(tmp_path, STEP), reference)


@pytest.mark.slurm
def test_scancel_is_recorded_as_cancelled_and_the_same_command_resumes(cluster, tmp_path, reference):
    command = [SLOW, "+callbacks.slow.seconds=2", "run.checkpoint_every_n_steps=1"]
    proc = _launch(cluster, tmp_path, *command)
    _wait_for_training(tmp_path, proc)
    (job,) = _jobs(cluster, "R")
    cluster.run("scancel", job)
    code, out, _ = _wait(cluster, proc, tmp_path, release=False)
    assert code == 3 and f"{REGIME}/{STEP} seed 0: cancelled" in out, out[-3000:]
    assert "Traceback" not in out and "DataLoader worker" not in out
    cancelled = RunRecord.read(_run_dir(tmp_path, STEP))
    assert cancelled.status == "cancelled" and "resumes" in cancelled.error
    assert cluster.job(job)["JobState"] == "CANCELLED"
    code, out, seen = _wait(cluster, _launch(cluster, tmp_path, *command), tmp_path)
    assert code == 0 and "resuming from" in "".join(p.read_text() for p in tmp_path.glob("multirun/*/.submitit/*/*.out")), out
    assert_same_weights_and_history(_run_dir(tmp_path, STEP), reference)


def _assert_same_within_float_tolerance(run_dir: Path, reference: Path, devices: int = 2) -> None:
    """Two processes at batch 4 (for all of the run, or until a resume on ``devices``) = one at batch 8: weights
    within float tolerance of the 1-process run's (the updates differ by < 1e-4 of their size), every validation
    image counted once."""
    import lightning as L

    from roadmap.config.steps import compose_config, instantiate_model

    L.seed_everything(0, workers=True, verbose=False)  # the initial weights of both runs (train.py's seeding)
    init = instantiate_model(compose_config(STEP, REGIME, overrides=TINY[1:]).model).state_dict()
    a, b = last_weights(reference), last_weights(run_dir)
    ua, ub = (torch.cat([(w[k] - init[k.removeprefix("model.")]).flatten() for k in a]) for w in (a, b))
    assert ua.norm() > 0 and (ua - ub).norm() / ua.norm() < 1e-4
    for ran in (run_dir, reference):
        result = RunRecord.read(ran)
        assert result.status == "done" and all(e["val/images"] == 15 for e in result.history)
    assert RunRecord.read(run_dir).effective_run["effective_batch"] == 8
    assert RunRecord.read(run_dir).hardware["devices"] == devices


def test_a_mid_epoch_checkpoint_of_two_processes_resumes_on_one_at_twice_the_batch(tmp_path, reference):
    """2 processes at batch 4 get SIGUSR2 after optimizer step 2 of epoch 0 and stop at the next (a checkpoint,
    `preempted`); 1 process at batch 8, given the run's folder (another per-device batch names another one),
    resumes at the same sample of the epoch (24) and ends within float tolerance of the uninterrupted
    1-process run."""
    local = [sys.executable, "run.py", f"+step={STEP}", *TINY, f"run.root={tmp_path}", "trainer.accelerator=cpu",
             "trainer.precision=32-true", "channels_last=false"]
    stop = ["+callbacks.preempt._target_=tests.helpers.SignalAtStep", "+callbacks.preempt.step=2"]
    first = subprocess.run([*local, *stop, "trainer=ddp", "trainer.devices=2", "budget.batch_size=4"], cwd=REPO,
                           capture_output=True, text=True)
    assert first.returncode == 3 and "preempted: signal SIGUSR2" in first.stderr, first.stderr[-3000:]
    run_dir = _run_dir(tmp_path, STEP)
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 3 and saved["RoadmapDataModule"]["resume_samples"] == 24
    again = subprocess.run([*local, f"run.dir={run_dir}"], cwd=REPO, capture_output=True, text=True)  # its folder
    assert again.returncode == 0 and "resuming from" in again.stdout, again.stderr[-3000:]
    _assert_same_within_float_tolerance(run_dir, reference, devices=1)


def _audited(root: Path, logs: Path) -> dict:
    """The environment under which every process logs what it writes under ``root`` (tests/rank_audit)."""
    logs.mkdir()
    return {"PYTHONPATH": str(AUDIT), "ROADMAP_AUDIT_ROOT": str(root), "ROADMAP_AUDIT_DIR": str(logs)}


def _assert_only_rank_zero_wrote(logs: Path, ranks: int = 2) -> None:
    """Rank 0 wrote the run's record, config, checkpoints and logger files; no other rank wrote anything but its own
    submitit result (``.submitit/<job>/<job>_<rank>_result.pkl``) and Hydra's job folder, which every task's
    Hydra job makes (``mkdir``, empty: its files are rank 0's, hydra_plugins/roadmap_slurm_launcher)."""
    def theirs(line: str) -> bool:
        return "/.submitit/" in line or (" os.mkdir " in line and "/multirun/" in line)

    written = {r: "".join(line for line in (logs / f"rank{r}.log").read_text().splitlines(keepends=True)
                          if not theirs(line)) if (logs / f"rank{r}.log").exists() else ""
               for r in range(ranks)}
    assert all(name in written[0] for name in ("metrics.json", "config.yaml", "last.ckpt", "csv/")), written[0][-2000:]
    assert all(not written[r] for r in range(1, ranks)), {r: written[r][:2000] for r in range(1, ranks)}


@pytest.mark.slurm
def test_two_node_ddp_under_slurm_equals_one_process(cluster, tmp_path, reference):
    """The README's SLURM command with trainer.num_nodes=2: one task on n1, one on n2 (gloo over loopback)."""
    env = _audited(tmp_path, tmp_path.parent / f"{tmp_path.name}-audit")
    code, out, _ = _wait(cluster, _launch(cluster, tmp_path, "trainer.num_nodes=2", "budget.batch_size=4", env=env),
                         tmp_path)
    assert code == 0, out[-3000:]
    (job,) = _sweep_jobs(tmp_path)
    state = cluster.job(job)
    assert state["NodeList"] == "n[1-2]" and state["NumNodes"] == "2" and state["NumTasks"] == "2", state
    assert cluster.sacct(job)["State"] == "COMPLETED"
    _assert_same_within_float_tolerance(_run_dir(tmp_path, STEP), reference)
    _assert_only_rank_zero_wrote(Path(env["ROADMAP_AUDIT_DIR"]))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_agents_restart_a_killed_worker_which_resumes(tmp_path, reference):
    """The README's torchrun command on two "nodes" (agents of --nnodes=2 --nproc-per-node=1 on loopback, static
    rendezvous) with --max-restarts=1: rank 1 is SIGKILLed after optimizer step 2, both agents restart their
    workers, which resume from step 1's checkpoint and end within float tolerance of 1 process at batch 8;
    only rank 0 wrote the run."""
    markers, env = tmp_path.parent / f"markers-{tmp_path.name}", _audited(tmp_path, tmp_path.parent / f"audit-{tmp_path.name}")
    markers.mkdir()
    port = _free_port()
    agents = [_background(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}",
         "--master-addr=127.0.0.1", f"--master-port={port}", "--max-restarts=1", "run.py", f"+step={STEP}", *TINY,
         "trainer=torchrun", "trainer.accelerator=cpu", "trainer.precision=32-true", "channels_last=false",
         "budget.batch_size=4", "run.checkpoint_every_n_steps=1", f"run.root={tmp_path}",
         *_died(markers, (STEP, "SIGKILL")), "+callbacks.die0.after=2", "+callbacks.die0.rank=1"],
        env={**os.environ, **env}) for rank in range(2)]
    outs = [agent.communicate(timeout=300)[0] for agent in agents]
    assert [a.returncode for a in agents] == [0, 0], [out[-3000:] for out in outs]
    assert (markers / STEP).exists() and "resuming from" in outs[0], outs[0][-3000:]
    _assert_same_within_float_tolerance(_run_dir(tmp_path, STEP), reference)
    _assert_only_rank_zero_wrote(Path(env["ROADMAP_AUDIT_DIR"]))


def _died(markers: Path, *deaths: tuple[str, str]) -> list[str]:
    """Overrides under which each (step, how) dies once, after its first optimizer step (tests.helpers.DieOnStep)."""
    return [o for i, (step, how) in enumerate(deaths) for o in (
        f"+callbacks.die{i}._target_=tests.helpers.DieOnStep", f"+callbacks.die{i}.step={step}",
        f"+callbacks.die{i}.how={how}", f"+callbacks.die{i}.markers={markers}")]


def _ended_at(cluster: Cluster, jobs: list[str]) -> float:
    """When SLURM says the last of ``jobs`` ended (epoch seconds)."""
    return max(time.mktime(time.strptime(cluster.job(j)["EndTime"], "%Y-%m-%dT%H:%M:%S")) for j in jobs)


def _assert_recorded_death(cluster, root: Path, out: str, step: str, job: str, said: str) -> None:
    line = next(line for line in out.splitlines() if f"{REGIME}/{step} seed 0: failed" in line)
    assert f"SLURM job {job}: FAILED" in line and said in line and "_log.err" in line, line
    died = RunRecord.read(_run_dir(root, step))
    assert died.status == "failed" and f"SLURM job {job}: FAILED" in died.error and said in died.error


@pytest.mark.slurm
def test_a_process_killed_without_a_signal_is_recorded_failed_and_the_sweep_goes_on(cluster, tmp_path):
    """Three steps; one is SIGKILLed (the OOM killer's way), one segfaults. Accounting knows both FAILED; the
    sweep records each with what SLURM said, trains the third to done, ends within a minute with one line per
    step and exit 1, no traceback. The same command again retrains only the two that died."""
    steps, markers = f"{STEP},gelu,separate_downsampling", tmp_path.parent / f"{tmp_path.name}-markers"
    markers.mkdir()
    command = _died(markers, ("gelu", "SIGKILL"), ("separate_downsampling", "segfault"))
    proc = _launch(cluster, tmp_path, *command, steps=steps)
    code, out, _ = _wait(cluster, proc, tmp_path, timeout_s=240)
    finished = time.time()
    assert code == 1 and "sweep: 1 of 3 steps done" in out, out[-3000:]
    assert "Traceback" not in out and "Bypassing sacct" not in out, out[-3000:]
    jobs = _sweep_jobs(tmp_path)
    assert finished - _ended_at(cluster, jobs) < 60
    by_step = dict(zip(steps.split(","), jobs))
    assert cluster.sacct(by_step["gelu"])["State"] == "FAILED" and cluster.sacct(by_step[STEP])["State"] == "COMPLETED"
    _assert_recorded_death(cluster, tmp_path, out, "gelu", by_step["gelu"], "SIGKILL")
    _assert_recorded_death(cluster, tmp_path, out, "separate_downsampling", by_step["separate_downsampling"],
                           "segmentation fault")
    done_before = _run_dir(tmp_path, STEP) / "metrics.json"
    stamp = done_before.stat().st_mtime_ns
    code, out, _ = _wait(cluster, _launch(cluster, tmp_path, *command, steps=steps), tmp_path, timeout_s=240)
    assert code == 0 and "sweep: 3 of 3 steps done" in out, out[-3000:]
    assert done_before.stat().st_mtime_ns == stamp  # the finished step was not retrained
    assert all(RunRecord.read(_run_dir(tmp_path, s)).status == "done" for s in steps.split(","))


@pytest.mark.slurm
def test_a_rank_that_dies_in_a_two_node_job_is_named(cluster, tmp_path):
    """Rank 1 of a two-node job segfaults after its first step; rank 0 then fails in a collective. The sweep line
    and the run record name the rank that died, its node, how, and its log, not rank 0's collective error."""
    markers = tmp_path.parent / f"{tmp_path.name}-markers"
    markers.mkdir()
    died = [*_died(markers, (STEP, "segfault")), "+callbacks.die0.rank=1"]
    proc = _launch(cluster, tmp_path, *died, "trainer.num_nodes=2", "budget.batch_size=4")
    code, out, _ = _wait(cluster, proc, tmp_path, timeout_s=240)
    assert code == 1 and "sweep: 0 of 1 steps done" in out and "Traceback" not in out, out[-3000:]
    (job,) = _sweep_jobs(tmp_path)
    line = next(line for line in out.splitlines() if f"{REGIME}/{STEP} seed 0: failed" in line)
    assert "rank 1 on node n2 died: Segmentation fault" in line and f"{job}_1_log.err" in line, line
    assert "GLHF" not in line and "Connection closed" not in line, line
    error = RunRecord.read(_run_dir(tmp_path, STEP)).error
    assert "rank 1 on node n2 died: Segmentation fault" in error and "GLHF" not in error, error


@pytest.mark.slurm
def test_a_killed_process_ends_the_sweep_without_accounting(tiny_regime, tmp_path):
    """On a small cluster without slurmdbd (sacct fails), a SIGKILLed step is recorded failed from scontrol's
    word, and the sweep ends with exit 1 instead of polling forever."""
    try:
        small = Cluster(accounting=False, port=16917).start()
    except Unavailable as err:
        pytest.skip(str(err))
    try:
        markers = tmp_path.parent / f"{tmp_path.name}-markers"
        markers.mkdir()
        proc = _launch(small, tmp_path, *_died(markers, (STEP, "SIGKILL")))
        code, out, _ = _wait(small, proc, tmp_path, timeout_s=180)
        assert code == 1 and "sweep: 0 of 1 steps done" in out and "Traceback" not in out, out[-3000:]
        assert out.count("sacct fails") <= 1 and "Bypassing sacct" not in out, out[-3000:]
        (job,) = _sweep_jobs(tmp_path)
        assert time.time() - _ended_at(small, [job]) < 60
        _assert_recorded_death(small, tmp_path, out, STEP, job, "SIGKILL")
    finally:
        small.close()


@pytest.mark.slurm
def test_a_node_lost_mid_run_requeues_the_two_node_job_which_resumes(cluster, tmp_path, reference):
    """Mid-run, node n2's slurmd and its job processes are SIGKILLed (a node off the network), then n2 is set
    down, and back once SLURM has requeued the job. The job resumes on both nodes from the last checkpoint (at most
    one checkpoint interval, one step here, is trained again), ends done within float tolerance of the 1-process
    run, and the sweep exits 0: the surviving rank's error is not the final record."""
    proc = _launch(cluster, tmp_path, SLOW, "+callbacks.slow.seconds=2", "run.checkpoint_every_n_steps=1",
                   "trainer.num_nodes=2", "budget.batch_size=4")
    _wait_for_training(tmp_path, proc)
    (job,) = _jobs(cluster, "R")
    last = next(tmp_path.glob("*/*/*/seed0/checkpoints/last.ckpt"))
    trained = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    cluster.lose_node("n2")
    deadline = time.time() + 120
    while cluster.job(job).get("JobState") not in ("PENDING", "REQUEUED"):
        assert time.time() < deadline, cluster.job(job)
        time.sleep(0.5)
    resumes_at = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert resumes_at >= trained  # the checkpoint of the step before the loss, or a later one
    cluster.bring_back("n2", requeued=job)
    code, out, seen = _wait(cluster, proc, tmp_path)
    assert code == 0 and "sweep: 1 of 1 steps done" in out, out[-3000:]
    state = cluster.job(job)
    assert state["JobState"] == "COMPLETED" and int(state["Restarts"]) >= 1, state
    attempts = "".join(p.read_text() for p in tmp_path.glob(f"multirun/*/.submitit/{job}/*_0_log.out"))
    assert f"resuming from {last}" in attempts
    _assert_same_within_float_tolerance(_run_dir(tmp_path, STEP), reference)
    print(f"node loss: statuses seen {sorted(seen)}, trained to step {trained}, resumed at {resumes_at}")

