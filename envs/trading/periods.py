"""Periods per year from a series' own timestamps: the annualisation factor of the backtest's metrics.

Place in the flow: backtest.run_backtest asks `infer_periods_per_year` for the walked bars' dates unless
`asyncdqn backtest --periods-per-year N` gives the number; the report says which, and why.

The rules, from the median spacing d of consecutive bars and whether bars fall on weekends (more than
WEEKEND_SHARE of them dated Saturday or Sunday; an FX week's Sunday-evening open is about 2 bars in 120):

    27 days <= d < 32 days    12    monthly bars
    5 days <= d < 9 days      52    weekly bars
    18 hours <= d < 36 hours  252   daily bars on weekdays only (the usual count of trading days)
                              365   daily bars that include weekends (crypto, calendar-day series)
    d < 18 hours              bars per year as observed: bars per calendar week (Monday to Sunday) over the
                              weeks between the first bar's week and the last bar's, times 365.25 / 7; e.g.
                              hourly FX (Sunday 22:00 to Friday 22:00) 120 bars a week -> 6261.4 (24 x ~261),
                              hourly crypto 168 -> 8766 (24 x 365.25). With no whole week in the data:
                              365.25 days / d, times 5/7 without weekend bars.
    other spacings            365.25 days / d (e.g. bars every 2 days: 183)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

WEEKEND_SHARE = 0.05
DAYS_PER_YEAR = 365.25
_DAY = np.timedelta64(1, "D")


class PeriodsPerYear(NamedTuple):
    value: float
    basis: str  # how it was found, for the report: "daily bars on weekdays only"


def infer_periods_per_year(dates_T: np.ndarray) -> PeriodsPerYear:
    """Periods per year for ascending timestamps `dates_T` (datetime64) by the rules in the module docstring.
    Fewer than two bars have no spacing: ValueError."""
    dates_T = np.asarray(dates_T, dtype="datetime64[s]")
    if len(dates_T) < 2:
        raise ValueError("periods per year need at least 2 bars")
    spacing_days = float(np.median(np.diff(dates_T)) / _DAY)
    weekday_T = (dates_T.astype("datetime64[D]").astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    weekends = bool(np.mean(weekday_T >= 5) > WEEKEND_SHARE)
    if 27 <= spacing_days < 32:
        return PeriodsPerYear(12.0, "monthly bars")
    if 5 <= spacing_days < 9:
        return PeriodsPerYear(52.0, "weekly bars")
    if 0.75 <= spacing_days < 1.5:
        return PeriodsPerYear(365.0, "daily bars including weekends") if weekends else \
            PeriodsPerYear(252.0, "daily bars on weekdays only")
    if spacing_days < 0.75:
        return _intraday(dates_T, spacing_days, weekends)
    return PeriodsPerYear(round(DAYS_PER_YEAR / spacing_days, 2), f"one bar every {spacing_days:g} days")


def _intraday(dates_T: np.ndarray, spacing_days: float, weekends: bool) -> PeriodsPerYear:
    """Bars per whole calendar week in the data, times weeks per year; see the module docstring."""
    day_T = dates_T.astype("datetime64[D]").astype(np.int64)
    monday_T = day_T - (day_T + 3) % 7  # the Monday (days since 1970-01-01) of each bar's week
    weeks = int((monday_T[-1] - monday_T[0]) // 7) - 1  # the weeks after the first bar's and before the last's
    hours = spacing_days * 24
    shown = f"{hours:g}-hour" if hours >= 1 else f"{hours * 60:g}-minute"
    if weeks >= 1:
        per_week = np.count_nonzero((monday_T > monday_T[0]) & (monday_T < monday_T[-1])) / weeks
        return PeriodsPerYear(float(round(per_week * DAYS_PER_YEAR / 7, 1)),
                              f"{shown} bars, {per_week:g} a week over {weeks} whole week(s)")
    value = DAYS_PER_YEAR / spacing_days * (1.0 if weekends else 5 / 7)
    return PeriodsPerYear(float(round(value, 1)),
                          f"{shown} bars, {7 if weekends else 5} days a week (no whole week in the data)")
