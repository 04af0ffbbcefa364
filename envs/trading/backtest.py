"""Backtest: the last stage of the trading data flow.

    env.TradingEnv --walk(policy)--> Walk (dates, positions, equity, fills) --> plain metric functions
    --> Metrics --> stats.quant_stats (issue 14's statistics) --> report.write_report (report.json, equity.csv,
    trades.csv, equity.png)

This module imports only the trading env and its policy check; the CLI (cli.py) wires it to checkpoints.
A policy is any callable act(obs_BO float32 [B, obs_dim]) -> int array [B] of action indices (B = 1 here). The benchmark is buy-and-hold (always long 1.0) walked through the SAME env code, so it gets
the same fills and pays the same cost for its one entry fill.

Conventions (each metric is a plain function below, tested on hand-computed 5-bar cases):
- equity_N1 has N+1 marks: the close of the first decision bar (1.0) and the close after each of the N
  steps; returns are per step, r_i = E_i / E_{i-1} - 1.
- risk_free is annual; per period rf_p = (1 + rf)^(1/ppy) - 1, ppy = periods_per_year: given, or inferred from
  the walked bars' timestamps by periods.infer_periods_per_year (252 for daily bars on weekdays, 365 with
  weekends, 52 weekly, bars per year as observed for intraday).
- sharpe = mean(r - rf_p) / std(r - rf_p, ddof=1) * sqrt(ppy); sortino = mean(r - rf_p) / DD * sqrt(ppy)
  with DD = sqrt(mean over ALL N periods of min(r - rf_p, 0)^2) (target downside deviation, Sortino &
  Price 1994). volatility = std(r, ddof=1) * sqrt(ppy). Undefined values (zero std, no downside, no
  drawdown, no closed trade) are NaN in Python and null in report.json, never a made-up number.
- cagr = (E_N / E_0)^(1/years) - 1, years = calendar days between first and last mark / 365.25.
- max_drawdown = min_i(E_i / max(E_0..E_i) - 1) <= 0: the running peak starts at the initial equity.
- calmar = cagr / |max_drawdown| (NaN when there is no drawdown).
- A fill is a step whose position changes; trades = number of fills. A trade (round trip) is a maximal
  run of one non-zero position, opened by a fill into it and closed by the next fill; its return is
  E_exit / E_entry * (1 - c|p|)^2 - 1, with E_* the equity at the fill price before that fill's cost and
  c|p| the cost of entering and of leaving position p (exact for entries/exits/flips, an approximation for
  resizes such as 0.5 -> 1). win_rate = share of CLOSED trades with return > 0 (open at the end: not counted).
- turnover = sum |delta position| / years (equity traded per year); exposure = share of the N periods whose
  position at the period's close is non-zero.

Checked against empyrical (tests/test_empyrical_oracle.py, within 1e-6 on the same returns and ppy):
volatility = annual_volatility; sharpe = sharpe_ratio and sortino = sortino_ratio with empyrical's per-period
rate set to rf_p (empyrical takes the risk-free rate per period, we take it annual); max_drawdown equal.
cagr and calmar differ in one convention only: empyrical's annual_return counts a year as ppy periods, ours
as 365.25 calendar days (a walk's years do not depend on the ppy chosen), so they equal empyrical's
annual_return and calmar_ratio with annualization = N / calendar years.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from asyncdqn.envs.trading.env import TradingEnv
from asyncdqn.envs.trading.periods import infer_periods_per_year
from asyncdqn.envs.trading.policy import check_policy_metadata

Policy = Callable[[np.ndarray], np.ndarray]
DAYS_PER_YEAR = 365.25
REFERENCE_POLICIES = ("long", "flat", "short", "random")


class Fill(NamedTuple):
    date: str  # bar whose open (fill="open") or close (fill="close") is the fill price
    from_position: float
    to_position: float
    price: float
    cost: float  # in equity units (equity starts at 1.0)
    equity_before: float  # equity marked at the fill price, before this fill's cost


@dataclass(frozen=True)
class Walk:
    dates_N1: np.ndarray  # datetime64[s]; mark 0 = close of the first decision bar
    position_N1: np.ndarray  # position held at each mark (mark 0: 0.0, flat)
    equity_N1: np.ndarray  # equity at each mark, equity_N1[0] = 1.0
    fills: tuple[Fill, ...]


@dataclass(frozen=True)
class Metrics:
    total_return: float
    cagr: float
    volatility: float
    sharpe: float
    sortino: float
    max_drawdown: float
    calmar: float
    win_rate: float
    trades: int
    turnover: float
    exposure: float
    final_equity: float
    periods: int
    years: float


@dataclass(frozen=True)
class BacktestResult:
    policy: str
    strategy: Walk
    benchmark: Walk
    strategy_metrics: Metrics
    benchmark_metrics: Metrics
    periods_per_year: float
    periods_per_year_basis: str  # "given", or how it was inferred ("daily bars on weekdays only (trading days)")
    risk_free: float
    fill: str
    cost_bps: float  # commission per fill
    slippage_bps: float  # slippage per fill, on top of the commission
    cost_rate: float  # (cost_bps + slippage_bps) / 1e4, per unit of position traded
    positions: tuple[float, ...]
    start: str  # dates actually used: first and last mark
    end: str
    data_source: str
    gap_N: np.ndarray  # the walk's price ratios (TradingEnv.walk_moves), to replay other positions (stats.py)
    move_N: np.ndarray


# ---------------------------------------------------------------------------------- metric functions


def period_returns(equity_N1: np.ndarray) -> np.ndarray:
    return equity_N1[1:] / equity_N1[:-1] - 1.0


def periodic_rate(annual_rate: float, periods_per_year: float) -> float:
    return (1.0 + annual_rate) ** (1.0 / periods_per_year) - 1.0


def total_return(equity_N1: np.ndarray) -> float:
    return float(equity_N1[-1] / equity_N1[0] - 1.0)


def years_between(first: np.datetime64, last: np.datetime64) -> float:
    return float((last - first) / np.timedelta64(1, "D")) / DAYS_PER_YEAR


def cagr(equity_N1: np.ndarray, years: float) -> float:
    if years <= 0:
        return math.nan
    growth = equity_N1[-1] / equity_N1[0]
    return -1.0 if growth <= 0 else float(growth ** (1.0 / years) - 1.0)


def volatility(returns_N: np.ndarray, periods_per_year: float) -> float:
    if len(returns_N) < 2:
        return math.nan
    return float(np.std(returns_N, ddof=1) * math.sqrt(periods_per_year))


def sharpe_ratio(returns_N: np.ndarray, periods_per_year: float, risk_free: float = 0.0) -> float:
    excess = returns_N - periodic_rate(risk_free, periods_per_year)
    if len(excess) < 2:
        return math.nan
    std = np.std(excess, ddof=1)
    return math.nan if std == 0 else float(excess.mean() / std * math.sqrt(periods_per_year))


def sortino_ratio(returns_N: np.ndarray, periods_per_year: float, risk_free: float = 0.0) -> float:
    excess = returns_N - periodic_rate(risk_free, periods_per_year)
    if len(excess) == 0:
        return math.nan
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    return math.nan if downside == 0 else float(excess.mean() / downside * math.sqrt(periods_per_year))


def drawdown(equity_N1: np.ndarray) -> np.ndarray:
    """E_i / max(E_0..E_i) - 1 at every mark (<= 0); the peak starts at the initial equity."""
    return equity_N1 / np.maximum.accumulate(equity_N1) - 1.0


def max_drawdown(equity_N1: np.ndarray) -> float:
    return float(drawdown(equity_N1).min())


def calmar_ratio(cagr_value: float, max_drawdown_value: float) -> float:
    return math.nan if max_drawdown_value == 0 or math.isnan(cagr_value) else cagr_value / abs(max_drawdown_value)


def trade_returns(fills: Sequence[Fill], cost_rate: float) -> np.ndarray:
    """Net return of each closed trade (see the module docstring for the definition)."""
    out = []
    for entry, exit_ in zip(fills[:-1], fills[1:]):
        held = entry.to_position
        if held != 0.0:
            out.append(exit_.equity_before / entry.equity_before * (1.0 - cost_rate * abs(held)) ** 2 - 1.0)
    return np.asarray(out, dtype=np.float64)


def win_rate(trade_returns_K: np.ndarray) -> float:
    return math.nan if len(trade_returns_K) == 0 else float(np.mean(trade_returns_K > 0))


def turnover(fills: Sequence[Fill], years: float) -> float:
    traded = sum(abs(f.to_position - f.from_position) for f in fills)
    return math.nan if years <= 0 else traded / years


def exposure(position_N1: np.ndarray) -> float:
    held_N = position_N1[1:]
    return math.nan if len(held_N) == 0 else float(np.mean(held_N != 0.0))


def compute_metrics(walk: Walk, *, cost_rate: float, periods_per_year: float = 252.0,
                    risk_free: float = 0.0) -> Metrics:
    returns_N = period_returns(walk.equity_N1)
    years = years_between(walk.dates_N1[0], walk.dates_N1[-1])
    growth = cagr(walk.equity_N1, years)
    mdd = max_drawdown(walk.equity_N1)
    return Metrics(
        total_return=total_return(walk.equity_N1), cagr=growth,
        volatility=volatility(returns_N, periods_per_year),
        sharpe=sharpe_ratio(returns_N, periods_per_year, risk_free),
        sortino=sortino_ratio(returns_N, periods_per_year, risk_free),
        max_drawdown=mdd, calmar=calmar_ratio(growth, mdd),
        win_rate=win_rate(trade_returns(walk.fills, cost_rate)), trades=len(walk.fills),
        turnover=turnover(walk.fills, years), exposure=exposure(walk.position_N1),
        final_equity=float(walk.equity_N1[-1]), periods=len(returns_N), years=years)


# ------------------------------------------------------------------------------------ running


def reference_policy(name: str, positions: Sequence[float], seed: int = 0) -> Policy:
    """An act callable: long (1.0, else the largest long), flat, short (-1.0, else the largest short), random."""
    positions = tuple(float(p) for p in positions)
    if name == "random":
        rng = np.random.default_rng(seed)
        return lambda obs_BO: rng.integers(0, len(positions), size=len(obs_BO))
    if name == "long":
        candidates = [p for p in positions if p > 0]
        target = 1.0 if 1.0 in positions else max(candidates, default=None)
    elif name == "short":
        candidates = [p for p in positions if p < 0]
        target = -1.0 if -1.0 in positions else min(candidates, default=None)
    elif name == "flat":
        target = 0.0 if 0.0 in positions else None
    else:
        raise ValueError(f"unknown reference policy {name!r}; choose from {', '.join(REFERENCE_POLICIES)}")
    if target is None:
        raise ValueError(f"reference policy {name!r} needs a {name} position, but positions are {positions}")
    index = positions.index(target)
    return lambda obs_BO: np.full(len(obs_BO), index, dtype=np.int64)


def walk(env: TradingEnv, act: Policy) -> Walk:
    """Run one episode of `env` with `act`, recording every mark and fill."""
    obs, info = env.reset(seed=0)
    dates, held, equity, fills = [info["date"]], [0.0], [1.0], []
    while True:
        actions = np.asarray(act(obs[None, :]))
        if actions.shape != (1,) or actions.dtype.kind not in "iu":
            raise ValueError(f"policy must return an integer array of shape (1,), got {actions.dtype} {actions.shape}")
        obs, _, terminated, truncated, info = env.step(int(actions[0]))
        dates.append(info["date"])
        held.append(info["position"])
        equity.append(info["equity"])
        if info["position"] != info["previous_position"]:
            fills.append(Fill(info["fill_date"], info["previous_position"], info["position"], info["fill_price"],
                              info["cost"], info["fill_equity"]))
        if terminated or truncated:
            break
    return Walk(np.array(dates, dtype="datetime64[s]"), np.array(held), np.array(equity), tuple(fills))


def next_position(env: TradingEnv, act: Policy) -> tuple[str, float, float]:
    """Walk `env`'s whole range with `act` and ask it once more at the last bar's close: (date of the last bar,
    position held into it, position `act` takes for the bar after it). The last observation is built from bars
    up to that close only (features are causal), so this is what the policy would do with the next bar unknown.
    ValueError when the walk ends before the last bar (ruined: equity hit the floor)."""
    obs, info = env.reset(seed=0)
    while True:
        obs, _, terminated, truncated, info = env.step(int(np.asarray(act(obs[None, :]))[0]))
        if terminated or truncated:
            break
    if info["ruined"]:
        raise ValueError(f"the policy was ruined on {info['date']} walking the data (equity at the floor)")
    action = int(np.asarray(act(obs[None, :]))[0])
    return info["date"], float(info["position"]), env.target_position(action)  # min_hold may keep the position


def run_backtest(env_kwargs: Mapping[str, Any], act: Policy, *, policy_name: str,
                 periods_per_year: float | None = None, risk_free: float = 0.0,
                 policy_metadata: Mapping[str, Any] | None = None) -> BacktestResult:
    """Walk the whole [start, end] range with `act` and with buy-and-hold under the same fills and costs.

    env_kwargs are TradingEnv kwargs (episode_length is forced to None). periods_per_year None: inferred from
    the walked bars' timestamps (periods.py). With policy_metadata (from a
    checkpoint) the env is first checked to produce the observations the policy was trained on.
    """
    kwargs = {**env_kwargs, "episode_length": None}
    env = TradingEnv(**kwargs)
    if policy_metadata is not None:
        check_policy_metadata(policy_metadata, env)
    strategy = walk(env, act)
    bench_env = TradingEnv(**{**kwargs, "positions": (0.0, 1.0), "norm_stats": env.norm})
    benchmark = walk(bench_env, reference_policy("long", (0.0, 1.0)))
    if len(strategy.dates_N1) < len(benchmark.dates_N1):  # ruined: flat at the floor equity from then on
        pad = len(benchmark.dates_N1) - len(strategy.dates_N1)
        strategy = Walk(benchmark.dates_N1, np.concatenate([strategy.position_N1, np.zeros(pad)]),
                        np.concatenate([strategy.equity_N1, np.full(pad, strategy.equity_N1[-1])]), strategy.fills)
    cost_rate = env.cost_rate
    gap_N, move_N = env.walk_moves()
    if periods_per_year is None:
        periods_per_year, basis = infer_periods_per_year(benchmark.dates_N1)
    else:
        basis = "given"
    return BacktestResult(
        policy=policy_name, strategy=strategy, benchmark=benchmark,
        strategy_metrics=compute_metrics(strategy, cost_rate=cost_rate, periods_per_year=periods_per_year,
                                         risk_free=risk_free),
        benchmark_metrics=compute_metrics(benchmark, cost_rate=cost_rate, periods_per_year=periods_per_year,
                                          risk_free=risk_free),
        periods_per_year=float(periods_per_year), periods_per_year_basis=basis, risk_free=float(risk_free),
        fill=env.fill, cost_bps=env.cost_bps, slippage_bps=env.slippage_bps, cost_rate=cost_rate,
        positions=env.positions, start=env.first_date, end=env.last_date, data_source=env.data_source,
        gap_N=gap_N, move_N=move_N)
