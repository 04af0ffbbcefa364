"""Actors: N env instances, one asyncio coroutine each, answered by one batched forward pass.

Place in the flow: **actors** -> queue -> replay. Actor i acts with Q-net i mod K and its own epsilon
(`schedule.epsilon_schedule`: the Ape-X ladder of Horgan et al. 2018, annealed from 1 early in the run).
Each actor builds its own chunks (so n-step returns are per actor) and puts them on the bounded queue; a
full queue makes it wait. Both collection backends (local.py, ray_host.py) build their actors with
`make_actor`.

Blocking calls: `env.step`/`env.reset` run on the event loop (classic-control steps take microseconds);
`InferenceBatcher.serve` runs the forward pass on the event loop too, once per tick for all waiting actors.

Pausing and resuming: an actor is only ever snapshotted while it waits at the gate (`schedule.StepGate.wait_parked`),
between two steps. It keeps what its env's state follows from: the state of the env's generator
(`env.unwrapped.np_random`) just before the episode's reset, or the seed of that reset, and the actions
taken since. A resumed actor rebuilds the env's exact state by restoring that and replaying the actions:
gymnasium envs draw their randomness from `np_random`, and this needs no pickled env (checkpoints hold
tensors only). An env that does not reproduce the saved observation restarts its episode instead.

Faults: an env that raises in `step` or `reset` is rebuilt and reset with backoff; its partial episode
is dropped (`ChunkBuilder.drop_partial_episode`); `EnvFaults` stops the run after too many failures in a row.

Env workers: with a `pool` (workers.EnvWorkerPool), actor i's env lives in a worker process as
env i of the pool; the actor awaits `pool.step(i, a, autoreset=True)` instead of calling `env.step`, so the
loop keeps serving other actors, inference and the learner while envs step on other cores. An env error or
a dead worker is a fault like any other (the pool rebuilds the env at its reset). The env's generator is
out of reach there, so a resumed actor starts a new (seeded) episode instead of replaying its last one.

Legend: N actors, K nets, M actor slots per net (ceil(N / K)), O observation shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Callable
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch

from asyncdqn.collect.protocol import EpisodeHook
from asyncdqn.collect.workers import EnvWorkerPool, TooManyRestarts
from asyncdqn.config import RunConfig
from asyncdqn.envs.make import EnvSpec, FaultInjector, make_env
from asyncdqn.errors import RunFailed, UserError, first_line
from asyncdqn.nets import EnsembleQNet, numpy_forward
from asyncdqn.schedule import StepGate, actor_net
from asyncdqn.transitions import Chunk, ChunkBuilder


class Uniforms:
    """Uniform [0, 1) draws from one Generator, made a block at a time: a scalar `Generator.random()` costs
    ~1 us and `integers()` ~4 us, a sizeable part of a CartPole step, while a block of 256 costs little more
    than one call. The draws are the Generator's own `random` stream, so a run stays reproducible from its seed."""

    BLOCK = 256

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self._left: list[float] = []  # drawn, not yet used, in reverse order (pop from the end)

    def next(self) -> float:
        if not self._left:
            self._left = self.rng.random(self.BLOCK)[::-1].tolist()
        return self._left.pop()

    def state_dict(self) -> dict:
        return {"rng": json.dumps(self.rng.bit_generator.state), "left": np.array(self._left, dtype=np.float64)}

    def load_state_dict(self, state: dict) -> None:
        """`left` may be absent (a checkpoint from before the draws were blocked): the stream goes on from
        the generator's state."""
        self.rng.bit_generator.state = json.loads(state["rng"])
        self._left = np.asarray(state.get("left", []), dtype=np.float64).tolist()


class InferenceBatcher:
    """Answers waiting actors with one forward pass of the K-net ensemble per tick.

    Actor i owns the fixed slot (i mod K, i // K) of an [K, M, O] observation array, so a tick forwards
    each net only on its own actors' rows: no stacking, no per-actor forward. asyncio runs ready callbacks
    in FIFO order, so all actors woken by one tick have submitted before `serve` runs again.
    """

    def __init__(self, net: EnsembleQNet, num_actors: int, obs_shape: tuple, obs_dtype: np.dtype):
        self.net = net
        k = net.k
        self.obs_KMO = np.zeros((k, math.ceil(num_actors / k), *obs_shape), dtype=obs_dtype)
        self.x_KMO = torch.from_numpy(self.obs_KMO)  # shares memory with obs_KMO
        self.act_KM = np.zeros(self.obs_KMO.shape[:2], dtype=np.int64)
        self._numpy_forward = numpy_forward(net)  # MLPs: numpy is cheaper than torch at these sizes
        self._wakeup = asyncio.Event()
        # One future per tick, awaited by every actor waiting in it and resolved after the forward: half the
        # cost per step of a future per actor. (An asyncio.Event would do too, but each Event.wait removes
        # its future from a deque on return: O(waiters) per actor per tick.)
        self._tick: asyncio.Future | None = None
        self.forwards = 0
        self.requests = 0

    def slot(self, actor: int) -> tuple[int, int]:
        return actor % self.net.k, actor // self.net.k

    async def act(self, slot: tuple[int, int], obs: np.ndarray) -> int:
        self.obs_KMO[slot] = obs
        self.requests += 1
        await self._next_tick()
        return int(self.act_KM[slot])

    async def act_many(self, slots: tuple[np.ndarray, np.ndarray], obs_WO: np.ndarray) -> np.ndarray:
        """The greedy actions of W actors at once (a vector actor's sub-envs); `slots` = (nets, rows)."""
        self.obs_KMO[slots] = obs_WO
        self.requests += len(obs_WO)
        await self._next_tick()
        return self.act_KM[slots]

    async def _next_tick(self) -> None:
        while True:
            tick = self._tick
            if tick is None or tick.done():
                tick = self._tick = asyncio.get_running_loop().create_future()
                self._wakeup.set()
            try:
                await tick
                return
            except asyncio.CancelledError:
                # Cancelling a task cancels the future it awaits: the shared tick. Re-raise if this actor
                # was cancelled; if another one was, ask again in the next tick.
                if not tick.cancelled() or asyncio.current_task().cancelling():
                    raise

    async def serve(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            tick, self._tick = self._tick, None
            if self._numpy_forward is not None:
                self.act_KM[:] = self._numpy_forward(self.obs_KMO).argmax(-1)
            else:
                with torch.no_grad():
                    self.act_KM[:] = self.net(self.x_KMO).argmax(-1).numpy()
            self.forwards += 1
            if tick is not None and not tick.done():  # done: cancelled with an actor (see `act`)
                tick.set_result(None)


class ChunkQueue(Protocol):
    """Where an actor puts its full chunks: the bounded asyncio.Queue (local), a stamping wrapper (Ray)."""

    async def put(self, chunk: Chunk) -> None: ...


def _pool_verdict(exc: BaseException) -> BaseException:
    """A broken worker pool (workers died past their restart bound) ends the run; other errors are faults."""
    if isinstance(exc, TooManyRestarts):
        raise RunFailed(f"env workers keep dying: {exc}") from None
    return exc


def episode_seed(actor_seed: int, episode: int) -> int:
    """The reset seed of an actor's episode: fixed by (actor seed, episode number), so it can be replayed.
    Plain arithmetic (a Weyl sequence): a SeedSequence per episode cost more than a CartPole step."""
    return (actor_seed + 0x9E3779B1 * (episode + 1)) % 2**31


class EnvFaults:
    """Counts env failures and paces restarts: the k-th failure in a row of one actor waits
    backoff * 2**(k-1) s (at most 2 s); more than `max_restarts` in a row stops the run."""

    MAX_BACKOFF_S = 2.0

    def __init__(self, max_restarts: int, backoff_s: float, log: Callable[[dict], None]):
        self.max_restarts, self.backoff_s, self.log = max_restarts, backoff_s, log
        self.in_a_row: dict[int, int] = {}
        self.total = 0

    def failed(self, actor: int, exc: BaseException) -> float:
        """Record a failure; the delay before the restart. Raises RunFailed past the bound."""
        n = self.in_a_row.get(actor, 0) + 1
        self.in_a_row[actor] = n
        self.total += 1
        error = f"{type(exc).__name__}: {first_line(exc, 200) if str(exc).strip() else ''}"[:200]
        self.log({"kind": "env_fault", "actor": actor, "in_a_row": n, "total": self.total, "error": error})
        if n > self.max_restarts:
            raise RunFailed(f"actor {actor}'s env failed {n} times in a row (faults.max_env_restarts = "
                            f"{self.max_restarts}); last error: {error}")
        return min(self.MAX_BACKOFF_S, self.backoff_s * 2 ** (n - 1))

    def recovered(self, actor: int) -> None:
        self.in_a_row[actor] = 0


class Actor:
    """One env instance, stepped by one coroutine (`run`), with the state to pause and resume it exactly.

    `make_env` builds a fresh env (for `env` when it is None, and after each fault). Not thread-safe: the
    event loop owns it.
    """

    def __init__(self, index: int, make_env: Callable[[], gym.Env], seed: int, builder: ChunkBuilder,
                 rng: np.random.Generator, env: gym.Env | None = None, pool: EnvWorkerPool | None = None,
                 n_actions: int | None = None):
        self.index, self.make_env, self.seed = index, make_env, seed
        self.builder, self.uniforms = builder, Uniforms(rng)
        self.pool = pool  # with a pool, env `index` of the pool is this actor's and `env` stays None
        self.env = None if pool is not None else (env if env is not None else make_env())
        self.n_actions = int(n_actions if pool is not None else self.env.action_space.n)
        self.episode = -1          # number of the current episode
        self.reset_rng: dict | None = None  # env.unwrapped.np_random state before its reset (None: seeded reset)
        self.actions: list[int] = []  # taken since that reset
        self.obs: np.ndarray | None = None
        self.ep_return, self.ep_len = 0.0, 0
        self._resume: dict | None = None

    def _start_episode(self, seeded: bool = False) -> None:
        """Reset: seeded for a new env (the first episode, after a fault), else from the env's own generator
        (reseeding every episode costs more than a CartPole step), whose state is kept for a resume."""
        self.episode += 1
        self.actions, self.ep_return, self.ep_len = [], 0.0, 0
        if seeded or self.episode == 0:
            self.reset_rng = None
            self.obs, _ = self.env.reset(seed=episode_seed(self.seed, self.episode))
        else:
            self.reset_rng = self.env.unwrapped.np_random.bit_generator.state
            self.obs, _ = self.env.reset()
        self.builder.observe(self.obs)

    async def _start_remote_episode(self, first_obs: np.ndarray | None = None) -> None:
        """The worker-pool form of `_start_episode`: a seeded reset, or the first observation of an episode
        the worker already auto-reset (unseeded) at the end of the last step."""
        self.episode += 1
        self.actions, self.ep_return, self.ep_len = [], 0.0, 0
        self.reset_rng = None
        if first_obs is None:
            first_obs = (await self.pool.reset(self.index, seed=episode_seed(self.seed, self.episode))).obs
        self.obs = first_obs
        self.builder.observe(first_obs)

    async def _restart(self, exc: BaseException, faults: EnvFaults) -> None:
        """Drop the partial episode, then rebuild and reset the env (with backoff) until that works."""
        self.builder.drop_partial_episode()
        while True:
            await asyncio.sleep(faults.failed(self.index, _pool_verdict(exc)))
            try:
                if self.pool is not None:  # the worker rebuilds a failed env at its reset
                    await self._start_remote_episode()
                    return
                with contextlib.suppress(Exception):
                    self.env.close()
                self.env = self.make_env()
                self._start_episode(seeded=True)
                return
            except Exception as err:  # noqa: BLE001 -- any env failure is a fault to recover from
                exc = err

    async def run(self, batcher: InferenceBatcher, gate: StepGate, queue: ChunkQueue,
                  epsilon: Callable[[int], float], on_episode: EpisodeHook, faults: EnvFaults) -> None:
        """Step until cancelled. Episodes end on `terminated` or `truncated`; the true final observation is
        stored (a final row) and bootstrapped from when the episode was truncated."""
        slot, pool, first = batcher.slot(self.index), self.pool, None
        try:
            if pool is None:
                if self._resume is not None:
                    self._replay_episode()
                elif self.obs is None:
                    self._start_episode()
            elif self._resume is not None or self.obs is None:
                await self._resume_remote()
        except Exception as exc:  # noqa: BLE001
            await self._restart(exc, faults)
        while True:
            if not gate.try_acquire():
                await gate.acquire()
            action = await batcher.act(slot, self.obs)
            # Two draws every step, used or not: a vector actor's sub-env draws the same stream (vector_actor)
            explore, pick = self.uniforms.next(), self.uniforms.next()
            if explore < epsilon(self.index):
                action = int(pick * self.n_actions)  # uniform over the actions
            try:
                if pool is None:
                    obs, reward, terminated, truncated, _ = self.env.step(action)
                else:
                    obs, reward, terminated, truncated, _, first = await pool.step(self.index, action, True)
            except Exception as exc:  # noqa: BLE001
                await self._restart(exc, faults)
                continue
            self.actions.append(action)
            self.builder.acted(action, float(reward))
            self.ep_return += float(reward)
            self.ep_len += 1
            self.obs = obs
            if terminated or truncated:
                self.builder.final(obs, bool(terminated))
                on_episode(self.index, self.builder.net, self.ep_return, self.ep_len)
                faults.recovered(self.index)
                # The pair of draws a vector actor's sub-env spends on its reset step (next-step autoreset):
                # so both kinds of actor use one stream alike (tests/test_vector_actor.py)
                self.uniforms.next(), self.uniforms.next()
                try:
                    if pool is None:
                        self._start_episode()
                    else:
                        await self._start_remote_episode(first)
                except Exception as exc:  # noqa: BLE001
                    await self._restart(exc, faults)
            else:
                self.builder.observe(obs)
            if self.builder.full:
                await queue.put(self.builder.flush())

    async def _resume_remote(self) -> None:
        """First episode of an actor whose env is in a worker; a resumed one starts a new episode (its
        env's generator is in the worker, so the interrupted episode cannot be replayed)."""
        if self._resume is not None:
            state, self._resume = self._resume, None
            self.episode = int(state["episode"])
            self.builder.drop_partial_episode()
        await self._start_remote_episode()

    def state_dict(self) -> dict:
        """The actor's state between two steps (call only while it is parked at the gate)."""
        return {"episode": self.episode, "reset_rng": json.dumps(self.reset_rng),
                "actions": np.array(self.actions, dtype=np.int64),
                "obs": np.array(self.obs), "ep_return": self.ep_return, "ep_len": self.ep_len,
                **self.uniforms.state_dict(), "builder": self.builder.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore; the env itself is rebuilt by replaying the episode's actions when `run` starts."""
        if state.get("kind") is not None:
            raise UserError(f"checkpoint was written by vector actors (actors.envs_per_actor > 1); resume it "
                            f"with the same setting")
        self.uniforms.load_state_dict(state)
        self.builder.load_state_dict(state["builder"])
        self._resume = state

    def _replay_episode(self) -> None:
        """Reset with the episode's seed and replay its actions; if the env does not reproduce the saved
        observation (it is not deterministic given its seed), drop the partial episode and start anew."""
        state, self._resume = self._resume, None
        self.episode = int(state["episode"])
        self.reset_rng = json.loads(state["reset_rng"])
        obs, _ = self.env.reset(seed=episode_seed(self.seed, self.episode))
        if self.reset_rng is not None:  # the env was reset from its own generator: put that state back first
            self.env.unwrapped.np_random.bit_generator.state = self.reset_rng
            obs, _ = self.env.reset()
        actions = np.asarray(state["actions"]).tolist()
        for a in actions:
            obs, *_ = self.env.step(a)
        if np.array_equal(np.asarray(obs), np.asarray(state["obs"])):
            self.obs, self.actions = obs, actions
            self.ep_return, self.ep_len = float(state["ep_return"]), int(state["ep_len"])
        else:
            self.builder.drop_partial_episode()
            self._start_episode(seeded=True)


def make_actor(cfg: RunConfig, i: int, seq: np.random.SeedSequence, train_kwargs: dict, spec: EnvSpec,
               env: gym.Env | None, pool: EnvWorkerPool | None = None) -> Actor:
    """Actor i: its env (`env`, or a new one; wrapped for fault injection when asked; or env i of the worker
    `pool`), seed, chunk builder and RNG. It acts with (and its chunks are credited to) net i mod K."""
    seq_rng, seq_faults = seq.spawn(2)
    fault_rng = np.random.default_rng(seq_faults)
    rate = cfg.faults.env_error_rate

    def wrap(env: gym.Env) -> gym.Env:
        return FaultInjector(env, rate, fault_rng) if rate > 0 else env

    builder = ChunkBuilder(cfg.actors.chunk_rows, spec.obs_shape, spec.obs_dtype, cfg.learner.gamma,
                           cfg.actors.n_step, net=actor_net(i, cfg.learner.num_nets))
    return Actor(i, lambda: wrap(make_env(cfg.env, train_kwargs)), int(seq.generate_state(1)[0] % 2**31),
                 builder, np.random.default_rng(seq_rng), env=wrap(env) if env is not None and pool is None else None,
                 pool=pool, n_actions=spec.n_actions)
