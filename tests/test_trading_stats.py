"""Issue 14's statistics a quant expects (asyncdqn.envs.trading.stats) and the slippage setting: hand-computed
cases, the vectorised replay against the env's own walk, and the random-policy comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest_trading import make_ohlcv

from asyncdqn.envs.trading import TradingConfig, TradingEnv, env_kwargs_from_metadata, scenario_kwargs
from asyncdqn.envs.trading import backtest as bt
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
