"""The trading scenario's settings and its env factory: how the engine gets a TradingEnv.

Place in the flow: the engine builds every env through `env.factory(**env.kwargs)` (asyncdqn.envs.make);
the trading scenario names this module's `make` there, so the engine never knows about trading:

    [env]
    factory = "asyncdqn.envs.trading:make"
    kwargs = { data = "", train_end = "2016-12-30", window = 32, ... }   # the TradingConfig fields
    eval_kwargs = { evaluation = true }                                    # the evaluation copies

`make` reads its kwargs into a TradingConfig with the engine's field rules (asyncdqn.fields: a wrong type or
an unknown key is one line naming `env.kwargs.<key>`; a TOML date is accepted for train_end), then turns it
into TradingEnv kwargs with `scenario_kwargs`, which owns the train/test split and the purge gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asyncdqn.envs.trading.env import DEFAULT_DATA, TradingEnv, bar_index, date_text
from asyncdqn.envs.trading.market_data import DataError, read_ohlcv
from asyncdqn.fields import DateText, build, coerce, require

FACTORY = "asyncdqn.envs.trading:make"  # the `env.factory` of runs that `asyncdqn backtest RUN_DIR` can re-range


@dataclass(frozen=True)
class TradingConfig:
    data: str = ""
    """CSV of daily OHLCV bars; empty = the GOOGL.csv shipped with asyncdqn (package data `asyncdqn.data`)."""
    train_end: DateText = ""
    """Last date of the training range; evaluation starts after a purge gap of `window` bars (empty = all data)."""
    window: int = 32
    """Bars in the observation's feature window (also the purge gap)."""
    cost_bps: float = 10.0
    """Cost per fill, in basis points of the traded notional."""
    fill: str = "open"
    """'open': decide at the close of bar t, fill at the open of t+1; 'close': fill at the close of t."""
    long_only: bool = False
    """Positions {flat, long} instead of {short, flat, long}."""
    episode_length: int = 256
    """Decisions per training episode, started at random bars of the training range."""

    def __post_init__(self) -> None:
        require(self.window >= 2, "env.kwargs.window", "must be >= 2")
        require(self.cost_bps >= 0, "env.kwargs.cost_bps", "must be >= 0")
        require(self.fill in ("open", "close"), "env.kwargs.fill", "must be 'open' or 'close'")
        require(self.episode_length >= 2, "env.kwargs.episode_length", "must be >= 2")


def scenario_kwargs(trading: TradingConfig, *, evaluation: bool) -> dict[str, Any]:
    """TradingEnv kwargs for the scenario's settings (read by attribute).

    Training: bars up to train_end, random episodes of episode_length decisions. Evaluation: one walk that
    starts `window` bars after train_end (a purge gap: no evaluation observation window contains a
    training bar), with normalisation fitted on the training range. Without train_end both use all the
    data (evaluation is then in-sample).
    """
    data = trading.data or None
    train_end = trading.train_end or None
    common = {"data": data, "window": int(trading.window), "cost_bps": float(trading.cost_bps),
              "fill": str(trading.fill), "positions": (0.0, 1.0) if trading.long_only else (-1.0, 0.0, 1.0)}
    if not evaluation:
        return {**common, "end": train_end, "episode_length": int(trading.episode_length)}
    if train_end is None:
        return {**common, "episode_length": None}
    dates_T = read_ohlcv(DEFAULT_DATA if data is None else data).frame.index.to_numpy(dtype="datetime64[ns]")
    first_eval = bar_index(dates_T, train_end, is_end=True) + int(trading.window) + 1
    if first_eval >= len(dates_T) - 1:
        raise DataError(str(data or DEFAULT_DATA), f"no evaluation bars after train_end {train_end} and a purge gap "
                                                   f"of {trading.window} bars")
    return {**common, "start": date_text(dates_T[first_eval]), "episode_length": None, "norm_end": train_end}


def read_settings(settings: dict[str, Any]) -> tuple[TradingConfig, bool]:
    """`env.kwargs` (with `env.eval_kwargs` merged in) -> (TradingConfig, evaluation); UserError naming the key."""
    values = dict(settings)
    evaluation = coerce("env.kwargs.evaluation", values.pop("evaluation", False), bool)
    return build(TradingConfig, values, "env.kwargs."), evaluation


def make(**settings: Any) -> TradingEnv:
    """The trading scenario's env factory (`env.factory = "asyncdqn.envs.trading:make"`): the TradingConfig
    fields as kwargs, plus `evaluation = true` for the held-out walk after the purge gap."""
    trading, evaluation = read_settings(settings)
    return TradingEnv(**scenario_kwargs(trading, evaluation=evaluation))
