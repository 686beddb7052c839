"""Atomic file writes: every result, record, table, chart, cache entry and checkpoint is written through these, so
a reader never sees half a file and a crash never leaves one: written beside its place, flushed to disk (fsync),
renamed over it, and the rename itself flushed (the folder's fsync). And the content hash that names a file's content."""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename, once on disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path, os.getpid())  # one per process: writers may race
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # as a plain open() would make it (safetensors writes 0600)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


_UMASK = os.umask(0)  # read once, at import: os.umask can only be read by setting it
os.umask(_UMASK)


def temporary_path(path: Path, pid: int | str) -> Path:
    """Where process ``pid`` writes ``path`` before the rename (``*`` for ``pid``: a glob of every writer's)."""
    return path.with_name(f".{path.stem}.{pid}.tmp{path.suffix}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's content (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_SHA256: dict[tuple, str] = {}


def sha256_once(path: Path) -> str:
    """:func:`sha256_of`, read once per process for a file of the same size and modification time."""
    info = Path(path).stat()
    key = (str(Path(path).resolve()), info.st_size, info.st_mtime_ns)
    if key not in _SHA256:
        _SHA256[key] = sha256_of(path)
    return _SHA256[key]


def unwritable_folder(path: Path) -> str | None:
    """Why ``path`` cannot be a folder this process writes in, or None: it must be a folder, or its nearest existing
    ancestor a folder where files can be created (probed, nothing left behind)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder"
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is a file, so no folder can be made under it"
    try:
        os.rmdir(tempfile.mkdtemp(dir=ancestor, prefix=".write-check-"))
    except OSError as err:
        return f"cannot write in {ancestor} ({err.strerror})"
    return None
