"""What every command-line tool shares: arguments checked before any work, and a bad one answered in one line.

``Parser`` is argparse whose refusals are one line (``error: <what is wrong> (<prog> --help)``) with exit code 2,
instead of argparse's usage block; the types below refuse a number out of range or an output path that cannot be
written before the tool runs anything. Tools raise ``roadmap.errors.ConfigError`` for what only they can check,
shown the same way by ``roadmap.errors.exit_on_config_error``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from roadmap.utils.files import unwritable_folder


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with one-line errors, exit 2; ``--help`` prints the full help as usual."""

    def error(self, message: str):
        print(f"error: {message} ({self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} must be {'positive' if low == 1 else f'>= {low}'}")
    return value


def output_file(text: str) -> Path:
    """A file path the tool can write: not a folder, in a folder that exists or can be made."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder: give a file name")
    return _writable(path.parent, path)


def output_folder(text: str) -> Path:
    """A folder the tool can write in: one that exists or can be made."""
    path = Path(text).expanduser()
    return _writable(path, path)


def _writable(folder: Path, path: Path) -> Path:
    problem = unwritable_folder(folder)
    if problem:
        raise argparse.ArgumentTypeError(f"cannot write {path}: {problem}")
    return path


def existing_folder(text: str) -> Path:
    """A folder that exists (what a tool reads)."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no folder {path}")
    return path


def render(df: "pandas.DataFrame", fmt: str) -> str:  # noqa: F821 - pandas is the caller's
    """A tool's table as ``--format`` asks: csv, markdown, or aligned text (table)."""
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "markdown":
        return df.to_markdown(index=False)
    return df.to_string(index=False)
