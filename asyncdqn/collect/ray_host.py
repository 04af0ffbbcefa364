"""Ray hosts: the existing actor coroutines inside a Ray async actor process, several envs each.

Place in the flow: **actors** -> queue, on another process or machine. An `ActorHost` runs whole groups of K
actors (`actor.make_actor`, the same `actor.Actor` code as the local backend) on its own event loop,
with a `StepGate`, `EnvFaults` and an `InferenceBatcher` over a CPU copy of the K-net ensemble. The learner
(`ray_learner.RayCollection`) calls `pull` in a loop; each call's result travels back as a Ray object ref.

A pull sets the host's step limit (the learner holds the replay ratio), may carry fresh weights (a Ray
object put once and shared by every host), and returns a `Delivery`: the chunks queued since the last pull,
each stamped with the weights version that made it, the host's step count, finished episodes and env
faults. The host's queue is bounded (`actors.queue_chunks`) and one pull per host is in flight, so a slow
learner makes the actors wait, as locally.

Actor indices: host-local index j runs global actor `ids[j]`; hosts get whole groups of K consecutive
actors, so j mod K = ids[j] mod K and the batcher's slot (j mod K, j // K) forwards the right net.

Blocking: `pull` waits at most `PULL_WAIT_S` (or until the actors park) before it answers.
"""

from __future__ import annotations

import asyncio
import os
from typing import NamedTuple

import numpy as np
import ray
import torch

from asyncdqn.collect.actor import EnvFaults, InferenceBatcher, make_actor
from asyncdqn.config import RunConfig
from asyncdqn.envs.make import EnvSpec, env_kwargs
from asyncdqn.errors import RunFailed
from asyncdqn.nets import EnsembleQNet
from asyncdqn.schedule import StepGate, actor_epsilons, epsilon_schedule
from asyncdqn.transitions import Chunk

PULL_WAIT_S = 0.5  # a pull answers at the latest after this, so the learner sees fresh step counts


class Delivery(NamedTuple):
    """What one pull brings back to the learner."""

    chunks: list          # transitions.Chunk, in the order the actors queued them
    versions: list        # weights version each chunk was made with
    steps: int            # env steps this host (this incarnation) has taken
    parked: bool          # every actor waits at the gate: no more steps until the limit rises
    episodes: list        # (global actor, net, return, length) of finished episodes
    faults: list          # env_fault records (actor = global index)
    error: str | None     # a RunFailed message from an actor: the run must stop
    actor_states: list | None  # each actor's state, when the pull quiesced the host (for checkpoints)
    forwards: int         # batched forwards and actor requests so far (actors per forward)
    requests: int


def host_groups(num_actors: int, num_nets: int, hosts: int) -> list[list[int]]:
    """Global actor indices of each host: groups of K consecutive actors, spread as evenly as possible."""
    groups = [list(range(g, min(g + num_nets, num_actors))) for g in range(0, num_actors, num_nets)]
    bounds = np.linspace(0, len(groups), hosts + 1).round().astype(int)
    return [[i for grp in groups[bounds[h]:bounds[h + 1]] for i in grp] for h in range(hosts)]


def load_weights_(net: EnsembleQNet, arrays: list[np.ndarray]) -> None:
    """Copy broadcast parameters into `net` in place (numpy views of its parameters stay valid)."""
    with torch.no_grad():
        for p, a in zip(net.parameters(), arrays):
            np.copyto(p.detach().numpy(), a)


class ActorHost:
    """Actors `ids` of the run `cfg`, as coroutines in this process. Built by Ray (`RemoteHost`) or directly
    (tests); `start` begins the actors, `pull` is called by the learner, nothing else touches them."""

    def __init__(self, cfg: RunConfig, ids: list[int], seqs: list[np.random.SeedSequence], spec: EnvSpec,
                 acting: EnsembleQNet):
        torch.set_num_threads(1)
        self.cfg, self.ids, self.seqs, self.spec = cfg, list(ids), list(seqs), spec
        self.acting = acting.requires_grad_(False)
        self.version = 0
        self.offset = 0  # env steps of the run taken elsewhere (other hosts, earlier incarnations): for epsilon
        self.tasks: list[asyncio.Task] = []

    async def start(self, incarnation: int, weights: list | None, version: int, offset: int,
                    actor_states: list | None = None) -> int:
        """Build and start the actors; a restarted host (`incarnation` > 0) seeds them anew. The process id.
        Actors of an earlier `start` in this process are stopped first (a pull that failed in transit is
        treated as a death, though the process may still be alive)."""
        await self.stop()
        cfg, spec, n = self.cfg, self.spec, len(self.ids)
        if weights is not None:
            load_weights_(self.acting, weights)
        self.version, self.offset = version, offset
        self.gate = StepGate(0)
        self.batcher = InferenceBatcher(self.acting, n, spec.obs_shape, spec.obs_dtype)
        self.queue: asyncio.Queue[tuple[int, Chunk]] = asyncio.Queue(maxsize=cfg.actors.queue_chunks)
        self.episodes: list = []
        self.fault_records: list = []
        self.faults = EnvFaults(cfg.faults.max_env_restarts, cfg.faults.restart_backoff_s, self._fault)
        seqs = [s if incarnation == 0 else np.random.SeedSequence([int(s.generate_state(1)[0]), incarnation])
                for s in self.seqs]
        kwargs = env_kwargs(cfg, evaluation=False)
        self.actors = [make_actor(cfg, j, seqs[j], kwargs, spec, None) for j in range(n)]
        if actor_states is not None:
            for actor, saved in zip(self.actors, actor_states):
                actor.load_state_dict(saved)
        ladder = actor_epsilons(cfg.actors.num_actors, cfg.learner.num_nets, cfg.actors.eps_base, cfg.actors.eps_alpha,
                                cfg.actors.layout)[self.ids]
        epsilon = epsilon_schedule(ladder, cfg.actors.eps_anneal_steps, lambda: self.offset + self.gate.steps)
        self.tasks = [asyncio.ensure_future(self.batcher.serve())]
        self.tasks += [asyncio.ensure_future(a.run(self.batcher, self.gate, _Stamped(self), epsilon, self._episode,
                                                   self.faults)) for a in self.actors]
        return os.getpid()

    def _episode(self, j: int, net: int, ret: float, length: int) -> None:
        self.episodes.append((self.ids[j], net, ret, length))

    def _fault(self, rec: dict) -> None:
        self.fault_records.append({**rec, "actor": self.ids[rec["actor"]]} if "actor" in rec else rec)

    async def pull(self, limit: int, weights: list | None, version: int, offset: int,
                   mode: str = "collect") -> Delivery:
        """Set the step limit (and weights), then hand back what was queued. `mode`: 'collect' answers once a
        chunk is queued, the actors park or PULL_WAIT_S passed; 'settle' waits until every actor is parked
        at `limit`; 'quiesce' grants no more steps, waits until they park and returns their states too."""
        if weights is not None:
            load_weights_(self.acting, weights)
            self.version = version
        self.offset = offset
        if mode == "quiesce":
            self.gate.freeze()
        else:
            self.gate.set_limit(limit)
        n, loop = len(self.actors), asyncio.get_running_loop()
        items: list = []
        deadline = loop.time() + PULL_WAIT_S
        parked = asyncio.ensure_future(self.gate.wait_parked(n))
        try:  # keep taking chunks while waiting: an actor blocked on a full queue is not parked yet
            while not parked.done() and not any(t.done() for t in self.tasks):
                if mode == "collect" and (items or loop.time() >= deadline):
                    break
                getter = asyncio.ensure_future(self.queue.get())
                await asyncio.wait([getter, parked, *self.tasks], return_when=asyncio.FIRST_COMPLETED,
                                   timeout=deadline - loop.time() if mode == "collect" else None)
                if getter.done():
                    items.append(getter.result())
                else:
                    getter.cancel()
        finally:
            parked.cancel()
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        episodes, self.episodes = self.episodes, []
        faults, self.fault_records = self.fault_records, []
        states = [a.state_dict() for a in self.actors] if mode == "quiesce" else None
        return Delivery([c for _, c in items], [v for v, _ in items], self.gate.steps, self.gate.parked >= n,
                        episodes, faults, self._error(), states, self.batcher.forwards, self.batcher.requests)

    def _error(self) -> str | None:
        """The message of an actor task that ended (too many env faults); anything else is a bug: re-raised."""
        for t in self.tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                if isinstance(t.exception(), RunFailed):
                    return str(t.exception())
                raise t.exception()
        return None

    def pid(self) -> int:
        return os.getpid()

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for a in getattr(self, "actors", []):
            if a.env is not None:
                a.env.close()


class _Stamped:
    """The queue as the host's actors see it: `put` stamps each chunk with the host's weights version."""

    def __init__(self, host: ActorHost):
        self.host = host

    async def put(self, chunk: Chunk) -> None:
        await self.host.queue.put((self.host.version, chunk))


RemoteHost = ray.remote(ActorHost)
