"""A real SLURM for the cluster tests: Debian's ``slurm-wlm``, ``munge`` and, for accounting, ``slurmdbd`` with a
``mariadb-server`` database, installed when absent (root and apt), configured in a temporary folder, started,
and stopped by pid.

Nodes ``n1`` and ``n2`` (one CPU each) are two ``slurmd -N`` daemons on this machine, each on its own port, every
address on loopback (``/etc/hosts`` names both 127.0.0.1, as Lightning resolves a job's first node for DDP).
Two partitions over both: ``debug`` (default, low priority, preemptible: ``PreemptMode=REQUEUE``,
``GraceTime``) and ``urgent`` (high priority), as a lab cluster with a preemptible queue has them. With
``accounting=True`` (the default) ``slurmdbd`` stores every job in MariaDB and ``sacct`` answers as on a real
cluster; ``accounting=False`` is a small cluster without it. Every daemon, socket, database, state and log lives
in the folder; clients find it through ``SLURM_CONF``.

    python -m tests.cluster      # start one by hand, print its SLURM_CONF, stop it on Enter
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.apt import install

PACKAGES = ("slurm-wlm", "munge", "slurmdbd", "mariadb-server")
BINARIES = ("munged", "slurmctld", "slurmd", "slurmdbd", "mariadbd", "mariadb-install-db", "sbatch", "scontrol",
            "sinfo", "squeue", "scancel", "srun", "sacct")
DAEMONS = ("slurmctld", "slurmd", "slurmdbd", "mariadbd", "munged", "slurmstepd")  # what stop() must leave dead
NODES = ("n1", "n2")
GRACE_TIME_S = 60
HOSTS_LINE = f"127.0.0.1 {' '.join(NODES)}  # roadmap test cluster"


def _name_nodes_on_loopback() -> None:
    """``127.0.0.1 n1 n2`` in /etc/hosts, once: a job's node names must resolve (Lightning's MASTER_ADDR)."""
    hosts = Path("/etc/hosts")
    if HOSTS_LINE not in hosts.read_text():
        with hosts.open("a") as f:
            f.write(f"\n{HOSTS_LINE}\n")


class Cluster:
    """Two nodes, two partitions, accounting on or off; :meth:`start` waits until both nodes are idle,
    :meth:`stop` ends every daemon. ``port`` is the first of the ports it takes (five in a row)."""

    def __init__(self, folder: Path | None = None, accounting: bool = True, port: int = 16817,
                 memory_mb: int = 8000):
        self.folder = Path(folder or tempfile.mkdtemp(prefix="roadmap-slurm-"))
        self.made_folder = folder is None  # :meth:`close` removes only a folder this cluster made
        self.accounting, self.memory_mb = accounting, memory_mb
        self.ports = {"slurmctld": port, "n1": port + 1, "n2": port + 2, "slurmdbd": port + 3, "mariadbd": port + 4}
        self.conf = self.folder / "slurm.conf"
        self.cpus = 1  # per node
        self.pid_files = {name: self.folder / f"{name}.pid"
                          for name in ("munged", "slurmctld", "slurmdbd", "mariadbd", *(f"slurmd-{n}" for n in NODES))}

    @property
    def env(self) -> dict[str, str]:
        """The environment a client (sbatch, submitit, the launcher) needs to reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        """slurm.conf (and slurmdbd.conf) in the folder; daemons talk over loopback, so nothing needs DNS."""
        f, host = self.folder, "localhost"
        for sub in ("state", "log"):
            (f / sub).mkdir(parents=True, exist_ok=True)
        accounting = (["AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=127.0.0.1",
                       f"AccountingStoragePort={self.ports['slurmdbd']}",
                       f"AccountingStoragePass={f / 'munge.socket'}"] if self.accounting  # its munge socket
                      else ["AccountingStorageType=accounting_storage/none"])
        nodes = [f"NodeName={n} NodeHostname={os.uname().nodename.split('.')[0]} NodeAddr=127.0.0.1 "
                 f"Port={self.ports[n]} CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN" for n in NODES]
        self.conf.write_text("\n".join([
            "ClusterName=roadmap", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", f"AuthInfo=socket={f / 'munge.socket'}",
            f"StateSaveLocation={f / 'state'}", f"SlurmdSpoolDir={f / 'spool-%n'}",
            f"SlurmctldPidFile={self.pid_files['slurmctld']}", f"SlurmdPidFile={f / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={f / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={f / 'log' / 'slurmd-%n.log'}",
            f"SlurmctldPort={self.ports['slurmctld']}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill", f"DefMemPerCPU={self.memory_mb // self.cpus}",  # else a job takes it all
            "ReturnToService=2", "MpiDefault=none", "KillWait=30", "MinJobAge=3600",  # finished jobs stay visible
            "SlurmdDebug=debug",  # a node's log says when it took a job's kill (bring_back)
            "SlurmdTimeout=20",  # a silent node is marked down after 20 s (default 300)
            "JobCompType=jobcomp/none", "JobAcctGatherType=jobacct_gather/none", *accounting,
            "PreemptType=preempt/partition_prio", "PreemptMode=REQUEUE", *nodes,
            f"PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 "
            f"PreemptMode=REQUEUE GraceTime={GRACE_TIME_S}",
            f"PartitionName=urgent Nodes={','.join(NODES)} MaxTime=INFINITE State=UP PriorityTier=10",
        ]) + "\n")
        if self.accounting:
            dbd = self.folder / "slurmdbd.conf"
            dbd.write_text("\n".join([
                "AuthType=auth/munge", f"AuthInfo=socket={f / 'munge.socket'}", "DbdHost=localhost",
                "DbdAddr=127.0.0.1", f"DbdPort={self.ports['slurmdbd']}", "SlurmUser=root",
                f"PidFile={self.pid_files['slurmdbd']}", f"LogFile={f / 'log' / 'slurmdbd.log'}",
                "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
                f"StoragePort={self.ports['mariadbd']}", "StorageUser=slurm", "StoragePass=roadmap",
                "StorageLoc=slurm_acct_db"]) + "\n")
            dbd.chmod(0o600)  # slurmdbd refuses a config others can read

    def _start_munge(self) -> None:
        key = self.folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        subprocess.run(["munged", "--force", f"--key-file={key}", f"--socket={self.folder / 'munge.socket'}",
                        f"--pid-file={self.pid_files['munged']}", f"--log-file={self.folder / 'log' / 'munged.log'}",
                        f"--seed-file={self.folder / 'munge.seed'}"], check=True, capture_output=True)

    def _start_database(self, timeout_s: float = 60) -> None:
        """MariaDB in the folder, on a loopback port, with the ``slurm`` user slurmdbd logs in as."""
        db, sock = self.folder / "db", self.folder / "mysql.sock"
        subprocess.run(["mariadb-install-db", f"--datadir={db}", "--user=root", "--skip-test-db",
                        "--auth-root-authentication-method=socket"], check=True, capture_output=True)
        subprocess.Popen(["mariadbd", "--no-defaults", "--user=root", f"--datadir={db}", f"--socket={sock}",
                          f"--port={self.ports['mariadbd']}", "--bind-address=127.0.0.1", "--skip-name-resolve",
                          f"--pid-file={self.pid_files['mariadbd']}", f"--log-error={self.folder / 'log' / 'mariadb.log'}",
                          "--innodb-buffer-pool-size=32M", "--innodb-lock-wait-timeout=900"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        sql = ("CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'roadmap'; "
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")
        self._until(lambda: subprocess.run(["mariadb", "--no-defaults", "-S", str(sock), "-u", "root", "-e", sql],
                                           capture_output=True).returncode == 0, timeout_s, "MariaDB never took the slurm user")

    def _until(self, ready, timeout_s: float, failure: str) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if ready():
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{failure}; logs in {self.folder / 'log'}")

    def start(self, timeout_s: float = 90) -> "Cluster":
        install(PACKAGES, [b for b in BINARIES if not shutil.which(b)], "the cluster tests need SLURM")
        _name_nodes_on_loopback()
        self._write_config()
        self._start_munge()
        if self.accounting:
            self._start_database()
            subprocess.run(["slurmdbd"], check=True, capture_output=True, env=self.env)  # its conf: beside SLURM_CONF
            self._until(lambda: subprocess.run(["sacctmgr", "-i", "add", "cluster", "roadmap"], capture_output=True,
                                               env=self.env).returncode == 0, timeout_s, "slurmdbd never answered")
        subprocess.run(["slurmctld", "-f", str(self.conf)], check=True, capture_output=True, env=self.env)
        for node in NODES:
            self.start_node(node)
        self._until(lambda: self.node_states() == {n: "idle" for n in NODES}, timeout_s,
                    f"the SLURM nodes never became idle (sinfo: {self.node_states()})")
        if self.accounting:
            self._until(lambda: subprocess.run(["sacct", "-n", "-X"], capture_output=True, env=self.env).returncode == 0,
                        timeout_s, "sacct never answered")
        return self

    def start_node(self, node: str) -> None:
        subprocess.run(["slurmd", "-f", str(self.conf), "-N", node], check=True, capture_output=True, env=self.env)

    def node_states(self) -> dict[str, str]:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False)
        return dict(line.split() for line in out.splitlines() if len(line.split()) == 2)

    def lose_node(self, node: str) -> None:
        """What a node that drops off the network looks like: SIGKILL its slurmd and every job process on it
        (their environment names the node), then tell SLURM it is down, as an admin or the health check would."""
        victims = [int(self.pid_files[f"slurmd-{node}"].read_text().split()[0])]
        victims += [pid for pid in _pids() if _environ(pid).get("SLURMD_NODENAME") == node]
        victims += [pid for pid in _pids() if _comm(pid) == "slurmstepd" and _stepd_node(pid) == node]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.run("scontrol", "update", f"nodename={node}", "state=down", "reason=lost_in_test")

    def bring_back(self, node: str, requeued: str | None = None, timeout_s: float = 60) -> None:
        """Start the node's slurmd again (it returns to service as it registers: ``ReturnToService=2``). With
        ``requeued``, the id of a job the node's loss requeued, wait until the node has taken the kill of that
        job's lost attempt: SLURM delivers it once the node is back, and it kills the same job id's tasks that
        a requeued attempt started there before (SLURM's own hold of a requeued job, ~2 min, covers this; a job
        released at once, as the tests do, would lose its task on the node)."""
        log = self.folder / "log" / f"slurmd-{node}.log"
        seen = log.stat().st_size if log.exists() else 0
        self.start_node(node)
        if requeued:
            self._until(lambda: f"credential for job {requeued} revoked" in log.read_text()[seen:], timeout_s,
                        f"{node} never took the kill of job {requeued}'s lost attempt")

    def cancel_jobs(self, timeout_s: float = 20) -> None:
        """``scancel`` every job and wait until none runs; SIGKILL what is left of their processes (a test that
        failed halfway leaves them: a DDP rank waiting for a dead peer ignores the signals)."""
        if not self.pid_files["slurmctld"].exists():
            return  # stopped (or never started): no job runs
        self.run("scancel", "--full", f"--user={os.geteuid()}", check=False)
        deadline = time.time() + timeout_s
        while time.time() < deadline and self.run("squeue", "-h", "-o", "%i", check=False).split():
            time.sleep(0.5)
        for pid in _pids():
            environ = _environ(pid)
            job_process = environ.get("SLURM_CONF") == str(self.conf) and "SLURM_JOB_ID" in environ
            if job_process or (_comm(pid) == "slurmstepd" and str(self.folder) in _open_files(pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def stop(self) -> None:
        """Cancel every job (:meth:`cancel_jobs`), then SIGTERM each daemon by its pid file, the nodes first;
        SIGKILL what is still alive after 15 s."""
        self.cancel_jobs()
        pids = []
        for name in (*(f"slurmd-{n}" for n in NODES), "slurmctld", "slurmdbd", "mariadbd", "munged"):
            try:
                pid = int(self.pid_files[name].read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
            except (FileNotFoundError, ValueError, ProcessLookupError, IndexError):
                pass
        deadline = time.time() + 15
        for pid in pids:
            while time.time() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        for pid_file in self.pid_files.values():
            pid_file.unlink(missing_ok=True)

    def close(self) -> None:
        """:meth:`stop`, then remove the folder this cluster made (its database and state: ~190 MB a cluster)."""
        self.stop()
        if self.made_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def run(self, *cmd: str, check: bool = True) -> str:
        """A SLURM client command against this cluster; its stdout."""
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, check=check).stdout

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, Reason, ...)."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id), check=False)
        return dict(field.split("=", 1) for field in out.split() if "=" in field)

    def sacct(self, job_id: str) -> dict[str, str]:
        """What accounting says of a job: State, ExitCode (code:signal), Restarts... of its allocation."""
        out = self.run("sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "JobID,State,ExitCode,NodeList", check=False)
        rows = [dict(zip(("JobID", "State", "ExitCode", "NodeList"), line.split("|"))) for line in out.splitlines()]
        return rows[-1] if rows else {}


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]


def _read(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def _comm(pid: int) -> str:
    return _read(pid, "comm").decode(errors="replace").strip()


def _environ(pid: int) -> dict[str, str]:
    pairs = (item.decode(errors="replace").partition("=") for item in _read(pid, "environ").split(b"\0") if item)
    return {k: v for k, _, v in pairs}


def _stepd_node(pid: int) -> str | None:
    """The node a slurmstepd serves: the node name of any of its child tasks."""
    for child in _pids():
        if _read(child, "stat").split(b") ")[-1].split()[1:2] == [str(pid).encode()]:
            return _environ(child).get("SLURMD_NODENAME")
    return None


def _open_files(pid: int) -> str:
    """The paths a process holds open (its cwd too), newline-separated."""
    try:
        fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        return "\n".join([os.readlink(f"/proc/{pid}/cwd"), *fds])
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def leftovers(markers: tuple[str, ...] = ("run.py", "torchrun", "roadmap-slurm-")) -> list[str]:
    """The live (not zombie) processes a test left behind: SLURM's and the database's daemons, job steps, srun,
    and training processes (a command line naming ``run.py``, ``torchrun`` or a test cluster's folder)."""
    found, ancestors, pid = [], set(), os.getpid()
    while pid > 1:  # the suite's own command line may name them (pytest -k torchrun)
        ancestors.add(pid)
        pid = int(_read(pid, "stat").decode().rsplit(") ", 1)[1].split()[1] or 1)
    for pid in set(_pids()) - ancestors:
        cmdline = _read(pid, "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
        if not _alive(pid) or not cmdline:
            continue
        if _comm(pid) in (*DAEMONS, "srun") or any(m in cmdline for m in markers):
            found.append(f"{pid} {cmdline[:160]}")
    return found


if __name__ == "__main__":
    cluster = Cluster().start()
    print(f"export SLURM_CONF={cluster.conf}")
    try:
        input("SLURM is up; Enter stops it\n")
    finally:
        cluster.close()
