"""Env factories for the reliability tests (importable as `reliability_envs:<name>` through env.factory)."""

from __future__ import annotations

import gymnasium as gym


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
