"""The backtest's annualised metrics against empyrical (empyrical-reloaded, a dev dependency) as an oracle:
the same returns and periods per year give the same numbers within 1e-6 (relative). Where the conventions
differ, the test states the translation that backtest.py's docstring documents."""

from __future__ import annotations

import empyrical
import numpy as np
import pandas as pd
import pytest

import asyncdqn.envs.trading.backtest as bt


def walk_of(returns_N: np.ndarray, dates: pd.DatetimeIndex) -> bt.Walk:
    equity_N1 = np.concatenate([[1.0], np.cumprod(1.0 + returns_N)])
    return bt.Walk(dates.to_numpy().astype("datetime64[s]"), np.ones(len(equity_N1)), equity_N1, ())


def check(metrics: bt.Metrics, returns_N: np.ndarray, dates_N1: np.ndarray, ppy: float, risk_free: float) -> None:
    close = {"rel": 1e-6, "abs": 1e-12}
    rf_p = bt.periodic_rate(risk_free, ppy)  # empyrical takes the risk-free rate per period
    assert metrics.volatility == pytest.approx(empyrical.annual_volatility(returns_N, annualization=ppy), **close)
    assert metrics.sharpe == pytest.approx(empyrical.sharpe_ratio(returns_N, risk_free=rf_p, annualization=ppy),
                                           **close)
    assert metrics.sortino == pytest.approx(
        empyrical.sortino_ratio(returns_N, required_return=rf_p, annualization=ppy), **close)
    assert metrics.max_drawdown == pytest.approx(empyrical.max_drawdown(returns_N), **close)
    # empyrical counts a year as `annualization` periods; cagr counts calendar days / 365.25: the same formula
    # once empyrical is given this walk's periods per calendar year
    calendar_years = (dates_N1[-1] - dates_N1[0]) / np.timedelta64(1, "D") / 365.25
    per_calendar_year = len(returns_N) / calendar_years
    assert metrics.cagr == pytest.approx(empyrical.annual_return(returns_N, annualization=per_calendar_year), **close)
    assert metrics.calmar == pytest.approx(empyrical.calmar_ratio(returns_N, annualization=per_calendar_year),
                                           **close)


@pytest.mark.parametrize(("seed", "freq", "ppy", "risk_free"), [
    (0, "B", 252.0, 0.0), (1, "B", 252.0, 0.03), (2, "D", 365.0, 0.02), (3, "W-FRI", 52.0, 0.0),
    (4, "h", 8766.0, 0.05),
])
def test_annualised_metrics_equal_empyricals(seed, freq, ppy, risk_free):
    rng = np.random.default_rng(seed)
    returns_N = rng.normal(0.0004, 0.012, 400)
    dates = pd.date_range("2015-01-02", periods=len(returns_N) + 1, freq=freq)
    metrics = bt.compute_metrics(walk_of(returns_N, dates), cost_rate=0.0, periods_per_year=ppy, risk_free=risk_free)
    check(metrics, returns_N, dates.to_numpy(), ppy, risk_free)


def test_a_real_backtest_walk_agrees_with_empyrical():
    result = bt.run_backtest({"data": None, "start": "2017-01-01", "window": 8},
                             bt.reference_policy("random", (-1.0, 0.0, 1.0), seed=3), policy_name="random",
                             risk_free=0.02)
    assert result.periods_per_year == 252.0  # inferred: GOOGL's daily bars on weekdays
    for walk, metrics in ((result.strategy, result.strategy_metrics), (result.benchmark, result.benchmark_metrics)):
        check(metrics, bt.period_returns(walk.equity_N1), walk.dates_N1, 252.0, 0.02)
