"""The trading scenario's settings and its env factory: how the engine gets a TradingEnv.

Place in the flow: the engine builds every env through `env.factory(**env.kwargs)` (asyncdqn.envs.make);
the trading scenario names this module's `make` there, so the engine never knows about trading:

    [env]
    factory = "asyncdqn.envs.trading:make"
    kwargs = { data = "", train_end = "2016-12-30", window = 32, ... }   # the TradingConfig fields
    eval_kwargs = { evaluation = true }                                    # the evaluation copies

`make` reads its kwargs into a TradingConfig with the engine's field rules (asyncdqn.fields: a wrong type or
an unknown key is one line naming `env.kwargs.<key>`; a TOML date is accepted for train_end), then turns it
into TradingEnv kwargs with `scenario_kwargs`, which owns the split and the purge gaps.

The split (bar indices; W = window, V = validation_bars, E = the last bar <= train_end; with validation_start
set, V counts the bars from it to E):

    train ....... bars up to E - V - W          random training episodes; normalisation is fitted here
    purge ....... W bars                        in no training episode; the validation walk's first window
    validation .. bars E - V + 1 .. E           the evaluation copies' walk: the engine's periodic and final
                                                evaluations, and with eval.keep_best the choice of the saved policy
    purge ....... W bars after E
    test ........ bar E + W + 1 .. the end      `heldout_kwargs`: only `asyncdqn backtest RUN_DIR` walks it

Selecting the kept policy on bars the backtest later reports would leak the test set into the result
(issue 14); here nothing the run does depends on a bar after train_end.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from asyncdqn.envs.trading.env import DEFAULT_DATA, FEATURE_WARMUP, TradingEnv, bar_index, date_text
from asyncdqn.envs.trading.market_data import DataError, read_ohlcv
from asyncdqn.envs.trading.multi import MultiAssetEnv, asset_paths
from asyncdqn.fields import DateText, build, coerce, require

FACTORY = "asyncdqn.envs.trading:make"  # the `env.factory` of runs that `asyncdqn backtest RUN_DIR` can re-range


@dataclass(frozen=True)
class TradingConfig:
    data: str = ""
    """CSV of daily OHLCV bars; empty = the GOOGL.csv shipped with asyncdqn (package data `asyncdqn.data`)."""
    assets: tuple = ()
    """CSVs or folders of CSVs to train one policy on, in place of `data`: each training episode draws an asset; each is split and normalised on its own bars."""
    train_end: DateText = ""
    """Last date of training + validation; the held-out (backtest) bars start `window` bars later (empty = all data)."""
    window: int = 32
    """Bars in the observation's feature window (also the purge gap)."""
    cost_bps: float = 10.0
    """Cost per fill, in basis points of the traded notional."""
    slippage_bps: float = 0.0
    """Slippage per fill on top of cost_bps, in basis points of the traded notional (fill price vs quote)."""
    trade_penalty: float = 0.0
    """Training reward minus this times |position change| (a price on trading beyond the fees); 0 = none."""
    min_hold: int = 1
    """Bars a newly entered position is held before another change is allowed (1 = none); saved with the policy."""
    fill: str = "open"
    """'open': decide at the close of bar t, fill at the open of t+1; 'close': fill at the close of t."""
    long_only: bool = False
    """Positions {flat, long} instead of {short, flat, long}."""
    episode_length: int = 256
    """Decisions per training episode, started at random bars of the training range."""
    validation_bars: int = 252
    """Last bars up to train_end that the run's evaluations walk to pick the kept policy (0 = the training range)."""
    validation_start: DateText = ""
    """First date of the validation slice, in place of counting validation_bars back from train_end (empty = count)."""

    def __post_init__(self) -> None:
        require(self.window >= 2, "env.kwargs.window", "must be >= 2")
        require(self.cost_bps >= 0, "env.kwargs.cost_bps", "must be >= 0")
        require(math.isfinite(self.trade_penalty) and self.trade_penalty >= 0, "env.kwargs.trade_penalty",
                "must be a finite number >= 0")
        require(math.isfinite(self.slippage_bps) and self.slippage_bps >= 0, "env.kwargs.slippage_bps",
                "must be a finite number >= 0")
        require(self.min_hold >= 1, "env.kwargs.min_hold", "must be an integer >= 1 (bars)")
        require(self.fill in ("open", "close"), "env.kwargs.fill", "must be 'open' or 'close'")
        require(self.episode_length >= 2, "env.kwargs.episode_length", "must be >= 2")
        require(self.validation_bars == 0 or self.validation_bars >= 2, "env.kwargs.validation_bars",
                "must be 0 (no validation slice) or >= 2 (a walk needs a step)")
        require(all(isinstance(a, str) and a for a in self.assets), "env.kwargs.assets",
                "must be a list of CSV files or folders")
        require(not (self.assets and self.data), "env.kwargs.assets", "and env.kwargs.data exclude each other")


class Split(NamedTuple):
    """Bar indices of the three ranges (see `split`); -1 where a range is absent."""

    train_last: int  # last bar of the training episodes
    validation_first: int  # first decision bar of the validation walk (-1: validation_bars = 0)
    train_end: int  # last bar <= train_end: the end of the validation walk
    test_first: int  # first decision bar of the held-out walk (-1: no train_end, or no bars after it)


def split(trading: TradingConfig, dates_T: np.ndarray, source: str) -> Split:
    """The train / validation / test bars of `dates_T` (ascending), as the module docstring lays them out.

    Raises DataError (one line) when the validation slice and its purge gap leave no training step.
    """
    window, bars = int(trading.window), int(trading.validation_bars)
    end = bar_index(dates_T, trading.train_end or None, is_end=True)
    test_first = end + window + 1 if trading.train_end else -1
    if test_first >= len(dates_T) - 1:
        test_first = -1
    if trading.validation_start:
        bars = end - bar_index(dates_T, trading.validation_start, is_end=False) + 1
        if bars < 2:
            upto = f"train_end {trading.train_end}" if trading.train_end else "the last bar"
            raise DataError(source, f"validation_start {trading.validation_start} leaves {max(bars, 0)} validation "
                                    f"bar(s) up to {upto}; a validation walk needs at least 2")
    elif bars == 0:
        return Split(end, -1, end, test_first)
    validation_first = end - bars + 1
    train_last = validation_first - window - 1
    first_decision = FEATURE_WARMUP + window - 1
    if train_last - first_decision < 1:
        upto = f"up to train_end {trading.train_end}" if trading.train_end else "in the data"
        raise DataError(source, f"{end + 1} bars {upto} leave no training step after a validation slice of "
                                f"{bars} bars and a purge gap of {window} bars (a decision needs "
                                f"{first_decision} earlier bars); shorten the validation slice or move train_end "
                                f"later")
    return Split(train_last, validation_first, end, test_first)


def _dates(data: str | None) -> tuple[np.ndarray, str]:
    source = str(data or DEFAULT_DATA)
    return read_ohlcv(DEFAULT_DATA if data is None else data).frame.index.to_numpy(dtype="datetime64[ns]"), source


def scenario_kwargs(trading: TradingConfig, *, evaluation: bool) -> dict[str, Any]:
    """TradingEnv kwargs for the scenario's settings (read by attribute): the training envs, or (evaluation)
    the walk that the engine's periodic and final evaluations take, which chooses the kept policy.

    Training: random episodes of episode_length decisions on the bars before the validation slice and its
    purge gap. Evaluation: one walk of the validation slice (the last `validation_bars` bars up to
    train_end, or from validation_start), normalised with the training bars' statistics. No bar after
    train_end is ever read into an observation, a reward or a statistic, so the policy the run keeps is
    chosen without the held-out bars (tests/test_trading_leak.py). With validation_bars = 0 (and no
    validation_start) the evaluation walks the training range itself (in-sample). The held-out walk is `heldout_kwargs`.
    """
    data = trading.data or None
    common = _common(trading)
    train_end = trading.train_end or None
    if not evaluation:  # the penalty shapes training only: evaluations score the policy on equity alone
        common["trade_penalty"] = float(trading.trade_penalty)
    if int(trading.validation_bars) == 0 and not trading.validation_start:
        if not evaluation:
            return {**common, "end": train_end, "episode_length": int(trading.episode_length)}
        return {**common, "end": train_end, "episode_length": None}
    dates_T, source = _dates(data)
    bars = split(trading, dates_T, source)
    last_training_date = date_text(dates_T[bars.train_last])
    if not evaluation:
        return {**common, "end": last_training_date, "episode_length": int(trading.episode_length)}
    return {**common, "start": date_text(dates_T[bars.validation_first]), "end": date_text(dates_T[bars.train_end]),
            "episode_length": None, "norm_end": last_training_date}


def heldout_kwargs(trading: TradingConfig) -> dict[str, Any]:
    """TradingEnv kwargs of the held-out walk that `asyncdqn backtest RUN_DIR` takes: its first decision is
    `window` + 1 bars after train_end (a purge gap of `window` bars: no observation window holds a bar of the
    validation walk), and it runs to the end of the data; normalisation is the training bars'. Training never
    builds this env. Without train_end there are no held-out bars: the walk is the whole data (in-sample)."""
    if trading.assets:
        raise DataError("env.kwargs.assets", "a multi-asset run has one held-out walk per asset; pass --data CSV "
                                             "(one of its assets, or a held-out one)")
    data = trading.data or None
    common = _common(trading)
    if not trading.train_end:
        return {**common, "episode_length": None}
    dates_T, source = _dates(data)
    bars = split(trading, dates_T, source)
    if bars.test_first < 0:
        raise DataError(source, f"no held-out bars to backtest after train_end {trading.train_end} and a purge "
                                f"gap of {trading.window} bars")
    return {**common, "start": date_text(dates_T[bars.test_first]), "episode_length": None,
            "norm_end": date_text(dates_T[bars.train_last])}


def training_and_test_dates(trading: TradingConfig) -> tuple[str, str | None]:
    """(last training bar, first held-out decision bar or None) of `trading.data` under the split: where a
    multi-asset policy's statistics for this CSV end, and where its held-out walk starts."""
    dates_T, source = _dates(trading.data or None)
    bars = split(trading, dates_T, source)
    test_first = date_text(dates_T[bars.test_first]) if bars.test_first >= 0 else None
    return date_text(dates_T[bars.train_last]), test_first


def _common(trading: TradingConfig) -> dict[str, Any]:
    return {"data": trading.data or None, "window": int(trading.window), "cost_bps": float(trading.cost_bps),
            "slippage_bps": float(trading.slippage_bps), "fill": str(trading.fill), "min_hold": int(trading.min_hold),
            "positions": (0.0, 1.0) if trading.long_only else (-1.0, 0.0, 1.0)}


def read_settings(settings: dict[str, Any]) -> tuple[TradingConfig, bool]:
    """`env.kwargs` (with `env.eval_kwargs` merged in) -> (TradingConfig, evaluation); UserError naming the key."""
    values = dict(settings)
    evaluation = coerce("env.kwargs.evaluation", values.pop("evaluation", False), bool)
    return build(TradingConfig, values, "env.kwargs."), evaluation


def per_asset(trading: TradingConfig) -> list[TradingConfig]:
    """One TradingConfig per asset of a multi-asset config (`assets`), each with that CSV as its `data`."""
    return [dataclasses.replace(trading, data=path, assets=()) for path in asset_paths(trading.assets)]


def make(**settings: Any) -> TradingEnv | MultiAssetEnv:
    """The trading scenario's env factory (`env.factory = "asyncdqn.envs.trading:make"`): the TradingConfig
    fields as kwargs, plus `evaluation = true` for the validation walk (the evaluation copies). With `assets`,
    a MultiAssetEnv of one TradingEnv per asset, each split and normalised on its own bars."""
    trading, evaluation = read_settings(settings)
    if trading.assets:
        return MultiAssetEnv([TradingEnv(**scenario_kwargs(one, evaluation=evaluation)) for one in per_asset(trading)],
                             sequential=evaluation)
    return TradingEnv(**scenario_kwargs(trading, evaluation=evaluation))
