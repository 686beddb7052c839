"""The exception types a command ends on (bad user input; a stop after a checkpoint), and the CLI wrapper that shows
bad input as one line."""
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
