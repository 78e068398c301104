"""Errors a user can act on.

Every error raised for bad input or bad configuration is a :class:`DistillError`. Stage entry points
and the CLI print its message (no traceback) and exit with status 2, so the message must say what is
wrong and what to change.
"""


class DistillError(Exception):
    """An error with a message meant for the user."""


class ConfigError(DistillError):
    """Invalid configuration: raised before any work (or money) is spent."""


class InputError(DistillError):
    """Unreadable or malformed input that cannot be quarantined row by row."""


class FilterSpecError(ConfigError):
    """A filter definition under ``filters/`` is invalid."""
