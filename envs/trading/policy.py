"""A saved trading policy meets new data: rebuild the env it was trained on, and refuse a mismatch.

Place in the flow: between a checkpoint's trading metadata (`TradingEnv.policy_metadata`, stored by the
runtime) and the backtest (`backtest.run_backtest`, the `asyncdqn backtest` command).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pandas as pd

from asyncdqn.envs.trading.env import TradingEnv
from asyncdqn.envs.trading.market_data import DataError
from asyncdqn.envs.trading.multi import PER_ASSET
from asyncdqn.errors import brief


class PolicyMismatchError(DataError):
    """The data/env a policy is applied to does not produce the observations it was trained on."""


def env_kwargs_from_metadata(metadata: Mapping[str, Any], data: str | os.PathLike | pd.DataFrame, *,
                             start: str | None = None, end: str | None = None, cost_bps: float | None = None,
                             slippage_bps: float | None = None, fill: str | None = None,
                             date_format: str | None = None, dayfirst: bool = False,
                             dropna: bool = False) -> dict[str, Any]:
    """TradingEnv kwargs that rebuild a policy's observations on `data`.

    cost_bps, slippage_bps and fill may be overridden (they change execution, not observations); window, positions,
    min_hold and normalisation come from the metadata. Raises PolicyMismatchError when the metadata is incomplete.
    """
    source = data if isinstance(data, (str, os.PathLike)) else "<DataFrame>"
    needed = ("feature_names", "window", "positions", "norm_mean", "norm_std", "fill", "cost_bps")
    lacking = [key for key in needed if key not in metadata]
    if lacking:
        raise PolicyMismatchError(str(source), f"policy metadata lacks {', '.join(lacking)}; not a trading policy?")
    return {"data": data, "start": start, "end": end, "window": int(metadata["window"]),
            "positions": tuple(float(p) for p in metadata["positions"]),
            "cost_bps": float(metadata["cost_bps"] if cost_bps is None else cost_bps),
            # a policy saved before slippage was a setting of its own paid none
            "slippage_bps": float(metadata.get("slippage_bps", 0.0) if slippage_bps is None else slippage_bps),
            "fill": str(metadata["fill"] if fill is None else fill), "episode_length": None,
            "min_hold": int(metadata.get("min_hold", 1)),  # a rule of the policy: saved before it was one, 1 = none
            "norm_stats": {"mean": list(metadata["norm_mean"]), "std": list(metadata["norm_std"])},
            "date_format": date_format, "dayfirst": dayfirst, "dropna": dropna}


def check_policy_metadata(metadata: Mapping[str, Any], env: TradingEnv) -> None:
    """Raise PolicyMismatchError (one line) unless `env` yields the observations the policy was trained on."""
    mine = env.policy_metadata()
    keys = ("metadata_version", "feature_names", "feature_warmup", "obs_clip", "window", "positions", "obs_dim")
    if metadata.get("normalisation") != PER_ASSET:  # per asset: each CSV is normalised on its own training bars
        keys += ("norm_mean", "norm_std")
    for key in keys:
        if key not in metadata:
            raise PolicyMismatchError(env.data_source, f"policy metadata lacks {key!r}; not a trading policy?")
        theirs = metadata[key]
        same = list(theirs) == mine[key] if isinstance(mine[key], list) else theirs == mine[key]
        if not same:
            raise PolicyMismatchError(env.data_source, f"does not match the policy: {key} is {brief(mine[key])} "
                                                       f"here but {brief(theirs)} in the policy")


def make_env_for_policy(metadata: Mapping[str, Any], data: str | os.PathLike | pd.DataFrame,
                        **overrides: Any) -> TradingEnv:
    """A walk-the-range TradingEnv on `data` for a saved policy, verified against its metadata."""
    env = TradingEnv(**env_kwargs_from_metadata(metadata, data, **overrides))
    check_policy_metadata(metadata, env)
    return env
