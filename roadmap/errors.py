"""The one exception type for bad user input, and the CLI wrapper that shows it as one line."""
import functools
import sys


class ConfigError(ValueError):
    """Invalid step, knob, path or data; ``str(err)`` is the one-line message shown to the user."""


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
