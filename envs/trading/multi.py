"""Several assets behind one env: training episodes draw an asset, the validation walk takes every asset in turn.

Place in the flow: config.make builds one TradingEnv per asset (each with its own train / validation / test
split of its own dates, and its own normalisation fitted on its own training bars, config.scenario_kwargs) and
puts them behind a `MultiAssetEnv`; the engine sees one env like any other (issue 14: "each episode drawing
one asset, with normalisation per asset from its own training range").

    training (sequential=False): reset() draws asset i uniformly with this env's generator, then resets
        asset i's env with a seed drawn from the same generator (its random start bar); the episode is asset
        i's, its end is asset i's end.
    evaluation (sequential=True): one episode walks asset 0's validation slice, then asset 1's, ..., each from
        flat with equity 1; rewards are log equity growth, so the episode's return is the sum over assets of
        log(final equity), every asset weighted alike. The step that ends asset i's walk returns asset i+1's
        first observation and is not terminal; the last asset's end is.

A policy trained here has no single normalisation: its metadata says `normalisation = "per_asset"` and lists
the assets; a backtest or a signal on any CSV (a training asset or a held-out one) fits that CSV's statistics
on its own training range under the run's split (cli.checkpoint_walk), never on the bars it walks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from asyncdqn.envs.trading.env import TradingEnv
from asyncdqn.envs.trading.market_data import DataError

PER_ASSET = "per_asset"  # the policy metadata's `normalisation` for a policy trained on several assets


def asset_paths(assets: tuple | list) -> list[str]:
    """CSV paths from `assets`: files as given, folders expanded to their *.csv files (sorted). DataError (one
    line) for a missing path, an empty folder, or fewer than one CSV in all."""
    paths: list[str] = []
    for item in assets:
        path = Path(str(item))
        if path.is_dir():
            found = sorted(p for p in path.glob("*.csv") if p.is_file())
            if not found:
                raise DataError(str(path), "folder holds no .csv file")
            paths += [str(p) for p in found]
        elif path.is_file():
            paths.append(str(path))
        else:
            raise DataError(str(path), "no such file or folder")
    if not paths:
        raise DataError("env.kwargs.assets", "names no CSV")
    return paths


class MultiAssetEnv(gym.Env):
    """TradingEnvs with one observation and action space, as one env (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, envs: list[TradingEnv], *, sequential: bool):
        if not envs:
            raise ValueError("MultiAssetEnv needs at least one env")
        first = envs[0]
        for env in envs[1:]:
            if env.observation_space != first.observation_space or env.action_space != first.action_space:
                raise DataError(env.data_source, f"its observations or positions differ from {first.data_source}'s")
        self.envs, self.sequential = envs, sequential
        self.observation_space, self.action_space = first.observation_space, first.action_space
        self.asset = 0

    @property
    def data_sources(self) -> list[str]:
        return [env.data_source for env in self.envs]

    def _reset_asset(self, i: int, options: dict | None) -> tuple[np.ndarray, dict]:
        self.asset = i
        obs, info = self.envs[i].reset(seed=int(self.np_random.integers(2**31)), options=options)
        return obs, {**info, "asset": i}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        first = 0 if self.sequential else int(self.np_random.integers(len(self.envs)))
        return self._reset_asset(first, options)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.envs[self.asset].step(action)
        info = {**info, "asset": self.asset}
        if self.sequential and (terminated or truncated) and self.asset + 1 < len(self.envs):
            obs, _ = self._reset_asset(self.asset + 1, None)
            terminated = truncated = False
        return obs, reward, terminated, truncated, info

    def policy_metadata(self) -> dict[str, Any]:
        """The first asset's metadata (window, positions, features, costs: the same for all), marked per-asset:
        its norm_mean/norm_std are that asset's alone and are not used to rebuild observations."""
        return {**self.envs[0].policy_metadata(), "normalisation": PER_ASSET, "assets": self.data_sources}

    def close(self) -> None:
        for env in self.envs:
            env.close()
