"""Hostile input ("Reliability" issue): random bytes, malformed CSVs, corrupt checkpoints, random TOML and
`--set` strings. Every one must end as a valid result or ONE line on stderr with exit status 2; never a
traceback, never a hang, and nothing in a checkpoint may run.

The strategies build inputs from the loader's real vocabulary (column aliases, missing tokens, the date
forms it infers) mixed with junk, so that examples get past the first check and reach the deeper ones.
Hypothesis runs derandomized (a fixed example sequence) with small example counts to keep the file fast;
`python -m pytest tests/test_fuzz.py --hypothesis-seed=N` with `derandomize` removed explores further.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest_trading import make_ohlcv
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from asyncdqn.cli import main
from envs.market_data import DataError, DataOrderWarning, read_ohlcv



def fuzz(examples: int) -> settings:
    """Fast, deterministic hypothesis settings (tmp_path is shared by the examples of one test)."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------- strategies

REAL_HEADERS = ["Date", "date", " DATE ", "Datetime", "Timestamp", "time", "Open", "open", "OPEN", "High", "high",
                "Low", "low", "Close", "close", "Adj Close", "adj_close", "AdjClose", "Adj-Close", "Volume",
                "volume", " Volume "]
JUNK_HEADERS = ["", "Note", "Ticker", "Open Interest", "Vol.", "Close*", "ÖPEN", "日付", "date;open;high", "\ufeffDate"]
DATES = ["2020-01-02", "2020-01-03", "2020-01-03", "2020-1-6", "2020-01-07T09:30:00Z", "2020-01-08 16:00",
         "2020-01-09T10:00:00+05:30", "01/10/2020", "13/01/2020", "14.01.2020", "2020/01/15", "20200116",
         "1579219200", "1579305600000", "2020-02-30", "0000-00-00", "9999-12-31", "1677-09-21", "2262-04-12",
         "Jan 17 2020", "17-Jan-2020", "yesterday", "2020-13-01", "-2020-01-01", "2020-01-01 25:61"]
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64).map(repr),
    st.integers(min_value=-10**20, max_value=10**20).map(str),
    st.sampled_from(["0", "-0", "1e308", "1e309", "-1e-320", "0x10", "1_000", "1,5", "  12  ", "+3", ".5", "5.",
                     "1e", "١٢", "12abc", "inf", "-Infinity", "NaN", "nan", "NA", "N/A", "#N/A", "null",
                     "None", "", " "]),
)
CELLS = st.one_of(NUMBERS, st.sampled_from(DATES), st.text(max_size=12),
                  st.text(alphabet="0123456789.-e", max_size=8), st.just("x" * 5000))
DELIMITERS = st.sampled_from([",", ",", ",", ";", "\t", "|"])
NEWLINES = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def malformed_csvs(draw) -> bytes:
    """A CSV-ish file: a header of real and junk names, rows of random cells, odd delimiters and endings."""
    header = draw(st.lists(st.one_of(st.sampled_from(REAL_HEADERS), st.sampled_from(JUNK_HEADERS),
                                     st.text(max_size=8)), min_size=0, max_size=9))
    if draw(st.booleans()):  # most interesting files have all six required columns
        header = ["Date", "Open", "High", "Low", "Close", "Volume"] + header[:2]
        header = draw(st.permutations(header))
    width = len(header)
    n_rows = draw(st.integers(0, 8))
    rows = []
    for _ in range(n_rows):
        size = width if draw(st.integers(0, 9)) else draw(st.integers(0, width + 2))
        rows.append(draw(st.lists(CELLS, min_size=size, max_size=size)))
    sep, newline = draw(DELIMITERS), draw(NEWLINES)
    quote = draw(st.sampled_from(["", "", '"']))
    text = newline.join(sep.join(f"{quote}{cell}{quote}" for cell in row) for row in [header, *rows])
    text += draw(st.sampled_from(["", newline, newline * 3, '"']))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace")


VALID = make_ohlcv(60, seed=7)


def valid_lines(frame: pd.DataFrame) -> list[str]:
    return [f"{d:%Y-%m-%d},{r.open!r},{r.high!r},{r.low!r},{r.close!r},{r.volume!r}"
            for d, r in zip(frame.index, frame.itertuples(index=False))]


@st.composite
def mutated_valid_csvs(draw) -> bytes:
    """A valid 60-bar file with a few targeted mutations (so some stay valid and reach the backtest)."""
    header = "Date,Open,High,Low,Close,Volume"
    lines = valid_lines(VALID)
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        cells = lines[i].split(",")
        kind = draw(st.sampled_from(["cell", "dup_date", "swap", "drop_cell", "insert", "delete", "reverse",
                                     "date_form", "negate"]))
        if kind == "cell":
            cells[draw(st.integers(0, len(cells) - 1))] = draw(CELLS)
        elif kind == "dup_date":
            cells[0] = lines[draw(st.integers(0, len(lines) - 1))].split(",")[0]
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            continue
        elif kind == "drop_cell":
            del cells[draw(st.integers(0, len(cells) - 1))]
        elif kind == "insert":
            lines.insert(i, draw(st.text(max_size=30)).replace("\n", " ").replace("\r", " "))
            continue
        elif kind == "delete":
            del lines[i]
            continue
        elif kind == "reverse":
            lines.reverse()
            continue
        elif kind == "date_form":  # a real date of the file, written another way
            stamp = VALID.index[draw(st.integers(0, len(VALID) - 1))]
            cells[0] = stamp.strftime(draw(st.sampled_from(["%m/%d/%Y", "%d/%m/%Y", "%Y%m%d", "%d.%m.%Y",
                                                              "%b %d %Y", "%Y-%m-%dT%H:%M:%SZ"])))
        elif kind == "negate":
            column = draw(st.integers(0, len(cells) - 1))
            cells[column] = "-" + cells[column]
        lines[i] = ",".join(cells)
    newline = draw(NEWLINES)
    prefix = draw(st.sampled_from(["", "", "\ufeff"]))
    return (prefix + newline.join([header, *lines]) + newline).encode("utf-8")


HOSTILE_FILES = st.one_of(malformed_csvs(), mutated_valid_csvs(), st.binary(max_size=300))
# --date-format values: None (inferred) most of the time, else real, odd and broken strftime patterns
DATE_FORMATS = st.one_of(st.none(), st.none(), st.sampled_from(
    ["%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%Y%m%d", "%b %d %Y", "%Y-%m-%d %z", "%H:%M", "ISO8601", "mixed",
     "epoch_s", "epoch_ms", "%Q", "%", "%Y-%m-%d%Y", "%%", "", " ", "%s", "%G-W%V-%u"]), st.text(max_size=6))


# ------------------------------------------------------------------------------------------ checks


def assert_valid_frame(frame: pd.DataFrame) -> None:
    """What a returned frame promises (envs.market_data docstring)."""
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.name == "date" and frame.index.tz is None
    assert frame.index.is_monotonic_increasing and frame.index.is_unique and len(frame) >= 1
    assert {"open", "high", "low", "close", "volume"} <= set(frame.columns)
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    values = frame.to_numpy()
    assert np.isfinite(values).all()
    o, h, l, c, v = (frame[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    assert (l > 0).all() and (h >= l).all() and (v >= 0).all()
    assert ((o >= l) & (o <= h) & (c >= l) & (c <= h)).all()


def load_or_reject(path: Path, **kwargs) -> pd.DataFrame | DataError:
    """read_ohlcv's frame or its DataError; any other exception propagates (a bug). Only the loader's
    own DataOrderWarning may be emitted: any other warning would be an extra stderr line in the CLI."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result: pd.DataFrame | DataError = read_ohlcv(path, **kwargs).frame
        except DataError as exc:
            result = exc
    stray = [f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, DataOrderWarning)]
    assert not stray, stray
    return result


def assert_one_line(message: str) -> None:
    assert message and "\n" not in message and "\r" not in message, repr(message)


def run_main(argv: list) -> tuple[int, str, str]:
    """`asyncdqn ARGV` in-process: (exit status, stdout, stderr). An exception escaping main() is a bug and
    propagates. Warnings are recorded, not printed: only the loader's DataOrderWarning may appear."""
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        rc = main([str(a) for a in argv])
    stray = [f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, DataOrderWarning)]
    assert not stray, stray
    return rc, out.getvalue(), err.getvalue()


def assert_error_line(rc: int, err: str) -> str:
    """Exit status 2 and exactly one stderr line, the CLI's error line."""
    assert rc == 2, (rc, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"stderr should be one line:\n{err}"
    assert lines[0].startswith("asyncdqn: error: ") and len(lines[0]) > len("asyncdqn: error: "), lines[0]
    return lines[0]


def assert_backtest_outcome(rc: int, err: str, out_dir: Path) -> None:
    """0 with a complete report, or the one error line and no report."""
    event(f"exit {rc}")  # --hypothesis-show-statistics shows how many examples got through
    if rc == 0:
        assert err == ""
        for name in ("report.json", "equity.csv", "trades.csv", "equity.png"):
            assert (out_dir / name).stat().st_size > 0, name
    else:
        assert_error_line(rc, err)
        assert not (out_dir / "report.json").exists()


# ------------------------------------------------------------------------------------------- loader


@pytest.mark.timeout(60)
@fuzz(300)
@given(data=HOSTILE_FILES, dayfirst=st.booleans(), dropna=st.booleans(), date_format=DATE_FORMATS)
def test_loader_returns_a_valid_frame_or_one_line_data_error(tmp_path, data, dayfirst, dropna, date_format):
    path = tmp_path / "fuzz.csv"
    path.write_bytes(data)
    result = load_or_reject(path, dayfirst=dayfirst, dropna=dropna, date_format=date_format)
    event("rejected" if isinstance(result, DataError) else "loaded")
    if isinstance(result, DataError):
        assert_one_line(str(result))
        assert str(result).startswith(str(path))
    else:
        assert_valid_frame(result)


# ---------------------------------------------------------------------------------- backtest command

VALID_CSV = "\n".join(["Date,Open,High,Low,Close,Volume", *valid_lines(VALID)]) + "\n"
# option values: mostly left out (so that some examples run a whole backtest), else real, edge and junk
# values; passed as --flag=value so that '-inf' is not read as a flag
def option_values(*hostile: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), st.none(), st.none(), *hostile)


DATE_OPTIONS = option_values(st.sampled_from(
    ["2020-02-20", "2020-03-24", "2020-01-01", "2019-01-01", "2030-01-01", "2020", "now", "NaT", "", "9999-01-01",
     "0001-01-01", "-5", "1e10", "2020-13-01", "2020-02-30", "2020-03-01T00:00:00+05:00"]), st.text(max_size=10))
NUMBER_OPTIONS = option_values(st.floats().map(repr), st.sampled_from(
    ["0", "-1", "1", "1e-10", "0.02", "252", "5000", "4999", "1e309", "-0", "abc", ""]))


def options(**values: str | None) -> list[str]:
    return [f"--{name.replace('_', '-')}={value}" for name, value in values.items() if value is not None]


@pytest.mark.timeout(60)
@fuzz(40)
@given(data=HOSTILE_FILES)
def test_backtest_on_hostile_csvs_exits_0_or_2_with_one_line(tmp_path, data):
    path = tmp_path / "fuzz.csv"
    path.write_bytes(data)
    out_dir = Path(tempfile.mkdtemp(dir=tmp_path))
    rc, _, err = run_main(["backtest", "--policy", "long", "--data", path, "--out", out_dir])
    assert_backtest_outcome(rc, err, out_dir)


@pytest.mark.timeout(60)
@fuzz(30)
@given(start=DATE_OPTIONS, end=DATE_OPTIONS, cost_bps=NUMBER_OPTIONS, periods_per_year=NUMBER_OPTIONS,
       risk_free=NUMBER_OPTIONS, date_format=option_values(DATE_FORMATS),
       policy=st.sampled_from(["long", "flat", "short", "random"]), fill=st.sampled_from([None, "open", "close", "middle"]),
       seed=st.integers(-3, 2**70))
def test_backtest_options_exit_0_or_2_with_one_line(tmp_path, start, end, cost_bps, periods_per_year, risk_free,
                                                    date_format, policy, fill, seed):
    path = tmp_path / "valid.csv"
    path.write_text(VALID_CSV)
    out_dir = Path(tempfile.mkdtemp(dir=tmp_path))
    argv = ["backtest", "--policy", policy, "--data", path, "--out", out_dir, *options(
        start=start, end=end, cost_bps=cost_bps, periods_per_year=periods_per_year, risk_free=risk_free,
        date_format=date_format, fill=fill, seed=str(seed))]
    rc, _, err = run_main(argv)
    assert_backtest_outcome(rc, err, out_dir)


@pytest.mark.parametrize(("extra", "fragment"), [
    (["--start=garbage"], "--start 'garbage' is not a usable date"),         # was DateParseError
    (["--end=2010-13-45"], "--end '2010-13-45' is not a usable date"),       # was DateParseError
    (["--end=nat"], "--end 'nat' is not a usable date"),                      # was AttributeError (NaT.normalize)
    (["--end=0001-01-01"], "--end '0001-01-01' is not a usable date"),       # was OutOfBoundsDatetime
    (["--start=9999-01-01"], "--start '9999-01-01' is not a usable date"),   # silently wrapped around: exit 0
    (["--cost-bps=-5"], "--cost-bps must be a finite number >= 0"),           # was ValueError from TradingEnv
    (["--cost-bps=nan"], "--cost-bps must be a finite number >= 0"),
    (["--cost-bps=5000"], "--cost-bps 5000 makes the largest trade (2) cost 100% or more"),
    (["--periods-per-year=0"], "--periods-per-year must be a finite number >= 1"),  # was ZeroDivisionError
    (["--periods-per-year=-1"], "--periods-per-year must be"),                      # was math domain error
    (["--periods-per-year=1e-10", "--risk-free=0.02"], "--periods-per-year must be"),  # was OverflowError
    (["--periods-per-year=inf"], "--periods-per-year must be"),      # was ValueError: inf is not JSON compliant
    (["--risk-free=nan"], "--risk-free must be a finite annual rate"),  # was ValueError: nan is not JSON compliant
    (["--risk-free=-2"], "--risk-free must be a finite annual rate"),   # was ComplexWarning (an error under -W error)
    (["--seed=-1", "--policy=random"], "--seed must be >= 0"),          # was ValueError from numpy
    (["--date-format=%Q"], "cannot read the dates with format '%Q'"),   # was ValueError from pandas
])
def test_backtest_option_finds_stay_fixed(tmp_path, extra, fragment):
    path = tmp_path / "valid.csv"
    path.write_text(VALID_CSV)
    policy = [] if any(e.startswith("--policy") for e in extra) else ["--policy=long"]
    rc, _, err = run_main(["backtest", *policy, "--data", path, "--out", tmp_path / "out", *extra])
    assert fragment in assert_error_line(rc, err)
    assert not (tmp_path / "out").exists()


def test_backtest_report_folder_that_cannot_be_made_is_one_line(tmp_path):
    # was NotADirectoryError from write_report, after the whole backtest had run
    (tmp_path / "file").write_text("")
    path = tmp_path / "valid.csv"
    path.write_text(VALID_CSV)
    rc, _, err = run_main(["backtest", "--policy", "long", "--data", path, "--out", tmp_path / "file" / "out"])
    assert "cannot write the report to" in assert_error_line(rc, err)


# Inputs the fuzzers found that once escaped as tracebacks, kept as plain cases.
HEADER = "Date,Open,High,Low,Close,Volume\n"
ROW = ",10,11,9,10,100\n"


@pytest.mark.parametrize(("text", "kwargs", "fragment"), [
    # pandas >= 3 parses these at microsecond resolution; the ns conversion raised OutOfBoundsDatetime
    pytest.param(HEADER + "2020-01-01" + ROW + "-1" + ROW, {},
                 "row 2 (line 3): date '-1' is outside the supported range", id="year-minus-1"),
    pytest.param(HEADER + "2020-01-01" + ROW + "9999-12-31" + ROW, {},
                 "date '9999-12-31' is outside the supported range", id="year-9999"),
    pytest.param(HEADER + "1577836800" + ROW + "99999999999" + ROW, {},
                 "date '99999999999' is outside the supported range", id="epoch-year-5138"),
    # a zoned stamp after the first 50 naive ones: pandas raised "Mixed timezones detected"
    pytest.param(HEADER + "".join(f"{d:%Y-%m-%d}{ROW}" for d in pd.bdate_range("2020-01-01", periods=55))
                 + "2021-01-01T00:00:00Z" + ROW, {}, None, id="zone-after-row-50"),
    # --date-format values pandas itself refuses (ValueError, re.error)
    pytest.param(HEADER + "2020-01-01" + ROW, {"date_format": "%Q"}, "cannot read the dates with format '%Q'",
                 id="bad-directive"),
    pytest.param(HEADER + "2020-01-01" + ROW, {"date_format": "%Y-%m-%d%Y"}, "cannot read the dates with format",
                 id="repeated-directive"),
    # worked before; guards that the new catch does not swallow valid zoned formats
    pytest.param(HEADER + "2020-01-01 +0100" + ROW + "2020-01-02 +0200" + ROW, {"date_format": "%Y-%m-%d %z"},
                 None, id="explicit-offsets"),
])
def test_fuzzer_finds_in_the_loader_stay_fixed(tmp_path, text, kwargs, fragment):
    path = tmp_path / "found.csv"
    path.write_text(text, encoding="utf-8")
    result = load_or_reject(path, **kwargs)
    if fragment is None:
        assert isinstance(result, pd.DataFrame), result
        assert_valid_frame(result)
    else:
        assert isinstance(result, DataError)
        assert_one_line(str(result))
        assert fragment in str(result), str(result)
