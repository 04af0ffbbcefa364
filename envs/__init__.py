"""Environments fed by the actors; this package never imports asyncdqn (imports point one way).

    envs.market_data (strict OHLCV loader) --> envs.trading (TradingEnv) --> asyncdqn actors / backtest

Importing the package registers "asyncdqn/Trading-v0" with gymnasium. Registration checks the registry
first, so importing twice (or a re-import by a test runner) is harmless instead of a re-registration warning.
"""

import gymnasium

from envs.market_data import DataError, DataOrderWarning, LoadedOHLCV, load_ohlcv, read_ohlcv
from envs.trading import (
    ENV_ID,
    FEATURE_NAMES,
    NormStats,
    PolicyMismatchError,
    TradingEnv,
    check_policy_metadata,
    env_kwargs_from_metadata,
    make_env_for_policy,
)


def register_envs() -> None:
    """Register TradingEnv under ENV_ID unless it already is (idempotent)."""
    if ENV_ID not in gymnasium.envs.registry:
        gymnasium.register(id=ENV_ID, entry_point="envs.trading:TradingEnv")


register_envs()

__all__ = [
    "ENV_ID", "FEATURE_NAMES", "DataError", "DataOrderWarning", "LoadedOHLCV", "NormStats", "PolicyMismatchError",
    "TradingEnv", "check_policy_metadata", "env_kwargs_from_metadata", "load_ohlcv", "make_env_for_policy",
    "read_ohlcv", "register_envs",
]
