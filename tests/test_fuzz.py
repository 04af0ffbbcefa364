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
import copy
import dataclasses
import io
import json
import pickle
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest_trading import make_ohlcv
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from asyncdqn import checkpoint, config, runtime
from asyncdqn.cli import main
from asyncdqn.nets import EnsembleQNet
from asyncdqn.envs.trading.market_data import DataError, read_ohlcv



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
    """What a returned frame promises (asyncdqn.envs.trading.market_data docstring)."""
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
    no warning may be emitted: it would be an extra stderr line in the CLI (the loader's order notice is a
    plain line of its own, not a warning)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result: pd.DataFrame | DataError = read_ohlcv(path, **kwargs).frame
        except DataError as exc:
            result = exc
    stray = [f"{w.category.__name__}: {w.message}" for w in caught]
    assert not stray, stray
    return result


def assert_one_line(message: str) -> None:
    assert message and "\n" not in message and "\r" not in message, repr(message)


def run_main(argv: list) -> tuple[int, str, str]:
    """`asyncdqn ARGV` in-process: (exit status, stdout, stderr). An exception escaping main() is a bug and
    propagates. Warnings are recorded, not printed: none may appear."""
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        rc = main([str(a) for a in argv])
    stray = [f"{w.category.__name__}: {w.message}" for w in caught]
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


def without_notes(err: str) -> str:
    """stderr less the loader's `asyncdqn: note:` lines (a file sorted by date says so once per process, so
    whether a later call prints it depends on the calls before: the rules below hold either way)."""
    return "".join(line for line in err.splitlines(keepends=True) if not line.startswith("asyncdqn: note: "))


def assert_backtest_outcome(rc: int, err: str, out_dir: Path) -> None:
    """0 with a complete report, or the one error line and no report (beside at most the loader's notes)."""
    event(f"exit {rc}")  # --hypothesis-show-statistics shows how many examples got through
    err = without_notes(err)
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

COUNT_OPTIONS = option_values(st.sampled_from(["0", "1", "3", "-1", "100001", "1e3", "abc", ""]),
                              st.integers(-5, 2000).map(str))


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
       seed=st.integers(-3, 2**70), slippage_bps=NUMBER_OPTIONS, n_trials=COUNT_OPTIONS, random_trials=COUNT_OPTIONS)
def test_backtest_options_exit_0_or_2_with_one_line(tmp_path, start, end, cost_bps, periods_per_year, risk_free,
                                                    date_format, policy, fill, seed, slippage_bps, n_trials,
                                                    random_trials):
    path = tmp_path / "valid.csv"
    path.write_text(VALID_CSV)
    out_dir = Path(tempfile.mkdtemp(dir=tmp_path))
    argv = ["backtest", "--policy", policy, "--data", path, "--out", out_dir, *options(
        start=start, end=end, cost_bps=cost_bps, periods_per_year=periods_per_year, risk_free=risk_free,
        date_format=date_format, fill=fill, seed=str(seed), slippage_bps=slippage_bps, n_trials=n_trials,
        random_trials=random_trials)]
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


# -------------------------------------------------------------------------------------- checkpoints


def small_payload() -> dict:
    """What eval needs from a checkpoint (a config and a policy), for one untrained 8-unit CartPole net."""
    net = EnsembleQNet(1, 4, 2, (8,)).reset_parameters(0)
    return {"config": config.to_dict(config.RunConfig()),
            "env": {"id": "CartPole-v1", "obs_shape": [4], "n_actions": 2, "metadata": {}},
            "policy": checkpoint.policy_payload(net, np.ones(1))}


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("real") / checkpoint.FILENAME
    checkpoint.save(path, small_payload())
    assert main(["eval", str(path), "--episodes", "1"]) == 0  # the unmutated file is a working checkpoint
    return path.read_bytes()


def consumers(path: Path, data_csv: Path, out: Path) -> list[list]:
    """Every command that reads a checkpoint."""
    return [["eval", path, "--episodes", "1", "--seed", "0"],
            ["backtest", path, "--data", data_csv, "--out", out],
            ["train", "--resume", path]]


def assert_no_checkpoint_reader_accepts(tmp_path: Path, path: Path) -> list[str]:
    """Each checkpoint consumer refuses the file with one line and writes nothing."""
    data_csv = tmp_path / "valid.csv"
    data_csv.write_text(VALID_CSV)
    lines = []
    for argv in consumers(path, data_csv, tmp_path / "bt"):
        rc, out, err = run_main(argv)
        lines.append(assert_error_line(rc, err))
        assert out == ""
    assert not (path.parent / "eval.json").exists() and not (tmp_path / "bt").exists()
    return lines


CHECKPOINT_LIKE = st.one_of(
    st.binary(max_size=3000),
    st.builds(lambda tail: b"PK\x03\x04" + tail, st.binary(max_size=500)),          # zip local-file magic
    st.builds(lambda tail: b"PK\x05\x06" + tail, st.binary(min_size=18, max_size=40)),  # empty zip end record
    st.builds(lambda tail: b"\x80\x04\x95" + tail, st.binary(max_size=500)),         # pickle protocol 4
)


@pytest.mark.timeout(60)
@fuzz(60)
@given(data=CHECKPOINT_LIKE)
def test_random_bytes_as_a_checkpoint_are_one_line_errors(tmp_path, data):
    path = tmp_path / "run" / checkpoint.FILENAME
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    for line in assert_no_checkpoint_reader_accepts(tmp_path, path):
        assert str(path) in line or "checkpoint" in line


@st.composite
def mutations(draw, size: int) -> list[tuple[str, int, int, bytes]]:
    """A few edits of a file of `size` bytes: (kind, start, end, new bytes)."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "flip", "overwrite", "delete", "insert", "truncate"]))
        start = draw(st.integers(0, size - 1))
        end = min(size, start + draw(st.integers(1, 64)))
        edits.append((kind, start, end, draw(st.binary(min_size=1, max_size=16))))
    return edits


def mutate(data: bytes, edits: list[tuple[str, int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, start, end, new in edits:
        start, end = min(start, len(out)), min(end, len(out))
        if kind == "flip" and start < len(out):
            out[start] ^= 1 << (new[0] % 8)
        elif kind == "overwrite":
            out[start:start + len(new)] = new
        elif kind == "delete":
            del out[start:end]
        elif kind == "insert":
            out[start:start] = new
        elif kind == "truncate":
            del out[start:]
    return bytes(out)


@pytest.mark.timeout(60)
@fuzz(80)
@given(data=st.data())
def test_mutated_checkpoints_evaluate_or_fail_with_one_line(tmp_path, real_checkpoint, data):
    edits = data.draw(mutations(len(real_checkpoint)))
    # An edit inside the pickled key "config" is the xfailed cli bug below; keep it out of the sample.
    key = real_checkpoint.index(b"config")
    assume(not any(start <= key + 6 and (end > key or kind in ("delete", "insert", "truncate") and start <= key)
                   for kind, start, end, _ in edits))
    path = tmp_path / "run" / checkpoint.FILENAME
    path.parent.mkdir(exist_ok=True)
    (path.parent / "eval.json").unlink(missing_ok=True)
    path.write_bytes(mutate(real_checkpoint, edits))
    rc, out, err = run_main(["eval", path, "--episodes", "1", "--seed", "0"])
    event(f"exit {rc}")
    if rc == 0:  # the edit hit tensor bytes or an unread field: a valid file with other numbers
        assert err == "" and json.loads((path.parent / "eval.json").read_text())["episodes"] == 1
    else:
        assert_error_line(rc, err)
        assert not (path.parent / "eval.json").exists()


def plain_values(tensors: bool = True) -> st.SearchStrategy:
    """What torch.load(weights_only=True) can hand back: numbers, strings, tensors, lists and dicts."""
    leaves = [st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=10)]
    if tensors:
        leaves.append(st.builds(lambda n, k: torch.full((n,) * k, 0.5), st.integers(0, 3), st.integers(0, 3)))
    return st.recursive(st.one_of(*leaves), lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)), max_leaves=6)


PLAIN_VALUES = plain_values()


def paths_of(tree: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path in nested dicts and lists (the places a corrupted checkpoint can differ)."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return []
    found = []
    for key, value in items:
        found.append((*prefix, key))
        found += paths_of(value, (*prefix, key))
    return found


@pytest.mark.timeout(60)
@fuzz(80)
@given(data=st.data())
def test_checkpoints_with_wrong_fields_evaluate_or_fail_with_one_line(tmp_path, data):
    """A well-formed file whose fields hold the wrong things (what a buggy or hostile writer could produce)."""
    payload = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, **small_payload()}
    # the config entry itself (removed or not a table) and a tensor inside it are the xfailed bugs below
    where = data.draw(st.sampled_from([p for p in paths_of(payload) if p != ("config",)]))
    node = payload
    for key in where[:-1]:
        node = node[key]
    if data.draw(st.booleans()) and isinstance(node, dict):
        del node[where[-1]]
    else:
        node[where[-1]] = data.draw(plain_values(tensors=where[0] != "config"))
    path = tmp_path / "run" / checkpoint.FILENAME
    path.parent.mkdir(exist_ok=True)
    (path.parent / "eval.json").unlink(missing_ok=True)
    torch.save(payload, path)
    data_csv = tmp_path / "valid.csv"
    data_csv.write_text(VALID_CSV)
    for argv in consumers(path, data_csv, tmp_path / "bt")[:2]:
        rc, out, err = run_main(argv)
        event(f"{argv[0]} exit {rc}")
        if rc != 0:
            assert_error_line(rc, err)
    assert not (tmp_path / "bt").exists()  # an untrained CartPole checkpoint is never a trading policy


def trading_payload(data_csv: Path) -> dict:
    """A backtestable checkpoint: an untrained 2-net policy and the metadata of a window-8 env on `data_csv`."""
    from asyncdqn.envs.trading import TradingEnv

    env = TradingEnv(str(data_csv), window=8)
    net = EnsembleQNet(2, env.obs_dim, len(env.positions), (8,)).reset_parameters(0)
    return {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "config": config.to_dict(config.RunConfig()),
            "env": {"id": "asyncdqn/Trading-v0", "metadata": env.policy_metadata()},
            "policy": checkpoint.policy_payload(net, np.full(2, 0.5))}


@pytest.mark.timeout(60)
@fuzz(60)
@given(data=st.data())
def test_trading_checkpoints_with_wrong_fields_backtest_or_fail_with_one_line(tmp_path, data):
    data_csv = tmp_path / "valid.csv"
    data_csv.write_text(VALID_CSV)
    payload = trading_payload(data_csv)
    where = data.draw(st.sampled_from([p for p in paths_of(payload) if p[0] in ("env", "policy")]))
    node = payload
    for key in where[:-1]:
        node = node[key]
    if data.draw(st.booleans()) and isinstance(node, dict):
        del node[where[-1]]
    else:
        node[where[-1]] = data.draw(PLAIN_VALUES)
    path = tmp_path / "run" / checkpoint.FILENAME
    path.parent.mkdir(exist_ok=True)
    torch.save(payload, path)
    out_dir = Path(tempfile.mkdtemp(dir=tmp_path))
    rc, _, err = run_main(["backtest", path, "--data", data_csv, "--out", out_dir])
    assert_backtest_outcome(rc, err, out_dir)


def test_the_unchanged_trading_checkpoint_backtests(tmp_path):
    # guards the fuzz test above: without a change, the payload is a working trading checkpoint
    data_csv = tmp_path / "valid.csv"
    data_csv.write_text(VALID_CSV)
    path = tmp_path / checkpoint.FILENAME
    torch.save(trading_payload(data_csv), path)
    rc, _, err = run_main(["backtest", path, "--data", data_csv, "--out", tmp_path / "out"])
    assert (rc, err) == (0, "") and (tmp_path / "out" / "report.json").exists()


def change_at(payload: dict, where: tuple, value: object) -> dict:
    node = payload
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    return payload


# Found by the fuzz test above; each escaped `asyncdqn backtest CHECKPOINT` as a traceback.
@pytest.mark.parametrize(("where", "value", "fragment"), [
    (("env",), None, "not a trading policy (trained on None)"),                     # AttributeError
    (("env", "metadata"), 3, "trading policy metadata is malformed"),               # TypeError: int not iterable
    (("env", "metadata", "window"), None, "malformed (window = 'None')"),           # TypeError from int()
    (("env", "metadata", "positions"), [], "malformed (positions = '[]')"),         # max() of an empty sequence
    (("env", "metadata", "positions"), ["ö"], "malformed (positions"),             # ValueError from float()
    (("env", "metadata", "cost_bps"), None, "malformed (cost_bps"),                 # TypeError from float()
    (("env", "metadata", "fill"), "{}", "malformed (fill"),                         # ValueError from TradingEnv
    (("env", "metadata", "norm_std", 2), 0.0, "malformed (norm_std"),               # ValueError from TradingEnv
    (("env", "metadata", "norm_mean", 1), [1.0], "malformed (norm_mean"),           # ValueError from numpy
    (("env", "metadata", "feature_names"), 5, "malformed (feature_names"),          # TypeError from list()
    (("env", "metadata", "obs_clip"), torch.ones(2), "not a table of plain values"),  # ambiguous tensor truth
    (("env", "metadata", "positions"), [0.0], "the policy has 3 actions for 1 positions"),  # action 2 of 0..0
    (("policy",), torch.ones(1, 1, 1), "checkpoint policy is malformed"),          # IndexError tensor["spec"]
])
def test_malformed_trading_checkpoints_found_by_fuzzing(tmp_path, where, value, fragment):
    data_csv = tmp_path / "valid.csv"
    data_csv.write_text(VALID_CSV)
    path = tmp_path / checkpoint.FILENAME
    torch.save(change_at(trading_payload(data_csv), where, value), path)
    rc, _, err = run_main(["backtest", path, "--data", data_csv, "--out", tmp_path / "out"])
    assert fragment in assert_error_line(rc, err)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------- scenario files and --set

SECTIONS = dict(config.SECTION_TYPES)
TOP_KEYS = [f.name for f in dataclasses.fields(config.RunConfig) if f.name not in SECTIONS]
SECTION_KEYS = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in SECTIONS.items()}
ALL_KEYS = {*TOP_KEYS, *(f"{s}.{k}" for s, keys in SECTION_KEYS.items() for k in keys)}
JUNK_KEYS = ["lrr", "total-steps", "Total_Steps", "x", "seed2", "env_id", "kwargs2", "hidden_", "\u00e9t\u00e9"]
TOML_VALUES = st.one_of(
    st.integers(-10, 10**6).map(str), st.sampled_from(["0", "-1", "1", "10**3", "1_000", "0x10", "1e400", "99999999999999999999"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr), st.sampled_from(["nan", "inf", "-inf", "+inf"]),
    st.sampled_from(["true", "false", "True", '""', '"x"', '"CartPole-v1"', '"open"', '"params"', "'lit'",
                     "[]", "[64, 64]", "[1, \"a\"]", "[[1], [2]]", "{}", "{ a = 1 }", "1979-05-27", "07:32:00",
                     "1979-05-27T07:32:00Z", '"""multi\nline"""', "= 3", "[", "{", '"unclosed', "1 2"]),
)


@st.composite
def scenario_texts(draw) -> str:
    """TOML-ish text made of real section and key names, junk ones, and values of every TOML type."""
    lines = [f"{draw(st.sampled_from(TOP_KEYS + JUNK_KEYS))} = {draw(TOML_VALUES)}"
             for _ in range(draw(st.integers(0, 3)))]
    for _ in range(draw(st.integers(0, 3))):
        section = draw(st.sampled_from([*SECTIONS, *SECTIONS, "learner.sub", "nosuch", "[env]", "env]"]))
        lines.append(f"[{section}]")
        keys = SECTION_KEYS.get(section, []) + JUNK_KEYS + TOP_KEYS[:2]
        lines += [f"{draw(st.sampled_from(keys))} = {draw(TOML_VALUES)}" for _ in range(draw(st.integers(0, 4)))]
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))


class ReachedRun(Exception):
    """Raised by the runtime stub: the CLI accepted the config and was about to train."""


@pytest.fixture
def no_training(monkeypatch):
    """`asyncdqn train` never trains here: a config that happens to be valid stops at runtime.run."""

    def stub(cfg, out, **_):
        raise ReachedRun(cfg)

    monkeypatch.setattr(runtime, "run", stub)


def train_outcome(argv: list) -> str:
    """'accepted' (a valid config reached runtime.run) or the one error line; anything else fails."""
    try:
        rc, out, err = run_main(argv)
    except ReachedRun as reached:
        assert isinstance(reached.args[0], config.RunConfig)
        event("accepted")
        return "accepted"
    event(f"exit {rc}")
    assert out == ""
    return assert_error_line(rc, err)


def assert_names_a_key(line: str, written: list[str]) -> None:
    """A config error names a key: a known one, or one of the keys as the user wrote them."""
    message = line.removeprefix("asyncdqn: error: ")
    if message.startswith("config: "):
        known = any(key in message for key in ALL_KEYS)
        assert known or any(repr(k.strip()) in message or (k.strip() and k.strip() in message) for k in written), \
            (message, written)


def keys_in(text: str) -> list[str]:
    """The keys written in TOML-ish text ('a = 1' lines), with their [section] prefix."""
    keys, section = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1] + "."
            keys.append(stripped[1:-1])  # a section is a key too: [learner.sub] is the key learner.sub
        elif "=" in stripped:
            key = stripped.split("=", 1)[0].strip()
            keys += [key, section + key]
    return keys


@pytest.mark.timeout(60)
@fuzz(120)
@given(text=st.one_of(scenario_texts(), scenario_texts(), st.text(max_size=200)))
def test_random_scenario_files_are_accepted_or_one_line_errors(tmp_path, no_training, text):
    path = tmp_path / "fuzz.toml"
    path.write_text(text, encoding="utf-8")
    line = train_outcome(["train", path, "--out", tmp_path / "run", "--quiet", "--set", "total_steps=5"])
    if line != "accepted":
        assert_names_a_key(line, keys_in(text))
    assert not (tmp_path / "run").exists()


@pytest.mark.timeout(60)
@fuzz(30)
@given(data=st.binary(max_size=200))
def test_random_bytes_as_a_scenario_are_one_line_errors(tmp_path, no_training, data):
    path = tmp_path / "fuzz.toml"
    path.write_bytes(data)
    train_outcome(["train", path, "--out", tmp_path / "run", "--quiet"])
    assert not (tmp_path / "run").exists()


SET_KEYS = st.one_of(st.sampled_from(sorted(ALL_KEYS)), st.sampled_from(
    ["every", "episodes", "lr", "data", "env.kwargs.max_episode_steps", "env.id.x", "learner", "nosuch.key",
     "learner.lr.x", ".lr", "lr.", "", " lr ", "env..id", "faults"]), st.text(max_size=8))
SET_VALUES = st.one_of(TOML_VALUES, st.text(max_size=12))


@pytest.mark.timeout(60)
@fuzz(120)
@given(items=st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", SET_KEYS, SET_VALUES), st.text(max_size=10)),
                      min_size=1, max_size=3))
def test_random_set_overrides_are_accepted_or_one_line_errors(tmp_path, no_training, items):
    sets = [arg for item in items for arg in ("--set", item)]
    line = train_outcome(["train", "cartpole", "--out", tmp_path / "run", "--quiet", *sets])
    if line != "accepted":
        assert_names_a_key(line, [item.split("=", 1)[0] for item in items])
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------- inputs that once escaped cli/config/runtime
# Each escaped as a traceback (or a second stderr line) until checked: a checkpoint without a config or with
# a tensor in it, a policy for another env, a newline in a path, a damaged resume state.


def saved(tmp_path: Path, change) -> Path:
    path = tmp_path / "run" / checkpoint.FILENAME
    path.parent.mkdir(exist_ok=True)
    torch.save(change({"format": checkpoint.FORMAT, "version": checkpoint.VERSION, **small_payload()}), path)
    return path


def test_eval_of_a_checkpoint_without_config(tmp_path):
    path = saved(tmp_path, lambda p: {k: v for k, v in p.items() if k != "config"})
    rc, _, err = run_main(["eval", path, "--episodes", "1"])
    assert_error_line(rc, err)


def test_eval_of_a_checkpoint_whose_config_is_not_a_table(tmp_path):
    path = saved(tmp_path, lambda p: {**p, "config": [1, 2]})
    rc, _, err = run_main(["eval", path, "--episodes", "1"])
    assert_error_line(rc, err)


def test_a_tensor_in_a_checkpoint_config_is_one_line(tmp_path):
    path = saved(tmp_path, lambda p: {**p, "config": {**p["config"], "scenario": torch.full((2, 2), 0.5)}})
    rc, _, err = run_main(["eval", path, "--episodes", "1"])
    assert "scenario expects str" in assert_error_line(rc, err)


def test_eval_of_a_policy_for_another_observation_size(tmp_path):
    net = EnsembleQNet(1, 5, 2, (8,)).reset_parameters(0)  # CartPole observations have 4 numbers
    path = saved(tmp_path, lambda p: {**p, "policy": checkpoint.policy_payload(net, np.ones(1))})
    rc, _, err = run_main(["eval", path, "--episodes", "1"])
    assert_error_line(rc, err)


def test_eval_of_a_policy_with_more_actions_than_the_env(tmp_path):
    net = EnsembleQNet(1, 4, 7, (8,)).reset_parameters(0)
    with torch.no_grad():  # make action 6 the greedy one, which CartPole (2 actions) refuses
        net.head.bias[..., 6] = 100.0
    path = saved(tmp_path, lambda p: {**p, "policy": checkpoint.policy_payload(net, np.ones(1))})
    rc, _, err = run_main(["eval", path, "--episodes", "1"])
    assert_error_line(rc, err)


def test_a_newline_in_a_path_stays_one_line(tmp_path):
    rc, _, err = run_main(["train", str(tmp_path / "no\nsuch.toml")])
    assert "scenario file not found" in assert_error_line(rc, err)


def resumable_copy(trained_run, tmp_path: Path, change) -> Path:
    """A copy of the shared tiny run whose checkpoint's resume state is changed by `change`."""
    run = tmp_path / "run"
    run.mkdir()
    ckpt = torch.load(trained_run.out / checkpoint.FILENAME, weights_only=True)
    torch.save(change(ckpt), run / checkpoint.FILENAME)
    return run


@pytest.mark.parametrize(("change", "was"), [
    pytest.param(lambda c: {**c, "resume": {k: v for k, v in c["resume"].items() if k != "replay"}},
                 "KeyError 'replay' in runtime._restore", id="no-replay-state"),
    pytest.param(lambda c: {**c, "resume": [1]}, "TypeError: list indices", id="resume-a-list"),
    pytest.param(lambda c: {**c, "resume": {**c["resume"], "run": {**c["resume"]["run"], "env_steps": "abc"}}},
                 "ValueError from int('abc')", id="env-steps-text"),
    pytest.param(lambda c: {**c, "resume": {**c["resume"], "learner": {"junk": torch.ones(2)}}},
                 "KeyError in Learner.load_state_dict", id="learner-state-junk"),
    pytest.param(lambda c: {**c, "resume": {**c["resume"], "actors": c["resume"]["actors"][:1]}},
                 "actor states of another size", id="actors-wrong-count"),
])
def test_resume_from_a_damaged_resume_state_is_one_line(tmp_path, trained_run, change, was):
    run = resumable_copy(trained_run, tmp_path, change)
    before = (run / checkpoint.FILENAME).read_bytes()
    total = trained_run.cfg.total_steps + 100  # if it ever resumes, it runs 100 steps and ends
    rc, _, err = run_main(["train", "--resume", run, "--set", f"total_steps={total}", "--quiet"])
    line = assert_error_line(rc, err)
    assert "resume state is damaged" in line or "actors" in line, line
    assert (run / checkpoint.FILENAME).read_bytes() == before  # the saved run is left as it was


class WritesMarker:
    """Unpickling this calls open(marker, "w"), which creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.timeout(60)
@fuzz(12)
@given(protocol=st.integers(0, pickle.HIGHEST_PROTOCOL), container=st.sampled_from(["torch.save", "pickle"]),
       where=st.sampled_from([(), ("policy",), ("policy", "state"), ("config",), ("resume", "run")]))
def test_pickled_code_never_runs_in_any_checkpoint_reader(tmp_path, protocol, container, where):
    marker = tmp_path / "MARKER"
    payload = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, **small_payload()}
    node = payload
    for key in where:
        node = node.setdefault(key, {})
    node["x"] = WritesMarker(marker)
    path = tmp_path / "run" / checkpoint.FILENAME
    path.parent.mkdir(exist_ok=True)
    with open(path, "wb") as f:
        if container == "torch.save":
            torch.save(payload, f, pickle_protocol=max(protocol, 2))
        else:
            pickle.dump(payload, f, protocol=protocol)
    assert_no_checkpoint_reader_accepts(tmp_path, path)
    assert not marker.exists()


def test_the_marker_payload_is_live(tmp_path):
    # guards the test above: an unsafe load of the same bytes does create the marker
    marker = tmp_path / "MARKER"
    with open(tmp_path / "probe.pkl", "wb") as f:
        pickle.dump({"x": WritesMarker(marker)}, f)
    with open(tmp_path / "probe.pkl", "rb") as f:
        pickle.load(f)["x"].close()
    assert marker.exists()


def torch_zip_with_pickle(path: Path, body: bytes) -> Path:
    """A torch.save zip whose data.pkl is replaced by `body` (the other records stay as torch wrote them)."""
    torch.save({"a": torch.ones(2)}, path.with_suffix(".base"))
    with zipfile.ZipFile(path.with_suffix(".base")) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, body if info.filename.endswith("/data.pkl") else src.read(info))
    return path


def zip64_locator_spanning_disks(path: Path) -> Path:
    torch.save({"a": 1}, path)
    data = path.read_bytes()
    end = data.rfind(b"PK\x05\x06")
    path.write_bytes(data[:end] + b"PK\x06\x07" + struct.pack("<IQI", 0, 0, 2) + data[end:])
    return path


# Damaged files the fuzzers produced, rebuilt by hand. Each escaped checkpoint.load as a traceback: torch's
# weights-only unpickler fails with many exception types, zipfile.is_zipfile raises instead of answering
# False, an empty message broke the error line, and a tensor "version" compared element-wise.
@pytest.mark.parametrize(("make", "fragment"), [
    pytest.param(lambda p: torch_zip_with_pickle(p, b"\x80\x02h\x05."), "corrupt or truncated checkpoint",
                 id="memo-KeyError"),
    pytest.param(lambda p: torch_zip_with_pickle(p, b"\x80\x02\x85."), "corrupt or truncated checkpoint",
                 id="stack-IndexError"),
    pytest.param(lambda p: torch_zip_with_pickle(p, b"\x80\x02}}}s."), "corrupt or truncated checkpoint",
                 id="unhashable-TypeError"),
    pytest.param(lambda p: torch_zip_with_pickle(p, b""), "corrupt or truncated checkpoint (EOFError)",
                 id="empty-pickle-EOFError-without-message"),
    pytest.param(zip64_locator_spanning_disks, "not a torch zip file", id="is_zipfile-BadZipFile"),
    pytest.param(lambda p: torch.save({"format": checkpoint.FORMAT, "version": torch.ones(2)}, p) or p,
                 "checkpoint version a tensor of shape (2,)", id="tensor-version"),
])
def test_damaged_checkpoints_found_by_fuzzing_stay_one_line(tmp_path, make, fragment):
    path = make(tmp_path / checkpoint.FILENAME)
    rc, _, err = run_main(["eval", path, "--episodes", "1"])
    assert fragment in assert_error_line(rc, err)


@pytest.mark.parametrize(("change", "fragment"), [
    pytest.param(lambda p: {**p, "policy": {**p["policy"], "weights": "abc"}}, "weights must be a tensor of 1",
                 id="weights-str-AttributeError"),
    pytest.param(lambda p: {**p, "policy": {**p["policy"], "weights": torch.ones(3)}}, "a tensor of shape (3,)",
                 id="weights-of-3-nets-for-1"),  # was accepted: broadcast to 3 nets, silently
])
def test_malformed_policy_weights_are_refused(tmp_path, change, fragment):
    path = tmp_path / checkpoint.FILENAME
    torch.save(change({"format": checkpoint.FORMAT, "version": checkpoint.VERSION, **small_payload()}), path)
    rc, _, err = run_main(["eval", path, "--episodes", "1"])
    assert "checkpoint policy is malformed" in assert_error_line(rc, err) and fragment in err


def test_non_default_pickle_protocol_adds_no_warning_line(tmp_path):
    # torch warned "Detected pickle protocol 3 ..." on stderr in front of the result of every reader
    path = tmp_path / checkpoint.FILENAME
    torch.save({"format": checkpoint.FORMAT, "version": checkpoint.VERSION, **small_payload()}, path,
               pickle_protocol=3)
    rc, out, err = run_main(["eval", path, "--episodes", "1"])
    assert (rc, err) == (0, "") and out.startswith("CartPole-v1: greedy return")


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
