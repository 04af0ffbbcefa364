"""Backtest (asyncdqn.envs.trading.backtest and .report): metrics against hand arithmetic, Sharpe of random
policies, report files."""

from __future__ import annotations

import csv
import json
import math
import os
import stat

import numpy as np
import pytest
from conftest_trading import GOOGL_CSV, make_ohlcv
from rich.console import Console

from asyncdqn.envs.trading import PolicyMismatchError, TradingEnv
from asyncdqn.envs.trading import backtest as bt
from asyncdqn.envs.trading import report as rp

# A 5-mark equity series: returns +10%, -10%, +10%, 0%.
EQUITY = np.array([1.0, 1.1, 0.99, 1.089, 1.089])
DATES = np.array(["2020-01-01", "2020-07-01", "2021-01-01", "2021-07-01", "2021-12-31"], dtype="datetime64[s]")
MEAN = (0.1 - 0.1 + 0.1 + 0.0) / 4  # 0.025
STD = math.sqrt(((0.1 - MEAN) ** 2 + (-0.1 - MEAN) ** 2 + (0.1 - MEAN) ** 2 + (0.0 - MEAN) ** 2) / 3)  # ddof=1


def test_returns_total_return_volatility_by_hand():
    np.testing.assert_allclose(bt.period_returns(EQUITY), [0.1, -0.1, 0.1, 0.0], atol=1e-15)
    assert bt.total_return(EQUITY) == pytest.approx(0.089, abs=1e-15)
    assert bt.volatility(bt.period_returns(EQUITY), 252) == pytest.approx(STD * math.sqrt(252), rel=1e-12)


def test_sharpe_by_hand_with_and_without_risk_free():
    returns = bt.period_returns(EQUITY)
    assert bt.sharpe_ratio(returns, 252) == pytest.approx(MEAN / STD * math.sqrt(252), rel=1e-12)
    assert bt.sharpe_ratio(returns, 252) == pytest.approx(4.1450, abs=1e-4)
    # annualisation uses sqrt(periods per year): monthly bars give a smaller figure for the same returns
    assert bt.sharpe_ratio(returns, 12) == pytest.approx(MEAN / STD * math.sqrt(12), rel=1e-12)
    rf_daily = 1.05 ** (1 / 252) - 1  # 5% a year, compounded per period
    assert bt.periodic_rate(0.05, 252) == pytest.approx(rf_daily, rel=1e-12)
    assert bt.sharpe_ratio(returns, 252, 0.05) == pytest.approx((MEAN - rf_daily) / STD * math.sqrt(252), rel=1e-12)
    assert math.isnan(bt.sharpe_ratio(np.zeros(5), 252))


def test_sortino_by_hand():
    returns = bt.period_returns(EQUITY)
    downside = math.sqrt((0.0 + 0.1 ** 2 + 0.0 + 0.0) / 4)  # over all 4 periods, target 0
    assert bt.sortino_ratio(returns, 252) == pytest.approx(MEAN / downside * math.sqrt(252), rel=1e-12)
    rf = 1.02 ** (1 / 252) - 1
    downside_rf = math.sqrt((0.0 + (-0.1 - rf) ** 2 + 0.0 + (0.0 - rf) ** 2) / 4)  # 0% return is below a 2% target
    assert bt.sortino_ratio(returns, 252, 0.02) == pytest.approx((MEAN - rf) / downside_rf * math.sqrt(252), rel=1e-12)
    assert math.isnan(bt.sortino_ratio(np.array([0.01, 0.02]), 252))


def test_max_drawdown_peak_starts_at_initial_equity():
    assert bt.max_drawdown(EQUITY) == pytest.approx(0.99 / 1.1 - 1, rel=1e-12)  # -10%
    # a loss right at the start: the peak is the initial 1.0, not the first mark after it
    assert bt.max_drawdown(np.array([1.0, 0.9, 0.95, 1.2, 1.1])) == pytest.approx(-0.1, rel=1e-12)
    assert bt.max_drawdown(np.array([1.0, 1.1, 1.2])) == 0.0


def test_cagr_and_calmar_by_hand():
    years = bt.years_between(DATES[0], DATES[-1])
    assert years == pytest.approx(730 / 365.25, rel=1e-12)  # 2020-01-01 .. 2021-12-31 is 730 days
    growth = 1.089 ** (365.25 / 730) - 1
    assert bt.cagr(EQUITY, years) == pytest.approx(growth, rel=1e-12)
    assert bt.calmar_ratio(growth, -0.1) == pytest.approx(growth / 0.1, rel=1e-12)
    assert math.isnan(bt.calmar_ratio(growth, 0.0))
    assert math.isnan(bt.cagr(EQUITY, 0.0))


def test_trades_win_rate_turnover_exposure_by_hand():
    c = 0.001
    fills = (bt.Fill("2020-02-03", 0.0, 1.0, 10.0, 0.001, 1.0),  # open long
             bt.Fill("2020-03-02", 1.0, -1.0, 11.0, 0.0022, 1.1),  # close long (+10% gross), open short
             bt.Fill("2020-04-01", -1.0, 0.0, 11.5, 0.001045, 1.045),  # close short (-5% gross)
             bt.Fill("2020-05-01", 0.0, 1.0, 11.0, 0.001, 1.0))  # open long, still open at the end
    returns = bt.trade_returns(fills, c)
    np.testing.assert_allclose(returns, [1.1 / 1.0 * 0.999 ** 2 - 1, 1.045 / 1.1 * 0.999 ** 2 - 1], rtol=1e-12)
    assert bt.win_rate(returns) == 0.5
    assert math.isnan(bt.win_rate(bt.trade_returns(fills[:1], c)))  # no closed trade
    assert bt.turnover(fills, years=2.0) == pytest.approx((1 + 2 + 1 + 1) / 2.0)
    assert bt.exposure(np.array([0.0, 1.0, 1.0, 0.0, -1.0])) == 0.75  # 3 of the 4 periods hold a position


def test_compute_metrics_on_a_walk():
    entry = bt.Fill("2020-01-02", 0.0, 1.0, 1.0, 0.0, 1.0)
    walk = bt.Walk(DATES, np.array([0.0, 1.0, 1.0, 1.0, 1.0]), EQUITY, (entry,))
    metrics = bt.compute_metrics(walk, cost_rate=0.0)
    assert metrics.trades == 1 and metrics.periods == 4 and metrics.exposure == 1.0
    assert metrics.sharpe == pytest.approx(MEAN / STD * math.sqrt(252), rel=1e-12)
    assert metrics.final_equity == 1.089 and math.isnan(metrics.win_rate)


def test_random_sign_policy_has_zero_mean_sharpe():
    """200 seeds: random +-1 positions, zero cost, zero-drift walk. Mean Sharpe ~ 0, spread ~ sqrt(ppy / N)."""
    sharpes = []
    for seed in range(200):
        env = TradingEnv(make_ohlcv(300, seed=1000 + seed), window=4, cost_bps=0.0, positions=(-1.0, 1.0))
        walk = bt.walk(env, bt.reference_policy("random", env.positions, seed=seed))
        sharpes.append(bt.compute_metrics(walk, cost_rate=0.0).sharpe)
    sharpes = np.array(sharpes)
    steps = env.decision_steps
    standard_error = sharpes.std(ddof=1) / math.sqrt(len(sharpes))
    assert abs(sharpes.mean()) < 4 * standard_error
    # the per-seed spread of an annualised Sharpe of N iid periods is about sqrt(252 / N)
    assert sharpes.std(ddof=1) == pytest.approx(math.sqrt(252 / steps), rel=0.25)


def test_reference_policies():
    obs = np.zeros((3, 10), dtype=np.float32)
    assert bt.reference_policy("long", (-1, 0, 1))(obs).tolist() == [2, 2, 2]
    assert bt.reference_policy("short", (-1, 0, 1))(obs).tolist() == [0, 0, 0]
    assert bt.reference_policy("flat", (-1, 0, 1))(obs).tolist() == [1, 1, 1]
    assert bt.reference_policy("long", (0, 0.5))(obs).tolist() == [1, 1, 1]
    first = bt.reference_policy("random", (-1, 0, 1), seed=4)(np.zeros((50, 2)))
    assert first.tolist() == bt.reference_policy("random", (-1, 0, 1), seed=4)(np.zeros((50, 2))).tolist()
    assert set(first.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="'short' needs a short position"):
        bt.reference_policy("short", (0, 1))
    with pytest.raises(ValueError, match="unknown reference policy 'best'"):
        bt.reference_policy("best", (0, 1))


def test_long_policy_equals_its_benchmark_and_flat_gives_nulls(tmp_path):
    kwargs = {"data": str(GOOGL_CSV), "start": "2017-01-01", "end": "2017-12-31", "window": 8, "cost_bps": 10.0}
    long = bt.run_backtest(kwargs, bt.reference_policy("long", (-1, 0, 1)), policy_name="long")
    np.testing.assert_array_equal(long.strategy.equity_N1, long.benchmark.equity_N1)
    assert long.strategy_metrics.trades == 1 and long.strategy_metrics.exposure == 1.0
    assert long.start == "2017-01-03" and long.end == "2017-12-29"
    flat = bt.run_backtest(kwargs, bt.reference_policy("flat", (-1, 0, 1)), policy_name="flat")
    assert (flat.strategy.equity_N1 == 1.0).all() and flat.strategy_metrics.trades == 0
    paths = rp.write_report(flat, tmp_path)
    report = json.loads(paths.report_json.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert report["strategy"]["sharpe"] is None and report["strategy"]["calmar"] is None
    assert report["benchmark"]["trades"] == 1


def test_report_files(tmp_path):
    kwargs = {"data": str(GOOGL_CSV), "start": "2016-01-01", "window": 8, "cost_bps": 10.0}
    result = bt.run_backtest(kwargs, bt.reference_policy("random", (-1, 0, 1), seed=1), policy_name="random")
    paths = rp.write_report(result, tmp_path / "out")
    report = json.loads(paths.report_json.read_text())
    assert set(report) >= {"strategy", "benchmark", "periods_per_year", "risk_free", "fill", "cost_bps", "start",
                           "end", "policy"}
    metric_names = {"total_return", "cagr", "volatility", "sharpe", "sortino", "max_drawdown", "calmar", "win_rate",
                    "trades", "turnover", "exposure"}
    assert metric_names <= set(report["strategy"]) and metric_names <= set(report["benchmark"])
    assert (report["start"], report["end"], report["fill"], report["policy"]) == ("2016-01-04", "2018-08-29", "open",
                                                                                  "random")
    with paths.equity_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == result.strategy_metrics.periods + 1 and list(rows[0]) == ["date", "position", "equity",
                                                                                   "benchmark_equity"]
    assert float(rows[-1]["equity"]) == result.strategy_metrics.final_equity
    with paths.trades_csv.open() as handle:
        trades = list(csv.DictReader(handle))
    assert len(trades) == report["strategy"]["trades"] and list(trades[0]) == ["date", "from_position",
                                                                               "to_position", "price", "cost"]
    assert paths.equity_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["equity.csv", "equity.png", "report.json",
                                                                     "trades.csv"]  # no temp files left
    console = Console(width=100, record=True)
    console.print(rp.metrics_table(result))
    text = console.export_text()
    assert "sharpe" in text and "buy & hold" in text and "random" in text


def test_policy_errors_and_metadata_mismatch():
    frame = make_ohlcv(120, seed=3)
    with pytest.raises(ValueError, match="integer array of shape"):
        bt.run_backtest({"data": frame, "window": 4}, lambda obs: np.zeros((1, 1), dtype=np.int64), policy_name="bad")
    metadata = TradingEnv(frame, window=8).policy_metadata()
    with pytest.raises(PolicyMismatchError, match="window is 4 here but 8"):
        bt.run_backtest({"data": frame, "window": 4}, bt.reference_policy("long", (-1, 0, 1)), policy_name="x",
                        policy_metadata=metadata)


def test_ruined_strategy_is_padded_flat_to_the_benchmark_dates():
    frame = make_ohlcv(60, seed=2)
    frame.iloc[50, :4] = [frame["close"].iloc[49] * 2.5] * 4
    frame.iloc[51:, :4] *= 2.5
    result = bt.run_backtest({"data": frame, "window": 4, "cost_bps": 0.0}, bt.reference_policy("short", (-1, 0, 1)),
                             policy_name="short")
    assert len(result.strategy.equity_N1) == len(result.benchmark.equity_N1)
    assert result.strategy.equity_N1[-1] == pytest.approx(1e-8 * result.strategy.equity_N1[-11], rel=1e-9)
    assert result.strategy_metrics.total_return == pytest.approx(-1.0, abs=1e-6)


def test_every_report_file_is_fsynced_before_its_rename_and_readable_by_others(tmp_path, monkeypatch):
    """The report goes through the engine's one atomic write (checkpoint.atomic_write_bytes: temp file,
    fsync, rename), so a crash leaves the old report or the new one, never a torn file."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    result = bt.run_backtest({"data": make_ohlcv(80, seed=4), "window": 4}, bt.reference_policy("long", (-1, 0, 1)),
                             policy_name="long")
    paths = rp.write_report(result, tmp_path / "out")
    for path in paths:
        assert any(name.startswith(f".{path.name}.") and name.endswith(".tmp") for name in synced), path.name
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # reports are meant to be shared (mkstemp makes 0600)
