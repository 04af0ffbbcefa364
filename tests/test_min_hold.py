"""min_hold: a new position is held for at least min_hold bars, in every walk (training, evaluation, backtest,
signal), and travels with the saved policy."""

from __future__ import annotations

import numpy as np
import pytest

from asyncdqn.envs.trading.backtest import next_position, run_backtest
from asyncdqn.envs.trading.config import TradingConfig, heldout_kwargs, scenario_kwargs
from asyncdqn.envs.trading.env import TradingEnv
from asyncdqn.envs.trading.policy import env_kwargs_from_metadata
from asyncdqn.errors import UserError

SHORT, FLAT, LONG = 0, 1, 2  # actions of positions (-1, 0, 1)


def _walk(env: TradingEnv, actions: list[int]) -> list[dict]:
    env.reset(seed=0)
    return [env.step(a)[-1] for a in actions]


def test_a_change_within_min_hold_bars_keeps_the_position_and_pays_nothing():
    asked = [LONG, SHORT, SHORT, SHORT, FLAT, FLAT, FLAT, LONG]
    # min_hold 3: long entered at step 0 is held over steps 0-2, so short is refused at 1 and 2, taken at 3;
    # flat is refused at 4 and 5, taken at 6; long at 7 is refused (flat entered one bar ago)
    done = _walk(TradingEnv(start="2015-01-02", min_hold=3), asked)
    assert [i["position"] for i in done] == [1.0, 1.0, 1.0, -1.0, -1.0, -1.0, 0.0, 0.0]
    assert [i["held_back"] for i in done] == [False, True, True, False, True, True, False, True]
    assert [i["cost"] > 0 for i in done] == [True, False, False, True, False, False, True, False]
    # bar for bar the same as a free env given the positions that were taken
    taken = _walk(TradingEnv(start="2015-01-02"), [LONG, LONG, LONG, SHORT, SHORT, SHORT, FLAT, FLAT])
    assert [i["equity"] for i in done] == [i["equity"] for i in taken]
    assert not any(i["held_back"] for i in taken)


def test_min_hold_one_is_no_rule_and_bad_values_are_refused():
    asked = [LONG, SHORT, LONG, FLAT]
    assert [i["position"] for i in _walk(TradingEnv(start="2015-01-02", min_hold=1), asked)] == [1.0, -1.0, 1.0, 0.0]
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="min_hold"):
            TradingEnv(min_hold=bad)
    with pytest.raises(UserError, match="env.kwargs.min_hold"):
        TradingConfig(min_hold=0)


def test_the_rule_holds_in_training_validation_and_held_out_walks_and_is_saved_with_the_policy():
    t = TradingConfig(train_end="2016-12-30", min_hold=4)
    walks = [scenario_kwargs(t, evaluation=False), scenario_kwargs(t, evaluation=True), heldout_kwargs(t)]
    assert [TradingEnv(**kw).min_hold for kw in walks] == [4, 4, 4]
    meta = TradingEnv(**walks[0]).policy_metadata()
    assert meta["min_hold"] == 4
    assert env_kwargs_from_metadata(meta, "")["min_hold"] == 4
    older = {k: v for k, v in meta.items() if k != "min_hold"}  # a policy saved before the rule existed
    assert env_kwargs_from_metadata(older, "")["min_hold"] == 1


def _flipper(obs_B: np.ndarray) -> np.ndarray:
    """Asks for the other extreme every bar: long when flat or short, short when long (obs[-2] is the position)."""
    return np.where(obs_B[:, -2] > 0, SHORT, LONG).astype(np.int64)


def test_a_backtest_and_a_signal_obey_the_policys_min_hold():
    kwargs = {"data": None, "start": "2017-01-03", "end": "2017-06-30", "window": 8, "cost_bps": 10.0}
    free = run_backtest(kwargs, _flipper, policy_name="flip")
    held = run_backtest({**kwargs, "min_hold": 5}, _flipper, policy_name="flip")
    steps = held.strategy.position_N1.size - 1
    assert len(free.strategy.fills) == steps  # a fill every bar without the rule
    # with it the flipper changes at steps 0, 5, 10, ...: position_N1[0] is the opening flat mark
    assert np.array_equal(np.flatnonzero(np.diff(held.strategy.position_N1)), np.arange(0, steps, 5))
    assert len(held.strategy.fills) == len(range(0, steps, 5))
    _, holding, wanted = next_position(TradingEnv(**{**kwargs, "min_hold": 5}), _flipper)
    assert wanted == (-holding if steps % 5 == 0 else holding)  # the next decision is step `steps`
