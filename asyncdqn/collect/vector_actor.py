"""Vector actors: one coroutine drives a gymnasium VectorEnv of W sub-envs, with one batched request per step.

Place in the flow: **actors** -> queue -> replay, the vectorised form of `actor.Actor` (issue 16). Sub-env j
of the vector actor that starts at global actor b *is* actor b + j: it acts with net (b + j) mod K, its epsilon
is rung (b + j) of the ladder, its chunks are its own (n-step returns per sub-env), and the checkpoint holds
one actor state per sub-env. What changes is the cost: one `VectorEnv.step`, one batched request to the
`InferenceBatcher`, one vectorised epsilon-greedy choice and one row of `transitions.ColumnChunkBuilder` per
step for all W sub-envs, instead of W coroutines each paying Python per step.

Vector envs (`actors.vector`): 'native' is gymnasium's own vectorised env (`gymnasium.make_vec` with the id's
vector entry point: CartPole), 'sync' a `gymnasium.vector.SyncVectorEnv` over W envs from `make_env` (any env;
fault injection wraps its sub-envs), 'auto' native where the id has one. Both reset the gymnasium 1.x way
(next-step autoreset), which `ColumnChunkBuilder` relies on; another mode is refused.

Env steps: a vector step counts W env steps, a resetting sub-env's too (as SB3 and CleanRL count vector
steps), so `total_steps` must be a multiple of W and the step gate may pass a limit by up to W - 1.

Randomness: sub-env j draws two uniforms per step (explore?, which action) from its own generator, in blocks,
its reset step included; a single-env actor draws the same pair per step and one pair at each reset. A
SyncVectorEnv resets sub-env j with actor b + j's seeds. So on the same seeds (and a fixed epsilon: the anneal
reads the run's step count, which the two kinds of actor advance in different orders), a vector actor's
transitions are those of W single-env actors (tests/test_vector_actor.py).

Pausing and resuming: snapshotted only while parked at the gate. A SyncVectorEnv is rebuilt exactly as
`actor.Actor` rebuilds its env: each sub-env restores the generator state before its episode's reset and
replays the actions since; a sub-env whose reset was pending is marked so again. Gymnasium's CartPole vector env
keeps its whole state in arrays (`state`, `steps`, `prev_done`, its generator), which are saved as they are.
A vector env that reproduces neither starts new seeded episodes; the interrupted ones end as truncated.

Faults: a sub-env error is an error of the whole vector env (a SyncVectorEnv may have stepped some sub-envs
and not others): it is rebuilt and reset, seeded, with backoff, and every episode in progress ends as
truncated at its last observation (`ColumnChunkBuilder.cut`), with no episode record.

Blocking calls: `VectorEnv.step` runs on the event loop (for CartPole, a few microseconds per sub-env).

Legend: W sub-envs of this actor, O observation shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from asyncdqn.collect.actor import ChunkQueue, EnvFaults, InferenceBatcher, Uniforms, episode_seed
from asyncdqn.collect.protocol import EpisodeHook
from asyncdqn.config import RunConfig
from asyncdqn.envs.make import EnvSpec, FaultInjector, make_env
from asyncdqn.errors import UserError, first_line
from asyncdqn.schedule import StepGate, actor_net
from asyncdqn.transitions import ColumnChunkBuilder

KIND = "vector"  # the mark of a sub-env's checkpoint state (a single-env actor's has none)


def native_vector(cfg: RunConfig) -> bool:
    """Whether actors.vector asks for, or 'auto' picks, gymnasium's own vectorised env for this config."""
    mode = cfg.actors.vector
    has_native = (not cfg.env.factory and cfg.faults.env_error_rate == 0
                  and getattr(gym.spec(cfg.env.id), "vector_entry_point", None) is not None) if mode != "sync" else False
    if mode == "native" and not has_native:
        raise UserError(f"config: actors.vector = 'native' needs a gymnasium id with a vector entry point and no "
                        f"fault injection; {cfg.env.factory or cfg.env.id!r} has none (use 'sync')")
    return has_native


def make_vector_env(cfg: RunConfig, train_kwargs: dict, width: int,
                    wrap: Callable[[gym.Env], gym.Env]) -> gym.vector.VectorEnv:
    """W sub-envs as one VectorEnv with next-step autoreset (see the module docstring)."""
    if native_vector(cfg):
        try:
            vec = gym.make_vec(cfg.env.id, num_envs=width, vectorization_mode="vector_entry_point", **train_kwargs)
        except (gym.error.Error, TypeError, ValueError) as exc:
            raise UserError(f"env {cfg.env.id!r}: its vector env could not be built: {first_line(exc, 300)}") from None
    else:
        vec = gym.vector.SyncVectorEnv([lambda: wrap(make_env(cfg.env, train_kwargs)) for _ in range(width)],
                                       autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    mode = vec.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
    if mode != gym.vector.AutoresetMode.NEXT_STEP:
        vec.close()
        raise UserError(f"env {cfg.env.id!r}: its vector env resets in mode {mode}; asyncdqn needs next-step autoreset")
    return vec


class VectorDraws:
    """W streams of uniforms, two per sub-env per step, drawn a block at a time from each sub-env's generator:
    sub-env j sees the stream `actor.Uniforms` gives a single-env actor with the same generator, and uses it
    the same way (explore if the first draw < epsilon; then the action is int(second draw * n_actions))."""

    def __init__(self, rngs: list[np.random.Generator], n_actions: int):
        self.rngs, self.n_actions = rngs, n_actions
        self._block_WB = np.zeros((len(rngs), 0))
        self._pos = 0

    def _refill(self, block_WB: np.ndarray) -> None:
        self._block_WB, self._pos = block_WB, 0
        self._explore_WT = np.ascontiguousarray(block_WB[:, 0::2].T)  # [steps of the block, W]
        self._pick_WT = np.ascontiguousarray((block_WB[:, 1::2] * self.n_actions).astype(np.int64).T)

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        """([W] explore draws, [W] random actions) of this step."""
        if self._pos >= self._block_WB.shape[1]:
            self._refill(np.stack([rng.random(Uniforms.BLOCK) for rng in self.rngs]))
        t = self._pos // 2
        self._pos += 2
        return self._explore_WT[t], self._pick_WT[t]

    def state_dict(self, w: int) -> dict:
        """Sub-env w's state, in `Uniforms.state_dict`'s form (the draws left, last first)."""
        return {"rng": json.dumps(self.rngs[w].bit_generator.state), "left": self._block_WB[w, self._pos:][::-1].copy()}

    def load_state_dicts(self, states: list[dict]) -> None:
        left = [np.asarray(s["left"], dtype=np.float64)[::-1] for s in states]
        if len({len(a) for a in left}) != 1 or len(left[0]) % 2:
            raise UserError("checkpoint: the sub-envs of a vector actor hold unequal draws; it was not written "
                            "by a vector actor")
        for rng, s in zip(self.rngs, states):
            rng.bit_generator.state = json.loads(s["rng"])
        self._refill(np.stack(left))


class VectorActor:
    """Sub-envs [base, base + W) of the run as one VectorEnv stepped by one coroutine (`run`). Not thread-safe."""

    def __init__(self, index: int, width: int, make_vec: Callable[[], gym.vector.VectorEnv], seeds: list[int],
                 builder: ColumnChunkBuilder, rngs: list[np.random.Generator], num_nets: int, n_actions: int,
                 merged: bool = True):
        self.index, self.width, self.make_vec, self.seeds = index, width, make_vec, seeds
        self.merged = merged  # one chunk per flush (see ColumnChunkBuilder.flush)
        self.ids = np.arange(index, index + width)
        self.nets = [actor_net(int(i), num_nets) for i in self.ids]
        self.builder, self.draws, self.n_actions = builder, VectorDraws(rngs, n_actions), n_actions
        self.vec = make_vec()
        self.is_sync = isinstance(self.vec, gym.vector.SyncVectorEnv)
        self.obs_WO = np.zeros(0)  # the sub-envs' observations, once started
        self.started = False
        self.pending_W = np.zeros(width, dtype=bool)  # ended at the last step: resets (no action) at the next
        self.episode_W = np.full(width, -1, dtype=np.int64)
        self.ep_return_W = np.zeros(width)
        self.ep_len_W = np.zeros(width, dtype=np.int64)
        self.t = 0  # vector steps taken
        # For an exact resume of a SyncVectorEnv: each sub-env's generator state before its episode's reset
        # (None: a seeded reset) and the step from which its actions count; the actions, one array per step.
        self.reset_rng: list[dict | None] = [None] * width
        self.first_W = np.zeros(width, dtype=np.int64)
        self.log: list[np.ndarray] = []
        self.log_start = 0
        self._resume: list[dict] | None = None

    @property
    def env(self) -> gym.vector.VectorEnv:
        return self.vec

    def _start(self) -> None:
        """A seeded reset of every sub-env: episode e of sub-env j gets actor (base + j)'s episode-e seed."""
        self.episode_W += 1
        seeds = [episode_seed(s, int(e)) for s, e in zip(self.seeds, self.episode_W)]
        obs, _ = self.vec.reset(seed=seeds if self.is_sync else seeds[0])
        self.reset_rng = [None] * self.width
        self.first_W[:] = self.t
        self.pending_W[:] = False
        self.ep_return_W[:] = 0.0
        self.ep_len_W[:] = 0
        self.obs_WO, self.started = obs, True
        self.builder.observe(obs, self.pending_W, self.pending_W)

    async def _restart(self, exc: BaseException, faults: EnvFaults) -> None:
        """End every episode in progress as truncated, then rebuild and reset the vector env until that works."""
        self.builder.cut(np.ones(self.width, dtype=bool))
        while True:
            await asyncio.sleep(faults.failed(self.index, exc))
            try:
                with contextlib.suppress(Exception):
                    self.vec.close()
                self.vec = self.make_vec()
                self._start()
                return
            except Exception as err:  # noqa: BLE001 -- any env failure is a fault to recover from
                exc = err

    async def run(self, batcher: InferenceBatcher, gate: StepGate, queue: ChunkQueue,
                  epsilon_W: Callable[[np.ndarray], np.ndarray], on_episode: EpisodeHook, faults: EnvFaults) -> None:
        """Step until cancelled; see `actor.Actor.run` for the episode and final-observation rules."""
        slots = (np.array(self.nets), self.ids // batcher.net.k)  # `InferenceBatcher.slot` of each sub-env
        builder = self.builder
        try:
            if self._resume is not None:
                states, self._resume = self._resume, None
                self._restore(states)
            elif not self.started:
                self._start()
        except Exception as exc:  # noqa: BLE001
            await self._restart(exc, faults)
        n_pending = int(self.pending_W.sum())
        while True:
            if builder.full:  # here, not after the step: a restart's reset row may have filled it too
                for chunk in builder.flush(self.merged):
                    await queue.put(chunk)
            # W env steps per vector step, a resetting sub-env's too (as SB3 and CleanRL count vector steps)
            if not gate.try_acquire(self.width):
                await gate.acquire(self.width)
            greedy_W = await batcher.act_many(slots, self.obs_WO)
            explore_W, pick_W = self.draws.next()
            act_W = np.where(explore_W < epsilon_W(self.ids), pick_W, greedy_W)
            try:
                obs, rew, term, trunc, _ = self.vec.step(act_W)
            except Exception as exc:  # noqa: BLE001
                await self._restart(exc, faults)
                n_pending = 0
                continue
            if n_pending:
                acted_W = ~self.pending_W
                builder.acted(act_W, rew, acted_W)
                self.ep_return_W += np.where(acted_W, rew, 0.0)
                self.ep_len_W += acted_W
            else:
                builder.acted(act_W, rew, self.pending_W, all_acted=True)
                self.ep_return_W += rew
                self.ep_len_W += 1
            if self.is_sync:
                self.log.append(act_W)
            self.t += 1
            done_W = term | trunc
            builder.observe(obs, done_W, term)
            self.obs_WO, self.pending_W = obs, done_W
            n_pending = 0
            if done_W.any():
                done = np.flatnonzero(done_W)
                n_pending = len(done)
                self._ended(done, on_episode, faults)

    def _ended(self, done: np.ndarray, on_episode: EpisodeHook, faults: EnvFaults) -> None:
        for j in done.tolist():
            on_episode(int(self.ids[j]), self.nets[j], float(self.ep_return_W[j]), int(self.ep_len_W[j]))
            self.ep_return_W[j], self.ep_len_W[j] = 0.0, 0
            self.episode_W[j] += 1
            if self.is_sync:  # its reset comes at the next step, from its own generator: keep that state
                self.reset_rng[j] = self.vec.envs[j].unwrapped.np_random.bit_generator.state
            self.first_W[j] = self.t + 1  # the next step resets it; its actions count from the one after
        faults.recovered(self.index)
        if self.is_sync and len(self.log) > 4096:  # forget actions no sub-env's episode needs
            drop = min(int(self.first_W.min()) - self.log_start, len(self.log))
            del self.log[:drop]
            self.log_start += drop

    def _actions(self, j: int) -> np.ndarray:
        start = int(self.first_W[j]) - self.log_start
        return np.array([a[j] for a in self.log[max(0, start):]], dtype=np.int64)

    def state_dicts(self) -> list[dict]:
        """One state per sub-env, in global actor order (call only while parked at the gate)."""
        native = None if self.is_sync else _array_state(self.vec)
        return [{"kind": KIND, "episode": int(self.episode_W[j]), "reset_rng": json.dumps(self.reset_rng[j]),
                 "actions": self._actions(j) if self.is_sync else np.zeros(0, dtype=np.int64),
                 "obs": np.array(self.obs_WO[j]), "pending": bool(self.pending_W[j]),
                 "ep_return": float(self.ep_return_W[j]), "ep_len": int(self.ep_len_W[j]),
                 **self.draws.state_dict(j), "builder": self.builder.column_state(j),
                 **({"vector_env": native} if native is not None and j == 0 else {})}
                for j in range(self.width)]

    def load_state_dicts(self, states: list[dict]) -> None:
        if any(s.get("kind") != KIND for s in states):
            raise UserError("checkpoint was written by single-env actors (actors.envs_per_actor = 1); resume it "
                            "with the same setting")
        self.draws.load_state_dicts(states)
        self.builder.load_column_states([s["builder"] for s in states])
        self._resume = states

    def _restore(self, states: list[dict]) -> None:
        """Rebuild the vector env's exact state (see the module docstring), or start new episodes."""
        self.episode_W[:] = [int(s["episode"]) for s in states]
        self.pending_W[:] = [bool(s["pending"]) for s in states]
        self.ep_return_W[:] = [float(s["ep_return"]) for s in states]
        self.ep_len_W[:] = [int(s["ep_len"]) for s in states]
        saved_WO = np.stack([np.asarray(s["obs"]) for s in states])
        obs = self._rebuild_sync(states) if self.is_sync else _load_array_state(self.vec, states[0].get("vector_env"))
        if obs is not None and np.array_equal(obs, saved_WO):
            self.obs_WO, self.started = saved_WO, True
            return
        self.builder.cut(np.ones(self.width, dtype=bool))  # cannot rebuild: new episodes
        self._start()

    def _rebuild_sync(self, states: list[dict]) -> np.ndarray | None:
        """Each sub-env at the start of its episode (seeded, or its generator put back and reset), then its
        actions replayed; a sub-env whose reset was pending gets its generator back and the pending flag."""
        seeds = [episode_seed(s, int(e)) for s, e in zip(self.seeds, self.episode_W)]
        seeded_WO, _ = self.vec.reset(seed=seeds)
        self.reset_rng = [json.loads(s["reset_rng"]) for s in states]
        obs_W = []
        for j, (sub, s) in enumerate(zip(self.vec.envs, states)):
            if self.pending_W[j]:
                if self.reset_rng[j] is None:
                    return None
                sub.unwrapped.np_random.bit_generator.state = self.reset_rng[j]
                obs_W.append(np.asarray(s["obs"]))
                continue
            obs = seeded_WO[j]
            if self.reset_rng[j] is not None:
                sub.unwrapped.np_random.bit_generator.state = self.reset_rng[j]
                obs, _ = sub.reset()
            for a in np.asarray(s["actions"]).tolist():
                obs, *_ = sub.step(a)
            obs_W.append(obs)
        self.vec._autoreset_envs = self.pending_W.copy()  # gymnasium's own flag of a pending next-step reset
        # The action log again, so that a later checkpoint holds each sub-env's actions since its reset
        lens = [len(s["actions"]) for s in states]
        longest = max(lens)
        self.log_start = self.t - longest
        self.log = [np.zeros(self.width, dtype=np.int64) for _ in range(longest)]
        for j, s in enumerate(states):
            for i, a in enumerate(np.asarray(s["actions"]).tolist()):
                self.log[longest - lens[j] + i][j] = a
            self.first_W[j] = self.t + 1 if self.pending_W[j] else self.t - lens[j]
        return np.stack(obs_W)


def _array_state(vec: gym.vector.VectorEnv) -> dict | None:
    """The whole state of a vector env that keeps it in arrays (gymnasium's CartPole vector env), or None."""
    u = vec.unwrapped
    if not all(hasattr(u, a) for a in ("state", "steps", "prev_done", "np_random")) or u.state is None:
        return None
    return {"state": np.array(u.state), "steps": np.array(u.steps), "prev_done": np.array(u.prev_done),
            "rng": json.dumps(u.np_random.bit_generator.state)}


def _load_array_state(vec: gym.vector.VectorEnv, saved: dict | None) -> np.ndarray | None:
    """Put an `_array_state` back; the observation it gives, or None when there is none to put back."""
    if saved is None:
        return None
    vec.reset(seed=0)
    u = vec.unwrapped
    # np.asarray, then a copy: np.array on a checkpoint's tensor warns (torch's __array__ takes no `copy`)
    u.state, u.steps, u.prev_done = (np.asarray(saved[k]).copy() for k in ("state", "steps", "prev_done"))
    u.np_random.bit_generator.state = json.loads(saved["rng"])
    return u.state.T.astype(np.float32)


def make_vector_actor(cfg: RunConfig, first: int, seqs: list[np.random.SeedSequence], train_kwargs: dict,
                      spec: EnvSpec) -> VectorActor:
    """The vector actor of global actors [first, first + W): actor i's seed and generators come from its own
    SeedSequence, spawned as `actor.make_actor` spawns them."""
    width = len(seqs)
    spawned = [s.spawn(2) for s in seqs]
    fault_rngs = [np.random.default_rng(f) for _, f in spawned]
    rate = cfg.faults.env_error_rate
    n_made = [0]

    def wrap(env: gym.Env) -> gym.Env:
        if rate <= 0:
            return env
        j = n_made[0] % width
        n_made[0] += 1
        return FaultInjector(env, rate, fault_rngs[j])

    builder = ColumnChunkBuilder(cfg.actors.chunk_rows, width, spec.obs_shape, spec.obs_dtype, cfg.learner.gamma,
                                 cfg.actors.n_step, [actor_net(first + j, cfg.learner.num_nets) for j in range(width)])
    return VectorActor(first, width, lambda: make_vector_env(cfg, train_kwargs, width, wrap),
                       [int(s.generate_state(1)[0] % 2**31) for s in seqs], builder,
                       [np.random.default_rng(r) for r, _ in spawned], cfg.learner.num_nets, spec.n_actions,
                       merged=cfg.replay.frames != "stack")
