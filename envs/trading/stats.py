"""Statistics a quant expects of a backtest (issue 14), as plain functions on arrays.

Place in the flow: after backtest.run_backtest, before the report:

    BacktestResult --quant_stats--> QuantStats --> report.write_report (report.json), report tables (terminal)

Legend: suffix _N = one value per step of the walk (N steps), _N1 = per mark (N + 1, mark 0 the start),
_M = per random path, _MN1 = paths x marks. Returns are per step, as in backtest.py; "per period" figures are
not annualised, annualised ones are times sqrt(ppy) (ratios) or ppy (turnover), ppy = periods per year.

- Gross (no costs): the walk's own positions replayed with cost 0 (`replay_equity`: env.step's arithmetic,
  vectorised). The policy's observation holds no equity, so its positions would be the same without costs.
- information_ratio = mean(r - b) / std(r - b, ddof=1) * sqrt(ppy), b = buy-and-hold's returns (net both).
- PSR (Bailey & López de Prado 2012, "The Sharpe ratio efficient frontier"): the probability that the true
  Sharpe ratio exceeds a benchmark SR*, given the per-period estimate SR (the report's Sharpe / sqrt(ppy), on
  excess returns), n returns, their skewness g3 and kurtosis g4 (normal: 0 and 3; population moments):
      PSR(SR*) = Phi((SR - SR*) * sqrt(n - 1) / sqrt(1 - g3 * SR + (g4 - 1) / 4 * SR^2)).
- DSR (Bailey & López de Prado 2014, "The deflated Sharpe ratio"): PSR with SR* = the expected maximum of
  n_trials independent Sharpe estimates of no skill,
      SR* = sqrt(V) * ((1 - gamma) * Phi^-1(1 - 1/N) + gamma * Phi^-1(1 - 1/(N e))), gamma = Euler-Mascheroni,
  with V = 1 / (n - 1), the variance of a zero-skill per-period estimate (PSR's denominator at SR = 0): only
  one strategy is backtested here, so the trials' own spread is not known. N = 1 gives SR* = 0, DSR = PSR.
- Random policies with the same turnover: paths with as many position changes as the strategy, at steps drawn
  uniformly without replacement, each change to a position drawn uniformly from the others, replayed through the
  same cost model. p-value = (1 + #(random Sharpe >= strategy's)) / (M + 1) (one-sided, Phipson & Smyth 2010);
  percentile = share of random Sharpes below the strategy's. Paths whose Sharpe is undefined are left out (M
  counts the rest). The number of changes matches, not the traded amount: a random flip -1 -> 1 trades 2.
- turnover_per_bar = mean |position change| per step; holding_period = mean steps between position changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

from asyncdqn.envs.trading.backtest import BacktestResult, Fill, Metrics, Walk, compute_metrics, period_returns, \
    periodic_rate
from asyncdqn.envs.trading.env import RUIN_FLOOR

EULER_GAMMA = 0.5772156649015329
PATH_CHUNK = 256  # random paths replayed at a time (memory: a few arrays of PATH_CHUNK x N floats)
_NORMAL = NormalDist()


# ------------------------------------------------------------------------------- replaying positions


def replay_equity(position_MN1: np.ndarray, gap_N: np.ndarray, move_N: np.ndarray,
                  cost_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """(equity_MN1, fill_equity_MN) of M position paths under TradingEnv.step's rules (env.py), cost_rate per
    unit traded. A ruined step (a growth factor <= 0, or equity below RUIN_FLOOR of the last) leaves RUIN_FLOOR
    of the equity, which then stays flat, as backtest.run_backtest pads a ruined walk."""
    old_MN, new_MN = position_MN1[:, :-1], position_MN1[:, 1:]
    grow_old_MN = 1.0 + old_MN * gap_N
    grow_new_MN = 1.0 + new_MN * move_N
    factor_MN = grow_old_MN * (1.0 - cost_rate * np.abs(new_MN - old_MN)) * grow_new_MN
    ruin_MN = (grow_old_MN <= 0.0) | (grow_new_MN <= 0.0) | (factor_MN <= RUIN_FLOOR)
    ruins_so_far_MN = np.cumsum(ruin_MN, axis=1)
    factor_MN = np.where(ruins_so_far_MN > ruin_MN, 1.0, np.where(ruin_MN, RUIN_FLOOR, factor_MN))
    equity_MN1 = np.concatenate([np.ones((len(position_MN1), 1)), np.cumprod(factor_MN, axis=1)], axis=1)
    return equity_MN1, equity_MN1[:, :-1] * grow_old_MN


def change_steps(position_N1: np.ndarray) -> np.ndarray:
    """Indices i of the steps (mark i -> i + 1) whose position differs from the one before."""
    return np.flatnonzero(position_N1[1:] != position_N1[:-1])


def gross_walk(walk: Walk, gap_N: np.ndarray, move_N: np.ndarray) -> Walk:
    """The same positions with no costs: equity replayed at cost 0, fills at cost 0 and gross equity."""
    equity_1N1, fill_equity_1N = replay_equity(walk.position_N1[None, :], gap_N, move_N, 0.0)
    steps = change_steps(walk.position_N1)[:len(walk.fills)]  # a ruined walk's flat padding is not a fill
    fills = tuple(Fill(f.date, f.from_position, f.to_position, f.price, 0.0, float(fill_equity_1N[0, i]))
                  for f, i in zip(walk.fills, steps))
    return Walk(walk.dates_N1, walk.position_N1, equity_1N1[0], fills)


# ---------------------------------------------------------------------------------- plain statistics


def information_ratio(returns_N: np.ndarray, benchmark_N: np.ndarray, periods_per_year: float) -> float:
    active_N = returns_N - benchmark_N
    if len(active_N) < 2:
        return math.nan
    tracking = np.std(active_N, ddof=1)
    return math.nan if tracking == 0 else float(active_N.mean() / tracking * math.sqrt(periods_per_year))


def skewness(x_N: np.ndarray) -> float:
    """Population skewness m3 / m2^1.5 (NaN for a constant series)."""
    centred = x_N - x_N.mean()
    m2 = np.mean(centred ** 2)
    return math.nan if m2 == 0 else float(np.mean(centred ** 3) / m2 ** 1.5)


def kurtosis(x_N: np.ndarray) -> float:
    """Population kurtosis m4 / m2^2, not excess (a normal series: 3)."""
    centred = x_N - x_N.mean()
    m2 = np.mean(centred ** 2)
    return math.nan if m2 == 0 else float(np.mean(centred ** 4) / m2 ** 2)


def sharpe_std_error(sharpe: float, n: int, skew: float, kurt: float) -> float:
    """Standard error of a per-period Sharpe estimate of n returns that are not normal (Mertens 2002; the
    spread PSR uses): sqrt((1 - skew SR + (kurt - 1) / 4 SR^2) / (n - 1)). NaN when undefined."""
    if n < 2 or not all(map(math.isfinite, (sharpe, skew, kurt))):
        return math.nan
    spread = 1.0 - skew * sharpe + (kurt - 1.0) / 4.0 * sharpe ** 2  # >= (1 - skew * sharpe / 2)^2 >= 0
    return math.sqrt(spread / (n - 1)) if spread > 0 else math.nan


def sharpe_interval(sharpe: float, n: int, skew: float, kurt: float, level: float = 0.95) -> tuple[float, float]:
    """Normal-approximation interval of a per-period Sharpe estimate (same units as `sharpe`)."""
    se = sharpe_std_error(sharpe, n, skew, kurt)
    z = _NORMAL.inv_cdf(0.5 + level / 2)
    return (sharpe - z * se, sharpe + z * se) if math.isfinite(se) else (math.nan, math.nan)


def probabilistic_sharpe(sharpe: float, n: int, skew: float, kurt: float, benchmark: float = 0.0) -> float:
    """PSR: P(true per-period Sharpe > benchmark) for a per-period estimate `sharpe` of n returns."""
    se = sharpe_std_error(sharpe, n, skew, kurt)
    if not (math.isfinite(se) and math.isfinite(benchmark)):
        return math.nan
    return _NORMAL.cdf((sharpe - benchmark) / se)


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """Expected maximum of n_trials independent zero-mean Sharpe estimates of the given variance."""
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if n_trials == 1:
        return 0.0
    z = (1.0 - EULER_GAMMA) * _NORMAL.inv_cdf(1.0 - 1.0 / n_trials) + \
        EULER_GAMMA * _NORMAL.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(variance) * z


def deflated_sharpe(sharpe: float, n: int, skew: float, kurt: float, n_trials: int) -> tuple[float, float]:
    """(DSR, its benchmark SR*), both per period: PSR against the best of n_trials zero-skill trials."""
    if n < 2:
        return math.nan, math.nan
    benchmark = expected_max_sharpe(n_trials, 1.0 / (n - 1))
    return probabilistic_sharpe(sharpe, n, skew, kurt, benchmark), benchmark


def turnover_per_bar(position_N1: np.ndarray) -> float:
    return math.nan if len(position_N1) < 2 else float(np.mean(np.abs(np.diff(position_N1))))


def holding_period(position_N1: np.ndarray) -> float:
    """Mean steps between consecutive position changes (NaN with fewer than two changes)."""
    steps = change_steps(position_N1)
    return math.nan if len(steps) < 2 else float(np.mean(np.diff(steps)))


def sharpe_rows(equity_MN1: np.ndarray, periods_per_year: float, risk_free: float = 0.0) -> np.ndarray:
    """backtest.sharpe_ratio of each row's returns (NaN where the excess returns are constant)."""
    excess_MN = equity_MN1[:, 1:] / equity_MN1[:, :-1] - 1.0 - periodic_rate(risk_free, periods_per_year)
    if excess_MN.shape[1] < 2:
        return np.full(len(excess_MN), np.nan)
    std_M = np.std(excess_MN, axis=1, ddof=1)
    safe_M = np.where(std_M > 0, std_M, 1.0)
    return np.where(std_M > 0, excess_MN.mean(axis=1) / safe_M * math.sqrt(periods_per_year), np.nan)


# ------------------------------------------------------------------------ random policies, same turnover


def random_position_paths(rng: np.random.Generator, n_paths: int, n_steps: int, n_changes: int,
                          positions: tuple[float, ...]) -> np.ndarray:
    """position_MN1 of n_paths random paths that start flat (mark 0) and change position exactly n_changes
    times over n_steps steps: the steps drawn without replacement, each new position uniform over the others."""
    if not 0 <= n_changes <= n_steps:
        raise ValueError(f"n_changes must be in 0..{n_steps}, got {n_changes}")
    choices = np.asarray(positions, dtype=np.float64)
    count = len(choices)
    order_MN = rng.random((n_paths, n_steps)).argsort(axis=1)
    change_MN = np.zeros((n_paths, n_steps), dtype=bool)
    np.put_along_axis(change_MN, order_MN[:, :n_changes], True, axis=1)
    # index of the position after each change: a step of 1..count-1 around the list never stays put
    if 0.0 in positions:
        first_M = (positions.index(0.0) + rng.integers(1, max(count, 2), n_paths)) % count
    else:  # flat is not a target: the first change may go to any position
        first_M = rng.integers(0, count, n_paths)
    later_MK = rng.integers(1, count, (n_paths, max(n_changes - 1, 0))) if count > 1 else \
        np.zeros((n_paths, max(n_changes - 1, 0)), dtype=np.int64)
    index_MK = (first_M[:, None] + np.concatenate([np.zeros((n_paths, 1), np.int64),
                                                   np.cumsum(later_MK, axis=1)], axis=1)) % count
    done_MN = np.cumsum(change_MN, axis=1)  # changes made up to and including each step
    held_MN = choices[np.take_along_axis(index_MK, np.maximum(done_MN - 1, 0), axis=1)]
    held_MN = np.where(done_MN > 0, held_MN, 0.0)
    return np.concatenate([np.zeros((n_paths, 1)), held_MN], axis=1)


class RandomComparison(NamedTuple):
    trials: int  # random paths with a defined Sharpe
    changes: int  # position changes of every path (the strategy's)
    percentile: float  # % of random Sharpes below the strategy's
    p_value: float  # (1 + #random >= strategy) / (trials + 1)
    median: float
    low: float  # 2.5% quantile of the random Sharpes
    high: float  # 97.5% quantile


def compare_to_random(strategy_sharpe: float, random_sharpe_M: np.ndarray, changes: int) -> RandomComparison:
    finite_M = random_sharpe_M[np.isfinite(random_sharpe_M)]
    if len(finite_M) == 0:
        return RandomComparison(0, changes, math.nan, math.nan, math.nan, math.nan, math.nan)
    low, median, high = (float(q) for q in np.quantile(finite_M, [0.025, 0.5, 0.975]))
    if not math.isfinite(strategy_sharpe):
        return RandomComparison(len(finite_M), changes, math.nan, math.nan, median, low, high)
    percentile = 100.0 * float(np.mean(finite_M < strategy_sharpe))
    p_value = (1 + int(np.count_nonzero(finite_M >= strategy_sharpe))) / (len(finite_M) + 1)
    return RandomComparison(len(finite_M), changes, percentile, p_value, median, low, high)


def random_sharpes(rng: np.random.Generator, n_paths: int, position_N1: np.ndarray, gap_N: np.ndarray,
                   move_N: np.ndarray, *, positions: tuple[float, ...], cost_rate: float, periods_per_year: float,
                   risk_free: float) -> np.ndarray:
    """Sharpe after costs of n_paths random paths with position_N1's number of changes, PATH_CHUNK at a time."""
    changes = len(change_steps(position_N1))
    out = []
    for start in range(0, n_paths, PATH_CHUNK):
        paths_MN1 = random_position_paths(rng, min(PATH_CHUNK, n_paths - start), len(gap_N), changes, positions)
        equity_MN1, _ = replay_equity(paths_MN1, gap_N, move_N, cost_rate)
        out.append(sharpe_rows(equity_MN1, periods_per_year, risk_free))
    return np.concatenate(out) if out else np.zeros(0)


# ----------------------------------------------------------------------------------------- together


@dataclass(frozen=True)
class QuantStats:
    strategy_gross: Metrics  # the same positions without costs
    benchmark_gross: Metrics
    commission_paid: float  # sum over the strategy's fills, in equity units (equity starts at 1.0)
    slippage_paid: float
    information_ratio: float  # annualised, against buy-and-hold
    skewness: float  # of the strategy's excess returns per step
    kurtosis: float  # not excess: a normal series has 3
    psr: float  # P(true Sharpe > 0)
    n_trials: int
    dsr_benchmark_sharpe: float  # expected best annualised Sharpe of n_trials zero-skill trials
    dsr: float  # P(true Sharpe > that benchmark)
    turnover_per_bar: float
    turnover_annualised: float
    holding_period_bars: float
    random_trials: int  # random paths asked for
    random_seed: int  # their seed
    random: RandomComparison


def quant_stats(result: BacktestResult, *, n_trials: int = 1, random_trials: int = 1000, seed: int = 0) -> QuantStats:
    """Every statistic above for one backtest. The random paths draw from a child of SeedSequence(seed), a stream
    apart from the one `backtest --policy random --seed` uses for its own actions."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    ppy, rf = result.periods_per_year, result.risk_free
    walk, metrics = result.strategy, result.strategy_metrics
    gross = {name: compute_metrics(gross_walk(w, result.gap_N, result.move_N), cost_rate=0.0, periods_per_year=ppy,
                                   risk_free=rf) for name, w in (("strategy", walk), ("benchmark", result.benchmark))}
    costs = sum(f.cost for f in walk.fills)
    total_bps = result.cost_bps + result.slippage_bps
    commission = costs * result.cost_bps / total_bps if total_bps > 0 else 0.0
    excess_N = period_returns(walk.equity_N1) - periodic_rate(rf, ppy)
    skew, kurt, n = skewness(excess_N), kurtosis(excess_N), len(excess_N)
    sharpe_pp = metrics.sharpe / math.sqrt(ppy)
    dsr, benchmark_pp = deflated_sharpe(sharpe_pp, n, skew, kurt, n_trials)
    random_M = random_sharpes(rng, random_trials, walk.position_N1, result.gap_N, result.move_N,
                              positions=result.positions, cost_rate=result.cost_rate, periods_per_year=ppy,
                              risk_free=rf)
    per_bar = turnover_per_bar(walk.position_N1)
    return QuantStats(
        strategy_gross=gross["strategy"], benchmark_gross=gross["benchmark"], commission_paid=commission,
        slippage_paid=costs - commission,
        information_ratio=information_ratio(period_returns(walk.equity_N1),
                                            period_returns(result.benchmark.equity_N1), ppy),
        skewness=skew, kurtosis=kurt, psr=probabilistic_sharpe(sharpe_pp, n, skew, kurt), n_trials=n_trials,
        dsr_benchmark_sharpe=benchmark_pp * math.sqrt(ppy), dsr=dsr, turnover_per_bar=per_bar,
        turnover_annualised=per_bar * ppy, holding_period_bars=holding_period(walk.position_N1),
        random_trials=random_trials, random_seed=seed,
        random=compare_to_random(metrics.sharpe, random_M, len(change_steps(walk.position_N1))))
