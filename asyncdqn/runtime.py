"""The whole run in one coroutine: `run(config, out_dir)`.

Place in the flow: owns every stage. One `asyncio.TaskGroup` holds the actors' side (a collection:
`collection.LocalCollection`, the actors, inference batcher and queue consumer in this process, or
`ray_runtime.RayCollection`, actors in Ray processes), the learner, the evaluator and the progress
reporter; the metrics writer lives in an outer group so it can flush after the others stop. The learner
decides the end (budget reached, or the stop event set by an evaluation reaching `eval.stop_at` or by the
CLI); then the rest are cancelled and awaited, so no task outlives `run`. Signals are the CLI's business,
not this module's.

Replay ratio: the learner may make `ratio * (steps - learning_starts)` updates; actors may take at most
`learning_starts + (updates + updates_per_call) / ratio + max_lead` steps. With max_lead = 0 actors and
learner alternate in lockstep, and a seeded run is reproducible bit for bit.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import math
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from asyncdqn import checkpoint
from asyncdqn.actors import StepGate, epsilon_ladder
from asyncdqn.collection import LocalCollection
from asyncdqn.config import RunConfig, to_dict, to_toml
from asyncdqn.convnets import input_scale_for
from asyncdqn.envs.make import env_kwargs, make_env, spec_of
from asyncdqn.errors import RunFailed, UserError
from asyncdqn.evaluation import EvalResult, evaluate
from asyncdqn.frames import FramePool
from asyncdqn.learner import Learner, MergeEvent, UpdateStats
from asyncdqn.merge import ScoreBoard
from asyncdqn.metrics import MetricsWriter, plot_learning_curve, to_json
from asyncdqn.nets import GreedyPolicy, copy_params_
from asyncdqn.replay import ReplayPool

# The learner thread releases the GIL inside each torch kernel and must win it back from the actors'
# event loop for the next op; at the default 5 ms switch interval a ~1 ms update then waits up to 5 ms
# per op (the "convoy effect"). 0.5 ms keeps both sides moving.
SWITCH_INTERVAL_S = 0.0005


@dataclass
class Progress:
    """A snapshot for progress displays (the CLI's rich bar)."""

    env_steps: int = 0
    total_steps: int = 0
    updates: int = 0
    steps_per_s: float = 0.0
    recent_return: float = math.nan
    queue_depth: int = 0
    merge_weights: list = field(default_factory=list)
    last_eval: float = math.nan


@dataclass
class _Best:
    mean: float = -math.inf
    policy: GreedyPolicy | None = None
    env_steps: int = 0


def budget(cfg: RunConfig) -> tuple[int, Callable[[int], int]]:
    """(total updates of the run, actors' step limit as a function of updates already made)."""
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


async def run(cfg: RunConfig, out_dir: Path, progress: Callable[[Progress], None] | None = None,
              stop: asyncio.Event | None = None, interrupt: asyncio.Event | None = None,
              resume: dict | None = None) -> dict:
    """Train, evaluate and save. Returns the summary (also written to out_dir/summary.json).

    `stop` ends the run early (with the final evaluation); set `interrupt` as well and the final
    evaluation is skipped: the run saves a resumable checkpoint and returns at once (the CLI's SIGINT).
    `resume` is the `resume` entry of a checkpoint: the run continues where that checkpoint left it.
    With `backend.kind = "ray"` the actors run in Ray actor processes (`ray_runtime.RayCollection`); the rest
    of the run is the same code.
    """
    collection_class, session = LocalCollection, contextlib.nullcontext()
    if cfg.backend.kind == "ray":
        try:
            from asyncdqn.ray_runtime import RayCollection, ray_session
        except ImportError as exc:
            if exc.name is None or exc.name.split(".")[0] != "ray":
                raise
            raise UserError("--backend ray needs Ray: pip install -e '.[ray]'") from None
        collection_class, session = RayCollection, ray_session(cfg.backend)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.torch_threads)
    stop = stop or asyncio.Event()
    t0 = time.perf_counter()
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        with session:
            return await _run(cfg, out_dir, progress, stop, interrupt or asyncio.Event(), resume, t0,
                              collection_class)
    finally:
        sys.setswitchinterval(old_switch)


async def _first(*aws) -> None:
    """Wait for the first of `aws` to finish; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


async def _run(cfg: RunConfig, out_dir: Path, progress: Callable[[Progress], None] | None,
               stop: asyncio.Event, interrupt: asyncio.Event, resume: dict | None, t0: float,
               collection_class: type = LocalCollection) -> dict:

    seq_init, seq_replay, seq_eval, *seq_actors = np.random.SeedSequence(cfg.seed).spawn(3 + cfg.actors.num_actors)
    train_kwargs, eval_kwargs = env_kwargs(cfg, evaluation=False), env_kwargs(cfg, evaluation=True)
    first_env = make_env(cfg.env, train_kwargs)
    spec = spec_of(first_env)
    env_meta = getattr(first_env.unwrapped, "policy_metadata", lambda: {})()
    eval_seed = int(seq_eval.generate_state(1)[0] % 2**31)

    k = cfg.learner.num_nets
    learner = Learner(cfg.learner, cfg.merge, spec.obs_shape, spec.n_actions, int(seq_init.generate_state(1)[0]),
                      input_scale_for(spec.obs_dtype, first_env.observation_space.high))
    acting = copy.deepcopy(learner.online).requires_grad_(False)  # the actors' copy, refreshed after updates
    if cfg.replay.frames == "stack" and len(spec.obs_shape) < 2:
        raise UserError(f"config: replay.frames = 'stack' needs stacked frames; this env's observations have "
                        f"shape {spec.obs_shape}")
    pool_class = FramePool if cfg.replay.frames == "stack" else ReplayPool
    replay = pool_class(cfg.replay.capacity, spec.obs_shape, spec.obs_dtype, np.random.default_rng(seq_replay),
                        cfg.replay.prioritized, cfg.replay.alpha, k)
    total_updates, step_limit = budget(cfg)
    gate = StepGate(step_limit(0))
    returns = ScoreBoard(k, cfg.merge.score_window)
    recent: deque[float] = deque(maxlen=20)
    ladder = epsilon_ladder(cfg.actors.num_actors, cfg.actors.eps_base, cfg.actors.eps_alpha)
    state = {"updates": 0, "stats": [], "last_eval": math.nan, "evals": 0, "next_eval": cfg.eval.every,
             "wall_before": 0.0}
    best = _Best()
    collection = collection_class(cfg, seq_actors, train_kwargs, spec, first_env, acting, gate, replay, ladder,
                                  lambda rec: writer.emit({**rec, "env_steps": gate.steps}))
    if resume is not None:
        try:
            _restore(resume, learner, replay, returns, collection, state, best, gate, step_limit)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise UserError(f"the checkpoint's resume state is damaged or from another config ({reason})") from None
        copy_params_(acting, learner.online)
        collection.published(state["updates"])
    checkpoint.atomic_write_text(out_dir / "config.toml", to_toml(cfg))  # only once the env and state are good
    writer = MetricsWriter(out_dir / "metrics.jsonl", out_dir / "tensorboard")

    def on_episode(actor: int, net: int, ret: float, length: int) -> None:
        returns.add_return(net, ret)
        recent.append(ret)
        writer.emit({"kind": "episode", "env_steps": gate.steps, "actor": actor, "net": net, "return": ret,
                     "length": length})

    def policy_now() -> GreedyPolicy:
        return GreedyPolicy(copy.deepcopy(acting), learner.policy_weights())

    def make_eval_env():
        return make_env(cfg.env, eval_kwargs)

    async def save_checkpoint(policy: GreedyPolicy) -> None:
        """Quiesce, snapshot on the loop (copies), write in a thread, then let the actors go on."""
        await collection.quiesce()
        payload = _payload(cfg, spec, env_meta, learner, policy, replay, returns, collection.actor_states(), state,
                           best, gate, time.perf_counter() - t0)
        await asyncio.to_thread(checkpoint.save, out_dir / checkpoint.FILENAME, payload)
        gate.set_limit(step_limit(state["updates"]))

    async def fill_pool() -> bool:
        """Let the actors step one chunk further at a time until a chunk reached the pool, each time
        waiting for all of them to park (so lockstep runs stay reproducible). The pool is empty when
        learning_starts is below a chunk per actor, or after a resume without the pool; the learner then
        makes up the updates it owes. False when the budget or a stop came first."""
        while len(replay) == 0:
            if gate.steps >= cfg.total_steps or stop.is_set():
                return False
            limit = max(gate.limit, min(cfg.total_steps, gate.steps + cfg.actors.chunk_rows))
            gate.set_limit(limit)
            await _first(gate.wait_steps(limit), stop.wait())
            if stop.is_set():
                return False
            await collection.settle()
        return True

    async def learn() -> None:
        lockstep = cfg.learner.max_lead == 0
        while state["updates"] < total_updates and not stop.is_set():
            n = min(cfg.learner.updates_per_call, total_updates - state["updates"])
            await _first(gate.wait_steps(step_limit.steps_needed(state["updates"] + n)), stop.wait())
            if stop.is_set():
                break
            if lockstep:  # sample only once every actor is parked and every chunk is in: a fixed schedule
                await collection.settle()
            if len(replay) == 0 and not await fill_pool():
                break
            beta = cfg.replay.beta + (1 - cfg.replay.beta) * min(1.0, gate.steps / cfg.total_steps)
            batches = [replay.sample(k, cfg.replay.batch_size, beta) for _ in range(n)]
            stats, merges = await asyncio.to_thread(learner.run, batches, returns.scores("return"))
            if learner.diverged:
                raise RunFailed(_diverged_message(cfg, learner, out_dir))
            state["updates"] += n
            for b, s in zip(batches, stats):
                replay.update_priorities(b.idx_KB, s.td_abs_KB, b.stamp_KB)
            copy_params_(acting, learner.online)
            collection.published(state["updates"])
            state["stats"] = stats
            for m in merges:
                _log_merge(writer, m, gate.steps, replay)
            if cfg.checkpoint_every and state["updates"] % cfg.checkpoint_every < n:
                await save_checkpoint(policy_now())
            gate.set_limit(step_limit(state["updates"]))
        await _first(gate.wait_steps(cfg.total_steps), stop.wait())

    async def log_periodically() -> None:
        nxt = gate.steps + cfg.log_every
        while True:
            await gate.wait_steps(nxt)
            _log_train(writer, state["stats"], state, learner.skipped, gate.steps, time.perf_counter() - t0,
                       collection, replay, recent)
            nxt = gate.steps + cfg.log_every

    async def evaluate_periodically() -> None:
        if cfg.eval.every == 0:
            return
        while True:
            await gate.wait_steps(state["next_eval"])
            steps, policy = gate.steps, policy_now()
            state["next_eval"] = steps + cfg.eval.every
            seed = eval_seed + 10_000 * (1 + state["evals"])
            res = await asyncio.to_thread(evaluate, make_eval_env, policy, cfg.eval.episodes, seed)
            state["evals"] += 1
            state["last_eval"] = res.mean
            writer.emit({"kind": "eval", "env_steps": steps, "updates": state["updates"], "mean": res.mean,
                         "std": res.std, "wall_s": time.perf_counter() - t0})
            score, reached = res.mean, res.mean >= cfg.eval.stop_at
            if reached and cfg.eval.confirm_episodes:
                # A 10-episode mean at the threshold is often luck; more episodes on other starts decide,
                # and the policy is ranked by the mean over all of them.
                more = await asyncio.to_thread(evaluate, make_eval_env, policy, cfg.eval.confirm_episodes,
                                               seed + 5_000)
                score = float(np.mean(np.concatenate([res.returns, more.returns])))
                reached = more.mean >= cfg.eval.stop_at
                writer.emit({"kind": "eval_confirm", "env_steps": steps, "mean": more.mean, "std": more.std,
                             "confirmed": reached, "wall_s": time.perf_counter() - t0})
            if score >= best.mean:
                best.mean, best.policy, best.env_steps = score, policy, steps
            if reached:
                stop.set()

    async def report() -> None:
        while True:
            progress(Progress(gate.steps, cfg.total_steps, state["updates"],
                              gate.steps / max(1e-9, time.perf_counter() - t0),
                              float(np.mean(recent)) if recent else math.nan, collection.queue_depth(),
                              [round(float(w), 3) for w in learner.weights_K], state["last_eval"]))
            await asyncio.sleep(0.25)

    async with asyncio.TaskGroup() as outer:
        outer.create_task(writer.run())
        try:
            async with asyncio.TaskGroup() as tg:
                helpers = [tg.create_task(evaluate_periodically()), tg.create_task(log_periodically())]
                if progress is not None:
                    helpers.append(tg.create_task(report()))
                helpers += await collection.start(tg, on_episode)
                await tg.create_task(learn())
                await collection.quiesce()  # every actor parked between two steps: their state can be saved
                for task in helpers:
                    task.cancel()
            train_wall = time.perf_counter() - t0
            interrupted = interrupt.is_set()
            final_policy = best.policy if (cfg.eval.keep_best and best.policy is not None) else policy_now()
            final = None
            if not interrupted:
                final = await asyncio.to_thread(evaluate, make_eval_env, final_policy, cfg.eval.final_episodes,
                                                eval_seed)
                writer.emit({"kind": "final_eval", "env_steps": gate.steps, "mean": final.mean, "std": final.std})
            payload = _payload(cfg, spec, env_meta, learner, final_policy, replay, returns, collection.actor_states(),
                               state, best, gate, train_wall)
            await asyncio.to_thread(checkpoint.save, out_dir / checkpoint.FILENAME, payload)
            summary = _summary(cfg, gate.steps, state, learner.skipped, train_wall, time.perf_counter() - t0,
                               final, best, final_policy, stop.is_set(), interrupted, collection, replay)
            checkpoint.atomic_write_text(out_dir / "summary.json", json.dumps(json.loads(to_json(summary)),
                                                                              indent=2))
        finally:
            writer.close()
            await collection.aclose()
    plot_learning_curve(out_dir / "metrics.jsonl", out_dir / "learning_curve.png",
                        f"{cfg.scenario} (seed {cfg.seed}, K={k})")
    return summary


def _diverged_message(cfg: RunConfig, learner: Learner, out_dir: Path) -> str:
    ckpt = out_dir / checkpoint.FILENAME
    where = f"the last good checkpoint is {ckpt}" if ckpt.exists() else \
        "no checkpoint was written before it (set checkpoint_every to keep one)"
    return (f"stopped: {learner.bad_in_a_row} updates in a row had a NaN/inf loss or gradient, or |Q| > "
            f"learner.q_limit = {cfg.learner.q_limit:g} (lower learner.lr or check the rewards); {where}")


def _payload(cfg: RunConfig, spec, env_meta: dict, learner: Learner, policy: GreedyPolicy, replay: ReplayPool,
             returns: ScoreBoard, actor_states: list[dict], state: dict, best: _Best, gate: StepGate,
             wall: float) -> dict:
    """The checkpoint: the policy for eval/backtest, and (under `resume`) everything an exact resume needs.
    Call only while the actors are parked; arrays are copied, so the write may run in a thread."""
    resume = {
        "learner": copy.deepcopy(learner.state_dict()),
        "replay": replay.state_dict(with_rows=cfg.checkpoint_replay),
        "actors": actor_states,
        "returns": returns.state_dict(),
        "run": {"env_steps": gate.steps, "updates": state["updates"], "evals": state["evals"],
                "last_eval": state["last_eval"], "next_eval": state["next_eval"],
                "wall_s": state["wall_before"] + wall, "best_mean": best.mean, "best_env_steps": best.env_steps},
    }
    if best.policy is not None:
        resume["best_policy"] = checkpoint.policy_payload(best.policy.net, best.policy.w_K.reshape(-1).numpy())
    return {
        "config": to_dict(cfg),
        "env": {"id": cfg.env.id, "factory": cfg.env.factory, "obs_shape": list(spec.obs_shape),
                "obs_dtype": str(spec.obs_dtype), "n_actions": spec.n_actions, "metadata": env_meta},
        "policy": checkpoint.policy_payload(policy.net, policy.w_K.reshape(-1).numpy()),
        "online": {k: v.detach().clone() for k, v in learner.online.state_dict().items()},
        "target": {k: v.detach().clone() for k, v in learner.target.state_dict().items()},
        "counters": {"env_steps": gate.steps, "updates": state["updates"], "skipped": learner.skipped},
        "resume": resume,
    }


def _restore(resume: dict, learner: Learner, replay: ReplayPool, returns: ScoreBoard, collection: LocalCollection,
             state: dict, best: _Best, gate: StepGate, step_limit: Callable[[int], int]) -> None:
    """Put a checkpoint's `resume` state back into freshly built parts (the inverse of `_payload`)."""
    if len(resume["actors"]) != collection.num_actors:
        raise UserError(f"checkpoint has {len(resume['actors'])} actors; the config asks for {collection.num_actors}")
    learner.load_state_dict(resume["learner"])
    replay.load_state_dict(resume["replay"])
    returns.load_state_dict(resume["returns"])
    collection.load_actor_states(resume["actors"])
    run_state = resume["run"]
    gate.steps = int(run_state["env_steps"])
    state.update(updates=int(run_state["updates"]), evals=int(run_state["evals"]),
                 last_eval=float(run_state["last_eval"]), next_eval=int(run_state["next_eval"]),
                 wall_before=float(run_state["wall_s"]))
    gate.set_limit(step_limit(state["updates"]))
    if "best_policy" in resume:
        best.policy = checkpoint.policy_from({"policy": resume["best_policy"]})
        best.mean, best.env_steps = float(run_state["best_mean"]), int(run_state["best_env_steps"])


def _log_merge(writer: MetricsWriter, m: MergeEvent, steps: int, replay: ReplayPool) -> None:
    writer.emit({"kind": "merge", "env_steps": steps, "updates": m.update, "scores": m.scores_K,
                 "weights": m.weights_K, "entropy": m.entropy, "distance": m.distance_K,
                 "q_disagreement": m.q_std,
                 "replay_share": replay.share_by_net()})


def _log_train(writer: MetricsWriter, stats: list[UpdateStats], state: dict, skipped: int, steps: int,
               wall: float, collection: LocalCollection, replay: ReplayPool, recent: deque) -> None:
    applied = [s.loss_K for s in stats if not s.skipped]
    loss = np.mean(applied, axis=0) if applied else []
    writer.emit({"kind": "train", "env_steps": steps, "updates": state["updates"], "wall_s": wall,
                 "return_recent": float(np.mean(recent)) if recent else None,
                 "steps_per_s": steps / max(wall, 1e-9), "loss": float(np.mean(loss)) if len(loss) else None,
                 "loss_per_net": loss, "q_mean": float(np.mean([s.q_mean for s in stats if not s.skipped]))
                 if applied else None,
                 "skipped_updates": skipped, "replay_rows": len(replay), **collection.train_record()})


def _summary(cfg: RunConfig, steps: int, state: dict, skipped: int, train_wall: float, wall: float,
             final: EvalResult | None, best: _Best, policy: GreedyPolicy, stopped: bool, interrupted: bool,
             collection: LocalCollection, replay: ReplayPool) -> dict:
    """summary.json. An interrupted run has no final evaluation: its eval fields are null."""
    return {
        "scenario": cfg.scenario, "seed": cfg.seed, "env": cfg.env.factory or cfg.env.id,
        "env_steps": steps, "updates": state["updates"], "skipped_updates": skipped,
        "train_wall_s": round(train_wall, 3), "wall_s": round(wall, 3),
        "total_train_wall_s": round(state["wall_before"] + train_wall, 3),
        "steps_per_s": round(steps / max(state["wall_before"] + train_wall, 1e-9), 1),
        "eval_return_mean": final.mean if final else None, "eval_return_std": final.std if final else None,
        "eval_episodes": len(final.returns) if final else 0,
        "evaluated_policy": "best periodic eval" if best.policy is policy else "last",
        "best_periodic_eval": best.mean if best.policy is not None else None,
        "best_periodic_eval_env_steps": best.env_steps if best.policy is not None else None,
        "stopped_early": stopped, "interrupted": interrupted, "resumed": state["wall_before"] > 0,
        "merge_weights": policy.w_K.reshape(-1).tolist(), **collection.summary(),
        "replay_bytes_per_row": replay.nbytes_per_row(),
    }
