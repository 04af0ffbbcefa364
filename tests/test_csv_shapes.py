"""CSV shapes met in the wild (issue 14): pandas' own `to_csv()`, FX exports with day-first dotted stamps,
a newest-first file's notice, and report titles over intraday ranges. Each CSV is written into tmp_path."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from conftest_trading import make_ohlcv
from rich.console import Console

from asyncdqn.envs.trading import DataError, TradingEnv, load_ohlcv, read_ohlcv
from asyncdqn.envs.trading.backtest import reference_policy, run_backtest
from asyncdqn.envs.trading.report import equity_figure, metrics_table


def test_a_csv_written_by_pandas_from_a_date_indexed_frame_loads(tmp_path):
    frame = make_ohlcv(30, seed=1)
    frame.index.name = None  # to_csv() then writes an empty first header cell: ",open,high,low,close,volume"
    path = tmp_path / "pandas.csv"
    frame.to_csv(path)
    assert path.read_text().startswith(",open,high,low,close,volume\n")
    loaded = load_ohlcv(path)
    assert (loaded.index == frame.index).all()
    assert (loaded.to_numpy() == frame.to_numpy()).all()  # to_csv writes floats that read back exactly
    # an unnamed RangeIndex next to a Date column (to_csv() without index=False) is just an extra column
    numbered = frame.reset_index(names="Date")
    numbered.to_csv(path)
    assert path.read_text().startswith(",Date,open") and (load_ohlcv(path).index == frame.index).all()


def fx_rows(stamps: list[str]) -> str:
    body = "".join(f"{s},1.05{i},1.06{i},1.04{i},1.055{i},{100 + i}.5\n" for i, s in enumerate(stamps))
    return "Gmt time,Open,High,Low,Close,Volume\n" + body


def test_fx_stamps_day_first_with_dots_and_milliseconds_parse_with_and_without_the_flag(tmp_path):
    path = tmp_path / "eurusd_h1.csv"
    path.write_text(fx_rows(["01.01.2017 22:00:00.000", "01.01.2017 23:00:00.000", "02.01.2017 00:00:00.000",
                             "13.01.2017 01:00:00.000"]))
    expected = pd.to_datetime(["2017-01-01 22:00", "2017-01-01 23:00", "2017-01-02 00:00", "2017-01-13 01:00"])
    assert (load_ohlcv(path, dayfirst=True).index == expected).all()
    assert (load_ohlcv(path).index == expected).all()  # 13.01 cannot be month-first: the file proves day-first
    # no date beyond the 12th: either reading parses, so only the flag may choose day-first
    path.write_text(fx_rows(["01.01.2017 22:00:00.000", "02.01.2017 22:00:00.000", "03.01.2017 22:00:00.000"]))
    assert list(load_ohlcv(path, dayfirst=True).index.day) == [1, 2, 3]
    assert list(load_ohlcv(path).index.month) == [1, 2, 3]
    # the flag is obeyed: a month-first file read day-first is refused, naming the row
    path.write_text(fx_rows(["01.30.2017 22:00:00.000", "01.31.2017 22:00:00.000"]))
    with pytest.raises(DataError, match=r"row 1 \(line 2\): cannot parse date '01.30.2017 22:00:00.000'"):
        load_ohlcv(path, dayfirst=True)


def test_a_newest_first_file_is_noticed_once_as_one_plain_line(tmp_path):
    frame = make_ohlcv(40, seed=2)
    path = tmp_path / "newest_first.csv"
    frame.iloc[::-1].to_csv(path)
    script = (f"from asyncdqn.envs.trading import TradingEnv, read_ohlcv\n"
              f"assert read_ohlcv({str(path)!r}).reordered\n"
              f"for _ in range(3): TradingEnv({str(path)!r}, window=4)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"asyncdqn: note: {path}: rows were newest-first; sorted ascending by date\n"
    assert (TradingEnv(str(path), window=4)._dates[0], read_ohlcv(path).frame.index[0]) == \
        ("2020-01-01", frame.index[0])


def test_report_titles_keep_intraday_timestamps_whole(tmp_path):
    stamps = pd.date_range("2017-01-02 22:00", periods=80, freq="h")
    frame = make_ohlcv(80, seed=3).set_axis(stamps.rename("date"))
    result = run_backtest({"data": frame, "window": 4}, reference_policy("flat", (-1.0, 0.0, 1.0)),
                          policy_name="flat")
    assert "T" in result.start and "T" in result.end  # ISO date-times: the case that used to break
    console = Console(width=60, record=True)
    console.print(metrics_table(result))
    lines = console.export_text().splitlines()
    assert any(f"{result.start} .. {result.end}" in line for line in lines), lines  # the range on one line
    title = equity_figure(result).axes[0].get_title()
    assert any(result.start in line and result.end in line for line in title.splitlines()), title
