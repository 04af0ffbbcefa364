"""Envs for the env-worker tests, importable by worker processes (tests/ is on their sys.path).

`CountingEnv` is deterministic given its reset seed, and two actions trigger faults on purpose:
POISON raises inside `step`; NAP sleeps there, so a test can kill the worker while a call is in flight.
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np

POISON = 7
NAP = 8
NAP_S = 2.0


class CountingEnv(gym.Env):
    """obs = [a value drawn at reset, step count, last action]; episodes of 3..12 steps."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(9)
        self.t, self.length, self.value, self.last = 0, 0, 0.0, 0

    def _obs(self) -> np.ndarray:
        return np.array([self.value, self.t, self.last], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.last = 0, 0
        self.length = int(self.np_random.integers(3, 13))
        self.value = float(self.np_random.random())
        return self._obs(), {"length": self.length}

    def step(self, action):
        if action == POISON:
            raise RuntimeError("poisoned action")
        if action == NAP:
            time.sleep(NAP_S)
        self.t += 1
        self.last = int(action)
        reward = self.value * self.t + int(action)
        return self._obs(), reward, self.t >= self.length, False, {"t": self.t, "note": "dropped (not a scalar)"}


def make_counting() -> gym.Env:
    return CountingEnv()


def make_cartpole() -> gym.Env:
    return gym.make("CartPole-v1")
