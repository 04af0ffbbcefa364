"""Env factories for the reliability tests (importable as `reliability_envs:<name>` through env.factory)."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import FrameStackObservation


class NanReward(gym.Wrapper):
    """CartPole whose every reward is NaN: every TD loss is NaN, so every update must be skipped."""

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        return obs, float("nan"), terminated, truncated, info


def nan_reward_cartpole() -> gym.Env:
    return NanReward(gym.make("CartPole-v1"))


class ExplodingReward(gym.Wrapper):
    """CartPole with rewards of 1e12: Q-values pass any sane `learner.q_limit` within a few updates."""

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        return obs, 1e12, terminated, truncated, info


def exploding_cartpole() -> gym.Env:
    return ExplodingReward(gym.make("CartPole-v1"))


class DiesAt(gym.Wrapper):
    """CartPole whose worker process dies (os._exit) at its `at`-th step, once per marker file: the first
    env to get there creates the marker and dies; later ones (and the replacement) go on."""

    def __init__(self, env: gym.Env, marker: str, at: int, always: bool):
        super().__init__(env)
        self.marker, self.at, self.always, self.t = marker, at, always, 0

    def step(self, action):
        self.t += 1
        if self.t == self.at and (self.always or not os.path.exists(self.marker)):
            open(self.marker, "w").close()
            os._exit(3)
        return self.env.step(action)


def cartpole_worker_dies(marker: str, at: int = 50, always: bool = False) -> gym.Env:
    return DiesAt(gym.make("CartPole-v1"), marker, at, always)


class TinyFrames(gym.Env):
    """8x8 uint8 frames of a moving dot (two actions: left, right); episodes of 20..40 steps."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(0, 255, (8, 8), np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.x, self.t, self.length = 0, 0, 0

    def _frame(self) -> np.ndarray:
        frame = np.zeros((8, 8), np.uint8)
        frame[self.t % 8, self.x] = 255
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t, self.length = int(self.np_random.integers(8)), 0, int(self.np_random.integers(20, 41))
        return self._frame(), {}

    def step(self, action):
        self.x = min(7, max(0, self.x + (1 if action else -1)))
        self.t += 1
        return self._frame(), float(self.x == 7), self.t >= self.length, False, {}


def stacked_tiny_frames() -> gym.Env:
    """(4, 8, 8) stacks of TinyFrames, as Atari's FrameStackObservation makes them."""
    return FrameStackObservation(TinyFrames(), 4)
