"""asyncdqn.envs: building the envs the actors step (`make`), and the envs that ship with asyncdqn.

Installed as `asyncdqn.envs` from the repo folder `envs/` (pyproject's `package-dir`):

    make.py     config -> gymnasium.Env for actors and evaluation (ids, `module:Env-v0` ids, factories)
    games.py    MinAtar and Atari factories (`env.factory = "asyncdqn.envs.games:minatar"`)
    trading/    daily OHLCV trading: market data, TradingEnv, its factory and config, backtest and its CLI

The engine builds every env through `make.make_env` from `env.id` / `env.factory` and `env.kwargs`; it never
names one of these envs. Importing this package registers "asyncdqn/Trading-v0" with gymnasium by entry
point string, so nothing heavy (pandas) is imported until that id is made. Registration checks the
registry first, so a re-import (a test runner's) is no re-registration warning.
"""

import gymnasium

TRADING_ENV_ID = "asyncdqn/Trading-v0"


def register_envs() -> None:
    """Register the shipped envs' gymnasium ids unless they already are (idempotent)."""
    if TRADING_ENV_ID not in gymnasium.envs.registry:
        gymnasium.register(id=TRADING_ENV_ID, entry_point="asyncdqn.envs.trading.env:TradingEnv")


register_envs()
