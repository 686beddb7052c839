"""The one exception type for bad user input: its message is a single line saying what to fix."""


class ConfigError(ValueError):
    """Invalid step, knob or path; ``str(err)`` is the one-line message shown to the user."""
