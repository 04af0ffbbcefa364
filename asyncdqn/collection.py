"""Collection in this process: the actor coroutines, their inference batcher, the bounded queue, env workers.

Place in the flow: actors -> **queue** -> replay, as the runtime sees it. `runtime.run` talks to the actors'
side of a run only through a collection (this one, or `ray_runtime.RayCollection` with the same methods,
whose actors live in Ray actor processes), so the learner, evaluation, checkpoints and metrics are one code.

A collection owns the step gate the learner raises (`gate`), moves chunks into the replay pool, can park
every actor between two steps (`settle`, `quiesce`) so their state can be saved, and hands back each actor's
state for a checkpoint. `make_actor` builds one actor; the Ray hosts use it too.

Blocking: nothing here blocks the loop except env steps of envs stepped on it (`actors.env_workers = 0`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from asyncdqn.actors import Actor, EnvFaults, EpisodeHook, InferenceBatcher, StepGate
from asyncdqn.config import RunConfig
from asyncdqn.envs.make import FaultInjector, make_env, worker_env
from asyncdqn.nets import EnsembleQNet
from asyncdqn.transitions import ChunkBuilder
from asyncdqn.workers import EnvWorkerPool, WorkerDeath


def make_actor(cfg: RunConfig, i: int, seq: np.random.SeedSequence, train_kwargs: dict, spec,
               env: gym.Env | None, pool: EnvWorkerPool | None = None) -> Actor:
    """Actor i: its env (`env`, or a new one; wrapped for fault injection when asked; or env i of the worker
    `pool`), seed, chunk builder and RNG. It acts with (and its chunks are credited to) net i mod K."""
    seq_rng, seq_faults = seq.spawn(2)
    fault_rng = np.random.default_rng(seq_faults)
    rate = cfg.faults.env_error_rate

    def wrap(env: gym.Env) -> gym.Env:
        return FaultInjector(env, rate, fault_rng) if rate > 0 else env

    builder = ChunkBuilder(cfg.actors.chunk_rows, spec.obs_shape, spec.obs_dtype, cfg.learner.gamma,
                           cfg.actors.n_step, net=i % cfg.learner.num_nets)
    return Actor(i, lambda: wrap(make_env(cfg.env, train_kwargs)), int(seq.generate_state(1)[0] % 2**31),
                 builder, np.random.default_rng(seq_rng), env=wrap(env) if env is not None and pool is None else None,
                 pool=pool, n_actions=spec.n_actions)


def epsilon_schedule(ladder_N: np.ndarray, anneal_steps: int,
                     steps: Callable[[], int]) -> Callable[[int], float]:
    """`annealed_epsilon` for one actor, in scalar form (the actors' hot path); `steps()` is the run's
    env-step count so far."""
    ladder = ladder_N.tolist()
    anneal = max(1, anneal_steps)

    def epsilon(actor: int) -> float:
        return 1.0 + (ladder[actor] - 1.0) * min(1.0, steps() / anneal)

    return epsilon


def _worker_pool(cfg: RunConfig, train_kwargs: dict, spec, log: Callable[[dict], None]) -> EnvWorkerPool | None:
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

    def __init__(self, cfg: RunConfig, seq_actors: list, train_kwargs: dict, spec, first_env: gym.Env,
                 acting: EnsembleQNet, gate: StepGate, replay, ladder_N: np.ndarray, log: Callable[[dict], None]):
        self.gate, self.replay = gate, replay
        self.batcher = InferenceBatcher(acting, cfg.actors.num_actors, spec.obs_shape, spec.obs_dtype)
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=cfg.actors.queue_chunks)
        self.faults = EnvFaults(cfg.faults.max_env_restarts, cfg.faults.restart_backoff_s, log)
        self.pool = _worker_pool(cfg, train_kwargs, spec, log)
        if self.pool is not None:
            first_env.close()  # it told us the spec; the training envs live in the workers
        self.actors = [make_actor(cfg, i, seq_actors[i], train_kwargs, spec, first_env if i == 0 else None,
                                  self.pool) for i in range(cfg.actors.num_actors)]
        self.epsilon = epsilon_schedule(ladder_N, cfg.actors.eps_anneal_steps, lambda: gate.steps)

    @property
    def num_actors(self) -> int:
        return len(self.actors)

    def actor_states(self) -> list[dict]:
        """Each actor's state; call only after `quiesce` (every actor parked between two steps)."""
        return [a.state_dict() for a in self.actors]

    def load_actor_states(self, states: list[dict]) -> None:
        for actor, saved in zip(self.actors, states):
            actor.load_state_dict(saved)

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

    def drain(self) -> None:
        while not self.queue.empty():
            self.replay.add(self.queue.get_nowait())

    async def settle(self) -> None:
        """Until every actor waits at the gate (the budget spent), with every queued chunk in the pool."""
        await self.gate.wait_parked(len(self.actors))
        self.drain()

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
