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


def queued_copy_hint(what: str) -> str:
    """Advice for a file missing in a queued experiment's copy of the project, else an empty string.

    ``dvc exp run --queue`` (and ``--temp``) runs in ``.dvc/tmp/exps/...``, a copy holding only the files
    committed to git, so a file that exists in the workspace but was never committed is missing there.
    """
    from pathlib import Path

    if "/.dvc/tmp/exps/" not in Path.cwd().resolve().as_posix() + "/":
        return ""
    return (f"; this run is a queued experiment ({Path.cwd()}), which copies only the files committed to git: "
            f"commit {what} first (git add, git commit), or run without --queue")


class MissingExtra(DistillError):
    """An optional dependency is not installed."""

    def __init__(self, module: str, extra: str):
        super().__init__(f"{module} is not installed: install the {extra!r} extra (`pip install -e '.[{extra}]'`; "
                         "`make install` does)")


def require(module: str, extra: str):
    """Import an optional dependency, or raise MissingExtra naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(module, extra) from None
