"""The learner's side of the Ray backend: `RayCollection`, the hosts as `runtime.run` sees them.

Place in the flow: actors (in `ray_host.ActorHost` processes) -> **pulls** -> replay. `runtime.run` uses
this `protocol.Collection` instead of `local.LocalCollection` when `backend.kind = "ray"`; learner, replay,
merge, evaluation, checkpoints and metrics are the same code. `ray_session` joins `backend.ray_address` or starts a
small local Ray instance (no dashboard) for the length of the run.

Data paths: one pump task per host keeps one `pull` in flight; its result (a Ray object ref holding chunks,
step count, episodes, faults) is awaited on the loop and the chunks go into the replay pool. The learner-side
`StepGate` mirrors the hosts' summed steps (`advance_to`), and its limit is split over the hosts in
proportion to their actors, so the replay ratio holds across processes. After every learner call
`published` counts updates; every `backend.weights_every` updates (0: every call) the acting nets are put
once in Ray's object store and that ref rides on each host's next pull. Chunks come back stamped with the
weights version that made them: `policy_lag_updates_*` in 'train' records is how many updates old the
acting weights were.

Faults: a host process that dies is restarted by Ray (`max_restarts` of the actor); the pump that saw it
logs a `host_fault` record, starts the host's actors again (new seeds; their unfinished episodes are lost,
steps they took since the last pull are not counted) and the run goes on. More than
`backend.max_restarts` deaths in a run stop it with one line (exit 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import socket
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from asyncdqn.collect.protocol import EpisodeHook, ReplaySink
from asyncdqn.collect.ray_host import PULL_WAIT_S, Delivery, RemoteHost, host_groups
from asyncdqn.config import BackendConfig, RunConfig
from asyncdqn.envs.make import EnvSpec
from asyncdqn.errors import RunFailed, UserError, first_line
from asyncdqn.nets import EnsembleQNet
from asyncdqn.schedule import StepGate

LOCAL_OBJECT_STORE_BYTES = 256 * 2**20  # a local instance's shared-memory store: chunks and weights are small
CONNECT_TIMEOUT_S = 5.0
START_TIMEOUT_S = 120.0  # a (re)started host imports torch and builds its envs; a loaded machine is slow


def check_reachable(address: str) -> None:
    """A one-line UserError unless `address` ('host:port' or 'ray://host:port') accepts a TCP connection
    (ray.init retries an unreachable address for minutes)."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r} must look like host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); is its head "
                        f"running (ray start --head) and is the address right?") from None


@contextlib.contextmanager
def ray_session(backend: BackendConfig):
    """Ray for one run: reuse an initialised Ray (a test, a notebook), join `ray_address`, or start a local
    instance sized for the hosts; a session started here is shut down at the end."""
    if ray.is_initialized():
        yield
        return
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if backend.ray_address:
            if backend.ray_address != "auto":
                check_reachable(backend.ray_address)
            ray.init(address=backend.ray_address, **quiet)
        else:
            ray.init(num_cpus=max(1, math.ceil(backend.hosts * backend.host_cpus)), include_dashboard=False,
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"Ray did not start ({first_line(exc, 200)})") from None
    try:
        yield
    finally:
        ray.shutdown()


def step_share(total: int, cum_actors: list[int], h: int) -> int:
    """Host h's share of a step limit `total`, in proportion to its actors (`cum_actors`: 0 and the running
    sums of the hosts' actor counts); the shares always sum to `total`."""
    n = cum_actors[-1]
    return total * cum_actors[h + 1] // n - total * cum_actors[h] // n


def chunk_nbytes(chunk) -> int:
    """Payload bytes of a chunk's arrays (what a pull moves per chunk, before pickling overhead)."""
    return sum(a.nbytes for a in chunk[:6])


class RayCollection:
    """The hosts, as a `protocol.Collection` (see there for what each method promises)."""

    def __init__(self, cfg: RunConfig, seq_actors: list[np.random.SeedSequence], train_kwargs: dict,
                 spec: EnvSpec, first_env: gym.Env, acting: EnsembleQNet, gate: StepGate, replay: ReplaySink,
                 ladder_N: np.ndarray, log: Callable[[dict], None]):
        first_env.close()  # it told the runtime the spec; the training envs live in the hosts
        b = cfg.backend
        self.cfg, self.gate, self.replay, self.log, self.acting = cfg, gate, replay, log, acting
        self.groups = host_groups(cfg.actors.num_actors, cfg.learner.num_nets, b.hosts)
        self.cum = [0, *np.cumsum([len(g) for g in self.groups]).tolist()]
        token = uuid.uuid4().hex[:8]
        self.hosts = [RemoteHost.options(max_restarts=b.max_restarts, max_task_retries=0, num_cpus=b.host_cpus,
                                         name=f"asyncdqn-host-{h}-{token}")
                      .remote(cfg, ids, [seq_actors[i] for i in ids], spec, acting)
                      for h, ids in enumerate(self.groups)]
        n = len(self.hosts)
        self.base, self.steps, self.incarnation = [0] * n, [0] * n, [0] * n
        self.before = 0
        self.sent_version = [0] * n
        self.locks = [asyncio.Lock() for _ in range(n)]
        self.version, self.updates, self.weights_ref, self.weights_bytes = 0, 0, None, 0
        self.broadcast_at = {0: 0}  # weights version -> learner updates when it was broadcast
        self.restarts = self.env_faults = 0
        self.forwards, self.requests, self.waiting = [0] * n, [0] * n, [0] * n
        self.lag_sum = self.lag_max = self.lag_count = 0
        self.lag_total = self.lag_chunks = self.bytes_in = self.steps_in = 0
        self.states: list | None = None
        self.on_episode: EpisodeHook | None = None

    @property
    def num_actors(self) -> int:
        return self.cum[-1]

    def actor_states(self) -> list[dict]:
        """Each actor's state, as the last `quiesce` brought it back."""
        return list(self.states)

    def load_actor_states(self, states: list[dict]) -> None:
        self.states = list(states)  # handed to the hosts at `start`

    def published(self, updates: int) -> None:
        """Fresh weights are in `acting`: broadcast them if `backend.weights_every` updates have passed."""
        self.updates = updates
        every = self.cfg.backend.weights_every
        if self.weights_ref is not None and every and updates - self.broadcast_at[self.version] < every:
            return
        arrays = [p.detach().numpy() for p in self.acting.parameters()]
        self.weights_ref = ray.put(arrays)  # once: every host's next pull carries this ref
        self.version += 1
        self.broadcast_at[self.version] = updates
        self.weights_bytes = sum(a.nbytes for a in arrays)
        # A host's chunks carry at least the version it had before its pending pull, so older entries are done
        # with (the map would otherwise grow by one entry per learner call).
        oldest = min(self.sent_version)
        for v in [v for v in self.broadcast_at if v < oldest]:
            del self.broadcast_at[v]

    def _limit(self, h: int) -> int:
        """Host h's step limit: its share of the steps the learner allows this run (a resumed run's earlier
        steps left out), less the steps of the host's earlier lives."""
        return max(0, step_share(max(0, self.gate.limit - self.before), self.cum, h) - self.base[h])

    def _offset(self, h: int) -> int:
        return self.gate.steps - self.steps[h]

    async def start(self, tg: asyncio.TaskGroup, on_episode: EpisodeHook) -> list[asyncio.Task]:
        self.on_episode = on_episode
        self.before = self.gate.steps  # steps of the run before this start (a resume)
        await asyncio.gather(*(self._start(h) for h in range(len(self.hosts))))
        self.states = None
        return [tg.create_task(self._pump(h)) for h in range(len(self.hosts))]

    async def _start(self, h: int) -> None:
        states = None
        if self.states is not None and self.incarnation[h] == 0:
            states = [self.states[i] for i in self.groups[h]]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while True:
            try:
                await self.hosts[h].start.remote(self.incarnation[h], self.weights_ref, self.version,
                                                 self._offset(h), states)
                break
            except ActorUnavailableError as exc:  # Ray is restarting it: ask again shortly
                if loop.time() > deadline:
                    raise RunFailed(f"Ray host {h} was not back within {START_TIMEOUT_S:g} s: "
                                    f"{first_line(exc, 200)}") from None
                await asyncio.sleep(0.2)
            except RayActorError as exc:
                raise RunFailed(f"Ray host {h} could not be (re)started: {first_line(exc, 200)}") from None
            except RayTaskError as exc:  # its actors could not be built there: an env or a module missing on a node
                cause = getattr(exc, "cause", None) or exc
                raise RunFailed(f"Ray host {h} could not build its actors: {type(cause).__name__}: "
                                f"{first_line(cause, 200)}") from None
        self.sent_version[h] = self.version

    async def _pump(self, h: int) -> None:
        """Keep one pull in flight to host h; while its actors are parked, wait for the limit to rise."""
        while True:
            async with self.locks[h]:
                d = await self._pull(h, "collect")
            if d is not None and d.parked and not d.chunks:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.gate.limit_changed(), PULL_WAIT_S)

    async def _pull(self, h: int, mode: str) -> Delivery | None:
        """One pull (the caller holds host h's lock); None when the host died and was started again."""
        version = self.version
        weights = self.weights_ref if self.sent_version[h] != version else None
        try:
            d = await self.hosts[h].pull.remote(self._limit(h), weights, version, self._offset(h), mode)
        except RayActorError as exc:
            await self._host_died(h, exc)
            return None
        self.sent_version[h] = version
        self._take(h, d)
        return d

    async def _host_died(self, h: int, exc: BaseException) -> None:
        self.restarts += 1
        max_restarts = self.cfg.backend.max_restarts
        self.log({"kind": "host_fault", "host": h, "host_restarts": self.restarts, "lost_actors": self.groups[h],
                  "error": first_line(exc, 200)})
        if self.restarts > max_restarts:
            raise RunFailed(f"Ray hosts died {self.restarts} times (backend.max_restarts = {max_restarts}); "
                            f"last: host {h}: {first_line(exc, 200)}")
        self.base[h] += self.steps[h]
        self.steps[h] = 0
        self.incarnation[h] += 1
        await self._start(h)  # Ray holds the call until the restarted process is up

    def _take(self, h: int, d: Delivery) -> None:
        """A delivery's chunks into replay, its steps into the gate, its episodes and faults into the log."""
        for chunk, version in zip(d.chunks, d.versions):
            self.replay.add(chunk)
            made_at = self.broadcast_at.get(version)  # always there (see `published`); a metric never stops a run
            if made_at is not None:
                lag = self.updates - made_at
                self.lag_sum, self.lag_count = self.lag_sum + lag, self.lag_count + 1
                self.lag_max = max(self.lag_max, lag)
                self.lag_total, self.lag_chunks = self.lag_total + lag, self.lag_chunks + 1
            self.bytes_in, self.steps_in = self.bytes_in + chunk_nbytes(chunk), self.steps_in + chunk.steps
        self.steps[h] = d.steps
        self.forwards[h], self.requests[h], self.waiting[h] = d.forwards, d.requests, len(d.chunks)
        self.gate.advance_to(self.before + sum(self.base) + sum(self.steps))
        for episode in d.episodes:
            self.on_episode(*episode)
        for rec in d.faults:
            self.env_faults += rec.get("kind") == "env_fault"
            self.log(rec)
        if d.error is not None:
            raise RunFailed(d.error)

    async def _settle(self, mode: str) -> list[Delivery]:
        async def one(h: int) -> Delivery:
            async with self.locks[h]:
                while (d := await self._pull(h, mode)) is None:
                    pass  # died and restarted: ask the new incarnation
                return d

        return await asyncio.gather(*(one(h) for h in range(len(self.hosts))))

    async def settle(self) -> None:
        """Until every host's actors wait at their limit, with every chunk made so far in the pool."""
        await self._settle("settle")

    async def quiesce(self) -> None:
        """Every actor parked between two steps, every chunk in the pool, and every actor's state here."""
        states: list = [None] * self.num_actors
        for ids, d in zip(self.groups, await self._settle("quiesce")):
            for i, s in zip(ids, copy.deepcopy(d.actor_states)):  # writable copies of Ray's read-only arrays
                states[i] = s
        self.states = states

    def queue_depth(self) -> int:
        return sum(self.waiting)

    def train_record(self) -> dict:
        rec = {"queue_depth": sum(self.waiting), "actors_per_forward": sum(self.requests) / max(1, sum(self.forwards)),
               "weights_version": self.version, "host_restarts": self.restarts,
               "policy_lag_updates_mean": self.lag_sum / self.lag_count if self.lag_count else None,
               "policy_lag_updates_max": self.lag_max if self.lag_count else None}
        self.lag_sum = self.lag_max = self.lag_count = 0
        return rec

    def summary(self) -> dict:
        return {"env_faults": self.env_faults,
                "actors_per_forward": round(sum(self.requests) / max(1, sum(self.forwards)), 2),
                "backend": "ray", "hosts": len(self.hosts), "host_restarts": self.restarts,
                "weight_broadcasts": self.version, "weights_bytes": self.weights_bytes,
                "chunk_bytes_per_step": round(self.bytes_in / max(1, self.steps_in), 1),
                "policy_lag_updates_mean": round(self.lag_total / max(1, self.lag_chunks), 2)}

    async def aclose(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(Exception):
                ray.kill(host, no_restart=True)


if TYPE_CHECKING:  # `make typecheck`: the class builds, and is, a protocol.Collection
    from asyncdqn.collect.protocol import CollectionFactory

    _conforms: CollectionFactory = RayCollection
