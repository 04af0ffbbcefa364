"""Date formats of OHLCV files: the one format chosen from a file's first date, and parsing with it.

Place in the flow: inside the loader (market_data.read_ohlcv), which applies one format to every row and
turns what cannot be parsed into a DataError naming the row. The rules are in market_data's docstring.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

_DMY = re.compile(r"^(\d{1,2})([/.\-])(\d{1,2})\2(\d{4})(?:[ T](\d{1,2}):(\d{2})(:\d{2}(\.\d{1,6})?)?)?$")


def infer_date_format(first: str, dayfirst: bool) -> str | None:
    """The strptime format (or "ISO8601", "epoch_s", "epoch_ms") for a file whose first date is `first`."""
    if re.fullmatch(r"\d{4}-\d{1,2}-\d{1,2}(?:[ T].*)?", first):
        return "ISO8601"
    if re.fullmatch(r"\d{4}/\d{1,2}/\d{1,2}", first):
        return "%Y/%m/%d"
    if re.fullmatch(r"\d{8}", first):
        return "%Y%m%d"
    if re.fullmatch(r"\d{9,10}", first):
        return "epoch_s"
    if re.fullmatch(r"\d{12,13}", first):
        return "epoch_ms"
    match = _DMY.fullmatch(first)
    if match is None:
        return None
    sep = match.group(2)
    fmt = f"%d{sep}%m{sep}%Y" if dayfirst else f"%m{sep}%d{sep}%Y"
    if match.group(5) is not None:
        fmt += " %H:%M" + (":%S" if match.group(7) else "") + (".%f" if match.group(8) else "")
    return fmt


def to_datetimes(values: np.ndarray, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse strings with one format; unparseable -> NaT. Returns tz-naive datetime64[ns] and a mask of the
    dates that parsed but lie outside datetime64[ns] (1677-09-21..2262-04-11), which are NaT too."""
    if fmt in ("epoch_s", "epoch_ms"):
        numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
        stamps = pd.DatetimeIndex(pd.to_datetime(numbers, unit="s" if fmt == "epoch_s" else "ms", errors="coerce"))
    else:
        # every value, not a sample: one zoned stamp among naive ones makes pandas refuse the whole column
        aware = any(re.search(r"(Z|[+\-]\d{2}:?\d{2})$", v) for v in values if v)
        stamps = pd.DatetimeIndex(pd.to_datetime(values, format=fmt, errors="coerce", utc=aware))
        if stamps.tz is not None:
            stamps = stamps.tz_convert("UTC").tz_localize(None)
    try:  # pandas >= 3 parses strings at microsecond resolution, so years like 9999 or -1 get this far
        return stamps.as_unit("ns").to_numpy(), np.zeros(len(stamps), dtype=bool)
    except pd.errors.OutOfBoundsDatetime:
        pass
    dates = np.full(len(stamps), np.datetime64("NaT", "ns"))
    far = np.zeros(len(stamps), dtype=bool)
    for i, stamp in enumerate(stamps):
        if stamp is pd.NaT:
            continue
        try:
            dates[i] = stamp.as_unit("ns").to_datetime64()
        except pd.errors.OutOfBoundsDatetime:
            far[i] = True
    return dates, far


def swapped_format(fmt: str) -> str | None:
    """`fmt` with day and month exchanged (None when it has not both): the other reading of a/b/YYYY."""
    if "%d" not in fmt or "%m" not in fmt:
        return None
    return fmt.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m")


def strictly_monotonic(dates: np.ndarray) -> bool:
    """Strictly ascending or strictly descending."""
    steps = np.diff(dates.astype(np.int64))
    return bool(np.all(steps > 0) or np.all(steps < 0))
