"""Debian packages the suite needs beside Python's (SLURM for the cluster tests, LaTeX for the tables), installed with
apt-get when something they provide is missing, as root; elsewhere the tests that need them skip, saying what to
install."""
from __future__ import annotations

import os
import shutil
import subprocess


class Unavailable(RuntimeError):
    """Something is missing and cannot be installed here (not root, or no apt-get): the reason its tests skip."""


def install(packages: tuple[str, ...], missing: list[str], purpose: str, recommends: bool = True) -> None:
    """``apt-get install`` the packages (and what they recommend) when ``missing`` names something they provide;
    Unavailable where that cannot run."""
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable(f"{purpose}: {', '.join(missing)} missing, and this is not root with apt-get: "
                          f"apt-get install {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    extra = [] if recommends else ["--no-install-recommends"]
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *extra, *packages]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-1000:]}")
