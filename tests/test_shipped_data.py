"""The CSVs shipped in data/ (package data `asyncdqn.data`): each loads with the strict reader and gives the row
count, date range and periods per year that data/README.md states; byte-identical copies have the SHA-256 the
README gives; the one derived file (EURUSD.csv, daily bars from EURUSD_1H.csv) is rebuilt here and compared."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import pytest
from conftest_trading import REPO

from asyncdqn.envs.trading.market_data import read_ohlcv, shipped_csv
from asyncdqn.envs.trading.periods import infer_periods_per_year

# name: (rows, first bar, last bar, periods per year inferred)
SHIPPED = {
    "GOOGL.csv": (2335, "2009-05-22", "2018-08-29", 252.0),
    "SP500.csv": (5031, "1999-01-04", "2018-12-31", 252.0),
    "NASDAQ.csv": (5031, "1999-01-04", "2018-12-31", 252.0),
    "MSFT.csv": (7983, "1986-03-13", "2017-11-10", 252.0),
    "ASML.csv": (788, "2010-01-04", "2013-01-25", 252.0),
    "EURUSD.csv": (260, "2017-01-02", "2017-12-29", 252.0),
    "EURUSD_1H.csv": (6225, "2017-01-01 22:00:00", "2017-12-29 21:00:00", 6260.4),
    "BTCUSD.csv": (1770, "2014-12-01", "2019-10-17", 365.0),
}
README = (REPO / "data" / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_shipped_csv_loads_with_the_stated_rows_range_and_periods(name):
    rows, first, last, ppy = SHIPPED[name]
    loaded = read_ohlcv(shipped_csv(name))
    frame = loaded.frame
    assert not loaded.reordered and loaded.dropped_rows == ()
    assert len(frame) == rows and frame.index[0] == pd.Timestamp(first) and frame.index[-1] == pd.Timestamp(last)
    assert infer_periods_per_year(frame.index.to_numpy()).value == pytest.approx(ppy, abs=0.05)
    # the README's table for the file states the same count and range
    section = README.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
    assert f"{first[:10]} to {last[:10]}, {rows} rows" in section, name


def _sha256(name: str) -> str:
    return hashlib.sha256(shipped_csv(name).read_bytes()).hexdigest()


def test_the_readme_gives_each_files_sha256():
    """The hash on each file's `Changes` row is the shipped file's (other hashes there are of the sources)."""
    stated = {}
    for section in README.split("\n## ")[1:]:
        name = section.split("\n", 1)[0]
        changes = re.search(r"^\| Changes \|.*SHA-256 `([0-9a-f]{64})`", section, flags=re.M)
        if name.endswith(".csv") and changes:
            stated[name] = changes.group(1)
    assert set(stated) == set(SHIPPED)
    for name, digest in stated.items():
        assert _sha256(name) == digest, name


def daily_from_hourly(hourly: pd.DataFrame) -> pd.DataFrame:
    """Daily FX bars from hourly ones: the trading day ends at 17:00 New York time (the FX convention), so an
    hour starting at or after 17:00 New York belongs to the next day; open = the first hour's open, high / low
    = the extremes, close = the last hour's close, volume = the hours' sum rounded to 0.1."""
    new_york = hourly.index.tz_localize("UTC").tz_convert("America/New_York")
    day = (new_york + pd.Timedelta(hours=7)).tz_localize(None).normalize()
    groups = hourly.groupby(np.asarray(day))
    daily = pd.DataFrame({"open": groups["open"].first(), "high": groups["high"].max(), "low": groups["low"].min(),
                          "close": groups["close"].last(), "volume": groups["volume"].sum().round(1)})
    daily.index.name = "date"
    return daily


def test_eurusd_daily_is_rebuilt_from_the_hourly_file():
    hourly = read_ohlcv(shipped_csv("EURUSD_1H.csv")).frame
    daily = read_ohlcv(shipped_csv("EURUSD.csv")).frame
    rebuilt = daily_from_hourly(hourly)
    pd.testing.assert_index_equal(daily.index, rebuilt.index)
    for column in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(daily[column].to_numpy(), rebuilt[column].to_numpy(), err_msg=column)
    np.testing.assert_allclose(daily["volume"].to_numpy(), rebuilt["volume"].to_numpy(), rtol=1e-12)
    assert (daily.index.day_of_week < 5).all()  # Sunday evening's hours open Monday's bar


def test_asml_keeps_no_vendor_filled_holiday_rows():
    frame = read_ohlcv(shipped_csv("ASML.csv")).frame
    flat = (frame["open"] == frame["close"]) & (frame["high"] == frame["low"]) & (frame["open"] == frame["high"])
    assert not (flat & (frame["volume"] == 0)).any()
    for holiday in ("2010-04-02", "2011-12-26", "2012-05-01", "2012-12-25"):  # Euronext closed: rows removed
        assert pd.Timestamp(holiday) not in frame.index
