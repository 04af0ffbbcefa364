"""Schedules: how many env steps the actors may take, and with what exploration and replay weighting.

Place in the flow: serves actors (the step gate, epsilon), the learner (the replay-ratio budget, beta) and
both collection backends. Plain functions and one small asyncio class; no env, net or replay here.

- `budget`: the replay ratio as a step limit for the actors (updates made -> env steps allowed).
- `StepGate`: that limit on the event loop; actors take steps from it, the learner raises it.
- `epsilon_ladder`, `actor_epsilons` and `epsilon_schedule`: each actor's exploration rate, the Ape-X ladder
  (Horgan et al. 2018) laid out over the nets and reached by a linear anneal from 1.
- `beta_at`: the importance-sampling exponent of prioritized replay (Schaul et al. 2016), annealed to 1.

Legend: N actors.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable

import numpy as np

from asyncdqn.config import RunConfig


def budget(cfg: RunConfig) -> tuple[int, Callable[[int], int]]:
    """(total updates of the run, actors' step limit as a function of updates already made).

    The learner may make `ratio * (steps - learning_starts)` updates; actors may take at most
    `learning_starts + (updates + updates_per_call) / ratio + max_lead` steps. The limit function also
    carries `steps_needed(updates)`: the env steps after which that many updates are allowed."""
    lc = cfg.learner
    if lc.replay_ratio == 0:
        return 0, lambda updates: cfg.total_steps
    total_updates = int(lc.replay_ratio * max(0, cfg.total_steps - lc.learning_starts))

    def steps_needed(updates: int) -> int:
        """Env steps after which `updates` updates are allowed (capped: float rounding may overshoot)."""
        return min(cfg.total_steps, lc.learning_starts + math.ceil(updates / lc.replay_ratio))

    def step_limit(updates: int) -> int:
        if updates >= total_updates:
            return cfg.total_steps
        nxt = min(updates + lc.updates_per_call, total_updates)
        return min(cfg.total_steps, steps_needed(nxt) + lc.max_lead)

    step_limit.steps_needed = steps_needed  # type: ignore[attr-defined]
    return total_updates, step_limit


def epsilon_ladder(num_actors: int, base: float, alpha: float) -> np.ndarray:
    """eps_i = base ** (1 + alpha * i / (N - 1)); a single actor gets `base`."""
    if num_actors == 1:
        return np.array([base])
    i = np.arange(num_actors)
    return base ** (1.0 + alpha * i / (num_actors - 1))


def actor_net(actor: int, num_nets: int) -> int:
    """The net actor i acts with, and that its chunks and episodes are credited to."""
    return actor % num_nets


def actor_epsilons(num_actors: int, num_nets: int, base: float, alpha: float, layout: str = "balanced") -> np.ndarray:
    """Each actor's final epsilon. Actor i acts with net i mod K; 'spread' gives actor i rung i of an N-rung
    ladder (so net 0 owns the most exploratory actors); 'balanced' gives it rung i // K of a ceil(N / K)-rung
    ladder, so every net owns the same epsilons (when K divides N; otherwise the last rung lacks some nets)."""
    if layout == "spread":
        return epsilon_ladder(num_actors, base, alpha)
    rungs = epsilon_ladder(math.ceil(num_actors / num_nets), base, alpha)
    return rungs[np.arange(num_actors) // num_nets]


def epsilon_schedule(ladder_N: np.ndarray, anneal_steps: int, steps: Callable[[], int]) -> Callable[[int], float]:
    """The epsilon actor i acts with now, as `epsilon(i)`: linear from 1 at step 0 to its ladder value
    `ladder_N[i]` at `anneal_steps`, that value from then on (with anneal_steps = 0, from step 0).
    `steps()` is the run's env-step count so far.

    The one epsilon schedule of the code base, in the scalar form the actors call once per env step
    (a numpy form per call would cost more than a CartPole step)."""
    ladder = ladder_N.tolist()

    def epsilon(actor: int) -> float:
        return epsilon_at(ladder[actor], anneal_steps, steps())

    return epsilon


def epsilon_at(final, anneal_steps: int, step: int):
    """Epsilon after `step` env steps: linear from 1 at step 0 to `final` at `anneal_steps`, then `final`.
    `final` is one actor's ladder value (a float) or several (an array: a vector actor's sub-envs)."""
    if step >= anneal_steps:
        return final
    return 1.0 + (final - 1.0) * (step / anneal_steps)


def beta_at(beta0: float, steps: int, total_steps: int) -> float:
    """The importance-sampling exponent of prioritized replay after `steps` env steps of `total_steps`:
    linear from `beta0` at the start to 1 at the end of the run (Schaul et al. 2016, section 3.4)."""
    return beta0 + (1 - beta0) * min(1.0, steps / total_steps)


class StepGate:
    """The env-step budget the actors may use. The learner raises `limit` as it trains, which holds the
    replay ratio; `wait_steps(n)` lets the learner and the evaluator sleep until n steps were taken."""

    def __init__(self, limit: int):
        self.steps = 0
        self.limit = limit
        self._opened = asyncio.Event()
        self._watchers: list[tuple[int, int, asyncio.Future]] = []  # heap of (steps, seq, future)
        self._seq = 0
        self.parked = 0  # actors waiting in `acquire` for the budget to grow
        self._park_watchers: list[tuple[int, asyncio.Future]] = []

    def try_acquire(self, n: int = 1) -> bool:
        """Take n env steps if any of the budget is left, without awaiting (the actors' fast path). A vector
        actor takes its W steps at once, so the count may pass a limit by up to W - 1 (never total_steps,
        a multiple of W: the limit is at most total_steps, and the count moves in multiples of W)."""
        if self.steps >= self.limit:
            return False
        self.steps += n
        if self._watchers and self.steps >= self._watchers[0][0]:
            self._wake_watchers()
        return True

    def _wake_watchers(self) -> None:
        while self._watchers and self.steps >= self._watchers[0][0]:
            fut = heapq.heappop(self._watchers)[2]
            if not fut.done():
                fut.set_result(None)

    async def acquire(self, n: int = 1) -> None:
        """Take n env steps from the budget (see `try_acquire`); waits while the budget is spent."""
        while self.steps >= self.limit:
            self.parked += 1
            self._wake_park_watchers()
            try:
                await self._opened.wait()
            finally:
                self.parked -= 1
        self.steps += n
        self._wake_watchers()

    def set_limit(self, limit: int) -> None:
        self.limit = limit
        self._opened.set()   # wake every waiter, then re-arm: a pulse
        self._opened.clear()

    def advance_to(self, steps: int) -> None:
        """Set the step count from outside: the Ray backend's learner-side gate mirrors its hosts' steps."""
        self.steps = steps
        self._wake_watchers()

    async def limit_changed(self) -> None:
        """Until the next `set_limit` (the Ray backend's pumps wait here while a host's actors are parked)."""
        await self._opened.wait()

    def freeze(self) -> None:
        """Grant no more steps: each actor finishes the step it is in and parks."""
        self.limit = self.steps

    async def wait_parked(self, n: int) -> None:
        """Until n actors wait at the gate (with the budget spent, all of them, between two steps)."""
        if self.parked >= n:
            return
        fut = asyncio.get_running_loop().create_future()
        self._park_watchers.append((n, fut))
        await fut

    def _wake_park_watchers(self) -> None:
        for n, fut in self._park_watchers:
            if self.parked >= n and not fut.done():
                fut.set_result(None)
        self._park_watchers = [(n, f) for n, f in self._park_watchers if not f.done()]

    async def wait_steps(self, n: int) -> None:
        if self.steps >= n:
            return
        fut = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._watchers, (n, self._seq, fut))
        await fut
