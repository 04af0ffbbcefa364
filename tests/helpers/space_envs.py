"""Toy envs with the observation spaces asyncdqn flattens or refuses (tests/test_spaces.py).

`CueEnv`: a Dict observation {"cue": Discrete(3), "noise": Box(2)}; each of its 8 steps pays 1 when the action
names the cue and 0 otherwise, and a fresh cue comes with every step, so the optimum return is 8 and only a net
that reads the one-hot cue out of the flattened Dict reaches it (a random policy scores about 8/3).
`BoxActionEnv`: a Box action space, which DQN cannot take.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

CUE_STEPS = 8


class CueEnv(gym.Env):
    def __init__(self):
        self.observation_space = gym.spaces.Dict({"cue": gym.spaces.Discrete(3),
                                                  "noise": gym.spaces.Box(-1.0, 1.0, (2,), np.float32)})
        self.action_space = gym.spaces.Discrete(3)
        self.t, self.cue = 0, 0

    def _obs(self) -> dict:
        self.cue = int(self.np_random.integers(3))
        return {"cue": self.cue, "noise": self.np_random.uniform(-1, 1, 2).astype(np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self.cue)
        self.t += 1
        return self._obs(), reward, self.t >= CUE_STEPS, False, {}


class BoxActionEnv(gym.Env):
    def __init__(self):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, True, False, {}


def cue_env() -> gym.Env:
    return CueEnv()


def box_action_env() -> gym.Env:
    return BoxActionEnv()


class SpaceEnv(gym.Env):
    """Any observation space, observations sampled from it: for the flattening tests."""

    def __init__(self, space: gym.Space):
        self.observation_space, self.action_space = space, gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, True, False, {}


def space_env(space: gym.Space) -> gym.Env:
    return SpaceEnv(space)
