"""Periods per year inferred from timestamps (asyncdqn.envs.trading.periods), on hand-computed series, and the
backtest's report saying what it used."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest_trading import make_ohlcv

from asyncdqn.cli import main
from asyncdqn.envs.trading.periods import infer_periods_per_year


def stamps(index: pd.DatetimeIndex) -> np.ndarray:
    return index.to_numpy()


def test_daily_weekly_and_monthly_bars_get_the_usual_counts():
    weekdays = pd.bdate_range("2021-03-01", periods=30)  # Monday 2021-03-01 onwards, no weekend bar
    assert infer_periods_per_year(stamps(weekdays)) == (252.0, "daily bars on weekdays only")
    calendar = pd.date_range("2021-03-01", periods=30, freq="D")  # crypto: every day, 8 of 30 on weekends
    assert infer_periods_per_year(stamps(calendar)) == (365.0, "daily bars including weekends")
    holidays = weekdays.delete([4, 11])  # two exchange holidays: still daily bars on weekdays
    assert infer_periods_per_year(stamps(holidays)).value == 252.0
    assert infer_periods_per_year(stamps(pd.date_range("2021-01-01", periods=20, freq="W-FRI"))) == \
        (52.0, "weekly bars")
    assert infer_periods_per_year(stamps(pd.date_range("2021-01-31", periods=12, freq="ME"))) == \
        (12.0, "monthly bars")
    assert infer_periods_per_year(stamps(pd.date_range("2021-01-01", periods=9, freq="3D"))).value == \
        365.25 / 3  # 121.75


def test_hourly_bars_per_year_are_counted_over_whole_weeks():
    # round the clock from Wednesday 2021-03-03 to Thursday 2021-03-25: whole weeks are those of the 8th and
    # 15th (the first and last bars' weeks are partial): 2 * 168 bars -> 168 a week * 365.25 / 7 = 8766
    crypto = pd.date_range("2021-03-03", "2021-03-25 23:00", freq="h")
    assert infer_periods_per_year(stamps(crypto)) == (8766.0, "1-hour bars, 168 a week over 2 whole week(s)")
    # FX: Sunday 22:00 to Friday 21:00 (2 + 4 * 24 + 22 = 120 bars a week): 120 * 365.25 / 7 = 6261.43
    fx = crypto[((crypto.day_of_week < 4) | ((crypto.day_of_week == 4) & (crypto.hour < 22))
                 | ((crypto.day_of_week == 6) & (crypto.hour >= 22)))]
    assert infer_periods_per_year(stamps(fx)).value == 6261.4
    # an exchange session, 7 bars a day (09:30 .. 15:30) on weekdays, one day closed in the week of the 15th:
    # the whole weeks of the 8th and 15th hold 35 + 28 bars -> 31.5 a week * 365.25 / 7 = 1643.6
    days = pd.bdate_range("2021-03-03", "2021-03-25").delete([10])  # 2021-03-17 closed
    session = pd.DatetimeIndex([d + pd.Timedelta(hours=9.5 + h) for d in days for h in range(7)])
    assert infer_periods_per_year(stamps(session)) == (1643.6, "1-hour bars, 31.5 a week over 2 whole week(s)")


def test_short_intraday_series_without_a_whole_week_and_too_few_bars():
    three_days = pd.date_range("2021-03-03", periods=3 * 96, freq="15min")  # Wednesday to Friday
    assert infer_periods_per_year(stamps(three_days)) == \
        (round(96 * 365.25 * 5 / 7, 1), "15-minute bars, 5 days a week (no whole week in the data)")
    with pytest.raises(ValueError, match="at least 2 bars"):
        infer_periods_per_year(stamps(three_days[:1]))


def test_the_backtest_infers_reports_and_can_be_told(tmp_path, capsys):
    frame = make_ohlcv(24 * 28, seed=4).set_axis(pd.date_range("2021-03-03", periods=24 * 28, freq="h"))
    frame.to_csv(tmp_path / "btc_1h.csv")
    args = ["backtest", "--policy", "long", "--data", str(tmp_path / "btc_1h.csv")]
    assert main([*args, "--out", str(tmp_path / "inferred")]) == 0
    report = json.loads((tmp_path / "inferred" / "report.json").read_text())
    assert report["periods_per_year"] == 8766.0
    assert report["periods_per_year_from"] == "inferred: 1-hour bars, 168 a week over 3 whole week(s)"
    assert "annualised with 8766 periods per year (inferred: 1-hour bars" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "given"), "--periods-per-year", "6000"]) == 0
    given = json.loads((tmp_path / "given" / "report.json").read_text())
    assert (given["periods_per_year"], given["periods_per_year_from"]) == (6000.0, "given")
    ratio = given["strategy"]["volatility"] / report["strategy"]["volatility"]
    assert ratio == pytest.approx((6000 / 8766) ** 0.5)
