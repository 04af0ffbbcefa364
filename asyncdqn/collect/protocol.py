"""The collection seam: what `runtime.run` needs of the actors' side of a run, as one `typing.Protocol`.

Place in the flow: actors -> queue -> **replay**, as the runtime sees it. The runtime talks to the actors
only through a `Collection`: `local.LocalCollection` (actor coroutines on the runtime's own event loop) or
`ray_learner.RayCollection` (actors in Ray processes). The learner, evaluation, checkpoints and metrics are
one code for both. A third backend is a new module whose class the type checker accepts as a
`CollectionFactory` (each backend module ends with that check; `make typecheck` runs it).

A collection moves chunks into the replay pool it was given, steps only within the step gate's limit (the
learner raises it), can park every actor between two steps so their state can be saved, and hands that
state back for a checkpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import gymnasium as gym
import numpy as np

from asyncdqn.config import RunConfig
from asyncdqn.envs.make import EnvSpec
from asyncdqn.nets import EnsembleQNet
from asyncdqn.schedule import StepGate
from asyncdqn.transitions import Chunk

EpisodeHook = Callable[[int, int, float, int], None]
"""Called at each episode's end with (global actor index, its net, the episode's return, its length)."""


class ReplaySink(Protocol):
    """Where a collection puts the chunks its actors made (the replay pool)."""

    def add(self, chunk: Chunk) -> None: ...


class Collection(Protocol):
    """The actors' side of a run, as the runtime uses it."""

    @property
    def num_actors(self) -> int:
        """N, the actors of the run (a checkpoint's actor states must number as many)."""
        ...

    async def start(self, tg: asyncio.TaskGroup, on_episode: EpisodeHook) -> list[asyncio.Task]:
        """Start the actors and their helpers in `tg`; the tasks to cancel once the run is quiesced."""
        ...

    async def settle(self) -> None:
        """Until every actor waits at the gate (the budget spent), with every chunk made so far in replay."""
        ...

    async def quiesce(self) -> None:
        """Grant no more steps; until every actor is parked between two steps and every chunk is in replay."""
        ...

    def actor_states(self) -> list[dict]:
        """Each actor's state for a checkpoint, in global actor order; call only after `quiesce`."""
        ...

    def load_actor_states(self, states: list[dict]) -> None:
        """Resume the actors from a checkpoint's `actor_states` (before `start`)."""
        ...

    def published(self, updates: int) -> None:
        """The runtime copied fresh weights into the acting nets after `updates` updates."""
        ...

    def queue_depth(self) -> int:
        """Chunks made but not in replay yet (for progress displays)."""
        ...

    def train_record(self) -> dict:
        """Collection figures for the periodic 'train' metrics record."""
        ...

    def summary(self) -> dict:
        """Collection figures for summary.json."""
        ...

    async def aclose(self) -> None:
        """Stop worker processes or hosts and close the envs."""
        ...


class CollectionFactory(Protocol):
    """How the runtime builds a collection: a backend's class satisfies this (its constructor's signature,
    and instances that are `Collection`s)."""

    def __call__(self, cfg: RunConfig, seq_actors: list[np.random.SeedSequence], train_kwargs: dict,
                 spec: EnvSpec, first_env: gym.Env, acting: EnsembleQNet, gate: StepGate, replay: ReplaySink,
                 ladder_N: np.ndarray, log: Callable[[dict], None]) -> Collection:
        """`first_env` told the runtime the env's spec (the collection reuses or closes it); `acting` is the
        nets the actors act with; `ladder_N` each actor's final epsilon; `log` takes metrics records."""
        ...
