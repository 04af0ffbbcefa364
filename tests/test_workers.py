"""Env workers: results equal the same envs stepped in-process; faults stay with their env or worker;
killed workers are replaced, up to max_restarts; close leaves no process and no shared memory behind.

The pools use the fork server (started once per session, ~1 s; each pool then starts in ~0.1 s).
Every wait is bounded by `asyncio.timeout`, so a hung pool fails the test instead of stalling it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.worker_envs import NAP, POISON, make_cartpole, make_counting

from asyncdqn.collect.workers import (EnvError, EnvWorkerPool, TooManyRestarts, WorkerDeath, WorkerDied,
                              default_num_workers)

TESTS = Path(__file__).resolve().parent
LIMIT_S = 15


def pool_of(env_fn, num_envs=4, num_workers=2, **kw) -> EnvWorkerPool:
    obs_shape = (4,) if env_fn is make_cartpole else (3,)
    return EnvWorkerPool(env_fn, num_envs, num_workers, obs_shape, np.float32, "forkserver", **kw)


def actions_for(env: int, steps: int, n_actions: int) -> np.ndarray:
    return np.random.default_rng(1000 + env).integers(n_actions, size=steps)


def in_process(env_fn, env: int, steps: int, n_actions: int) -> list[tuple]:
    """The reference: the same env, seed and actions, stepped here; reset (unseeded) at episode ends."""
    e = env_fn()
    out = [("reset", e.reset(seed=env)[0])]
    for a in actions_for(env, steps, n_actions):
        obs, reward, term, trunc, _ = e.step(int(a))
        out.append(("step", obs, float(reward), term, trunc))
        if term or trunc:
            out.append(("reset", e.reset()[0]))
    return out


async def through_pool(pool: EnvWorkerPool, env: int, steps: int, n_actions: int,
                       autoreset: bool = False) -> list[tuple]:
    r = await pool.reset(env, seed=env)
    out = [("reset", r.obs)]
    for a in actions_for(env, steps, n_actions):
        s = await pool.step(env, int(a), autoreset=autoreset)
        out.append(("step", s.obs, s.reward, s.terminated, s.truncated))
        assert (s.first_obs is not None) == (autoreset and (s.terminated or s.truncated))
        if s.terminated or s.truncated:
            out.append(("reset", s.first_obs if autoreset else (await pool.reset(env)).obs))
    return out


def assert_same(got: list[tuple], want: list[tuple]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g[0] == w[0] and g[2:] == w[2:]
        np.testing.assert_array_equal(g[1], w[1])


def gone(pid: int) -> bool:
    """Exited and reaped (a zombie would still answer signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_default_num_workers_is_the_usable_cores():
    assert default_num_workers() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("autoreset", [False, True])
@pytest.mark.parametrize("env_fn,n_actions", [(make_cartpole, 2), (make_counting, 3)])
async def test_steps_equal_in_process_envs(env_fn, n_actions, autoreset):
    steps = 60
    async with asyncio.timeout(LIMIT_S):
        async with pool_of(env_fn, num_envs=5) as pool:
            assert [pool.worker_of(i) for i in range(5)] == [0, 1, 0, 1, 0]
            got = await asyncio.gather(*(through_pool(pool, i, steps, n_actions, autoreset) for i in range(5)))
            if autoreset:  # episode ends cost no extra round trip: the five actors stay in one tick
                assert pool.messages_sent == 2 * (steps + 1)
    for i in range(5):
        assert_same(got[i], in_process(env_fn, i, steps, n_actions))


async def test_env_error_is_reported_for_that_env_only():
    async with asyncio.timeout(LIMIT_S):
        async with pool_of(make_counting) as pool:
            await asyncio.gather(*(pool.reset(i, seed=i) for i in range(4)))
            sent = pool.messages_sent
            results = await asyncio.gather(pool.step(0, 1), pool.step(1, POISON), pool.step(2, 1), pool.step(3, 2),
                                           return_exceptions=True)
            assert pool.messages_sent - sent == 2  # four calls in one tick: one message per worker
            assert isinstance(results[1], EnvError) and results[1].env == 1
            assert "poisoned action" in str(results[1])             # the worker's traceback comes along
            assert [r.obs[1] for i, r in enumerate(results) if i != 1] == [1.0, 1.0, 1.0]
            with pytest.raises(EnvError, match="reset it first"):
                await pool.step(1, 0)
            with pytest.raises(Exception, match="pickle"):            # never sent: fails in the parent
                await pool.step(2, lambda: 0)
            await pool.step(2, 0)                                    # its worker (and env 3's) is fine
            # A reset rebuilds the env: it then behaves as a fresh one with that seed.
            got = await through_pool(pool, 1, 20, 3)
            assert pool.restarts == 0
    assert_same(got, in_process(make_counting, 1, 20, 3))


async def test_killed_worker_is_replaced_and_other_envs_continue():
    deaths: list[WorkerDeath] = []
    async with asyncio.timeout(LIMIT_S):
        async with pool_of(make_counting, num_envs=6, on_worker_died=deaths.append) as pool:
            await asyncio.gather(*(pool.reset(i, seed=i) for i in range(6)))
            old_pid = pool.pids()[0]
            napping = asyncio.ensure_future(pool.step(0, NAP))     # in flight in worker 0 when it dies
            await asyncio.sleep(0.2)
            os.kill(old_pid, signal.SIGKILL)
            with pytest.raises(WorkerDied) as died:
                await napping
            assert (died.value.env, died.value.worker, died.value.exitcode) == (0, 0, -signal.SIGKILL)
            assert deaths == [WorkerDeath(0, -signal.SIGKILL, (0, 2, 4), 1)]
            assert pool.pids()[0] != old_pid and gone(old_pid)
            with pytest.raises(WorkerDied):                          # env 2 was idle: told at its next step
                await pool.step(2, 1)
            # Worker 1's envs never noticed: their episodes go on as in-process ones.
            for i in (1, 3, 5):
                s = await pool.step(i, 1)
                assert s.obs[1] == 1.0
            got = await asyncio.gather(*(through_pool(pool, i, 15, 3) for i in range(6)))
    for i in range(6):
        assert_same(got[i], in_process(make_counting, i, 15, 3))


async def test_restarts_are_bounded():
    async with asyncio.timeout(LIMIT_S):
        async with pool_of(make_counting, max_restarts=1) as pool:
            await asyncio.gather(*(pool.reset(i, seed=i) for i in range(4)))
            os.kill(pool.pids()[1], signal.SIGKILL)
            with pytest.raises(WorkerDied):
                await pool.step(1, NAP)
            await pool.reset(1, seed=1)
            nap = asyncio.ensure_future(pool.step(1, NAP))
            await asyncio.sleep(0.2)
            os.kill(pool.pids()[1], signal.SIGKILL)
            with pytest.raises(TooManyRestarts, match=r"died 2 times \(max_restarts=1\)"):
                await nap
            with pytest.raises(TooManyRestarts):                     # and every call after it
                await pool.step(0, 1)
            assert len(pool.pids()) == 1


@pytest.mark.parametrize("sync_close", [False, True])
async def test_close_leaves_no_processes_or_shared_memory(sync_close):
    async with asyncio.timeout(LIMIT_S):
        pool = pool_of(make_counting)
        await pool.start()
        await asyncio.gather(*(pool.reset(i, seed=i) for i in range(4)))
        pids = pool.pids()
        shm = Path("/dev/shm") / pool.shm_name
        assert shm.exists() and len(pids) == 2
        pending = asyncio.ensure_future(pool.step(0, 1))
        await asyncio.sleep(0)                 # submitted, not sent yet
        if sync_close:
            pool.close()
        else:
            await pool.aclose()
        await asyncio.sleep(0)
        assert pending.cancelled()             # a call still pending at close is cancelled
        with pytest.raises(RuntimeError, match="not running"):
            await pool.step(1, 0)
    assert all(gone(pid) for pid in pids)
    assert not shm.exists()


SCRIPT = """
import asyncio, os, signal
import numpy as np
from asyncdqn.collect.workers import EnvWorkerPool, WorkerDied
from helpers.worker_envs import make_counting

async def main():
    async with EnvWorkerPool(make_counting, 3, 2, (3,), np.float32, "{ctx}") as pool:
        for i in range(3):
            await pool.reset(i, seed=i)
        os.kill(pool.pids()[0], signal.SIGKILL)
        try:
            await pool.step(0, 8)
        except WorkerDied:
            pass
        await pool.reset(0, seed=0)
        await pool.step(0, 1)
    print("ok")

if __name__ == "__main__":
    asyncio.run(main())
"""


@pytest.mark.parametrize("ctx", ["spawn", "forkserver"])
def test_a_whole_program_exits_cleanly_without_resource_tracker_warnings(ctx, tmp_path):
    """The resource tracker reports leaked shared memory only when its process exits, i.e. at the end
    of the interpreter; so run a whole program (with a worker killed on the way) and read its stderr."""
    script = tmp_path / "prog.py"
    script.write_text(SCRIPT.format(ctx=ctx))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    proc = subprocess.run([sys.executable, "-W", "error", str(script)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert "resource_tracker" not in proc.stderr and "leaked" not in proc.stderr, proc.stderr
