"""Trading on daily OHLCV bars: a domain that plugs into the engine through `env.factory` like any env.

    market_data.read_ohlcv (strict CSV loader; dates.py: date formats)
    --> env.TradingEnv (features, fills, costs, reward; registered as "asyncdqn/Trading-v0")
    --> config.make (the trading scenario's factory: TradingConfig from env.kwargs, train/validation/test split)
    --> actors and evaluation (the engine)                 ... then, after training:
    policy (a saved policy's env, refused on mismatch) --> backtest (walk, metrics; periods: periods per year
    from the timestamps) --> stats (gross metrics, information ratio, PSR/DSR, random policies of equal
    turnover) --> report (files, tables)
    cli.backtest_command (`asyncdqn backtest`), cli.signal_command (`asyncdqn signal`: the next bar's position)

The shipped CSVs are package data of `asyncdqn.data` (market_data.shipped_csv).
"""

from asyncdqn.envs import TRADING_ENV_ID as ENV_ID
from asyncdqn.envs.trading.config import FACTORY, TradingConfig, heldout_kwargs, make, scenario_kwargs
from asyncdqn.envs.trading.env import DEFAULT_DATA, FEATURE_NAMES, NormStats, TradingEnv
from asyncdqn.envs.trading.market_data import DataError, LoadedOHLCV, load_ohlcv, read_ohlcv
from asyncdqn.envs.trading.policy import (
    PolicyMismatchError,
    check_policy_metadata,
    env_kwargs_from_metadata,
    make_env_for_policy,
)

__all__ = [
    "DEFAULT_DATA", "ENV_ID", "FACTORY", "FEATURE_NAMES", "DataError", "LoadedOHLCV",
    "NormStats", "PolicyMismatchError", "TradingConfig", "TradingEnv", "check_policy_metadata",
    "env_kwargs_from_metadata", "heldout_kwargs", "load_ohlcv", "make", "make_env_for_policy", "read_ohlcv",
    "scenario_kwargs",
]
