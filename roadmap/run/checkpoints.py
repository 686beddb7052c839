"""Checkpoints that outlive a death mid-write, and the one a run resumes from.

Lightning's ``TorchCheckpointIO`` builds the checkpoint in memory and moves a temporary file from the system's
temporary folder into place: across file systems that move is a copy into ``last.ckpt`` itself, so a SIGKILL
during the save leaves a truncated file that fails every later start. :class:`AtomicCheckpointIO` writes beside
the target (``roadmap.utils.files.atomic_path``: fsync, rename) and keeps the checkpoint it replaces as
``previous.ckpt``; :func:`resume_point` picks the newest readable one and refuses, in one line, a run whose
checkpoints are all unreadable.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from roadmap.errors import ConfigError
from roadmap.run.record import RunPaths
from roadmap.utils.files import atomic_path, temporary_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a file beside the target, fsynced and renamed over it; the target's last version is
    kept under ``keep_previous[target]`` (a hard link, renamed into place first)."""

    def __init__(self, keep_previous: dict[Path, Path] | None = None):
        self.keep_previous = {Path(k): Path(v) for k, v in (keep_previous or {}).items()}

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
            previous = self.keep_previous.get(path)
            if previous is not None and path.exists():
                with atomic_path(previous) as link:
                    os.link(path, link)


def unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from (truncated, not a checkpoint), or None. Reads the archive's index and
    pickle, not the tensors (``mmap``): seconds at most for any size."""
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises OSError, RuntimeError, EOFError, UnpicklingError...
        return f"{type(err).__name__}: {' '.join(str(err).split())[:160]}"
    if not isinstance(checkpoint, dict) or "loops" not in checkpoint:
        return "not a Lightning training checkpoint (no loop state)"
    return None


def resume_point(paths: RunPaths) -> Path | None:
    """The checkpoint an unfinished run resumes from: ``last.ckpt``, or ``previous.ckpt`` where the last is
    unreadable; None when the run has none. Temporary files of writers that died are removed first."""
    for stale in paths.checkpoints.glob(temporary_path(Path("*.ckpt"), "*").name):  # .<name>.<pid>.tmp.ckpt
        stale.unlink(missing_ok=True)
    candidate = readable_checkpoint(paths)
    if candidate is not None and candidate != paths.last_ckpt:
        print(f"{paths.relative(paths.last_ckpt)} is unreadable ({unreadable(paths.last_ckpt)}): resuming from "
              f"{paths.relative(candidate)}")
    return candidate


def readable_checkpoint(paths: RunPaths) -> Path | None:
    """The newest readable of ``last.ckpt`` and ``previous.ckpt``, None when there is neither; a run whose
    checkpoints are all unreadable is refused in one line (``roadmap.run.plan.resolve_run``: before any work)."""
    found = [p for p in (paths.last_ckpt, paths.previous_ckpt) if p.exists()]
    problems = {}
    for candidate in found:
        problems[candidate] = unreadable(candidate)
        if problems[candidate] is None:
            return candidate
    if not found:
        return None
    raise ConfigError(f"cannot resume {paths.root}: {'; '.join(f'{paths.relative(p)} is unreadable ({why})' for p, why in problems.items())}. "
                      f"Move the checkpoints folder away to restart the run from scratch (or run.resume=false)")
