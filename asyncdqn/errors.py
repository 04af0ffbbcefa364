"""User-facing errors. Bottom of the import graph: every stage may raise these.

The CLI turns a `UserError` into one line on stderr and exit status 2, and a `RunFailed` into one line
and exit status 1; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a config key, a file, an env id. Its message is one line."""


class RunFailed(UserError):
    """A run that cannot go on (envs that keep failing, updates that keep diverging). One line, exit 1."""

    exit_code = 1
