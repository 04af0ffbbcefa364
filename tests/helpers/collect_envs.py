"""A tiny env for the collection tests, built through `env.factory = "helpers.collect_envs:clock_env"`
(importable by env worker processes too: tests/ is on their sys.path)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import TimeLimit


class Clock(gym.Env):
    """obs = [t], the step within the episode; every action taken is appended to `actions` (across
    episodes). With `terminates` the episode terminates at step `length`, else it never ends by itself."""

    def __init__(self, n_actions: int, length: int, terminates: bool):
        self.observation_space = gym.spaces.Box(0.0, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(n_actions)
        self.length, self.terminates = length, terminates
        self.t = 0
        self.actions: list[int] = []

    def _obs(self) -> np.ndarray:
        return np.array([self.t], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.actions.append(int(action))
        self.t += 1
        return self._obs(), 1.0, self.terminates and self.t >= self.length, False, {}


def clock_env(n_actions: int = 100, length: int = 5, terminates: bool = True) -> gym.Env:
    """A `Clock`; one that does not terminate is truncated by gymnasium's TimeLimit at `length` steps."""
    env = Clock(n_actions, length, terminates)
    return env if terminates else TimeLimit(env, max_episode_steps=length)
