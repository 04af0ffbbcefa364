"""Typed config fields: a TOML value checked against its frozen-dataclass field, and the field docstrings.

Place in the flow: under `asyncdqn.config` (the run config) and under any env factory that reads its
`env.kwargs` into a settings dataclass of its own, so that an env's settings are read by the same rules as
the engine's and a bad value is the same one-line UserError naming the key.

Dates: TOML has a date type, so `--set train_end=2016-12-30` arrives as a `datetime.date`. A field annotated
`DateText` accepts a date (or date-time) and keeps its ISO text; `plain` turns dates inside free-form tables
(`env.kwargs`) into ISO text too, so a saved config and a checkpoint hold only plain values (a checkpoint is
read with `torch.load(weights_only=True)`, which refuses date objects).
"""

from __future__ import annotations

import dataclasses
import datetime
import tomllib
from typing import Any

from asyncdqn.errors import UserError, brief


class DateText(str):
    """Annotation of a field that holds a date as ISO text ("2016-12-30"); a TOML date is accepted."""


_TYPES = {"bool": bool, "int": int, "float": float, "str": str, "tuple": tuple, "dict": dict, "DateText": DateText}
_DATES = (datetime.date, datetime.time)  # datetime.datetime is a datetime.date


def require(ok: bool, key: str, why: str) -> None:
    """Raise `config: <key> <why>` unless `ok` (the check every `__post_init__` makes)."""
    if not ok:
        raise UserError(f"config: {key} {why}")


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field, read from the source (used by --help text and the README)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for stmt, nxt in zip(body, body[1:]):
        if isinstance(stmt, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[stmt.target.id] = str(nxt.value.value)  # type: ignore[union-attr]
    return docs


def parse_value(text: str) -> Any:
    """A TOML literal (`3`, `1e-3`, `true`, `[64, 64]`, `"x"`, `2016-12-30`); anything else is a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def plain(value: Any) -> Any:
    """`value` with every TOML date, time or date-time (also inside lists and tables) as its ISO text."""
    if isinstance(value, _DATES):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check one value against its field's annotation; ints are accepted where floats are expected, and
    dates (or ISO text) where a `DateText` is expected."""
    hint = _TYPES.get(annotation, annotation) if isinstance(annotation, str) else annotation
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is DateText:
        if isinstance(value, (str, datetime.date)):
            return plain(value) if isinstance(value, datetime.date) else value
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(value)
    elif hint is dict:
        if isinstance(value, dict):
            return plain(dict(value))
    raise UserError(f"config: {key} expects {'date' if hint is DateText else getattr(hint, '__name__', hint)}, "
                    f"got {type(value).__name__} {brief(value)}")


def build(cls: type, values: dict, prefix: str) -> Any:
    """`cls(**values)` for a flat frozen dataclass, each value coerced to its field; an unknown key or a
    wrong type is a UserError naming `prefix + key` (validation in `__post_init__` names its own keys)."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise UserError(f"config: unknown key {prefix + key!r}")
        kwargs[key] = coerce(prefix + key, value, known[key].type)
    return cls(**kwargs)
