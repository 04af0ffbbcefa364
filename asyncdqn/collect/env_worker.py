"""The env worker process: the side of `workers.EnvWorkerPool` that runs in each worker.

Place in the flow: envs -> **env worker** -> pool (workers.py) -> actors. A worker holds some of the pool's
env instances, receives batches of `Command`s on its pipe, runs them in order, writes observations into the
pool's shared memory [2, N, *O] and answers each batch with one message of `Reply`s. An env that raises
fails only its own command (the reply carries the traceback); the worker drops it and rebuilds it with
`env_fn` at its next reset.

Blocking: everything here blocks; it runs in its own process. Legend: N env instances, O observation shape.
"""

from __future__ import annotations

import contextlib
import signal
import traceback
from collections.abc import Callable
from multiprocessing.shared_memory import SharedMemory
from typing import Any, NamedTuple

import numpy as np


class Command(NamedTuple):
    env: int
    reset: bool        # reset (with seed) rather than step (with action)
    action: Any
    seed: int | None
    autoreset: bool    # step, and reset (unseeded) at once if the episode ended


class Reply(NamedTuple):
    env: int
    reward: float
    terminated: bool
    truncated: bool
    info: dict          # gymnasium's info, scalar entries only (e.g. Atari's lives)
    error: str | None   # the worker's traceback when the env raised
    was_reset: bool     # auto-reset: the next episode's first observation is in obs_2NO[1]




def _close_quietly(env) -> None:
    with contextlib.suppress(Exception):
        if env is not None:
            env.close()


def _scalar_info(info: dict) -> dict:
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in info.items()
            if isinstance(v, (bool, int, float, np.bool_, np.number))}


def _run(envs: dict, obs_2NO: np.ndarray, cmd: Command, env_fn: Callable) -> Reply:
    was_reset = False
    try:
        if cmd.reset:
            if envs[cmd.env] is None:
                envs[cmd.env] = env_fn()
            obs, info = envs[cmd.env].reset(seed=cmd.seed)
            reward, terminated, truncated = 0.0, False, False
        else:
            if envs[cmd.env] is None:
                raise RuntimeError("the env is not built (never reset, or it raised): reset it first")
            obs, reward, terminated, truncated, info = envs[cmd.env].step(cmd.action)
            if cmd.autoreset and (terminated or truncated):
                # Unseeded, as actors reset between episodes: the env's own generator goes on.
                obs_2NO[1, cmd.env] = envs[cmd.env].reset()[0]
                was_reset = True
        obs_2NO[0, cmd.env] = obs
        return Reply(cmd.env, float(reward), bool(terminated), bool(truncated), _scalar_info(info), None,
                     was_reset)
    except Exception:
        # Its state is unknown now: drop it, and rebuild it at the next reset.
        _close_quietly(envs[cmd.env])
        envs[cmd.env] = None
        return Reply(cmd.env, 0.0, False, False, {}, traceback.format_exc(), False)


def worker_main(conn, shm_name: str, obs_shape: tuple, obs_dtype: str, num_envs: int,
                 env_ids: tuple[int, ...], env_fn: Callable) -> None:
    """One worker process: run command batches until told to stop or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes us
    shm = SharedMemory(name=shm_name)  # attaching registers it with the parent's tracker: a no-op repeat
    obs_2NO = np.ndarray((2, num_envs, *obs_shape), dtype=np.dtype(obs_dtype), buffer=shm.buf)
    envs: dict = dict.fromkeys(env_ids)  # None: built at the next reset
    try:
        while True:
            try:
                cmds = conn.recv()
                if cmds is None:
                    break
                conn.send([_run(envs, obs_2NO, cmd, env_fn) for cmd in cmds])
            except (EOFError, OSError):
                break  # the parent is gone
    finally:
        for env in envs.values():
            _close_quietly(env)
        del obs_2NO
        shm.close()
