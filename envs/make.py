"""Making environments from the config: gymnasium ids, third-party `module:Env-v0` ids, factories.

Place in the flow: feeds actors and evaluation. Any failure to build an env is a UserError (one line).
Every env comes through the same door: `env.factory(**kwargs)` or `gymnasium.make(env.id, **kwargs)`, with
`env.kwargs` (plus `env.eval_kwargs` for evaluation copies). Nothing here knows a particular env; the ids of
the envs shipped in this package are registered by importing it (asyncdqn/envs/__init__.py).

Observation spaces (as SB3 reads them): a Box goes to the net as it is; a Discrete(N) one reaches replay as one
integer per row and the net one-hot encodes it (EnvSpec.obs_classes); MultiDiscrete, MultiBinary, Dict and
Tuple are flattened here by gymnasium's FlattenObservation (Discrete parts one-hot, image keys flattened too:
no conv torso), for training and evaluation envs alike.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple

import gymnasium as gym
import numpy as np

from asyncdqn.config import EnvConfig, RunConfig
from asyncdqn.errors import UserError, first_line


_FLATTENED = (gym.spaces.MultiDiscrete, gym.spaces.MultiBinary, gym.spaces.Dict, gym.spaces.Tuple)


class EnvSpec(NamedTuple):
    obs_shape: tuple
    obs_dtype: np.dtype
    n_actions: int
    obs_classes: int = 0  # N for Discrete(N) observations (shape (), integers), 0 for Box ones

    @property
    def obs_size(self) -> int:
        return int(np.prod(self.obs_shape))


def _factory(path: str) -> Callable[..., gym.Env]:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"env factory {path!r}: cannot import {module_name!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"env factory {path!r}: {module_name} has no callable {attr!r}")
    return fn


def env_kwargs(config: RunConfig, evaluation: bool) -> dict:
    """kwargs for the env: `env.kwargs`, overridden by `env.eval_kwargs` for the evaluation copies."""
    return {**config.env.kwargs, **(config.env.eval_kwargs if evaluation else {})}


def make_env(env_cfg: EnvConfig, kwargs: dict) -> gym.Env:
    """Build one env; the returned env keeps gymnasium's own wrappers (TimeLimit etc.)."""
    try:
        if env_cfg.factory:
            env = _factory(env_cfg.factory)(**kwargs)
        else:
            env = gym.make(env_cfg.id, **kwargs)
    except UserError:
        raise
    except gym.error.Error as exc:
        raise UserError(f"unknown or unusable env {env_cfg.id!r}: {first_line(exc, 400)}") from None
    except (ImportError, ModuleNotFoundError) as exc:
        raise UserError(f"env {env_cfg.factory or env_cfg.id!r}: cannot import its module ({exc})") from None
    except (TypeError, ValueError, FileNotFoundError) as exc:
        name = env_cfg.factory or env_cfg.id
        raise UserError(f"env {name!r} could not be built: {first_line(exc, 400)}") from None
    if not isinstance(env, gym.Env):
        raise UserError(f"env factory {env_cfg.factory!r} returned {type(env).__name__}, not a gymnasium.Env")
    return flattened(env)


def flattened(env: gym.Env) -> gym.Env:
    """The env, its observations flattened to a Box if they are MultiDiscrete, MultiBinary, Dict or Tuple (or
    Discrete with start != 0, which one-hot encodes them: the compact path assumes 0..N-1)."""
    space = env.observation_space
    offset = isinstance(space, gym.spaces.Discrete) and int(space.start) != 0
    if not (isinstance(space, _FLATTENED) or offset):
        return env
    try:
        return gym.wrappers.FlattenObservation(env)
    except (NotImplementedError, TypeError, ValueError) as exc:
        raise UserError(f"cannot flatten the observation space {space} ({first_line(exc, 200)}); "
                        f"{_OBS_HINT}") from None


_OBS_HINT = ("asyncdqn reads Box, Discrete, MultiDiscrete, MultiBinary and Dict/Tuple of those: wrap the env in a "
             "gymnasium.ObservationWrapper that returns a Box (an env.factory)")


def spec_of(env: gym.Env) -> EnvSpec:
    """Shape, dtype and action count; DQN needs a Discrete action space, and a Box or Discrete observation
    space (what `make_env` leaves after flattening the others)."""
    if isinstance(env.action_space, gym.spaces.Box):
        raise UserError(f"DQN needs a Discrete action space; this env has {env.action_space}: discretise it with "
                        f"gymnasium.wrappers.DiscretizeAction(env, bins=5) (gymnasium >= 1.1) in an env.factory")
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise UserError(f"DQN needs a Discrete action space; this env has {env.action_space}")
    space = env.observation_space
    if isinstance(space, gym.spaces.Discrete):
        return EnvSpec((), np.dtype(np.int64), int(env.action_space.n), int(space.n))
    if not isinstance(space, gym.spaces.Box):
        raise UserError(f"this env's observation space is {space}; {_OBS_HINT}")
    dtype = np.dtype(np.uint8) if space.dtype == np.uint8 else np.dtype(np.float32)
    return EnvSpec(tuple(space.shape), dtype, int(env.action_space.n))


class InjectedFault(RuntimeError):
    """Raised by FaultInjector: a made-up env failure."""


class FaultInjector(gym.Wrapper):
    """Raises InjectedFault in `step` or `reset` with probability `rate` (`faults.env_error_rate`), from its
    own generator, so tests and demos can show that actors restart failed envs and the run goes on."""

    def __init__(self, env: gym.Env, rate: float, rng: np.random.Generator):
        super().__init__(env)
        self.rate, self.rng = rate, rng

    def _maybe_fail(self, where: str) -> None:
        if self.rng.random() < self.rate:
            raise InjectedFault(f"injected fault in {where} (faults.env_error_rate = {self.rate})")

    def reset(self, **kwargs):
        self._maybe_fail("reset")
        return self.env.reset(**kwargs)

    def step(self, action):
        self._maybe_fail("step")
        return self.env.step(action)


def worker_env(env_cfg: EnvConfig, kwargs: dict, fault_rate: float = 0.0) -> gym.Env:
    """A training env built inside an env worker process (module level, so it pickles). Injected faults
    draw from a fresh generator there: fault timing is not reproducible across workers."""
    env = make_env(env_cfg, kwargs)
    return FaultInjector(env, fault_rate, np.random.default_rng()) if fault_rate > 0 else env
