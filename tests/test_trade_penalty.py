"""trade_penalty: a price on position changes in the training reward only; equity and evaluations untouched."""

from __future__ import annotations

import math

import pytest

from asyncdqn.envs.trading.config import TradingConfig, heldout_kwargs, scenario_kwargs
from asyncdqn.envs.trading.env import TradingEnv


def _walk(env: TradingEnv, actions: list[int]) -> tuple[list[float], list[float]]:
    env.reset(seed=0)
    rewards, equity = [], []
    for a in actions:
        _, r, *_, info = env.step(a)
        rewards.append(r)
        equity.append(info["equity"])
    return rewards, equity


def test_the_penalty_subtracts_k_times_the_position_change_and_leaves_equity_alone():
    actions = [2, 2, 0, 1, 2, 0]                   # positions (-1, 0, 1): long, long, short, flat, long, short
    changes = [1.0, 0.0, 2.0, 1.0, 1.0, 2.0]       # |p' - p| from flat
    plain = _walk(TradingEnv(start="2015-01-02", episode_length=None), actions)
    priced = _walk(TradingEnv(start="2015-01-02", episode_length=None, trade_penalty=0.003), actions)
    assert priced[1] == plain[1]                                     # the same equity, bar for bar
    for r0, r1, d, e_prev, e in zip(plain[0], priced[0], changes, [1.0, *plain[1]], plain[1]):
        assert r0 == pytest.approx(math.log(e / e_prev))
        assert r1 == pytest.approx(r0 - 0.003 * d)
    with pytest.raises(ValueError, match="trade_penalty"):
        TradingEnv(trade_penalty=-1.0)


def test_the_scenario_prices_trades_in_training_only():
    t = TradingConfig(train_end="2016-12-30", trade_penalty=0.002)
    assert scenario_kwargs(t, evaluation=False)["trade_penalty"] == 0.002
    assert "trade_penalty" not in scenario_kwargs(t, evaluation=True)    # the validation walk scores equity
    assert "trade_penalty" not in heldout_kwargs(t)                     # so does the backtest
    assert TradingEnv(**scenario_kwargs(t, evaluation=True)).trade_penalty == 0.0
