"""Issue 14's statistics a quant expects (asyncdqn.envs.trading.stats) and the slippage setting: hand-computed
cases, the vectorised replay against the env's own walk, and the random-policy comparison."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest_trading import GOOGL_CSV, make_ohlcv
from scipy import stats as scipy_stats

from asyncdqn.envs.trading import TradingConfig, TradingEnv, env_kwargs_from_metadata, scenario_kwargs
from asyncdqn.envs.trading import backtest as bt
from asyncdqn.envs.trading import stats as st
from asyncdqn.cli import main
from asyncdqn.errors import UserError

# ------------------------------------------------------------------------------------------ slippage


def _walk_equity(env: TradingEnv, seed: int = 3) -> np.ndarray:
    return bt.walk(env, bt.reference_policy("random", env.positions, seed=seed)).equity_N1


def test_slippage_is_paid_per_fill_on_top_of_the_commission():
    frame = make_ohlcv(200, seed=11)
    both = TradingEnv(frame, window=4, cost_bps=10.0, slippage_bps=5.0)
    assert both.cost_rate == pytest.approx(15e-4, rel=1e-15)
    np.testing.assert_array_equal(_walk_equity(both), _walk_equity(TradingEnv(frame, window=4, cost_bps=15.0)))
    commission_only = _walk_equity(TradingEnv(frame, window=4, cost_bps=10.0))
    assert _walk_equity(both)[-1] < commission_only[-1]
    # one fill by hand: flat -> long at the next open, paying (10 + 5) bps of the fill equity
    env = TradingEnv(frame, window=4, cost_bps=10.0, slippage_bps=5.0, positions=(0.0, 1.0))
    env.reset()
    info = env.step(1)[-1]
    assert info["cost"] == pytest.approx(15e-4 * info["fill_equity"], rel=1e-12)


def test_slippage_is_validated_and_saved_with_the_policy():
    frame = make_ohlcv(120, seed=1)
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="slippage_bps must be a finite number >= 0"):
            TradingEnv(frame, slippage_bps=bad)
    with pytest.raises(ValueError, match="cost_bps \\+ slippage_bps"):
        TradingEnv(frame, cost_bps=3000.0, slippage_bps=2000.0)  # a -1 -> 1 flip would cost 100%
    for bad in (-0.5, math.nan):
        with pytest.raises(UserError, match="env.kwargs.slippage_bps must be a finite number >= 0"):
            TradingConfig(slippage_bps=bad)
    assert scenario_kwargs(TradingConfig(slippage_bps=2.5, validation_bars=0), evaluation=True)["slippage_bps"] == 2.5
    metadata = TradingEnv(frame, window=8, slippage_bps=4.0).policy_metadata()
    assert metadata["slippage_bps"] == 4.0
    assert env_kwargs_from_metadata(metadata, frame)["slippage_bps"] == 4.0
    assert env_kwargs_from_metadata(metadata, frame, slippage_bps=1.0)["slippage_bps"] == 1.0
    older = {k: v for k, v in metadata.items() if k != "slippage_bps"}  # saved before slippage was a setting
    assert env_kwargs_from_metadata(older, frame)["slippage_bps"] == 0.0


# ---------------------------------------------------------------------------- replaying positions


def test_replay_equity_by_hand_and_ruin():
    position_1N1 = np.array([[0.0, 1.0, -1.0]])
    gap_N, move_N = np.array([0.01, 0.02]), np.array([0.03, -0.01])
    equity_1N1, fill_1N = st.replay_equity(position_1N1, gap_N, move_N, 0.001)
    first = 1.0 * (1 - 0.001 * 1) * 1.03  # flat overnight, pay 10 bps on 1, long through +3%
    second = first * 1.02 * (1 - 0.001 * 2) * (1 + 0.01)  # long overnight +2%, flip (2 units), short through -1%
    np.testing.assert_allclose(equity_1N1[0], [1.0, first, second], rtol=1e-14)
    np.testing.assert_allclose(fill_1N[0], [1.0, first * 1.02], rtol=1e-14)
    # a short through a +150% move is ruined: RUIN_FLOOR of the equity, then flat whatever the positions
    ruined, _ = st.replay_equity(np.array([[0.0, -1.0, -1.0, 1.0]]), np.zeros(3), np.array([1.5, 0.1, 0.2]), 0.0)
    np.testing.assert_allclose(ruined[0], [1.0, 1e-8, 1e-8, 1e-8], rtol=1e-14)


@pytest.mark.parametrize("fill", ["open", "close"])
def test_replay_equity_equals_the_envs_own_walk(fill):
    env = TradingEnv(make_ohlcv(400, seed=21), window=4, cost_bps=10.0, slippage_bps=5.0, fill=fill)
    walk = bt.walk(env, bt.reference_policy("random", env.positions, seed=2))
    gap_N, move_N = env.walk_moves()
    assert len(gap_N) == len(move_N) == env.decision_steps and (fill == "open" or not gap_N.any())
    equity_1N1, fill_1N = st.replay_equity(walk.position_N1[None, :], gap_N, move_N, env.cost_rate)
    np.testing.assert_allclose(equity_1N1[0], walk.equity_N1, rtol=1e-12)
    steps = st.change_steps(walk.position_N1)
    np.testing.assert_allclose(fill_1N[0, steps], [f.equity_before for f in walk.fills], rtol=1e-12)


def test_gross_walk_is_the_same_positions_walked_at_zero_cost():
    frame = make_ohlcv(300, seed=8)
    net = bt.walk(TradingEnv(frame, window=4, cost_bps=20.0, slippage_bps=5.0), bt.reference_policy(
        "random", (-1.0, 0.0, 1.0), seed=5))
    free = bt.walk(TradingEnv(frame, window=4, cost_bps=0.0), bt.reference_policy("random", (-1.0, 0.0, 1.0), seed=5))
    gap_N, move_N = TradingEnv(frame, window=4).walk_moves()
    gross = st.gross_walk(net, gap_N, move_N)
    np.testing.assert_array_equal(gross.position_N1, free.position_N1)
    np.testing.assert_allclose(gross.equity_N1, free.equity_N1, rtol=1e-12)
    assert gross.equity_N1[-1] > net.equity_N1[-1] and len(gross.fills) == len(net.fills)
    for mine, theirs in zip(gross.fills, free.fills):
        assert mine.cost == 0.0 and mine.date == theirs.date
        assert mine.equity_before == pytest.approx(theirs.equity_before, rel=1e-12)


# ------------------------------------------------------------------------------------ plain statistics


def test_information_ratio_by_hand():
    r, b = np.array([0.01, 0.02, -0.01]), np.array([0.0, 0.01, 0.0])  # active: +1%, +1%, -1%
    mean = 0.01 / 3
    tracking = math.sqrt(((0.02 / 3) ** 2 * 2 + (0.04 / 3) ** 2) / 2)  # ddof=1
    assert st.information_ratio(r, b, 252) == pytest.approx(mean / tracking * math.sqrt(252), rel=1e-12)
    assert st.information_ratio(r, b, 252) == pytest.approx(4.5826, abs=1e-4)
    assert math.isnan(st.information_ratio(r, r, 252))  # no tracking error: undefined, not infinite


def test_skewness_and_kurtosis_by_hand_and_against_scipy():
    x = np.array([0.0, 0.0, 0.0, 1.0])  # central moments m2 = 3/16, m3 = 3/32, m4 = 21/256
    assert st.skewness(x) == pytest.approx(2 / math.sqrt(3), rel=1e-12)
    assert st.kurtosis(x) == pytest.approx(7 / 3, rel=1e-12)
    assert math.isnan(st.skewness(np.ones(5))) and math.isnan(st.kurtosis(np.ones(5)))
    y = np.random.default_rng(0).standard_t(5, 500)
    assert st.skewness(y) == pytest.approx(scipy_stats.skew(y), rel=1e-10)
    assert st.kurtosis(y) == pytest.approx(scipy_stats.kurtosis(y, fisher=False), rel=1e-10)


def test_probabilistic_sharpe_by_hand():
    # SR 0.1 per period over 101 normal returns: z = 0.1 * sqrt(100) / sqrt(1 + 0.5 * 0.01)
    assert st.probabilistic_sharpe(0.1, 101, 0.0, 3.0) == pytest.approx(
        scipy_stats.norm.cdf(1.0 / math.sqrt(1.005)), rel=1e-12)
    assert st.probabilistic_sharpe(0.1, 101, 0.0, 3.0) == pytest.approx(0.84074, abs=1e-5)
    # negative skew and fat tails make the same estimate less convincing; a benchmark above it gives < 1/2
    spread = 1 + 1.0 * 0.1 + (9.0 - 1) / 4 * 0.01
    assert st.probabilistic_sharpe(0.1, 101, -1.0, 9.0) == pytest.approx(
        scipy_stats.norm.cdf(1.0 / math.sqrt(spread)), rel=1e-12)
    assert st.probabilistic_sharpe(0.1, 101, 0.0, 3.0, benchmark=0.15) < 0.5
    assert st.probabilistic_sharpe(0.0, 50, 0.0, 3.0) == 0.5
    assert math.isnan(st.probabilistic_sharpe(0.1, 1, 0.0, 3.0)) and math.isnan(st.probabilistic_sharpe(
        math.nan, 100, 0.0, 3.0))


def test_expected_max_sharpe_and_deflated_sharpe():
    assert st.expected_max_sharpe(1, 0.04) == 0.0
    gamma = 0.5772156649015329
    z10 = (1 - gamma) * scipy_stats.norm.ppf(0.9) + gamma * scipy_stats.norm.ppf(1 - 1 / (10 * math.e))
    assert st.expected_max_sharpe(10, 0.04) == pytest.approx(0.2 * z10, rel=1e-12)
    assert z10 == pytest.approx(0.42278 * 1.28155 + 0.57722 * 1.78928, abs=1e-4)  # = 1.5746
    # the approximation against the exact expected maximum of N standard normals (tables: 1.5388, 2.5076, 3.2414)
    for trials, exact in ((10, 1.53875), (100, 2.50759), (1000, 3.24144)):
        assert abs(st.expected_max_sharpe(trials, 1.0) - exact) < 0.04
    with pytest.raises(ValueError, match="n_trials must be >= 1"):
        st.expected_max_sharpe(0, 1.0)
    # one trial: DSR is PSR against 0; ten trials: against sqrt(1 / (n - 1)) * z10
    assert st.deflated_sharpe(0.1, 101, 0.0, 3.0, 1) == (st.probabilistic_sharpe(0.1, 101, 0.0, 3.0), 0.0)
    dsr, benchmark = st.deflated_sharpe(0.1, 101, 0.0, 3.0, 10)
    assert benchmark == pytest.approx(math.sqrt(1 / 100) * z10, rel=1e-12)
    assert dsr == pytest.approx(st.probabilistic_sharpe(0.1, 101, 0.0, 3.0, benchmark), rel=1e-12) and dsr < 0.5


def test_turnover_and_holding_period_by_hand():
    position_N1 = np.array([0.0, 1.0, 1.0, -1.0, -1.0, -1.0, 0.0])  # changes at steps 0, 2 and 5
    assert st.turnover_per_bar(position_N1) == pytest.approx((1 + 0 + 2 + 0 + 0 + 1) / 6, rel=1e-15)
    assert st.holding_period(position_N1) == 2.5  # 2 and 3 steps between changes
    assert st.change_steps(position_N1).tolist() == [0, 2, 5]
    assert math.isnan(st.holding_period(np.array([0.0, 1.0, 1.0])))  # one change: no spacing


def test_sharpe_rows_equal_the_backtests_sharpe():
    returns_MN = np.random.default_rng(4).normal(0.0005, 0.01, (5, 60))
    equity_MN1 = np.concatenate([np.ones((5, 1)), np.cumprod(1 + returns_MN, axis=1)], axis=1)
    mine = st.sharpe_rows(equity_MN1, 252, 0.02)
    for row, value in zip(equity_MN1, mine):
        assert value == pytest.approx(bt.sharpe_ratio(bt.period_returns(row), 252, 0.02), rel=1e-10)
    assert np.isnan(st.sharpe_rows(np.ones((2, 5)), 252)).all()


# ------------------------------------------------------------------------ random policies, same turnover


@pytest.mark.parametrize("positions", [(-1.0, 0.0, 1.0), (0.0, 1.0), (-1.0, 1.0)])
def test_random_paths_change_exactly_as_often_as_asked(positions):
    paths_MN1 = st.random_position_paths(np.random.default_rng(7), 2000, 30, 9, positions)
    assert paths_MN1.shape == (2000, 31) and (paths_MN1[:, 0] == 0.0).all()
    changed_MN = paths_MN1[:, 1:] != paths_MN1[:, :-1]
    assert (changed_MN.sum(axis=1) == 9).all()
    assert set(np.unique(paths_MN1[:, 1:])) <= set(positions) | {0.0}
    # the change steps are uniform over the 30 steps: 2000 * 9 / 30 = 600 expected at each
    assert np.abs(changed_MN.sum(axis=0) - 600).max() < 5 * math.sqrt(600)
    # each change goes to one of the other positions with equal chance
    before, after = paths_MN1[:, :-1][changed_MN], paths_MN1[:, 1:][changed_MN]
    for start in set(positions) | {0.0}:
        targets = [p for p in positions if p != start]
        counts = np.array([np.count_nonzero((before == start) & (after == p)) for p in targets])
        if counts.sum() > 100:
            assert np.abs(counts / counts.sum() - 1 / len(targets)).max() < 0.05, (start, counts)
    again = st.random_position_paths(np.random.default_rng(7), 2000, 30, 9, positions)
    np.testing.assert_array_equal(paths_MN1, again)  # seeded: the same draws
    assert (st.random_position_paths(np.random.default_rng(0), 3, 5, 0, positions) == 0.0).all()
    with pytest.raises(ValueError, match="n_changes must be in 0..5"):
        st.random_position_paths(np.random.default_rng(0), 3, 5, 6, positions)


def test_compare_to_random_by_hand():
    out = st.compare_to_random(1.0, np.array([0.5, 1.0, 1.5, np.nan, 2.0]), changes=7)
    assert (out.trials, out.changes) == (4, 7)  # the undefined Sharpe is left out
    assert out.p_value == pytest.approx((1 + 3) / (4 + 1))  # 1.0, 1.5 and 2.0 are >= 1.0
    assert out.percentile == 25.0  # one of four below
    assert out.median == 1.25
    assert out.low == pytest.approx(0.5 + 0.075 * 0.5) and out.high == pytest.approx(2.0 - 0.075 * 0.5)
    assert math.isnan(st.compare_to_random(math.nan, np.array([0.5]), 0).p_value)
    assert st.compare_to_random(1.0, np.array([np.nan]), 0).trials == 0


def test_a_strategy_that_sees_the_future_beats_every_random_path_and_a_random_one_does_not():
    env = TradingEnv(make_ohlcv(300, seed=31), window=4, cost_bps=10.0, slippage_bps=5.0)
    gap_N, move_N = env.walk_moves()
    oracle_N1 = np.concatenate([[0.0], np.where(move_N > 0, 1.0, -1.0)])  # long before every up day
    equity_1N1, _ = st.replay_equity(oracle_N1[None, :], gap_N, move_N, env.cost_rate)
    kwargs = {"positions": env.positions, "cost_rate": env.cost_rate, "periods_per_year": 252.0, "risk_free": 0.0}
    random_M = st.random_sharpes(np.random.default_rng(0), 500, oracle_N1, gap_N, move_N, **kwargs)
    assert len(random_M) == 500
    oracle = st.compare_to_random(float(st.sharpe_rows(equity_1N1, 252.0)[0]), random_M,
                                  len(st.change_steps(oracle_N1)))
    assert oracle.p_value == 1 / 501 and oracle.percentile == 100.0
    # a random policy's p-value is uniform: over 40 walks, the mean is about 1/2 (sd of the mean ~0.05)
    p_values = []
    for seed in range(40):
        walk = bt.walk(env, bt.reference_policy("random", env.positions, seed=seed))
        sharpe = bt.sharpe_ratio(bt.period_returns(walk.equity_N1), 252.0)
        random_M = st.random_sharpes(np.random.default_rng(seed), 200, walk.position_N1, gap_N, move_N, **kwargs)
        p_values.append(st.compare_to_random(sharpe, random_M, 0).p_value)
    assert abs(np.mean(p_values) - 0.5) < 0.15 and min(p_values) > 1 / 201


# ----------------------------------------------------------------------------------------- together


def test_quant_stats_of_a_backtest():
    kwargs = {"data": make_ohlcv(400, seed=41), "window": 4, "cost_bps": 10.0, "slippage_bps": 5.0}
    result = bt.run_backtest(kwargs, bt.reference_policy("random", (-1.0, 0.0, 1.0), seed=1), policy_name="random")
    q = st.quant_stats(result, n_trials=5, random_trials=300, seed=1)
    paid = sum(f.cost for f in result.strategy.fills)
    assert q.commission_paid == pytest.approx(paid * 10 / 15) and q.slippage_paid == pytest.approx(paid * 5 / 15)
    assert q.strategy_gross.final_equity > result.strategy_metrics.final_equity
    assert q.strategy_gross.trades == result.strategy_metrics.trades
    # buy-and-hold pays one entry fill: its gross equity is the net one divided by (1 - 15 bps)
    assert q.benchmark_gross.final_equity == pytest.approx(result.benchmark_metrics.final_equity / (1 - 15e-4))
    returns_N = bt.period_returns(result.strategy.equity_N1)
    assert q.information_ratio == pytest.approx(st.information_ratio(
        returns_N, bt.period_returns(result.benchmark.equity_N1), 252.0), rel=1e-12)
    n, sharpe_pp = len(returns_N), result.strategy_metrics.sharpe / math.sqrt(252.0)
    assert q.psr == pytest.approx(st.probabilistic_sharpe(sharpe_pp, n, st.skewness(returns_N),
                                                          st.kurtosis(returns_N)), rel=1e-12)
    assert q.dsr_benchmark_sharpe == pytest.approx(st.expected_max_sharpe(5, 1 / (n - 1)) * math.sqrt(252.0))
    assert q.dsr < q.psr and q.n_trials == 5
    assert q.turnover_annualised == pytest.approx(q.turnover_per_bar * 252.0)
    assert (q.random_trials, q.random.trials) == (300, 300)
    assert q.random.changes == len(result.strategy.fills) and q.random.low < q.random.median < q.random.high
    again = st.quant_stats(result, n_trials=5, random_trials=300, seed=1)
    assert (again.random, again.psr, again.dsr) == (q.random, q.psr, q.dsr)  # seeded
    weekly = bt.run_backtest(kwargs, bt.reference_policy("random", (-1.0, 0.0, 1.0), seed=1), policy_name="random",
                             periods_per_year=52.0)
    w = st.quant_stats(weekly, random_trials=0)
    assert w.turnover_annualised == pytest.approx(q.turnover_per_bar * 52.0) and w.random.trials == 0
    assert w.dsr == w.psr and w.dsr_benchmark_sharpe == 0.0  # one trial: deflated by nothing


# ------------------------------------------------------------------------------- report and command


def test_backtest_command_reports_the_statistics(tmp_path, capsys):
    args = ["backtest", "--policy", "random", "--data", str(GOOGL_CSV), "--start", "2017-06-01", "--cost-bps", "10",
            "--slippage-bps", "5", "--n-trials", "7", "--random-trials", "200", "--seed", "3", "--out", str(tmp_path)]
    assert main(args) == 0
    text = capsys.readouterr().out
    for words in ("no costs", "b&h no costs", "slippage paid (5 bps/fill)", "PSR", "best of 7 trial(s)",
                  "p-value", "cost 10 bps + slippage 5 bps per fill"):
        assert words in text, words
    report = json.loads((tmp_path / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert (report["cost_bps"], report["slippage_bps"]) == (10.0, 5.0)
    # the numbers are quant_stats' for the same walk and seed
    result = bt.run_backtest({"data": str(GOOGL_CSV), "start": "2017-06-01", "cost_bps": 10.0, "slippage_bps": 5.0,
                              "positions": (-1.0, 0.0, 1.0)}, bt.reference_policy("random", (-1.0, 0.0, 1.0), seed=3),
                             policy_name="random")
    q = st.quant_stats(result, n_trials=7, random_trials=200, seed=3)
    stats = report["statistics"]
    assert stats["n_trials"] == 7 and stats["dsr"] == pytest.approx(q.dsr) and stats["psr"] == pytest.approx(q.psr)
    assert stats["information_ratio"] == pytest.approx(q.information_ratio)
    assert stats["commission_paid"] == pytest.approx(q.commission_paid) and stats["slippage_paid"] > 0
    assert stats["holding_period_bars"] == pytest.approx(q.holding_period_bars)
    assert stats["random_policies"] == {"trials_asked": 200, "seed": 3, **q.random._asdict(),
                                        "statistic": "sharpe after costs"}
    assert report["strategy_gross"]["sharpe"] == pytest.approx(q.strategy_gross.sharpe)
    assert report["strategy_gross"]["final_equity"] > report["strategy"]["final_equity"]
    assert report["benchmark_gross"]["win_rate"] is None  # no closed trade: null, not NaN
    final_row = next(line for line in text.splitlines() if "final_equity" in line)  # net, gross, b&h, b&h gross
    assert [cell.strip() for cell in final_row.split("│")[2:6]] == [
        f"{m.final_equity:.4f}" for m in (result.strategy_metrics, q.strategy_gross, result.benchmark_metrics,
                                          q.benchmark_gross)]


@pytest.mark.parametrize(("flags", "message"), [
    (["--slippage-bps", "-1"], "--slippage-bps must be a finite number >= 0, got -1"),
    (["--slippage-bps", "nan"], "--slippage-bps must be a finite number >= 0, got nan"),
    (["--n-trials", "0"], "--n-trials must be >= 1"),
    (["--random-trials", "-5"], "--random-trials must be in 0..100000 (0: no random comparison), got -5"),
    (["--cost-bps", "3000", "--slippage-bps", "2000"], "--cost-bps 3000 + --slippage-bps 2000 make the largest"),
    (["--slippage-bps", "5000"], "--cost-bps 10 + --slippage-bps 5000 make the largest"),
])
def test_bad_statistics_options_are_one_line(flags, message, tmp_path, capsys):
    assert main(["backtest", "--policy", "long", "--data", str(GOOGL_CSV), "--out", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "report.json").exists()
