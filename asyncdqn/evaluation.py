"""Greedy evaluation on env copies that training never touches.

Place in the flow: beside the learner; the runtime calls it periodically (in a worker thread, on a frozen
copy of the policy) and once at the end; `asyncdqn eval` calls it on a checkpoint (`load_policy`, which
`export` and `--record` use too).

Blocking: `evaluate` steps envs and runs forwards; call it through `asyncio.to_thread` from a coroutine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import gymnasium as gym
import numpy as np

if TYPE_CHECKING:  # the runtime imports this module; checkpoint and config are imported where they are used
    from asyncdqn.config import RunConfig
    from asyncdqn.nets import GreedyPolicy


class SavedPolicy(NamedTuple):
    """A saved run's greedy policy, with what evaluating it needs."""

    path: Path                          # the checkpoint file
    policy: GreedyPolicy
    config: RunConfig
    make_env: Callable[[], gym.Env]     # the run's evaluation env
    env_name: str


def load_policy(run: str | Path) -> SavedPolicy:
    """The greedy policy of a run folder or checkpoint, checked to fit the run's evaluation env (what `eval`,
    `export` and `--record` act with). Every problem is a one-line UserError."""
    from asyncdqn import checkpoint
    from asyncdqn.envs.make import env_kwargs, make_env, spec_of

    path = checkpoint.resolve(run)
    ckpt = checkpoint.load(path)
    policy = checkpoint.policy_from(ckpt)
    cfg = checkpoint.config_from(ckpt)
    kwargs = env_kwargs(cfg, evaluation=True)
    name = cfg.env.factory or cfg.env.id
    probe = make_env(cfg.env, kwargs)
    try:
        spec = spec_of(probe)
    finally:
        probe.close()
    checkpoint.check_fits(policy, spec.obs_shape, spec.n_actions, name)
    return SavedPolicy(path, policy, cfg, lambda: make_env(cfg.env, kwargs), name)


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
