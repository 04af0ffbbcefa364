"""Strict OHLCV loader: the first stage of the trading data flow.

    CSV file or DataFrame --read_ohlcv--> validated OHLCV frame --> env.TradingEnv (features, fills,
    rewards) --> backtest (metrics, report)

Everything the environment and the backtest compute is only as good as this frame, so the loader
refuses to guess. Each rejection raises `DataError`, whose message is ONE line naming the file, the
1-based data row (header excluded, blank lines not counted) with its physical line number, and the
reason, e.g. ``prices.csv row 17 (line 18): high 10.5 < low 11.0``. It is a UserError (and a ValueError),
so the CLI prints it as one line and exits 2. The CSVs shipped as package data are found by `shipped_csv`.

What is rejected, and why (the pitfalls listed in the "Trading" issue):
- a missing file, a directory, an empty file, a header with no rows, bytes that are not UTF-8 text
  (a NUL byte or an invalid sequence: binary garbage), rows whose field count differs from the header;
- a missing required column (date, open, high, low, close, volume), or two columns meaning the same;
- an unparseable date (the row is named), or dates that are out of order as read but in order with day
  and month swapped: a day/month swap, so the user must say --dayfirst or --date-format;
- duplicate timestamps (which row to trust is not ours to decide);
- non-numeric or non-finite cells; prices (open, high, low, close, adj_close) <= 0; negative volume;
- high < low, and open or close outside [low, high]: a bar whose fill price was never traded is a data
  error, and our fills happen at open/close. Rounding to fixed decimals is monotonic, so vendor files
  that adjust all four prices by one factor keep these inequalities exactly (data/GOOGL.csv does);
- a missing value (empty cell, NaN, NA, null) unless ``dropna=True``, which drops the whole row and
  reports the dropped row numbers in `LoadedOHLCV.dropped_rows`. Values are NEVER forward/back-filled:
  a filled price is a price that did not trade, and a back-filled one leaks the future.

Order: an ascending file is returned as is. A newest-first file (strictly descending) or otherwise
unordered file is sorted ascending, and one plain line on stderr says so (``asyncdqn: note: prices.csv:
rows were newest-first; sorted ascending by date``), once per file and process however many envs load it.
It is a notice, not a Python warning: a warning would print this module's path and line as well.

Shapes accepted besides a plain ``Date,Open,...`` header: a file written by pandas ``DataFrame.to_csv()``
from a frame indexed by dates (its first header cell is empty; that column is the date), and FX exports
whose time column is ``Gmt time`` or ``Local time`` with stamps such as ``01.01.2017 22:00:00.000``.

Dates: with ``date_format`` given it is used for every row. Otherwise the format is chosen from the
first date: year-first ISO forms (``2009-05-22``, ``2009-05-22 09:30``, ``...T09:30:00Z``), ``2009/05/22``,
``20090522``, epoch seconds/milliseconds, or ``a/b/YYYY`` (also with ``.`` or ``-``, optionally with a
time ``HH:MM[:SS[.fff]]``), read month-first unless ``dayfirst=True``. Without the flag, a file that
proves itself day-first (some date fails month-first, e.g. ``13.01.2017``, and every date parses
day-first) is read day-first: that is no guess. One format is applied to all rows, so a file can never be
half month-first and half day-first. Known limit: a file in which every date has day <= 12 and that is
ordered either way (e.g. monthly data on the 1st) cannot be told apart; the flag decides. Timezone-aware
stamps are converted to UTC and the zone dropped, so the index is always tz-naive.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from asyncdqn.envs.trading.dates import (  # noqa: F401 (infer_date_format: part of the loader's API)
    infer_date_format, strictly_monotonic, swapped_format, to_datetimes)
from asyncdqn.errors import UserError, first_line

PRICE_COLUMNS = ("open", "high", "low", "close")
REQUIRED_COLUMNS = ("date", *PRICE_COLUMNS, "volume")
# Header names are compared after lower-casing and removing spaces, underscores and dashes, so
# "Adj Close", "adj_close" and "AdjClose" all map to adj_close.
COLUMN_ALIASES = {
    "date": "date", "datetime": "date", "time": "date", "timestamp": "date", "gmttime": "date", "localtime": "date",
    "open": "open", "high": "high", "low": "low", "close": "close",
    "adjclose": "adj_close", "volume": "volume",
}
MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "#n/a", "null", "none"})
_MAX_SHOWN = 40  # characters of a bad cell quoted in a message


class DataError(UserError, ValueError):
    """A rejected input; str() is one line: ``<file>[ row R (line L)]: <reason>``."""

    def __init__(self, source: str, reason: str, *, row: int | None = None, line: int | None = None):
        where = source
        if row is not None:
            where += f" row {row}" + (f" (line {line})" if line is not None else "")
        elif line is not None:
            where += f" line {line}"
        super().__init__(f"{where}: {reason}".replace("\r", " ").replace("\n", " "))
        self.source, self.reason, self.row, self.line = source, reason, row, line


def shipped_csv(name: str) -> Path:
    """A CSV shipped with asyncdqn (the repo's data/ folder, installed as the package `asyncdqn.data`).
    A wheel installs as plain files, so the resource is a real path (no temporary copy is needed)."""
    return Path(str(resources.files("asyncdqn.data").joinpath(name)))


_NOTICED: set[str] = set()  # notices this process has printed: actors and evaluation copies load one file often


def notice_once(text: str) -> None:
    """One plain line on stderr, ``asyncdqn: note: <text>``, the first time this process is told `text`."""
    if text not in _NOTICED:
        _NOTICED.add(text)
        print(f"asyncdqn: note: {text}", file=sys.stderr, flush=True)


class LoadedOHLCV(NamedTuple):
    frame: pd.DataFrame  # index "date" (tz-naive, ascending); float64 open, high, low, close, [adj_close], volume
    source: str  # the file name as given, or "<DataFrame>"
    dropped_rows: tuple[int, ...]  # 1-based data rows removed by dropna=True
    reordered: bool  # True when the input was not ascending and has been sorted


class _Table(NamedTuple):
    """Rows of the input before any conversion; `row`/`line` locate each for messages."""

    source: str
    cells: dict[str, np.ndarray]  # canonical column -> object array (or datetime64 for "date")
    row: np.ndarray  # 1-based data row numbers
    line: np.ndarray | None  # physical line numbers (files only)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _fail(table: _Table, index: int, reason: str) -> DataError:
    line = None if table.line is None else int(table.line[index])
    return DataError(table.source, reason, row=int(table.row[index]), line=line)


# ----------------------------------------------------------------------------------------- reading


def _read_text(path: Path, name: str) -> str:
    if not path.exists():
        raise DataError(name, "file not found")
    if path.is_dir():
        raise DataError(name, "is a directory, not a CSV file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(name, f"cannot read file ({exc.strerror})") from exc
    if not data.strip():
        raise DataError(name, "empty file (no header and no rows)")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DataError(name, f"not CSV text: binary content (NUL byte at offset {nul})")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(name, f"not CSV text: invalid UTF-8 at byte offset {exc.start}") from exc


def _map_header(source: str, header: list[str]) -> dict[str, int]:
    """Canonical column -> position; extra columns are ignored."""
    found: dict[str, int] = {}
    for position, raw in enumerate(header):
        canonical = COLUMN_ALIASES.get(re.sub(r"[\s_\-]+", "", str(raw).strip().lower()))
        if canonical is None:
            continue
        if canonical in found:
            first = header[found[canonical]]
            raise DataError(source, f"columns {_show(first)} and {_show(raw)} both mean {canonical!r}")
        found[canonical] = position
    if "date" not in found and header and not str(header[0]).strip():
        found["date"] = 0  # DataFrame.to_csv() of a date-indexed frame: the unnamed index holds the dates
    missing = [name for name in REQUIRED_COLUMNS if name not in found]
    if missing:
        shown = ", ".join(_show(str(h)) for h in header[:12])
        hint = " (is the file comma-separated?)" if len(header) == 1 and re.search(r"[;\t|]", str(header[0])) else ""
        raise DataError(source, f"missing required column(s) {', '.join(missing)}; found {shown}{hint}")
    return found


def _table_from_text(source: str, text: str) -> _Table:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    records: list[list[str]] = []
    lines: list[int] = []
    try:
        for record in reader:
            if not record:  # blank line
                continue
            if header is None:
                header = record
                continue
            if len(record) != len(header):
                raise DataError(source, f"expected {len(header)} fields as in the header, found {len(record)}",
                                row=len(records) + 1, line=reader.line_num)
            records.append(record)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataError(source, f"malformed CSV ({exc})", line=reader.line_num) from exc
    if header is None:
        raise DataError(source, "empty file (no header and no rows)")
    positions = _map_header(source, header)
    if not records:
        raise DataError(source, "header only, no data rows")
    grid = np.array(records, dtype=object).reshape(len(records), len(header))
    cells = {name: grid[:, pos] for name, pos in positions.items()}
    rows = np.arange(1, len(records) + 1)
    return _Table(source, cells, rows, np.asarray(lines))


def _table_from_frame(frame: pd.DataFrame) -> _Table:
    source = "<DataFrame>"
    header = [str(c) for c in frame.columns]
    index_is_date = COLUMN_ALIASES.get(re.sub(r"[\s_\-]+", "", str(frame.index.name or "").lower())) == "date"
    use_index = not any(COLUMN_ALIASES.get(re.sub(r"[\s_\-]+", "", h.strip().lower())) == "date" for h in header) and (
        isinstance(frame.index, pd.DatetimeIndex) or index_is_date
    )
    positions = _map_header(source, header + (["date"] if use_index else []))
    if len(frame) == 0:
        raise DataError(source, "no data rows")
    cells: dict[str, np.ndarray] = {}
    for name, pos in positions.items():
        column = frame.index if pos == len(header) else frame.iloc[:, pos]
        if name == "date" and isinstance(column.dtype, (np.dtype, pd.DatetimeTZDtype)) and column.dtype.kind == "M":
            stamps = pd.DatetimeIndex(column)
            if stamps.tz is not None:
                stamps = stamps.tz_convert("UTC").tz_localize(None)
            cells[name] = stamps.as_unit("ns").to_numpy()
        else:  # numeric columns keep their dtype (fast path in _parse_numbers); anything else is text
            values = np.asarray(column)
            cells[name] = values if values.dtype.kind in "fiu" else values.astype(object)
    return _Table(source, cells, np.arange(1, len(frame) + 1), None)


# ------------------------------------------------------------------------------------------ dates

def _parse_dates(table: _Table, date_format: str | None, dayfirst: bool) -> tuple[np.ndarray, np.ndarray]:
    """(datetime64[ns] dates, missing mask). Unparseable non-empty dates raise."""
    raw = table.cells["date"]
    if raw.dtype.kind == "M":
        return raw, np.isnat(raw)
    text = np.array(["" if v is None else str(v).strip() for v in raw], dtype=object)
    missing = np.array([v.lower() in MISSING_TOKENS for v in text])
    present = np.flatnonzero(~missing)
    if present.size == 0:
        raise DataError(table.source, "no row has a date")
    fmt = date_format or infer_date_format(text[present[0]], dayfirst)
    if fmt is None:
        raise _fail(table, present[0], f"cannot infer the format of date {_show(text[present[0]])}; "
                                       "pass --date-format (strftime codes, e.g. '%b %d, %Y')")
    dates = np.full(len(text), np.datetime64("NaT", "ns"))
    try:
        dates[present], far = to_datetimes(text[present], fmt)
    except (ValueError, re.error) as exc:  # a bad --date-format ('%Q'), or zones pandas cannot reconcile
        raise DataError(table.source, f"cannot read the dates with format {fmt!r} ({first_line(exc)})") \
            from None
    swapped = swapped_format(fmt)
    if date_format is None and not dayfirst and swapped and np.isnat(dates[present]).any():
        other, other_far = to_datetimes(text[present], swapped)
        if not np.isnat(other).any():  # month-first fails somewhere, day-first reads every row: proven day-first
            fmt, swapped, dates[present], far = swapped, fmt, other, other_far
    bad = present[np.isnat(dates[present])]
    if bad.size and far[np.searchsorted(present, bad[0])]:
        raise _fail(table, bad[0], f"date {_show(text[bad[0]])} is outside the supported range "
                                   f"{pd.Timestamp.min:%Y-%m-%d}..{pd.Timestamp.max:%Y-%m-%d}")
    if bad.size:
        hint = "; if the file is day-first pass --dayfirst, or give --date-format" if swapped_format(fmt) else \
            "; give the format with --date-format"
        raise _fail(table, bad[0], f"cannot parse date {_show(text[bad[0]])} as {fmt!r}{hint}")
    # A day/month swap shows up as dates out of order that the other reading puts in order.
    if swapped and present.size > 2 and not strictly_monotonic(dates[present]):
        other, _ = to_datetimes(text[present], swapped)
        if not np.isnat(other).any() and strictly_monotonic(other):
            raise DataError(table.source, f"dates are out of order read as {fmt!r} but in order read as "
                                          f"{swapped!r} (day/month swapped?); pass --dayfirst or --date-format")
    return dates, missing


# ---------------------------------------------------------------------------------------- numbers


def _parse_numbers(table: _Table, name: str) -> np.ndarray:
    """float64 column with NaN where the cell is a missing token; non-numeric/non-finite raise."""
    raw = table.cells[name]
    if raw.dtype.kind in "fiu":
        values = raw.astype(np.float64)
    else:
        text = np.array(["" if v is None else str(v).strip() for v in raw], dtype=object)
        missing = np.array([v.lower() in MISSING_TOKENS for v in text])
        values = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(dtype=np.float64, copy=True)
        bad = np.flatnonzero(np.isnan(values) & ~missing)
        if bad.size:
            raise _fail(table, bad[0], f"non-numeric value {_show(text[bad[0]])} in column {name!r}")
        values[missing] = np.nan
    infinite = np.flatnonzero(np.isinf(values))
    if infinite.size:
        raise _fail(table, infinite[0], f"non-finite value {values[infinite[0]]} in column {name!r}")
    return values


def _check_values(table: _Table, keep: np.ndarray, columns: dict[str, np.ndarray]) -> None:
    """Raise for the earliest kept row that breaks any bar invariant."""
    o, h, l, c, v = (columns[k] for k in ("open", "high", "low", "close", "volume"))
    checks: list[tuple[np.ndarray, object]] = []
    for name in (*PRICE_COLUMNS, "adj_close"):
        if name in columns:
            col = columns[name]
            checks.append((col <= 0, lambda i, n=name, x=col: f"non-positive price {n}={x[i]:g}"))
    checks += [
        (h < l, lambda i: f"high {h[i]:g} < low {l[i]:g}"),
        ((o > h) | (o < l), lambda i: f"open {o[i]:g} outside [low {l[i]:g}, high {h[i]:g}]"),
        ((c > h) | (c < l), lambda i: f"close {c[i]:g} outside [low {l[i]:g}, high {h[i]:g}]"),
        (v < 0, lambda i: f"negative volume {v[i]:g}"),
    ]
    first: tuple[int, object] | None = None
    for mask, describe in checks:
        hits = np.flatnonzero(mask & keep)
        if hits.size and (first is None or hits[0] < first[0]):
            first = (int(hits[0]), describe)
    if first is not None:
        index, describe = first
        raise _fail(table, index, describe(index))  # type: ignore[operator]


# ------------------------------------------------------------------------------------------- public


def read_ohlcv(source: str | Path | pd.DataFrame, *, date_format: str | None = None, dayfirst: bool = False,
               dropna: bool = False) -> LoadedOHLCV:
    """Load and validate OHLCV data; see the module docstring for every rule. Raises DataError."""
    if isinstance(source, pd.DataFrame):
        table = _table_from_frame(source)
    else:
        name = str(source)
        table = _table_from_text(name, _read_text(Path(source), name))

    dates, missing = _parse_dates(table, date_format, dayfirst)
    columns = {name: _parse_numbers(table, name) for name in table.cells if name != "date"}
    for name, values in columns.items():
        missing = missing | np.isnan(values)
    dropped = np.flatnonzero(missing)
    if dropped.size and not dropna:
        first = dropped[0]
        empty = [n for n in ("date", *columns) if (n == "date" and np.isnat(dates[first])) or
                 (n != "date" and np.isnan(columns[n][first]))]
        raise _fail(table, first, f"missing value in column(s) {', '.join(empty)}; values are never filled, "
                                  "pass --dropna to drop incomplete rows")
    keep = ~missing
    if not keep.any():
        raise DataError(table.source, "no complete rows left after dropping rows with missing values")
    _check_values(table, keep, columns)

    kept = np.flatnonzero(keep)
    stamps = dates[kept]
    order = np.argsort(stamps, kind="stable")
    repeats = np.flatnonzero(np.diff(stamps[order].astype(np.int64)) == 0)
    if repeats.size:
        a, b = sorted((kept[order[repeats[0]]], kept[order[repeats[0] + 1]]))
        stamp = pd.Timestamp(dates[b])
        shown = stamp.date().isoformat() if stamp == stamp.normalize() else stamp.isoformat()
        raise _fail(table, b, f"duplicate timestamp {shown} (same as row {table.row[a]})")
    reordered = not bool(np.all(np.diff(stamps.astype(np.int64)) > 0))
    if reordered:
        newest_first = bool(np.all(np.diff(stamps.astype(np.int64)) < 0))
        what = "newest-first" if newest_first else "not in date order"
        notice_once(f"{table.source}: rows were {what}; sorted ascending by date")
        kept = kept[order]

    names = [n for n in ("open", "high", "low", "close", "adj_close", "volume") if n in columns]
    frame = pd.DataFrame({n: columns[n][kept] for n in names},
                         index=pd.DatetimeIndex(dates[kept], name="date").as_unit("ns"))
    return LoadedOHLCV(frame, table.source, tuple(int(r) for r in table.row[dropped]) if dropna else (), reordered)


def load_ohlcv(source: str | Path | pd.DataFrame, *, date_format: str | None = None, dayfirst: bool = False,
               dropna: bool = False) -> pd.DataFrame:
    """The validated frame of `read_ohlcv` (index "date", ascending; float64 columns)."""
    return read_ohlcv(source, date_format=date_format, dayfirst=dayfirst, dropna=dropna).frame
