"""Strict OHLCV loader (asyncdqn.envs.trading.market_data): every rejection, aliases, ordering, dates, dropna, no filling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest_trading import GOOGL_CSV, REPO, make_ohlcv, write_csv

from asyncdqn.envs.trading.market_data import DataError, infer_date_format, load_ohlcv, read_ohlcv

BAD = Path(__file__).resolve().parent / "bad_csvs"
HEADER = "Date,Open,High,Low,Close,Volume\n"
GOOD_ROWS = ["2020-01-02,10.0,11.0,9.5,10.5,1000", "2020-01-03,10.5,11.2,10.1,11.0,1200",
             "2020-01-06,11.0,11.5,10.8,11.1,900", "2020-01-07,11.1,11.9,11.0,11.8,1500"]

# file -> (1-based data row named in the message or None for file-level errors, reason fragment)
CORPUS = {
    "duplicate_timestamp.csv": (3, "duplicate timestamp 2020-01-03 (same as row 2)"),
    "zero_low.csv": (2, "non-positive price low=0"),
    "negative_close.csv": (4, "non-positive price close=-11.8"),
    "high_below_low.csv": (3, "high 10.7 < low 10.8"),
    "open_above_high.csv": (2, "open 11.5 outside [low 10.1, high 11.2]"),
    "non_numeric.csv": (2, "non-numeric value '11.0x' in column 'close'"),
    "infinite_value.csv": (4, "non-finite value inf in column 'high'"),
    "negative_volume.csv": (3, "negative volume -5"),
    "nan_row.csv": (3, "missing value in column(s) close"),
    "nan_token.csv": (2, "missing value in column(s) volume"),
    "unparseable_date.csv": (4, "cannot parse date '2020-02-30'"),
    "wrong_field_count.csv": (2, "expected 6 fields as in the header, found 5"),
    "daymonth_swapped.csv": (None, "day/month swapped?"),
    "empty.csv": (None, "empty file"),
    "blank_lines_only.csv": (None, "empty file"),
    "header_only.csv": (None, "header only, no data rows"),
    "missing_column.csv": (None, "missing required column(s) volume"),
    "semicolon_delimited.csv": (None, "(is the file comma-separated?)"),
    "two_date_columns.csv": (None, "columns 'Date' and 'Timestamp' both mean 'date'"),
    "binary_garbage.csv": (None, "not CSV text: binary content"),
    "latin1_not_utf8.csv": (None, "not CSV text: invalid UTF-8"),
    "unclosed_quote.csv": (None, "malformed CSV"),
}


def test_corpus_is_fully_listed():
    assert sorted(p.name for p in BAD.iterdir()) == sorted(CORPUS)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_bad_csv_is_rejected_with_one_line_naming_file_and_row(name):
    row, fragment = CORPUS[name]
    with pytest.raises(DataError) as caught:
        load_ohlcv(BAD / name)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(str(BAD / name))
    assert fragment in message
    if row is None:
        assert " row " not in message
    else:
        assert f"{name} row {row} (line {row + 1}):" in message
        assert caught.value.row == row


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file not found$"):
        load_ohlcv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        load_ohlcv(tmp_path)


def test_dataerror_is_a_valueerror_and_stays_one_line(tmp_path):
    path = tmp_path / "multi.csv"
    path.write_text(HEADER + GOOD_ROWS[0] + '\n2020-01-03,10.5,11.2,10.1,"1\n1",1200\n')
    with pytest.raises(ValueError) as caught:
        load_ohlcv(path)
    assert isinstance(caught.value, DataError)
    assert "\n" not in str(caught.value) and "'1\\n1'" in str(caught.value)


def test_aliases_case_and_whitespace_and_extra_columns(tmp_path):
    path = tmp_path / "aliases.csv"
    path.write_text(" TIMESTAMP ,OPEN, high ,Low,Adj_Close,CLOSE,  Volume  ,Note\n"
                    "2020-01-02,10,11,9.5,5.25,10.5,1000,x\n2020-01-03,10.5,11.2,10.1,5.5,11,1200,y\n")
    frame = load_ohlcv(path)
    assert list(frame.columns) == ["open", "high", "low", "close", "adj_close", "volume"]
    assert frame.index.name == "date" and frame.index.tz is None
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    assert frame.loc["2020-01-03", "adj_close"] == 5.5 and frame.loc["2020-01-02", "close"] == 10.5
    for header in ("datetime,Open,High,Low,Adj Close,Close,Volume", "time,open,high,low,adjclose,close,volume"):
        path.write_text(header + "\n2020-01-02,10,11,9.5,5.25,10.5,1000\n")
        assert load_ohlcv(path).loc["2020-01-02", "adj_close"] == 5.25


def test_newest_first_is_sorted_with_a_notice_and_rows_stay_whole(tmp_path, capsys):
    path = tmp_path / "desc.csv"
    path.write_text(HEADER + "\n".join(reversed(GOOD_ROWS)) + "\n")
    loaded = read_ohlcv(path)
    assert "newest-first; sorted ascending" in capsys.readouterr().err
    frame = loaded.frame
    assert loaded.reordered and frame.index.is_monotonic_increasing
    assert list(frame.index.strftime("%Y-%m-%d")) == ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"]
    assert frame.loc["2020-01-06"].tolist() == [11.0, 11.5, 10.8, 11.1, 900.0]  # values moved with their date


def test_shuffled_rows_are_sorted_with_a_notice(tmp_path, capsys):
    path = tmp_path / "shuffled.csv"
    path.write_text(HEADER + "\n".join([GOOD_ROWS[i] for i in (2, 0, 3, 1)]) + "\n")
    frame = load_ohlcv(path)
    assert "not in date order" in capsys.readouterr().err
    assert frame.index.is_monotonic_increasing and frame.loc["2020-01-03", "close"] == 11.0


def test_ascending_file_emits_no_warning():
    # filterwarnings=error in pyproject turns any warning here into a failure
    assert not read_ohlcv(GOOGL_CSV).reordered


def test_dayfirst_and_date_format_read_an_ambiguous_file():
    expected = pd.to_datetime(["2020-01-11", "2020-01-12", "2020-02-01", "2020-02-02"])
    swapped = BAD / "daymonth_swapped.csv"
    assert (load_ohlcv(swapped, dayfirst=True).index == expected).all()
    assert (load_ohlcv(swapped, date_format="%d/%m/%Y").index == expected).all()


def test_month_first_default_and_explicit_format(tmp_path):
    path = tmp_path / "us.csv"
    path.write_text(HEADER + "01/30/2020,10,11,9.5,10.5,1\n02/03/2020,10,11,9.5,10.5,1\n")
    assert list(load_ohlcv(path).index.strftime("%Y-%m-%d")) == ["2020-01-30", "2020-02-03"]
    with pytest.raises(DataError, match=r"row 1 \(line 2\): cannot parse date '01/30/2020' as '%d/%m/%Y'"):
        load_ohlcv(path, dayfirst=True)
    path.write_text(HEADER + "Jan 30 2020,10,11,9.5,10.5,1\n")
    with pytest.raises(DataError, match="pass --date-format"):
        load_ohlcv(path)
    assert load_ohlcv(path, date_format="%b %d %Y").index[0] == pd.Timestamp("2020-01-30")


def test_infer_date_format():
    assert infer_date_format("2009-05-22", dayfirst=True) == "ISO8601"
    assert infer_date_format("05/06/2009", dayfirst=False) == "%m/%d/%Y"
    assert infer_date_format("05.06.2009 10:30", dayfirst=True) == "%d.%m.%Y %H:%M"
    assert infer_date_format("20090522", dayfirst=False) == "%Y%m%d"
    assert infer_date_format("1577836800", dayfirst=False) == "epoch_s"
    assert infer_date_format("May 22, 2009", dayfirst=False) is None


def test_epoch_and_timezone_aware_stamps_become_tz_naive_utc(tmp_path):
    path = tmp_path / "epoch.csv"
    path.write_text("timestamp,open,high,low,close,volume\n1577836800,1,1,1,1,0\n1577840400,1,1,1,1,0\n")
    assert list(load_ohlcv(path).index) == [pd.Timestamp("2020-01-01 00:00"), pd.Timestamp("2020-01-01 01:00")]
    path.write_text(HEADER + "2020-01-02T10:00:00+01:00,1,1,1,1,0\n2020-01-02T10:00:00Z,1,1,1,1,0\n")
    index = load_ohlcv(path).index
    assert index.tz is None and list(index) == [pd.Timestamp("2020-01-02 09:00"), pd.Timestamp("2020-01-02 10:00")]


def test_dropna_drops_whole_rows_and_never_fills():
    loaded = read_ohlcv(BAD / "nan_row.csv", dropna=True)
    frame = loaded.frame
    assert loaded.dropped_rows == (3,)
    assert len(frame) == 3 and not frame.isna().any().any()
    assert pd.Timestamp("2020-01-06") not in frame.index  # dropped, not filled from 2020-01-03 or 2020-01-07
    assert frame.loc["2020-01-07"].tolist() == [11.1, 11.9, 11.0, 11.8, 1500.0]
    assert read_ohlcv(BAD / "nan_token.csv", dropna=True).dropped_rows == (2,)


def test_dropna_still_rejects_bad_values_in_kept_rows(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text(HEADER + "2020-01-02,10,11,9.5,,1\n2020-01-03,10,9,9.5,10,1\n")
    with pytest.raises(DataError, match=r"row 2 \(line 3\): high 9 < low 9.5"):
        load_ohlcv(path, dropna=True)


def test_dataframe_source_with_datetime_index_and_tz():
    frame = make_ohlcv(30, seed=1)
    assert load_ohlcv(frame).equals(frame)
    aware = frame.tz_localize("America/New_York")
    assert load_ohlcv(aware).index[0] == pd.Timestamp("2020-01-01 05:00")
    bad = frame.copy()
    bad.iloc[4, bad.columns.get_loc("low")] = -1.0
    with pytest.raises(DataError, match=r"^<DataFrame> row 5: non-positive price low=-1$"):
        load_ohlcv(bad)


@pytest.mark.parametrize("seed", range(3))
def test_csv_round_trip_is_exact(tmp_path, seed):
    frame = make_ohlcv(50, seed=seed)
    assert load_ohlcv(write_csv(frame, tmp_path / "f.csv")).equals(frame)


def test_shipped_googl_matches_its_provenance_note():
    frame = load_ohlcv(GOOGL_CSV)
    note = (REPO / "data" / "README.md").read_text()
    assert len(frame) == 2335 and "2335" in note
    assert frame.index[0] == pd.Timestamp("2009-05-22") and frame.index[-1] == pd.Timestamp("2018-08-29")
    assert "2009-05-22" in note and "2018-08-29" in note
    # split-adjusted: no ~50% jump across the 2014-04-03 GOOG/GOOGL split (the README says so)
    assert frame.loc["2014-04-03", "close"] / frame.loc["2014-04-02", "close"] == pytest.approx(1.006, abs=1e-3)
