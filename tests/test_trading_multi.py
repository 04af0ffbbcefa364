"""Training on several assets (issue 14): episodes draw an asset, each asset split and normalised on its own
bars, the validation walk takes every asset in turn, and a backtest or signal on any CSV (a training asset
or a held-out one) normalises it on its own training bars."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest_trading import make_ohlcv, write_csv
from test_cli import assert_one_line_error, run_cli, with_sets

from asyncdqn.envs.trading import DataError, TradingConfig, TradingEnv, make, scenario_kwargs
from asyncdqn.envs.trading.config import read_settings, training_and_test_dates
from asyncdqn.envs.trading.multi import MultiAssetEnv, asset_paths
from asyncdqn.errors import UserError

BARS, TRAIN_END_BAR, WINDOW, VALIDATION = 400, 300, 8, 60


@pytest.fixture
def assets(tmp_path):
    """Two CSVs on the same dates, one three times as volatile as the other; and the train_end date."""
    calm, wild = make_ohlcv(BARS, seed=1, vol=0.01), make_ohlcv(BARS, seed=2, vol=0.03)
    paths = [str(write_csv(calm, tmp_path / "calm.csv")), str(write_csv(wild, tmp_path / "wild.csv"))]
    return paths, f"{calm.index[TRAIN_END_BAR]:%Y-%m-%d}"


def settings(paths, train_end, **more):
    return {"assets": paths, "train_end": train_end, "window": WINDOW, "episode_length": 16,
            "validation_bars": VALIDATION, **more}


def single(path, train_end, evaluation):
    trading = TradingConfig(data=path, train_end=train_end, window=WINDOW, episode_length=16,
                            validation_bars=VALIDATION)
    return TradingEnv(**scenario_kwargs(trading, evaluation=evaluation))


def test_training_episodes_draw_every_asset_each_normalised_on_its_own_training_bars(assets):
    paths, train_end = assets
    env = make(**settings(paths, train_end))
    assert isinstance(env, MultiAssetEnv) and env.data_sources == paths
    drawn = []
    for seed in range(40):
        obs, info = env.reset(seed=seed)
        drawn.append(info["asset"])
        alone = single(paths[info["asset"]], train_end, False)
        sub = env.envs[info["asset"]]
        assert np.array_equal(sub.norm.mean, alone.norm.mean) and np.array_equal(sub.norm.std, alone.norm.std)
        assert sub.norm_range == alone.norm_range and sub.last_date == alone.last_date  # its own split
        assert np.array_equal(obs, sub._observation())
    assert 10 < sum(drawn) < 30  # both assets, about as often
    assert [env.reset(seed=s)[1]["asset"] for s in range(10)] == drawn[:10]  # seeded
    assert not np.allclose(env.envs[0].norm.std, env.envs[1].norm.std)  # not one shared normalisation


def test_the_validation_walk_takes_every_asset_in_turn_and_returns_their_summed_log_growth(assets):
    paths, train_end = assets
    env = make(**settings(paths, train_end), evaluation=True)
    env.reset(seed=0)
    total, steps, seen = 0.0, 0, []
    while True:
        _, reward, terminated, truncated, info = env.step(2)  # long
        total, steps = total + reward, steps + 1
        seen.append(info["asset"])
        if terminated or truncated:
            break
    alone = []
    for path in paths:
        one = single(path, train_end, True)
        one.reset(seed=0)
        rewards = []
        while True:
            _, reward, terminated, truncated, _ = one.step(2)
            rewards.append(reward)
            if terminated or truncated:
                break
        alone.append(rewards)
    assert steps == sum(map(len, alone)) and seen == [0] * len(alone[0]) + [1] * len(alone[1])
    assert total == pytest.approx(sum(map(sum, alone)), rel=1e-12)


def test_asset_settings_are_checked_in_one_line(assets, tmp_path):
    paths, train_end = assets
    with pytest.raises(UserError, match="env.kwargs.assets and env.kwargs.data exclude each other"):
        read_settings({"assets": paths, "data": paths[0]})
    with pytest.raises(UserError, match="env.kwargs.assets must be a list of CSV files or folders"):
        read_settings({"assets": [1, 2]})
    with pytest.raises(DataError, match="nowhere.csv: no such file or folder"):
        make(**settings([paths[0], str(tmp_path / "nowhere.csv")], train_end))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder holds no .csv file"):
        asset_paths([str(tmp_path / "empty")])
    assert asset_paths([str(tmp_path)]) == sorted(paths)  # a folder: its CSVs, sorted


def train_multi(capsys, paths, train_end, out):
    rc, _, err = run_cli(capsys, ["train", "trading", "--quiet", "--out", out, *with_sets([
        "env.kwargs.data=''", f"env.kwargs.assets={json.dumps(paths)}", f"train_end={train_end}",
        f"window={WINDOW}", f"validation_bars={VALIDATION}", "episode_length=16", "total_steps=600",
        "learner.learning_starts=200", "eval.every=0", "actors.num_actors=2", "learner.num_nets=2"])])
    assert rc == 0, err


def test_a_multi_asset_policy_backtests_any_csv_on_its_own_training_statistics(assets, tmp_path, capsys,
                                                                                 monkeypatch):
    paths, train_end = assets
    held_out = str(write_csv(make_ohlcv(BARS, seed=3, vol=0.02), tmp_path / "held_out.csv"))
    out = str(tmp_path / "run")
    train_multi(capsys, paths, train_end, out)
    rc, _, err = run_cli(capsys, ["backtest", out])
    assert_one_line_error(rc, err, "trained on several assets (calm.csv, wild.csv); pass --data CSV")
    from asyncdqn import checkpoint
    from asyncdqn.envs.trading.cli import checkpoint_walk

    ckpt = checkpoint.load(out)
    trading, _ = read_settings(settings(paths, train_end))
    for csv in (paths[1], held_out):
        kwargs, _, _ = checkpoint_walk(ckpt, out, csv)
        norm_end, test_first = training_and_test_dates(TradingConfig(**{**trading.__dict__, "data": csv, "assets": ()}))
        assert "norm_stats" not in kwargs and kwargs["norm_end"] == norm_end and kwargs["start"] == test_first
        walked = TradingEnv(**kwargs)
        alone = TradingEnv(data=csv, end=norm_end, window=WINDOW)  # fitted on its training bars alone
        assert np.array_equal(walked.norm.mean, alone.norm.mean) and walked.first_date > train_end
    rc, stdout, err = run_cli(capsys, ["backtest", out, "--data", held_out, "--out", str(tmp_path / "bt"),
                                       "--random-trials", "20"])
    assert rc == 0, err
    report = json.loads((tmp_path / "bt" / "report.json").read_text())
    assert report["start"] > train_end and report["data"] == held_out
    from asyncdqn.envs.trading import cli as trading_cli

    signalled = []
    real_next = trading_cli.next_position
    monkeypatch.setattr(trading_cli, "next_position", lambda env, act: signalled.append(env) or real_next(env, act))
    rc, stdout, err = run_cli(capsys, ["signal", out, "--data", held_out])
    assert rc == 0 and "for the next bar" in stdout, err
    norm_end = training_and_test_dates(TradingConfig(**{**trading.__dict__, "data": held_out, "assets": ()}))[0]
    assert signalled[0].norm_range[1] == norm_end  # the held-out CSV's own training bars, not a training asset's
