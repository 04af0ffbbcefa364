"""Trading environment: the second stage of the trading data flow.

    market_data.read_ohlcv --> TradingEnv (causal features, normalisation, fills, costs, reward)
    --> actors (training: random windows, built by config.make) / backtest (one walk of the whole range)

Array legend: suffix _T = one value per bar of the loaded data (T bars); _TF = bars x features.

Timing and equity, exactly as step() computes them. The agent acts at the close of bar t, having seen
the features of bars t-window+1..t (each computed from data at or before its own bar), and picks a
target position p' from `positions` (a fraction of equity: -1 short, 0 flat, 1 long). With p the old
position, E_t the equity at close t, c = (cost_bps + slippage_bps) / 1e4 (commission and slippage, both per
fill on the traded notional), o/cl the open/close prices:

    fill="open" (default; the fill price is one the agent has NOT seen):
        E_fill  = E_t * (1 + p * (o[t+1] / cl[t] - 1))            old position held overnight
        cost    = c * |p' - p| * E_fill                              paid on equity at the fill
        E_{t+1} = (E_fill - cost) * (1 + p' * (cl[t+1] / o[t+1] - 1))  new position held to the close
    fill="close" (optimistic: assumes a fill at the very close the agent just saw, the classic
    look-ahead of daily backtests; offered for comparison, not as the default):
        E_fill  = E_t;  cost = c * |p' - p| * E_t;  E_{t+1} = (E_t - cost) * (1 + p' * (cl[t+1] / cl[t] - 1))

    reward = log(E_{t+1} / E_t), so an episode's rewards sum to log(E_final / E_0) with E_0 = 1: the
    reward is the net profit, fees included, never a proxy for it. With trade_penalty = k > 0 (the trading
    scenario sets it on its training envs only) the reward is log(E_{t+1} / E_t) - k * |p' - p|: a price on
    position changes beyond the fees, to teach an agent that over-trades to hold; equity, evaluations and
    every report are untouched by it.

Minimum holding time. With min_hold = n > 1, a position entered by a change is held for at least n bars:
an action asking for another position within that time is refused and the old position is kept (p' = p, no
fill, no cost; info["held_back"] is True). Unlike trade_penalty this is a rule of execution, not of the
reward, so it applies in every walk: training, evaluations and backtests (it is saved with the policy). The
episode's opening flat position is not a change, so the first change is never refused.

Slippage is charged like the commission, as a fraction of the traded notional at the fill price: to first
order the same as filling |p' - p| * E_fill of notional at a price slippage_bps worse than o[t+1] (or cl[t]).
It is a setting of its own so that a report can show what the fees and what the market impact cost.

A position is a constant fraction of equity over each price move (rebalanced for free between bars):
exact for 0 and 1, the usual approximation for shorts and leverage. Ruin: when a growth factor is <= 0
or equity would fall below RUIN_FLOOR * E_t (a short through a doubling), equity becomes
RUIN_FLOOR * E_t, the reward is log(RUIN_FLOOR) (about -18.4) and the episode terminates; the sum of
rewards still equals log(E_final / E_0).

Ranges. `start`/`end` (inclusive; a date-only `end` covers its whole day) select the bars the agent
trades. The first decision bar is the first bar >= start that has a full window of defined features;
the window may reach back before `start`: those bars are the past, known at decision time. The last
step ends at the last bar <= end: terminated=True there (the data ending is a true end of the walk).
With `episode_length=None` reset() starts at the first decision bar (deterministic evaluation walk);
otherwise at a bar drawn with self.np_random so that `episode_length` steps fit, and truncated=True
after that many steps.

Normalisation. Feature mean/std are fitted on the bars in [norm_start, norm_end] only. With neither
given that is this env's own [start, end]; with one given, the other defaults to the edge of the data
(norm_end="2016-12-31" alone = everything up to 2016-12-31). The evaluation env gets the TRAINING range
(config.scenario_kwargs does this) or the `norm_stats` saved in the checkpoint, so statistics never see test data.
Normalised features are clipped to +-OBS_CLIP so a single news day (GOOGL 2015-07-17: +16%) cannot
dominate the input scale.

Observation (float32): the window of normalised features, oldest bar first (window x len(FEATURE_NAMES),
flattened row-major), then the current position, then time in position (steps since the last change,
capped at `window`, divided by `window`). Everything is precomputed in numpy at construction; step()
touches no pandas (tests/test_trading_env.py swaps this module's `pd` for an object that raises).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from asyncdqn.envs import TRADING_ENV_ID as ENV_ID
from asyncdqn.envs.trading.market_data import DataError, read_ohlcv, shipped_csv

DEFAULT_DATA = shipped_csv("GOOGL.csv")  # what `data` None or "" means
FEATURE_NAMES = ("ret_open", "ret_high", "ret_low", "ret_close", "dlog_volume", "sma10_gap", "vol10", "rsi14")
FEATURE_WARMUP = 14  # first bar index at which every feature is defined (rsi14 needs 14 close changes)
OBS_CLIP = 10.0
RUIN_FLOOR = 1e-8
FILL_MODES = ("open", "close")
DEFAULT_COST_BPS = 10.0
METADATA_VERSION = 1


class NormStats(NamedTuple):
    mean: np.ndarray  # [F] float64
    std: np.ndarray  # [F] float64, > 0


def compute_features(open_T: np.ndarray, high_T: np.ndarray, low_T: np.ndarray, close_T: np.ndarray,
                     volume_T: np.ndarray) -> np.ndarray:
    """[T, len(FEATURE_NAMES)] float64 features; row t uses bars <= t only; NaN where undefined.

    ret_open/high/low/close = log(price_t / close_{t-1}); dlog_volume = log1p(vol_t) - log1p(vol_{t-1})
    (log1p: zero-volume bars are valid); sma10_gap = log(close_t / mean(close_{t-9..t}));
    vol10 = std (ddof=0) of the last 10 close log returns; rsi14 = sum of up moves / sum of |moves| over
    the last 14 close changes, minus 0.5 (0 when the price did not move).
    """
    n = len(close_T)
    features_TF = np.full((n, len(FEATURE_NAMES)), np.nan)
    if n < 2:
        return features_TF
    prev = close_T[:-1]
    ret_close_T = np.full(n, np.nan)
    ret_close_T[1:] = np.log(close_T[1:] / prev)
    features_TF[1:, 0] = np.log(open_T[1:] / prev)
    features_TF[1:, 1] = np.log(high_T[1:] / prev)
    features_TF[1:, 2] = np.log(low_T[1:] / prev)
    features_TF[:, 3] = ret_close_T
    features_TF[1:, 4] = np.diff(np.log1p(volume_T))
    if n >= 10:
        features_TF[9:, 5] = np.log(close_T[9:] / sliding_window_view(close_T, 10).mean(axis=1))
    if n >= 11:
        features_TF[10:, 6] = sliding_window_view(ret_close_T[1:], 10).std(axis=1)
    if n >= 15:
        moves = sliding_window_view(np.diff(close_T), 14)
        total = np.abs(moves).sum(axis=1)
        up = np.clip(moves, 0.0, None).sum(axis=1)
        features_TF[14:, 7] = np.where(total > 0, up / np.where(total > 0, total, 1.0) - 0.5, 0.0)
    return features_TF


def fit_norm_stats(features_TF: np.ndarray) -> NormStats:
    """Mean and std (ddof=0) per feature over the given rows; a constant feature gets std 1."""
    mean = features_TF.mean(axis=0)
    std = features_TF.std(axis=0)
    return NormStats(mean, np.where(std > 1e-12, std, 1.0))


def bar_index(dates_T: np.ndarray, value: str | None, *, is_end: bool) -> int:
    """Index of the first bar >= start, or of the last bar <= end (inclusive, whole day if date-only)."""
    if value is None:
        return len(dates_T) - 1 if is_end else 0
    stamp = pd.Timestamp(value)
    if is_end and stamp == stamp.normalize() and len(str(value).strip()) <= 10:
        stamp = stamp + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
    target = np.datetime64(stamp.to_datetime64(), "ns")
    return int(np.searchsorted(dates_T, target, side="right")) - 1 if is_end else \
        int(np.searchsorted(dates_T, target, side="left"))


def _as_norm_stats(value: NormStats | Mapping[str, Sequence[float]] | Sequence[Sequence[float]]) -> NormStats:
    mean, std = (value["mean"], value["std"]) if isinstance(value, Mapping) else value
    stats = NormStats(np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64))
    width = len(FEATURE_NAMES)
    if stats.mean.shape != (width,) or stats.std.shape != (width,):
        raise ValueError(f"norm_stats must hold {width} means and {width} stds ({', '.join(FEATURE_NAMES)})")
    if not (np.all(np.isfinite(stats.mean)) and np.all(np.isfinite(stats.std)) and np.all(stats.std > 0)):
        raise ValueError("norm_stats must be finite with every std > 0")
    return stats


class TradingEnv(gym.Env):
    """Daily OHLCV trading with discrete target positions; see the module docstring for the exact rules."""

    metadata = {"render_modes": []}

    def __init__(self, data: str | os.PathLike | pd.DataFrame | None = None, *, start: str | None = None,
                 end: str | None = None, window: int = 32, cost_bps: float = DEFAULT_COST_BPS,
                 slippage_bps: float = 0.0, positions: Sequence[float] = (-1.0, 0.0, 1.0), fill: str = "open",
                 episode_length: int | None = None, norm_start: str | None = None, norm_end: str | None = None,
                 norm_stats: NormStats | Mapping[str, Sequence[float]] | None = None,
                 date_format: str | None = None, dayfirst: bool = False, dropna: bool = False,
                 render_mode: str | None = None, trade_penalty: float = 0.0, min_hold: int = 1):
        """`data`: a CSV path or a DataFrame (None or "" = the shipped GOOGL.csv); start/end/norm_start/norm_end:
        dates (text or datetime.date) as in the module docstring. Everything step() needs is computed here."""
        self._set_rules(positions, window, fill, episode_length, (cost_bps, slippage_bps), render_mode)
        if not (math.isfinite(trade_penalty) and trade_penalty >= 0.0):
            raise ValueError(f"trade_penalty must be a finite number >= 0, got {trade_penalty!r}")
        self.trade_penalty = float(trade_penalty)
        if isinstance(min_hold, bool) or int(min_hold) != min_hold or min_hold < 1:
            raise ValueError(f"min_hold must be an integer >= 1 (bars), got {min_hold!r}")
        self.min_hold = int(min_hold)
        loaded = read_ohlcv(DEFAULT_DATA if data is None or (isinstance(data, str) and not data) else data,
                            date_format=date_format, dayfirst=dayfirst, dropna=dropna)
        self.data_source = loaded.source
        frame = loaded.frame
        dates_T = frame.index.to_numpy(dtype="datetime64[ns]")
        open_T, high_T, low_T, close_T, volume_T = (frame[c].to_numpy(dtype=np.float64)
                                                    for c in ("open", "high", "low", "close", "volume"))

        # Decision bars: t in [first_bar, last_bar); each step moves t -> t+1.
        self._first_bar = max(bar_index(dates_T, start, is_end=False), FEATURE_WARMUP + self.window - 1)
        self._last_bar = bar_index(dates_T, end, is_end=True)
        if self._last_bar - self._first_bar < 1:
            raise DataError(self.data_source, f"range {start or 'first bar'}..{end or 'last bar'} leaves no "
                                              f"decision step; a decision needs {FEATURE_WARMUP + self.window} "
                                              f"earlier bars (feature warm-up {FEATURE_WARMUP} + window "
                                              f"{self.window}) and one after")

        features_TF = compute_features(open_T, high_T, low_T, close_T, volume_T)
        self._fit_norm(features_TF, dates_T, (start, end), (norm_start, norm_end), norm_stats)
        z_TF = np.clip((features_TF - self.norm.mean) / self.norm.std, -OBS_CLIP, OBS_CLIP)
        self._z_TF = np.ascontiguousarray(np.nan_to_num(z_TF, nan=0.0), dtype=np.float32)  # NaN rows never observed
        self._dates = _date_strings(dates_T)
        self._set_fills(open_T, close_T)
        self._set_spaces()
        self._t = self._first_bar
        self._position, self._equity, self._held, self._steps, self._done = 0.0, 1.0, 0, 0, True
        self._hold_left = 0  # steps before a position change is allowed again (min_hold)

    def _set_rules(self, positions: Sequence[float], window: int, fill: str, episode_length: int | None,
                   costs_bps: tuple[float, float], render_mode: str | None) -> None:
        """Check and keep the trading rules (ValueError naming the argument); costs_bps = (commission, slippage)."""
        cost_bps, slippage_bps = costs_bps
        self.positions = tuple(float(p) for p in positions)
        if not self.positions or len(set(self.positions)) != len(self.positions) or \
                not all(math.isfinite(p) for p in self.positions):
            raise ValueError(f"positions must be distinct finite numbers, got {positions!r}")
        if int(window) != window or window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        if fill not in FILL_MODES:
            raise ValueError(f"fill must be one of {FILL_MODES}, got {fill!r}")
        if episode_length is not None and (int(episode_length) != episode_length or episode_length < 1):
            raise ValueError(f"episode_length must be None or a positive integer, got {episode_length!r}")
        for name, value in (("cost_bps", cost_bps), ("slippage_bps", slippage_bps)):
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self.cost_rate = (float(cost_bps) + float(slippage_bps)) / 1e4  # charged per fill (module docstring)
        max_trade = max(self.positions) - min(self.positions)
        if not self.cost_rate * max_trade < 1.0:
            raise ValueError(f"cost_bps + slippage_bps must make the largest trade's cost below 100%, got "
                             f"{cost_bps!r} + {slippage_bps!r}")
        if render_mode is not None:
            raise ValueError("TradingEnv has no render modes")
        self.render_mode = None
        self.window, self.fill = int(window), fill
        self.cost_bps, self.slippage_bps = float(cost_bps), float(slippage_bps)
        self.episode_length = None if episode_length is None else int(episode_length)

    def _fit_norm(self, features_TF: np.ndarray, dates_T: np.ndarray, own: tuple, asked: tuple,
                  norm_stats: NormStats | Mapping[str, Sequence[float]] | None) -> None:
        """self.norm and self.norm_range: given stats, or fitted on the asked range (own range if none asked)."""
        if norm_stats is not None:
            self.norm = _as_norm_stats(norm_stats)
            self.norm_range: tuple[str | None, str | None] = (None, None)  # fitted elsewhere (a checkpoint)
            return
        lo_date, hi_date = own if asked == (None, None) else asked
        lo = max(bar_index(dates_T, lo_date, is_end=False), FEATURE_WARMUP)
        hi = bar_index(dates_T, hi_date, is_end=True)
        if hi - lo + 1 < 2:
            raise DataError(self.data_source, f"normalisation range {lo_date or 'first bar'}..{hi_date or 'last bar'} "
                                              f"holds {max(hi - lo + 1, 0)} bars with features; need at least 2")
        self.norm = fit_norm_stats(features_TF[lo:hi + 1])
        self.norm_range = (date_text(dates_T[lo]), date_text(dates_T[hi]))

    def _set_fills(self, open_T: np.ndarray, close_T: np.ndarray) -> None:
        """Per-step price ratios as Python floats: scalar float math is faster than numpy scalars in step()."""
        gap_T = np.zeros(len(close_T))
        move_T = np.zeros(len(close_T))
        fill_price_T = close_T.copy()
        if self.fill == "open":
            gap_T[:-1] = open_T[1:] / close_T[:-1] - 1.0
            move_T[:-1] = close_T[1:] / open_T[1:] - 1.0
            fill_price_T[:-1] = open_T[1:]
            fill_bar_T = np.minimum(np.arange(len(close_T)) + 1, len(close_T) - 1)
        else:
            move_T[:-1] = close_T[1:] / close_T[:-1] - 1.0
            fill_bar_T = np.arange(len(close_T))
        self._gap, self._move, self._fill_price = gap_T.tolist(), move_T.tolist(), fill_price_T.tolist()
        self._fill_dates = [self._dates[i] for i in fill_bar_T]

    def _set_spaces(self) -> None:
        width = self.window * len(FEATURE_NAMES)
        self.obs_dim = width + 2
        # episodes start flat (0.0) even when 0 is not an allowed target, so the bounds include it
        low = np.concatenate([np.full(width, -OBS_CLIP), [min(*self.positions, 0.0), 0.0]]).astype(np.float32)
        high = np.concatenate([np.full(width, OBS_CLIP), [max(*self.positions, 0.0), 1.0]]).astype(np.float32)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(len(self.positions))

    # ------------------------------------------------------------------------------------- ranges
    @property
    def first_date(self) -> str:
        """Date of the first decision bar of the evaluation walk (its close is equity 1.0)."""
        return self._dates[self._first_bar]

    @property
    def last_date(self) -> str:
        """Date of the last bar of the range (the final mark-to-market close)."""
        return self._dates[self._last_bar]

    @property
    def decision_steps(self) -> int:
        """Number of steps in the full evaluation walk."""
        return self._last_bar - self._first_bar

    def walk_moves(self) -> tuple[np.ndarray, np.ndarray]:
        """(gap_N, move_N) of the full evaluation walk's N steps, the price ratios step() applies: step i
        (from mark i to i+1) grows equity by (1 + p * gap_N[i]) before its fill and (1 + p' * move_N[i]) after.
        gap_N is 0 with fill="close". Lets the backtest replay other position paths without stepping the env."""
        steps = slice(self._first_bar, self._last_bar)
        return np.asarray(self._gap[steps]), np.asarray(self._move[steps])

    # ------------------------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self.episode_length is None:
            self._t = self._first_bar
        else:
            last_start = max(self._first_bar, self._last_bar - self.episode_length)
            self._t = self._first_bar + int(self.np_random.integers(0, last_start - self._first_bar + 1))
        self._position, self._equity, self._held, self._steps, self._done = 0.0, 1.0, 0, 0, False
        self._hold_left = 0
        info = {"date": self._dates[self._t], "position": 0.0, "equity": 1.0}
        return self._observation(), info

    def step(self, action):
        if self._done:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        t, old, new, equity = self._t, self._position, self.target_position(action), self._equity
        held_back = new != self.positions[int(action)]
        grow_old = 1.0 + old * self._gap[t]
        grow_new = 1.0 + new * self._move[t]
        fill_equity = equity * grow_old
        cost = self.cost_rate * abs(new - old) * fill_equity
        ruined = grow_old <= 0.0 or grow_new <= 0.0 or (fill_equity - cost) * grow_new <= RUIN_FLOOR * equity
        if ruined:
            cost = max(cost, 0.0)
            next_equity = RUIN_FLOOR * equity
        else:
            next_equity = (fill_equity - cost) * grow_new
        reward = math.log(next_equity / equity) - self.trade_penalty * abs(new - old)

        self._held = 0 if new != old else self._held + 1
        self._hold_left = self.min_hold - 1 if new != old else max(self._hold_left - 1, 0)
        self._t, self._position, self._equity, self._steps = t + 1, new, next_equity, self._steps + 1
        terminated = ruined or self._t >= self._last_bar
        truncated = not terminated and self.episode_length is not None and self._steps >= self.episode_length
        self._done = terminated or truncated
        info = {"date": self._dates[t + 1], "position": new, "previous_position": old, "equity": next_equity,
                "fill_date": self._fill_dates[t], "fill_price": self._fill_price[t], "fill_equity": fill_equity,
                "cost": cost, "ruined": ruined, "held_back": held_back}
        return self._observation(), reward, terminated, truncated, info

    def target_position(self, action) -> float:
        """The position `action` takes at this bar: its target, or the position held when min_hold refuses a
        change (the position was entered fewer than min_hold bars ago)."""
        index = int(action)
        if not 0 <= index < len(self.positions):
            raise ValueError(f"action {action!r} is not in 0..{len(self.positions) - 1}")
        wanted = self.positions[index]
        return self._position if wanted != self._position and self._hold_left > 0 else wanted

    def _observation(self) -> np.ndarray:
        obs = np.empty(self.obs_dim, dtype=np.float32)
        obs[:-2] = self._z_TF[self._t - self.window + 1:self._t + 1].reshape(-1)
        obs[-2] = self._position
        obs[-1] = min(self._held, self.window) / self.window
        return obs

    # ------------------------------------------------------------------------- policy metadata
    def policy_metadata(self) -> dict[str, Any]:
        """What a checkpoint must store to rebuild identical observations on new data.

        Only str/int/float/bool/None and lists of them, so torch.load(weights_only=True) and JSON can
        read it back.
        """
        return {
            "env_id": ENV_ID, "metadata_version": METADATA_VERSION,
            "feature_names": list(FEATURE_NAMES), "feature_warmup": FEATURE_WARMUP, "obs_clip": OBS_CLIP,
            "window": self.window, "positions": list(self.positions), "n_actions": len(self.positions),
            "obs_dim": self.obs_dim, "fill": self.fill, "cost_bps": self.cost_bps, "slippage_bps": self.slippage_bps,
            "min_hold": self.min_hold,
            "norm_mean": [float(x) for x in self.norm.mean], "norm_std": [float(x) for x in self.norm.std],
            "norm_start": self.norm_range[0], "norm_end": self.norm_range[1],
        }


def date_text(stamp: np.datetime64) -> str:
    return _date_strings(np.array([stamp]))[0]


def _date_strings(dates_T: np.ndarray) -> list[str]:
    """ISO dates ("2014-04-03") for daily data; ISO date-times when any bar has a time of day."""
    text_T = np.datetime_as_string(dates_T, unit="s")
    if np.all(np.char.endswith(text_T, "T00:00:00")):
        return [str(t)[:10] for t in text_T]
    return [str(t) for t in text_T]
