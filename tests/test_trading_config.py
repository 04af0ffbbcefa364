"""The trading scenario's door into the engine: its factory (asyncdqn.envs.trading:make) and settings in
env.kwargs, TOML dates, bare `--set` names, and an engine that never names trading (issue 17)."""

from __future__ import annotations

import ast
import datetime
from pathlib import Path

import pytest

from asyncdqn import config
from asyncdqn.envs.make import env_kwargs, make_env
from asyncdqn.envs.trading import (
    DEFAULT_DATA, FACTORY, DataError, TradingConfig, TradingEnv, heldout_kwargs, scenario_kwargs)
from asyncdqn.envs.trading.config import read_settings
from asyncdqn.errors import UserError
from asyncdqn.fields import field_docs

REPO = Path(__file__).resolve().parents[1]


def test_the_scenario_builds_its_envs_through_the_factory_with_the_purge_gaps():
    cfg = config.load("trading")
    assert cfg.env.factory == FACTORY
    train = make_env(cfg.env, env_kwargs(cfg, evaluation=False)).unwrapped
    validation = make_env(cfg.env, env_kwargs(cfg, evaluation=True)).unwrapped
    assert isinstance(train, TradingEnv) and train.data_source == str(DEFAULT_DATA)
    assert train.episode_length == 256 and train.positions == (-1.0, 0.0, 1.0)
    # the evaluation copies walk the last 252 bars up to train_end; training stops 32 purged bars before them
    dates = list(train._dates)
    end = dates.index("2016-12-30")
    assert (validation.first_date, validation.last_date) == (dates[end - 251], "2016-12-30")
    assert train.last_date == dates[end - 251 - 33] and validation.episode_length is None
    assert validation.policy_metadata()["norm_end"] == train.last_date
    trading, _ = read_settings(cfg.env.kwargs)
    held_out = TradingEnv(**heldout_kwargs(trading))  # what `asyncdqn backtest RUN_DIR` walks
    assert (held_out.first_date, held_out.last_date) == (dates[end + 33], "2018-08-29")


def test_toml_dates_are_accepted_and_kept_as_text():
    # the README's command: `--set train_end=2016-12-30` arrives as a datetime.date
    cfg = config.load("trading", ["train_end=2016-12-30", "window=16"])
    assert cfg.env.kwargs["train_end"] == "2016-12-30" and cfg.env.kwargs["window"] == 16
    assert config.from_dict(config.to_dict(cfg)) == cfg  # plain values only: a checkpoint can hold them
    trading, evaluation = read_settings({"train_end": datetime.date(2016, 12, 30), "evaluation": True})
    assert trading.train_end == "2016-12-30" and evaluation is True
    stamp = config.load("trading", ["env.eval_kwargs.start=2017-06-01T00:00:00"]).env.eval_kwargs["start"]
    assert stamp == "2017-06-01T00:00:00"
    env = TradingEnv(end=datetime.date(2016, 12, 30), window=8)  # the env itself takes date objects too
    assert env.last_date == "2016-12-30"


@pytest.mark.parametrize(("settings", "fragment"), [
    ({"windw": 8}, "unknown key 'env.kwargs.windw'"),
    ({"window": "8"}, "env.kwargs.window expects int, got str '8'"),
    ({"train_end": 20161230}, "env.kwargs.train_end expects date, got int"),
    ({"fill": "noon"}, "env.kwargs.fill must be 'open' or 'close'"),
    ({"evaluation": "yes"}, "env.kwargs.evaluation expects bool"),
])
def test_bad_settings_are_one_line_user_errors_naming_the_key(settings, fragment):
    with pytest.raises(UserError, match=fragment):
        read_settings(settings)


def test_bare_set_names_reach_the_env_kwargs_and_stay_unambiguous():
    values = {"env": {"kwargs": {"window": 8, "episodes": 3}}}
    assert config.apply_overrides(values, ["window=16"])["env"]["kwargs"]["window"] == 16
    with pytest.raises(UserError, match="ambiguous; use one of eval.episodes, env.kwargs.episodes"):
        config.apply_overrides(values, ["episodes=2"])
    with pytest.raises(UserError, match="unknown key 'window'"):
        config.apply_overrides({}, ["window=16"])  # no env takes it: not silently added


def test_data_errors_are_user_errors_and_missing_data_is_one_line(tmp_path):
    assert issubclass(DataError, UserError) and issubclass(DataError, ValueError)
    trading = TradingConfig(data=str(tmp_path / "none.csv"), train_end="2016-12-30")
    with pytest.raises(DataError, match="none.csv: file not found"):
        scenario_kwargs(trading, evaluation=True)


def test_readme_lists_every_trading_setting():
    readme = (REPO / "README.md").read_text().splitlines()
    for name, doc in field_docs(TradingConfig).items():
        assert f"  {name:<20} {doc}" in readme, name


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_engine_never_names_trading():
    """Only the CLI's `backtest` command reaches the trading package; no other engine module imports it,
    names its env id, or has a trading section in its config."""
    for path in sorted((REPO / "asyncdqn").glob("*.py")):
        text = path.read_text()
        imports = {m for m in _imported_modules(path) if "trading" in m}
        if path.name == "cli.py":
            assert imports == {"asyncdqn.envs.trading.cli"}
            continue
        assert not imports and "Trading-v0" not in text and "TradingConfig" not in text, path.name
    assert "trading" not in config.SECTION_TYPES
