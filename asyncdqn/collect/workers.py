"""Env workers: CPU-heavy envs step in worker processes, several env instances per worker.

Place in the flow: envs -> **workers** -> actors. An actor coroutine awaits `pool.step(i, action)`
instead of calling `env.step` on the event loop, so stepping runs on other cores while the loop runs
batched inference, replay writes and the learner's hand-offs.

Data paths: all commands (reset/step) for a worker from one event-loop tick go in one pipe message,
sent by a `call_soon` callback (the actors woken by one inference tick all submit before it runs).
The worker runs them in order, writes observations into shared memory [2, N, *O] (the call's; the next
episode's first after an auto-reset) and answers with one message of small `Reply`s (the worker's side
is env_worker.py). The parent reads it via `loop.add_reader` on the pipe, copies the observations out
and resolves the callers' futures.

Env i lives in worker i % num_workers (round robin, not contiguous blocks): whichever subset of actors
is busy (fewer actors than envs, some parked at the step gate), their envs spread evenly over workers.
A worker builds each env with `env_fn` at its first reset.

Faults: an env that raises in `step`/`reset` fails only that call (`EnvError` with the worker's
traceback); the worker drops the env and rebuilds it at its next `reset`. A worker that dies (pipe EOF
or process sentinel) is reported to `on_worker_died` (or logged as a warning when there is none) and
replaced by a fresh process; its envs' pending calls fail with `WorkerDied`, as does each of its envs'
next `step` until that env is reset.
The death after `max_restarts` replacements fails its calls and all later ones with `TooManyRestarts`.

Blocking: `step`/`reset` never block the loop. `start` forks or spawns processes (milliseconds; workers
import in the background). `aclose` joins workers in a thread; `close` blocks up to `join_timeout` s.
Pipe writes are blocking calls, but messages are a few hundred bytes per env and each env has at most
one call in flight, far below the pipe buffer, so neither side waits on the other.

Legend: N env instances, O observation shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing as mp
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.shared_memory import SharedMemory
from typing import Any, NamedTuple

import numpy as np

from asyncdqn.collect.env_worker import Command, Reply, worker_main

log = logging.getLogger(__name__)


def default_num_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class StepResult(NamedTuple):
    obs: np.ndarray                   # after the step: the true final observation at an episode's end
    reward: float
    terminated: bool
    truncated: bool
    info: dict
    first_obs: np.ndarray | None      # with autoreset at an episode's end: the next episode's first


class ResetResult(NamedTuple):
    obs: np.ndarray
    info: dict


class WorkerDeath(NamedTuple):  # what `on_worker_died` receives
    worker: int
    exitcode: int | None   # negative: killed by that signal
    envs: tuple[int, ...]
    restarts: int          # replacements so far, this one included


class EnvError(Exception):
    """The env raised in its worker; reset it to go on."""

    def __init__(self, env: int, detail: str):
        super().__init__(f"env {env} raised in its worker process:\n{detail}")
        self.env = env


class WorkerDied(Exception):
    """The env's worker process died; the env is fresh in a new worker and needs a reset."""

    def __init__(self, env: int, worker: int, exitcode: int | None):
        super().__init__(f"env worker {worker} died (exit code {exitcode}); env {env} must be reset")
        self.env, self.worker, self.exitcode = env, worker, exitcode


class TooManyRestarts(RuntimeError):
    """Workers died more than `max_restarts` times: the pool is broken; close it."""


# --------------------------------------------------------------------------------------------- parent side


@dataclass
class _Slot:
    worker: int
    envs: tuple[int, ...]
    proc: Any = None                  # multiprocessing Process
    conn: Any = None                  # parent end of the pipe
    queued: list = field(default_factory=list)  # commands not sent yet (this tick)


class EnvWorkerPool:
    """N env instances in worker processes, driven from asyncio. Use as `async with pool:`."""

    def __init__(self, env_fn: Callable[[], Any], num_envs: int, num_workers: int | None, obs_shape: tuple,
                 obs_dtype: np.dtype, ctx: str = "forkserver", *, max_restarts: int = 3,
                 on_worker_died: Callable[[WorkerDeath], None] | None = None, join_timeout: float = 5.0):
        if num_envs < 1:
            raise ValueError("num_envs must be >= 1")
        if ctx not in ("spawn", "forkserver"):
            raise ValueError(f"ctx must be 'spawn' or 'forkserver' (fork is unsafe with threads), not {ctx!r}")
        self.env_fn, self.num_envs, self.max_restarts = env_fn, num_envs, max_restarts
        self.num_workers = min(num_envs, num_workers or default_num_workers())
        self.obs_shape, self.obs_dtype = tuple(obs_shape), np.dtype(obs_dtype)
        self.on_worker_died, self.join_timeout = on_worker_died, join_timeout
        self.restarts = self.commands_sent = self.messages_sent = 0  # counters: replacements, batching
        self._ctx: Any = mp.get_context(ctx)  # spawn or forkserver (typeshed: a BaseContext, without Process)
        if ctx == "forkserver":
            # Forked workers then start with these imported (a ~0.3 s gymnasium import each, otherwise).
            # Only takes effect if this interpreter's fork server is not running yet.
            env_module = getattr(getattr(env_fn, "func", env_fn), "__module__", "gymnasium")  # partial or function
            self._ctx.set_forkserver_preload(["asyncdqn.collect.env_worker", "gymnasium", env_module])
        self._slots = [_Slot(w, tuple(range(w, num_envs, self.num_workers))) for w in range(self.num_workers)]
        self._inflight: dict[int, tuple[asyncio.Future, bool]] = {}  # env -> (future, is reset)
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self._failed: TooManyRestarts | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_scheduled = False
        self._shm: SharedMemory | None = None
        self._obs_2NO: np.ndarray | None = None  # shared observations; private: a view kept past close blocks the unmap

    def worker_of(self, env: int) -> int:
        return env % self.num_workers

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self._slots if s.proc is not None]

    @property
    def shm_name(self) -> str | None:
        return None if self._shm is None else self._shm.name

    # ------------------------------------------------------------------------------------- life cycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        nbytes = max(1, 2 * self.num_envs * math.prod(self.obs_shape) * self.obs_dtype.itemsize)
        self._shm = SharedMemory(create=True, size=nbytes)
        self._obs_2NO = np.ndarray((2, self.num_envs, *self.obs_shape), dtype=self.obs_dtype, buffer=self._shm.buf)
        try:
            for slot in self._slots:
                self._start_worker(slot)
        except BaseException:
            self.close()  # no half-started pool: stop what started, unlink the memory
            raise

    async def __aenter__(self) -> EnvWorkerPool:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def _start_worker(self, slot: _Slot) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=worker_main, name=f"asyncdqn-env-worker-{slot.worker}", daemon=True,
            args=(child, self._shm.name, self.obs_shape, self.obs_dtype.str, self.num_envs, slot.envs, self.env_fn))
        proc.start()
        child.close()  # so that the worker's death shows as EOF on our end
        slot.proc, slot.conn, slot.queued = proc, parent, []
        self._loop.add_reader(parent.fileno(), self._on_readable, slot, proc)
        self._loop.add_reader(proc.sentinel, self._replace, slot, proc)

    def _detach(self, slot: _Slot) -> None:
        if self._loop is not None and not self._loop.is_closed() and slot.proc is not None:
            self._loop.remove_reader(slot.conn.fileno())
            self._loop.remove_reader(slot.proc.sentinel)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._stop_all, self._begin_close())

    def close(self) -> None:
        """Synchronous close (blocks up to `join_timeout`); prefer `aclose` inside the loop."""
        self._stop_all(self._begin_close())

    def _begin_close(self) -> list[_Slot]:
        slots, self._slots = self._slots, []
        for slot in slots:
            self._detach(slot)
            if slot.conn is not None:
                with contextlib.suppress(OSError):  # already dead
                    slot.conn.send(None)
        for fut, _ in self._inflight.values():
            fut.cancel()
        self._inflight.clear()
        return slots

    def _stop_all(self, slots: list[_Slot]) -> None:
        for slot in slots:
            if slot.proc is None:
                continue
            slot.proc.join(self.join_timeout)
            if slot.proc.is_alive():
                log.warning("env worker %d did not stop in %.1f s; killing it", slot.worker, self.join_timeout)
                slot.proc.kill()
                slot.proc.join()
            slot.proc.close()
            slot.conn.close()
        if self._shm is not None:
            self._obs_2NO = None
            self._shm.close()
            self._shm.unlink()
            self._shm = None

    # ------------------------------------------------------------------------------------- calls

    async def step(self, env: int, action: Any, autoreset: bool = False) -> StepResult:
        """With autoreset, an episode's end also resets the env (unseeded) in the same round trip, so
        its actor stays in step with the others (one batch per worker per tick) across episodes."""
        if self._needs_reset[env] and self._failed is None:
            raise WorkerDied(env, self.worker_of(env), None)
        return await self._submit(Command(env, False, action, None, autoreset))

    async def reset(self, env: int, seed: int | None = None) -> ResetResult:
        fut = self._submit(Command(env, True, None, seed, False))
        self._needs_reset[env] = False
        return await fut

    def _submit(self, cmd: Command) -> asyncio.Future:
        if self._failed is not None:
            raise self._failed
        if self._loop is None or not self._slots:
            raise RuntimeError("the pool is not running (use `async with pool:`)")
        if cmd.env in self._inflight:
            raise RuntimeError(f"env {cmd.env} already has a call in flight")
        fut = self._loop.create_future()
        self._inflight[cmd.env] = (fut, cmd.reset)
        self._slots[self.worker_of(cmd.env)].queued.append(cmd)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        """One message per worker with every command of this tick."""
        self._flush_scheduled = False
        for slot in self._slots:
            if not slot.queued:
                continue
            cmds, slot.queued = slot.queued, []
            self.commands_sent += len(cmds)
            self.messages_sent += 1
            try:
                slot.conn.send(cmds)
            except OSError:  # broken pipe: the worker is dead
                self._replace(slot, slot.proc)
            except Exception as exc:  # e.g. an action that cannot be pickled: nothing was sent
                for cmd in cmds:
                    self._fail(cmd.env, exc)

    def _on_readable(self, slot: _Slot, proc) -> None:
        """One message per call: the reader fires again while more wait (`conn.poll` costs ~30 us)."""
        if slot.proc is not proc:
            return
        try:
            replies = slot.conn.recv()
        except (EOFError, OSError):
            self._replace(slot, proc)
            return
        for reply in replies:
            self._resolve(reply)

    def _drain(self, slot: _Slot) -> bool:
        """Resolve every reply waiting on the pipe; False if the pipe has closed (the worker is gone)."""
        try:
            while slot.conn.poll():
                for reply in slot.conn.recv():
                    self._resolve(reply)
        except (EOFError, OSError):
            return False
        return True

    def _resolve(self, reply: Reply) -> None:
        fut, is_reset = self._inflight.pop(reply.env)
        if fut.done():  # the caller was cancelled
            return
        if reply.error is not None:
            fut.set_exception(EnvError(reply.env, reply.error))
            return
        obs = self._obs_2NO[0, reply.env].copy()  # the worker writes these slots again on the next call
        first = self._obs_2NO[1, reply.env].copy() if reply.was_reset else None
        fut.set_result(ResetResult(obs, reply.info) if is_reset else
                       StepResult(obs, reply.reward, reply.terminated, reply.truncated, reply.info, first))

    def _fail(self, env: int, exc: BaseException) -> None:
        fut, _ = self._inflight.pop(env)
        if not fut.done():  # not cancelled by its caller
            fut.set_exception(exc)

    def _replace(self, slot: _Slot, proc) -> None:
        """Fail the dead worker's calls, then start a fresh worker (or give up after max_restarts)."""
        if slot.proc is not proc:
            return  # this death was handled already
        self._drain(slot)  # replies it sent before dying are good
        self._detach(slot)
        if proc.is_alive():  # pipe broke first; make sure it is gone
            proc.kill()
        proc.join()
        exitcode = proc.exitcode
        proc.close()
        slot.conn.close()
        slot.proc = slot.conn = None
        self.restarts += 1
        death = WorkerDeath(slot.worker, exitcode, slot.envs, self.restarts)
        failed = self.restarts > self.max_restarts
        if failed:
            self._failed = TooManyRestarts(
                f"env workers died {self.restarts} times (max_restarts={self.max_restarts}); last: worker "
                f"{slot.worker}, exit code {exitcode}")
        for env in slot.envs:
            self._needs_reset[env] = True
            if env in self._inflight:
                self._fail(env, self._failed if failed else WorkerDied(env, slot.worker, exitcode))
        if not failed:
            self._start_worker(slot)
        if self.on_worker_died is not None:
            self.on_worker_died(death)  # the owner reports it (the runtime: an env_fault record)
        else:
            log.warning("env worker %d (envs %s) died with exit code %s; %s", slot.worker, list(slot.envs),
                        exitcode, "giving up" if failed else f"restart {self.restarts}/{self.max_restarts}")

