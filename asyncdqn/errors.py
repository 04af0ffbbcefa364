"""User-facing errors. Bottom of the import graph: every stage may raise these.

The CLI turns a `UserError` into one line on stderr and exit status 2, and a `RunFailed` into one line
and exit status 1; anything else is a bug and keeps its traceback.
"""

from typing import Any


class UserError(Exception):
    """Bad input from the user: a config key, a file, an env id. Its message is one line."""


class RunFailed(UserError):
    """A run that cannot go on (envs that keep failing, updates that keep diverging). One line, exit 1."""

    exit_code = 1


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first non-empty line of an exception's message (its type's name when it has none), cut to `limit`
    characters: what a one-line error quotes of the exception behind it."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


def brief(value: Any) -> str:
    """A short one-line description of a value read from a user's file, for error messages (a tensor's
    repr spans lines, so it is described by its shape)."""
    shape = getattr(value, "shape", None)
    if shape is not None and not isinstance(value, (int, float, str)):
        return f"a {type(value).__name__.lower()} of shape {tuple(shape)}"
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."
