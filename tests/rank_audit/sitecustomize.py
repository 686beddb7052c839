"""Test-only, on $PYTHONPATH of the DDP tests' jobs: every process logs each file it creates, opens for writing,
renames, removes or newly creates (a folder) under $ROADMAP_AUDIT_ROOT, one log per global rank in $ROADMAP_AUDIT_DIR (``rank<r>.log``).
The tests assert that rank 0's log names the run's files and that every other rank's is empty."""
import os
import sys

_root = os.environ.get("ROADMAP_AUDIT_ROOT")
if _root:
    _rank = next((os.environ[k] for k in ("RANK", "SLURM_PROCID", "LOCAL_RANK") if k in os.environ), "0")
    _log = os.open(os.path.join(os.environ["ROADMAP_AUDIT_DIR"], f"rank{_rank}.log"),
                   os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    _CHANGES = ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.link", "os.symlink", "os.truncate")

    def _audit(event, args):
        if event == "open":
            path, mode, flags = args
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITES)
        elif event in _CHANGES:  # (src, dst, ...) for a rename or link: both are named
            path = args[0]
            writes = not (event == "os.mkdir" and os.path.isdir(path))  # mkdir(exist_ok=True) of one that exists
        else:
            return
        named = [p for p in (path, *(args[1:2] if event in ("os.rename", "os.link") else ()))
                 if isinstance(p, (str, bytes, os.PathLike))]
        if writes and named and os.path.abspath(os.fsdecode(named[0])).startswith(os.path.join(_root, "")):
            os.write(_log, f"{os.getpid()} {event} {' -> '.join(os.fsdecode(p) for p in named)}\n".encode())

    sys.addaudithook(_audit)
