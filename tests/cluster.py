"""A real single-node SLURM for the cluster tests: Debian's ``slurm-wlm`` and ``munge``, installed when absent
(root and apt), configured in a temporary folder, started, and stopped by pid.

Two partitions on the one node: ``debug`` (default, low priority, preemptible: ``PreemptMode=REQUEUE``,
``GraceTime``) and ``urgent`` (high priority), as a lab cluster with a preemptible queue has them. Every
daemon, socket, state and log lives in the folder; clients find it through ``SLURM_CONF``.

    python -m tests.cluster      # start one by hand, print its SLURM_CONF, stop it on Enter
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "squeue", "scancel", "srun")
GRACE_TIME_S = 60


class Unavailable(RuntimeError):
    """SLURM is not installed and cannot be (not root, or no apt-get): the cluster tests skip with this reason."""


def install() -> None:
    """``apt-get install slurm-wlm munge`` when a binary is missing; Unavailable where that cannot run."""
    if all(shutil.which(b) for b in BINARIES):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable("SLURM is not installed and this is not root with apt-get: "
                          f"apt-get install {' '.join(PACKAGES)} to run the cluster tests")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-1000:]}")


def _node_line(memory_mb: int) -> str:
    """This machine as slurmd sees it (``slurmd -C``), with the memory jobs may use (at most what it has)."""
    line = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    fields = dict(f.split("=", 1) for f in line.split())
    fields["RealMemory"] = str(min(memory_mb, int(fields.get("RealMemory", memory_mb))))
    return " ".join([*(f"{k}={v}" for k, v in fields.items() if k != "UpTime"), "NodeAddr=127.0.0.1"])


class Cluster:
    """One node, two partitions; :meth:`start` waits until the node is idle, :meth:`stop` ends every daemon."""

    def __init__(self, folder: Path | None = None, memory_mb: int = 8000):
        self.folder = Path(folder or tempfile.mkdtemp(prefix="roadmap-slurm-"))
        self.memory_mb = memory_mb
        self.conf = self.folder / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count()
        self.pid_files = {name: self.folder / f"{name}.pid" for name in ("munged", "slurmctld", "slurmd")}

    @property
    def env(self) -> dict[str, str]:
        """The environment a client (sbatch, submitit, the launcher) needs to reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        """slurm.conf in the folder; daemons talk over loopback, so the host name needs no DNS."""
        f = self.folder
        for sub in ("state", "spool"):
            (f / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text("\n".join([
            "ClusterName=roadmap", f"SlurmctldHost={self.node}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", f"AuthInfo=socket={f / 'munge.socket'}",
            f"StateSaveLocation={f / 'state'}", f"SlurmdSpoolDir={f / 'spool'}",
            f"SlurmctldPidFile={self.pid_files['slurmctld']}", f"SlurmdPidFile={self.pid_files['slurmd']}",
            f"SlurmctldLogFile={f / 'slurmctld.log'}", f"SlurmdLogFile={f / 'slurmd.log'}",
            "SlurmctldPort=16817", "SlurmdPort=16818",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill", f"DefMemPerCPU={self.memory_mb // self.cpus}",  # else a job takes it all
            "ReturnToService=2", "MpiDefault=none", "KillWait=30", "MinJobAge=3600",  # finished jobs stay visible
            "JobCompType=jobcomp/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "PreemptType=preempt/partition_prio", "PreemptMode=REQUEUE",
            _node_line(self.memory_mb),
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 "
            f"PreemptMode=REQUEUE GraceTime={GRACE_TIME_S}",
            f"PartitionName=urgent Nodes={self.node} MaxTime=INFINITE State=UP PriorityTier=10",
        ]) + "\n")

    def _start_munge(self) -> None:
        key = self.folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        subprocess.run(["munged", "--force", f"--key-file={key}", f"--socket={self.folder / 'munge.socket'}",
                        f"--pid-file={self.pid_files['munged']}", f"--log-file={self.folder / 'munged.log'}",
                        f"--seed-file={self.folder / 'munge.seed'}"], check=True, capture_output=True)

    def start(self, timeout_s: float = 60) -> "Cluster":
        install()
        self._write_config()
        self._start_munge()
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(self.conf)], check=True, capture_output=True, env=self.env)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "-h", "-n", self.node, "-o", "%t"], capture_output=True, text=True,
                                   env=self.env).stdout.split()
            if state and all(s == "idle" for s in state):
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the SLURM node never became idle (sinfo: {state}); logs in {self.folder}")

    def stop(self) -> None:
        """SIGTERM each daemon by its pid file, slurmd first; SIGKILL what is still alive after 10 s."""
        pids = []
        for name in ("slurmd", "slurmctld", "munged"):
            try:
                pid = int(self.pid_files[name].read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
            except (FileNotFoundError, ValueError, ProcessLookupError, IndexError):
                pass
        deadline = time.time() + 10
        for pid in pids:
            while time.time() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    def run(self, *cmd: str, check: bool = True) -> str:
        """A SLURM client command against this cluster; its stdout."""
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, check=check).stdout

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, Reason, ...)."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id), check=False)
        return dict(field.split("=", 1) for field in out.split() if "=" in field)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return False


if __name__ == "__main__":
    cluster = Cluster().start()
    print(f"export SLURM_CONF={cluster.conf}")
    try:
        input("SLURM is up; Enter stops it\n")
    finally:
        cluster.stop()
