"""Greedy evaluation on env copies that training never touches.

Place in the flow: beside the learner; the runtime calls it periodically (in a worker thread, on a frozen
copy of the policy) and once at the end; `asyncdqn eval` calls it on a checkpoint.

Blocking: `evaluate` steps envs and runs forwards; call it through `asyncio.to_thread` from a coroutine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import gymnasium as gym
import numpy as np


class EvalResult(NamedTuple):
    returns: np.ndarray
    lengths: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def std(self) -> float:
        return float(self.returns.std())


def evaluate(make_env: Callable[[], gym.Env], policy: Callable[[np.ndarray], np.ndarray], episodes: int,
             seed: int, parallel: int = 10) -> EvalResult:
    """Run `episodes` greedy episodes, `parallel` envs at a time with one batched forward per step.

    Episode j resets with seed `seed + j`, so the same seed always evaluates on the same starts.
    """
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    envs = [make_env() for _ in range(min(parallel, episodes))]
    try:
        next_ep = 0
        live: dict[int, int] = {}  # env slot -> episode index
        obs = [None] * len(envs)
        for s, env in enumerate(envs):
            obs[s], _ = env.reset(seed=seed + next_ep)
            live[s] = next_ep
            next_ep += 1
        while live:
            slots = list(live)
            actions = policy(np.stack([obs[s] for s in slots]))
            for s, a in zip(slots, actions):
                obs[s], r, term, trunc, _ = envs[s].step(int(a))
                ep = live[s]
                returns[ep] += float(r)
                lengths[ep] += 1
                if term or trunc:
                    if next_ep < episodes:
                        obs[s], _ = envs[s].reset(seed=seed + next_ep)
                        live[s] = next_ep
                        next_ep += 1
                    else:
                        del live[s]
    finally:
        for env in envs:
            env.close()
    return EvalResult(returns, lengths)
