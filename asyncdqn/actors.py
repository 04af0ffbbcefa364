"""Actors: N env instances, one asyncio coroutine each, answered by one batched forward pass.

Place in the flow: **actors** -> queue -> replay. Actor i acts with Q-net i mod K and its own epsilon
from the Ape-X ladder (Horgan et al. 2018), annealed from 1 early in the run. Each actor builds its own
chunks (so n-step returns are per actor) and puts them on the bounded queue; a full queue makes it wait.

Blocking calls: `env.step`/`env.reset` run on the event loop (classic-control steps take microseconds);
`InferenceBatcher.serve` runs the forward pass on the event loop too, once per tick for all waiting actors.

Legend: N actors, K nets, M actor slots per net (ceil(N / K)), O observation shape.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from asyncdqn.nets import EnsembleQNet
from asyncdqn.transitions import ChunkBuilder


def epsilon_ladder(num_actors: int, base: float, alpha: float) -> np.ndarray:
    """eps_i = base ** (1 + alpha * i / (N - 1)); a single actor gets `base`."""
    if num_actors == 1:
        return np.array([base])
    i = np.arange(num_actors)
    return base ** (1.0 + alpha * i / (num_actors - 1))


def annealed_epsilon(step: int, anneal_steps: int, final_N: np.ndarray) -> np.ndarray:
    """Linear from 1 at step 0 to each actor's ladder value at `anneal_steps`, then constant."""
    frac = 1.0 if anneal_steps == 0 else min(1.0, step / anneal_steps)
    return 1.0 + (np.asarray(final_N) - 1.0) * frac


class StepGate:
    """The env-step budget the actors may use. The learner raises `limit` as it trains, which holds the
    replay ratio; `wait_steps(n)` lets the learner and the evaluator sleep until n steps were taken."""

    def __init__(self, limit: int):
        self.steps = 0
        self.limit = limit
        self._opened = asyncio.Event()
        self._watchers: list[tuple[int, int, asyncio.Future]] = []  # heap of (steps, seq, future)
        self._seq = 0

    async def acquire(self) -> None:
        """Take one env step from the budget; waits while the budget is spent."""
        while self.steps >= self.limit:
            await self._opened.wait()
        self.steps += 1
        while self._watchers and self.steps >= self._watchers[0][0]:
            fut = heapq.heappop(self._watchers)[2]
            if not fut.done():
                fut.set_result(None)

    def set_limit(self, limit: int) -> None:
        self.limit = limit
        self._opened.set()   # wake every waiter, then re-arm: a pulse
        self._opened.clear()

    async def wait_steps(self, n: int) -> None:
        if self.steps >= n:
            return
        fut = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._watchers, (n, self._seq, fut))
        await fut


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
        self._wakeup = asyncio.Event()
        self._done = asyncio.Event()
        self.forwards = 0
        self.requests = 0

    def slot(self, actor: int) -> tuple[int, int]:
        return actor % self.net.k, actor // self.net.k

    async def act(self, slot: tuple[int, int], obs: np.ndarray) -> int:
        self.obs_KMO[slot] = obs
        self.requests += 1
        self._wakeup.set()
        await self._done.wait()
        return int(self.act_KM[slot])

    async def serve(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            with torch.no_grad():
                self.act_KM[:] = self.net(self.x_KMO).argmax(-1).numpy()
            self.forwards += 1
            self._done.set()
            self._done.clear()


EpisodeHook = Callable[[int, int, float, int], None]  # (actor, net, return, length)


async def run_actor(actor: int, env: gym.Env, seed: int, batcher: InferenceBatcher, gate: StepGate,
                    queue: asyncio.Queue, builder: ChunkBuilder, epsilon: Callable[[int], float],
                    rng: np.random.Generator, on_episode: EpisodeHook) -> None:
    """One actor's loop, until cancelled. Episodes end on `terminated` or `truncated`; the true final
    observation is stored (a final row) and bootstrapped from when the episode was truncated."""
    slot = batcher.slot(actor)
    n_actions = int(env.action_space.n)
    obs, _ = env.reset(seed=seed)
    builder.observe(obs)
    ep_return, ep_len = 0.0, 0
    while True:
        await gate.acquire()
        action = await batcher.act(slot, obs)
        if rng.random() < epsilon(actor):
            action = int(rng.integers(n_actions))
        obs, reward, terminated, truncated, _ = env.step(action)
        builder.acted(action, float(reward))
        ep_return += float(reward)
        ep_len += 1
        if terminated or truncated:
            builder.final(obs, bool(terminated))
            on_episode(actor, builder.net, ep_return, ep_len)
            ep_return, ep_len = 0.0, 0
            obs, _ = env.reset()
        builder.observe(obs)
        if builder.full:
            await queue.put(builder.flush())
