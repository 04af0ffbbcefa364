"""TradingEnv (asyncdqn.envs.trading): equity against a naive loop, buy-and-hold, no look-ahead, norm ranges, check_env."""

from __future__ import annotations

import json
import math
import dataclasses

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch
from conftest_trading import GOOGL_CSV, make_ohlcv
from gymnasium.utils.env_checker import check_env

import asyncdqn.envs as envs
import asyncdqn.envs.trading.env as trading
from asyncdqn.envs.trading import (
    ENV_ID,
    PolicyMismatchError,
    TradingConfig,
    TradingEnv,
    check_policy_metadata,
    heldout_kwargs,
    make_env_for_policy,
    scenario_kwargs,
)
from asyncdqn.envs.trading.env import FEATURE_WARMUP, RUIN_FLOOR, compute_features
from asyncdqn.envs.trading.market_data import DataError, load_ohlcv


def run_episode(env: TradingEnv, choose, seed: int | None = 0):
    """Walk one episode; returns (observations, actions, rewards, infos) with obs[0] from reset."""
    obs, info = env.reset(seed=seed)
    observations, actions, rewards, infos = [obs], [], [], [info]
    done = False
    while not done:
        action = choose(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        infos.append(info)
        done = terminated or truncated
    return observations, actions, rewards, infos


@pytest.mark.parametrize("fill", ["open", "close"])
def test_always_long_is_buy_and_hold_with_one_entry_cost(fill):
    env = TradingEnv(str(GOOGL_CSV), start="2016-01-01", end="2017-12-31", window=8, cost_bps=25.0, fill=fill)
    _, _, rewards, infos = run_episode(env, lambda obs: 2)
    frame = load_ohlcv(GOOGL_CSV)
    first = pd.Timestamp(env.first_date)
    # fill="open": decided at the close of the first bar, filled at the NEXT bar's open
    entry = frame.loc[frame.index > first, "open"].iloc[0] if fill == "open" else frame.loc[first, "close"]
    exit_ = frame.loc[:"2017-12-31", "close"].iloc[-1]
    expected = (1 - 25e-4) * exit_ / entry
    assert infos[-1]["equity"] == pytest.approx(expected, rel=1e-9)
    assert sum(rewards) == pytest.approx(math.log(expected), abs=1e-9)
    assert infos[1]["fill_price"] == entry and infos[1]["cost"] == pytest.approx(25e-4, rel=1e-12)
    assert infos[-1]["date"] == "2017-12-29" and env.first_date == "2016-01-04"


def naive_equity(frame: pd.DataFrame, first_bar: int, targets: list[float], cost: float, fill: str) -> list[float]:
    """The module docstring's equity rules, written out row by row with pandas."""
    equity, held, out = 1.0, 0.0, [1.0]
    for k, target in enumerate(targets):
        t = first_bar + k
        c_t, o_next, c_next = frame["close"].iloc[t], frame["open"].iloc[t + 1], frame["close"].iloc[t + 1]
        if fill == "open":
            at_fill = equity * (1 + held * (o_next / c_t - 1))
            equity = at_fill * (1 - cost * abs(target - held)) * (1 + target * (c_next / o_next - 1))
        else:
            equity = equity * (1 - cost * abs(target - held)) * (1 + target * (c_next / c_t - 1))
        held = target
        out.append(equity)
    return out


@pytest.mark.parametrize("fill", ["open", "close"])
def test_equity_and_rewards_match_a_naive_loop_under_random_actions(fill):
    frame = make_ohlcv(160, seed=3)
    positions = (-1.0, -0.5, 0.0, 0.5, 1.0)
    env = TradingEnv(frame, window=5, cost_bps=30.0, positions=positions, fill=fill)
    rng = np.random.default_rng(11)
    _, actions, rewards, infos = run_episode(env, lambda obs: int(rng.integers(0, 5)))
    expected = naive_equity(frame, FEATURE_WARMUP + 5 - 1, [positions[a] for a in actions], 30e-4, fill)
    assert [i["equity"] for i in infos] == pytest.approx(expected, rel=1e-12)
    assert math.fsum(rewards) == pytest.approx(math.log(infos[-1]["equity"]), abs=1e-9)
    assert len(rewards) == 160 - (FEATURE_WARMUP + 5)
    paid = [i["cost"] for i in infos[1:] if i["position"] != i["previous_position"]]
    assert paid and all(c > 0 for c in paid)


def test_sum_of_rewards_is_log_growth_on_googl_with_costs():
    env = TradingEnv(str(GOOGL_CSV), window=16, cost_bps=10.0)
    rng = np.random.default_rng(5)
    _, _, rewards, infos = run_episode(env, lambda obs: int(rng.integers(0, 3)))
    assert math.fsum(rewards) == pytest.approx(math.log(infos[-1]["equity"]), abs=1e-9)
    assert infos[-1]["equity"] < 1.0  # ~1.3 trades a day at 10 bps cannot win on average


def test_ruin_terminates_with_the_floor_reward():
    frame = make_ohlcv(60, seed=2)
    t = 50  # a bar at which the price gaps up 150% at the open, then closes at the open
    frame.iloc[t, :4] = [frame["close"].iloc[t - 1] * 2.5] * 4
    frame.iloc[t + 1:, :4] *= 2.5
    env = TradingEnv(frame, window=4, cost_bps=0.0)
    _, _, rewards, infos = run_episode(env, lambda obs: 0)  # always short
    assert infos[-1]["ruined"] and infos[-1]["date"] == str(frame.index[t].date())
    assert rewards[-1] == pytest.approx(math.log(RUIN_FLOOR))
    assert math.fsum(rewards) == pytest.approx(math.log(infos[-1]["equity"]), abs=1e-9)


def garbage_after(frame: pd.DataFrame, t: int, seed: int) -> pd.DataFrame:
    """Same frame up to bar t; random (but valid) prices and volumes afterwards."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    n = len(frame) - t - 1
    mid = rng.uniform(1.0, 1000.0, n)
    out.iloc[t + 1:, out.columns.get_loc("open")] = mid * rng.uniform(0.9, 1.1, n)
    out.iloc[t + 1:, out.columns.get_loc("close")] = mid * rng.uniform(0.9, 1.1, n)
    both = out[["open", "close"]].iloc[t + 1:]
    out.iloc[t + 1:, out.columns.get_loc("high")] = both.max(axis=1) * 1.2
    out.iloc[t + 1:, out.columns.get_loc("low")] = both.min(axis=1) * 0.8
    out.iloc[t + 1:, out.columns.get_loc("volume")] = rng.uniform(0, 1e9, n)
    return out


@pytest.mark.parametrize("fill", ["open", "close"])
def test_no_look_ahead_observations_and_actions_up_to_t_ignore_later_data(fill):
    frame = make_ohlcv(200, seed=4)
    t_cut = 120
    weights_OA = np.random.default_rng(0).normal(size=(6 * 8 + 2, 3))

    def policy(obs):  # deterministic function of the observation only
        return int(np.argmax(obs @ weights_OA))

    runs = []
    for data in (frame, garbage_after(frame, t_cut, seed=9)):
        env = TradingEnv(data, window=6, fill=fill, norm_end=str(frame.index[100].date()))
        runs.append(run_episode(env, policy))
    (obs_a, act_a, rew_a, _), (obs_b, act_b, rew_b, _) = runs
    k = t_cut - (FEATURE_WARMUP + 6 - 1)  # obs_a[k] is the observation at the close of bar t_cut
    for i in range(k + 1):
        np.testing.assert_array_equal(obs_a[i], obs_b[i])
    assert act_a[:k + 1] == act_b[:k + 1]
    assert rew_a[:k] == rew_b[:k]  # rewards up to the step that ends at bar t_cut
    assert not np.array_equal(obs_a[k + 1], obs_b[k + 1])  # the garbage does reach later observations


def test_features_are_causal_row_by_row():
    frame = make_ohlcv(80, seed=6)
    columns = [frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume")]
    base_TF = compute_features(*columns)
    for t in (FEATURE_WARMUP, 40, 78):
        changed = [c.copy() for c in columns]
        for c in changed:
            c[t + 1:] *= 1.7
        after_TF = compute_features(*changed)
        np.testing.assert_array_equal(base_TF[:t + 1], after_TF[:t + 1])
        assert not np.allclose(base_TF[t + 1:t + 2, :5], after_TF[t + 1:t + 2, :5])
    assert np.isnan(base_TF[FEATURE_WARMUP - 1]).any() and not np.isnan(base_TF[FEATURE_WARMUP:]).any()


def test_feature_values_by_hand():
    o = np.array([10.0, 11.0])
    h, l, c, v = np.array([12.0, 13.0]), np.array([9.0, 10.0]), np.array([11.0, 12.0]), np.array([99.0, 199.0])
    row = compute_features(o, h, l, c, v)[1]
    assert row[:5] == pytest.approx([0.0, math.log(13 / 11), math.log(10 / 11), math.log(12 / 11), math.log(2.0)])
    closes = np.array([10.0, 11, 10, 12, 12, 13, 11, 12, 13, 14, 15, 14, 15, 16, 17])
    rsi = compute_features(closes, closes, closes, closes, np.ones(15))[14, 7]
    moves = np.diff(closes)
    assert rsi == pytest.approx(moves[moves > 0].sum() / np.abs(moves).sum() - 0.5)
    assert compute_features(closes, closes, closes, closes, np.ones(15))[9, 5] == pytest.approx(
        math.log(14 / np.mean(closes[:10])))


def test_normalisation_is_fitted_on_the_norm_range_only():
    frame = make_ohlcv(300, seed=7)
    train_end, test_start = "2020-08-31", "2020-09-01"
    kwargs = dict(window=8, start=test_start, norm_end=train_end)  # norm_start: the data's first bar
    base = TradingEnv(frame, **kwargs)
    later = frame.copy()
    later.loc[test_start:, ["open", "high", "low", "close"]] *= np.linspace(1, 3, len(later.loc[test_start:]))[:, None]
    np.testing.assert_array_equal(base.norm.mean, TradingEnv(later, **kwargs).norm.mean)
    np.testing.assert_array_equal(base.norm.std, TradingEnv(later, **kwargs).norm.std)
    earlier = frame.copy()
    earlier.loc["2020-03-02":train_end, "volume"] *= 10.0
    assert not np.array_equal(base.norm.mean, TradingEnv(earlier, **kwargs).norm.mean)
    # by hand: mean of the feature rows whose bars lie in the norm range (from the first defined row)
    features_TF = compute_features(*(frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume")))
    in_range = (frame.index <= train_end) & (np.arange(len(frame)) >= FEATURE_WARMUP)
    np.testing.assert_allclose(base.norm.mean, features_TF[in_range].mean(axis=0), rtol=1e-12)
    assert base.norm_range == (str(frame.index[FEATURE_WARMUP].date()), train_end)


def test_norm_defaults_to_the_env_range_and_norm_stats_override():
    frame = make_ohlcv(300, seed=8)
    env = TradingEnv(frame, window=8, start="2020-06-01", end="2020-10-30")
    assert env.norm_range == ("2020-06-01", "2020-10-30")
    stats = {"mean": [0.0] * 8, "std": [2.0] * 8}
    fixed = TradingEnv(frame, window=8, norm_stats=stats)
    obs, _ = fixed.reset()
    raw_TF = compute_features(*(frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume")))
    t = FEATURE_WARMUP + 8 - 1
    np.testing.assert_allclose(obs[:-2], (raw_TF[t - 7:t + 1] / 2.0).ravel().astype(np.float32), rtol=1e-6)
    with pytest.raises(ValueError, match="norm_stats must hold 8 means"):
        TradingEnv(frame, window=8, norm_stats={"mean": [0.0], "std": [1.0]})


def test_training_episodes_start_at_seeded_random_bars_and_truncate():
    env = TradingEnv(make_ohlcv(400, seed=1), window=8, episode_length=50)
    starts = {env.reset(seed=s)[1]["date"] for s in range(20)}
    assert len(starts) > 10
    assert env.reset(seed=3)[1]["date"] == env.reset(seed=3)[1]["date"]
    _, _, rewards, infos = run_episode(env, lambda obs: 1, seed=3)
    assert len(rewards) == 50
    env.reset(seed=3)
    for _ in range(49):
        assert env.step(1)[2:4] == (False, False)
    assert env.step(1)[2:4] == (False, True)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(1)


def test_evaluation_walk_covers_the_range_and_terminates_at_its_end():
    env = TradingEnv(str(GOOGL_CSV), start="2018-01-01", end="2018-06-30", window=32)
    observations, _, _, infos = run_episode(env, lambda obs: 1)
    assert infos[0]["date"] == "2018-01-02" and infos[-1]["date"] == "2018-06-29"
    assert len(observations) - 1 == env.decision_steps
    assert all(env.observation_space.contains(o) for o in observations)
    for info in infos[1:]:  # fill="open": the fill is on the bar after the decision, never one already seen
        assert info["fill_date"] == info["date"] and set(info) >= {"date", "position", "equity", "fill_price", "cost"}


def test_step_does_not_touch_pandas(monkeypatch):
    env = TradingEnv(make_ohlcv(120, seed=2), window=8, episode_length=None)
    held = [name for name, value in vars(env).items() if isinstance(value, (pd.DataFrame, pd.Series, pd.Index))]
    assert held == []

    class NoPandas:
        def __getattr__(self, name):
            raise AssertionError(f"step() used pandas.{name}")

    env.reset(seed=0)
    monkeypatch.setattr(trading, "pd", NoPandas())
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(2)
        done = terminated or truncated


def test_check_env_passes_and_registration_is_idempotent():
    envs.register_envs()  # a second registration would warn (an error under filterwarnings=error)
    wrapped = gym.make(ENV_ID, data=make_ohlcv(200, seed=5), window=8, episode_length=40)
    check_env(wrapped.unwrapped)  # unwrapped but made via gym.make, so it has a spec for the render checks
    obs, _ = wrapped.reset(seed=1)
    assert obs.dtype == np.float32 and obs.shape == wrapped.observation_space.shape
    wrapped.step(wrapped.action_space.sample())  # the passive checker inspects the first step too
    long_only = TradingEnv(make_ohlcv(100, seed=5), window=8, positions=(0.5, 1.0))
    assert long_only.observation_space.contains(long_only.reset()[0])  # starts flat although 0 is not a target


def test_policy_metadata_is_safe_and_rebuilds_identical_observations(tmp_path):
    frame = make_ohlcv(300, seed=9)
    train = TradingEnv(frame, window=8, end="2020-08-31", positions=(0, 1), cost_bps=5)
    metadata = train.policy_metadata()
    json.dumps(metadata, allow_nan=False)
    torch.save({"policy": metadata}, tmp_path / "ckpt.pt")
    restored = torch.load(tmp_path / "ckpt.pt", weights_only=True)["policy"]
    assert restored == metadata
    test_env = make_env_for_policy(restored, frame, start="2020-09-01")
    fitted_on_train = TradingEnv(frame, window=8, start="2020-09-01", positions=(0, 1), norm_end="2020-08-31")
    np.testing.assert_array_equal(test_env.reset()[0], fitted_on_train.reset()[0])
    assert test_env.cost_bps == 5 and test_env.positions == (0.0, 1.0)


def test_policy_mismatch_is_one_clear_line():
    frame = make_ohlcv(200, seed=9)
    metadata = TradingEnv(frame, window=8).policy_metadata()
    other = TradingEnv(frame, window=4)
    with pytest.raises(PolicyMismatchError, match=r"^<DataFrame>: does not match the policy: window is 4 here but 8"):
        check_policy_metadata(metadata, other)
    with pytest.raises(PolicyMismatchError, match="feature_names is"):
        make_env_for_policy({**metadata, "feature_names": ["a"] * 8}, frame)
    with pytest.raises(DataError, match="policy metadata lacks norm_mean, norm_std"):
        make_env_for_policy({k: v for k, v in metadata.items() if not k.startswith("norm_")}, frame)


def test_invalid_arguments_fail_clearly():
    frame = make_ohlcv(60, seed=1)
    with pytest.raises(ValueError, match="fill must be one of"):
        TradingEnv(frame, fill="mid")
    with pytest.raises(ValueError, match="window must be a positive integer"):
        TradingEnv(frame, window=0)
    with pytest.raises(ValueError, match="cost_bps"):
        TradingEnv(frame, cost_bps=6000)  # a -1 -> 1 flip would cost 120% of equity
    with pytest.raises(DataError, match="leaves no decision step"):
        TradingEnv(frame, window=50)
    env = TradingEnv(frame, window=8)
    env.reset()
    with pytest.raises(ValueError, match="not in 0..2"):
        env.step(3)


def test_scenario_kwargs_split_train_validation_and_test_with_purge_gaps():
    trading_config = TradingConfig(data=str(GOOGL_CSV), train_end="2016-12-31", window=16, cost_bps=5.0,
                                   long_only=True, episode_length=128, validation_bars=100)
    train = TradingEnv(**scenario_kwargs(trading_config, evaluation=False))
    validation = TradingEnv(**scenario_kwargs(trading_config, evaluation=True))
    test = TradingEnv(**heldout_kwargs(trading_config))
    frame = load_ohlcv(GOOGL_CSV)
    last = frame.index.get_loc(pd.Timestamp("2016-12-30"))
    day = [str(d.date()) for d in frame.index]
    assert validation.first_date == day[last - 99] and validation.last_date == "2016-12-30"
    assert train.last_date == day[last - 99 - 17]  # 16 purged bars between training and validation
    assert train.episode_length == 128 and train.positions == (0.0, 1.0)
    assert test.first_date == day[last + 17]  # 16 purged bars after train_end, then the first decision
    assert test.episode_length is None and test.last_date == "2018-08-29"
    for env in (validation, test):  # fitted on the training bars only
        np.testing.assert_array_equal(env.norm.mean, train.norm.mean)
        assert env.policy_metadata()["norm_end"] == train.last_date
    everything = dataclasses.replace(trading_config, train_end="", data="", validation_bars=0)
    assert TradingEnv(**scenario_kwargs(everything, evaluation=True)).first_date == train.first_date
    assert TradingEnv(**heldout_kwargs(everything)).last_date == "2018-08-29"


@pytest.mark.slow
def test_stable_baselines3_dqn_trains_on_the_env():
    sb3 = pytest.importorskip("stable_baselines3")
    env = gym.make(ENV_ID, data=str(GOOGL_CSV), end="2016-12-31", window=16, episode_length=256)
    model = sb3.DQN("MlpPolicy", env, learning_starts=500, buffer_size=5_000, seed=0, verbose=0)
    model.learn(total_timesteps=3_000)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))
