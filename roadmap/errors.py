"""The exception types a command ends on (bad user input; a stop after a checkpoint), how a refusal is worded (one
line, the nearest known name), and the CLI wrapper that shows bad input as one line."""
import difflib
import functools
import logging
import sys


class ConfigError(ValueError):
    """Invalid step, knob, path or data; ``str(err)`` is the one-line message shown to the user (also when a
    DataLoader worker raised it: torch re-raises it with the worker's traceback as its message, whose last line
    is the one)."""

    def __init__(self, message: str = ""):
        if isinstance(message, str) and message.startswith("Caught ") and "\nOriginal Traceback" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message)


class Stopped(Exception):
    """The run stopped on a signal after saving a resumable checkpoint; ``status`` says why: ``preempted``
    (a time-limit warning or a preemption: requeued) or ``cancelled`` (scancel, kill: rerun to resume)."""

    def __init__(self, message: str, status: str):
        super().__init__(message)
        self.status = status


def exit_on_config_error(main):
    """Decorate a CLI entry point: a ConfigError prints ``error: <message>`` on stderr and exits 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper


class NoAdvertising(logging.Filter):
    """A logging filter (conf/hydra/job_logging/roadmap.yaml) that drops a library's advertising: Lightning's tips."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def one_line(err: Exception) -> str:
    return " ".join(str(err).strip().split("\n")[0].split()) or type(err).__name__



def nearest_key(name: str, known) -> str:
    """``; did you mean <key>?`` for a known key with ``name``'s last part (``budget.epochs``: ``recipe.epochs``), else
    the one whose last part is closest, among the keys of ``name``'s own section first (``data.roott``: ``data.root``,
    not ``run.root``), or ''."""
    known, section, leaf = list(known), name.rpartition(".")[0], name.rsplit(".", 1)[-1]
    for pool, cutoff in ((known, 1.0), ([k for k in known if k.rpartition(".")[0] == section], 0.6), (known, 0.6)):
        by_leaf: dict[str, str] = {}
        for key in pool:
            by_leaf.setdefault(key.rsplit(".", 1)[-1], key)
        near = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=cutoff)
        if near:
            return f"; did you mean {by_leaf[near[0]]}?"
    return ""
