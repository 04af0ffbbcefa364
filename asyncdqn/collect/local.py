"""Collection in this process: the actor coroutines, their inference batcher, the bounded queue, env workers.

Place in the flow: actors -> **queue** -> replay, as the runtime sees it: the local backend of the
`protocol.Collection` seam (the other is `ray_learner.RayCollection`, whose actors live in Ray processes).
It takes steps from the step gate the learner raises, moves chunks into the replay pool, can park every
actor between two steps (`settle`, `quiesce`) so their state can be saved, and hands back each actor's
state for a checkpoint.

Blocking: nothing here blocks the loop except env steps of envs stepped on it (`actors.env_workers = 0`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np

from asyncdqn.collect.actor import EnvFaults, InferenceBatcher, make_actor
from asyncdqn.collect.protocol import EpisodeHook, ReplaySink
from asyncdqn.collect.vector_actor import VectorActor, make_vector_actor
from asyncdqn.collect.workers import EnvWorkerPool, WorkerDeath
from asyncdqn.config import RunConfig
from asyncdqn.envs.make import EnvSpec, worker_env
from asyncdqn.nets import EnsembleQNet
from asyncdqn.schedule import StepGate, epsilon_at, epsilon_schedule
from asyncdqn.transitions import Chunk


def _worker_pool(cfg: RunConfig, train_kwargs: dict, spec: EnvSpec,
                 log: Callable[[dict], None]) -> EnvWorkerPool | None:
    """The env worker processes (`actors.env_workers`), or None when the envs step on the event loop."""
    if cfg.actors.env_workers == 0:
        return None

    def died(d: WorkerDeath) -> None:
        log({"kind": "env_fault", "worker": d.worker, "exit_code": d.exitcode, "envs": list(d.envs),
             "worker_restarts": d.restarts, "error": f"env worker {d.worker} died (exit code {d.exitcode})"})

    return EnvWorkerPool(functools.partial(worker_env, cfg.env, train_kwargs, cfg.faults.env_error_rate),
                         cfg.actors.num_actors, None if cfg.actors.env_workers < 0 else cfg.actors.env_workers,
                         spec.obs_shape, spec.obs_dtype, max_restarts=cfg.faults.max_worker_restarts,
                         on_worker_died=died)


class LocalCollection:
    """All N actors as coroutines on this event loop, one batched forward per tick on `acting` (the runtime
    copies the learner's nets into it after every learner call), chunks through a bounded asyncio.Queue."""

    def __init__(self, cfg: RunConfig, seq_actors: list[np.random.SeedSequence], train_kwargs: dict,
                 spec: EnvSpec, first_env: gym.Env, acting: EnsembleQNet, gate: StepGate, replay: ReplaySink,
                 ladder_N: np.ndarray, log: Callable[[dict], None]):
        self.gate, self.replay = gate, replay
        self.batcher = InferenceBatcher(acting, cfg.actors.num_actors, spec.obs_shape, spec.obs_dtype)
        self.queue: asyncio.Queue[Chunk] = asyncio.Queue(maxsize=cfg.actors.queue_chunks)
        self.faults = EnvFaults(cfg.faults.max_env_restarts, cfg.faults.restart_backoff_s, log)
        self.pool = _worker_pool(cfg, train_kwargs, spec, log)
        if self.pool is not None:
            first_env.close()  # it told us the spec; the training envs live in the workers
        width = cfg.actors.envs_per_actor
        if width == 1:
            self.actors: list = [make_actor(cfg, i, seq_actors[i], train_kwargs, spec,
                                            first_env if i == 0 else None, self.pool)
                                 for i in range(cfg.actors.num_actors)]
            self.epsilon = epsilon_schedule(ladder_N, cfg.actors.eps_anneal_steps, lambda: gate.steps)
        else:  # vector actors: first_env only told the spec
            first_env.close()
            self.actors = [make_vector_actor(cfg, b, seq_actors[b: b + width], train_kwargs, spec)
                           for b in range(0, cfg.actors.num_actors, width)]
            anneal = cfg.actors.eps_anneal_steps
            self.epsilon = lambda ids_W: epsilon_at(ladder_N[ids_W], anneal, gate.steps)

    @property
    def num_actors(self) -> int:
        return sum(getattr(a, "width", 1) for a in self.actors)

    def actor_states(self) -> list[dict]:
        """Each actor's state (a vector actor's: one per sub-env); call only after `quiesce` (every actor
        parked between two steps)."""
        return [s for a in self.actors for s in (a.state_dicts() if isinstance(a, VectorActor) else [a.state_dict()])]

    def load_actor_states(self, states: list[dict]) -> None:
        for actor in self.actors:
            if isinstance(actor, VectorActor):
                actor.load_state_dicts(states[actor.index: actor.index + actor.width])
            else:
                actor.load_state_dict(states[actor.index])

    def published(self, updates: int) -> None:
        """The runtime copied fresh weights into `acting`; the batcher forwards with it directly."""

    async def start(self, tg: asyncio.TaskGroup, on_episode: EpisodeHook) -> list[asyncio.Task]:
        """Start the actors and their helpers in `tg`; the tasks to cancel once the run is quiesced."""
        if self.pool is not None:
            await self.pool.start()

        async def consume() -> None:
            while True:
                self.replay.add(await self.queue.get())

        return [tg.create_task(self.batcher.serve()), tg.create_task(consume()),
                *[tg.create_task(a.run(self.batcher, self.gate, self.queue, self.epsilon, on_episode, self.faults))
                  for a in self.actors]]

    def _drain(self) -> None:
        while not self.queue.empty():
            self.replay.add(self.queue.get_nowait())

    async def settle(self) -> None:
        """Until every actor waits at the gate (the budget spent), with every queued chunk in the pool."""
        await self.gate.wait_parked(len(self.actors))
        self._drain()

    async def quiesce(self) -> None:
        """Let every actor finish its step and park at the gate, and move every queued chunk to replay."""
        self.gate.freeze()
        await self.settle()

    def queue_depth(self) -> int:
        return self.queue.qsize()

    def train_record(self) -> dict:
        """Collection figures for the periodic 'train' record."""
        return {"queue_depth": self.queue.qsize(),
                "actors_per_forward": self.batcher.requests / max(1, self.batcher.forwards)}

    def summary(self) -> dict:
        return {"env_faults": self.faults.total,
                "actors_per_forward": round(self.batcher.requests / max(1, self.batcher.forwards), 2)}

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()
        for a in self.actors:
            if a.env is not None:
                a.env.close()


if TYPE_CHECKING:  # `make typecheck`: the class builds, and is, a protocol.Collection
    from asyncdqn.collect.protocol import CollectionFactory

    _conforms: CollectionFactory = LocalCollection
