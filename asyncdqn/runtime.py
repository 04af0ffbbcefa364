"""The whole run in one coroutine: `run(config, out_dir)`.

Place in the flow: owns every stage. One `asyncio.TaskGroup` holds the actors' side (a collection, see
`collect.protocol.Collection`: `collect.local.LocalCollection` runs the actors, inference batcher and queue
consumer in this process, `collect.ray_learner.RayCollection` runs the actors in Ray processes), the learner,
the evaluator and the progress reporter; the metrics writer lives in an outer group so it can flush after the
others stop. The learner decides the end (budget reached, or the stop event set by an evaluation reaching
`eval.stop_at` or by the CLI); then the rest are cancelled and awaited, so no task outlives `run`. Signals are
the CLI's business, not this module's.

Replay ratio (`schedule.budget`): the learner may make `ratio * (steps - learning_starts)` updates; actors
may take at most `learning_starts + (updates + updates_per_call) / ratio + max_lead` steps. With max_lead = 0
actors and learner alternate in lockstep, and a seeded run is reproducible bit for bit.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from asyncdqn import checkpoint
from asyncdqn.collect.local import LocalCollection
from asyncdqn.config import RunConfig, to_toml
from asyncdqn.envs.make import env_kwargs, make_env, spec_of
from asyncdqn.errors import RunFailed, UserError, first_line
from asyncdqn.evaluation import evaluate
from asyncdqn.learner import Learner, Scorer
from asyncdqn.merge import ScoreBoard
from asyncdqn.metrics import MetricsWriter, plot_learning_curve, to_json
from asyncdqn.nets import GreedyPolicy, copy_params_, input_scale_for
from asyncdqn.replay import FramePool, ReplayPool
from asyncdqn.run_state import Best, Parts, RunState, diverged_message, merge_record, payload, restore, summary, \
    train_record
from asyncdqn.schedule import StepGate, actor_epsilons, beta_at, budget
from asyncdqn.scoring import HeldOutSplit, MemberScorer

# The learner thread releases the GIL inside each torch kernel and must win it back from the actors'
# event loop for the next op; at the default 5 ms switch interval a ~1 ms update then waits up to 5 ms
# per op (the "convoy effect"). 0.5 ms keeps both sides moving.
SWITCH_INTERVAL_S = 0.0005


@dataclass
class Progress:
    """A snapshot for progress displays (the CLI's rich bar, which derives its rates from successive ones:
    `progress_rates.RecentRates`)."""

    env_steps: int = 0
    total_steps: int = 0
    updates: int = 0
    recent_return: float = math.nan
    queue_depth: int = 0
    merge_weights: list = field(default_factory=list)
    last_eval: float = math.nan
    evals: int = 0           # periodic evaluations so far (a new one may score the same mean as the last)
    wall_s: float = 0.0      # this process's training seconds at the snapshot (rates come from differences)




async def run(cfg: RunConfig, out_dir: Path, progress: Callable[[Progress], None] | None = None,
              stop: asyncio.Event | None = None, interrupt: asyncio.Event | None = None,
              resume: dict | None = None) -> dict:
    """Train, evaluate and save. Returns the summary (also written to out_dir/summary.json).

    `stop` ends the run early (with the final evaluation); set `interrupt` as well and the final
    evaluation is skipped: the run saves a resumable checkpoint and returns at once (the CLI's SIGINT).
    `resume` is the `resume` entry of a checkpoint: the run continues where that checkpoint left it.
    With `backend.kind = "ray"` the actors run in Ray actor processes (`collect.ray_learner.RayCollection`); the rest
    of the run is the same code.
    """
    collection_class, session = LocalCollection, contextlib.nullcontext()
    if cfg.backend.kind == "ray":
        try:
            from asyncdqn.collect.ray_learner import RayCollection, ray_session
        except ImportError as exc:
            if exc.name is None or exc.name.split(".")[0] != "ray":
                raise
            raise UserError("--backend ray needs Ray: pip install 'asyncdqn[ray]' (from a checkout: pip install -e '.[ray]')") from None
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
    """Build the stages, restore a checkpoint, then: learn (with periodic evals, logs and checkpoints),
    park the actors, evaluate the final policy and save. The writer outlives the inner group so it can
    flush what the others emitted."""
    p = build(cfg, out_dir, stop, interrupt, t0, collection_class)
    if resume is not None:
        _resume(p, resume)
    checkpoint.atomic_write_text(out_dir / "config.toml", to_toml(cfg))  # only once the env and state are good
    p.writer = MetricsWriter(out_dir / "metrics.jsonl", out_dir / "tensorboard")
    async with asyncio.TaskGroup() as outer:
        outer.create_task(p.writer.run())
        try:
            async with asyncio.TaskGroup() as tg:
                helpers = [tg.create_task(evaluate_periodically(p)), tg.create_task(log_periodically(p))]
                if progress is not None:
                    helpers.append(tg.create_task(report(p, progress)))
                helpers += await p.collection.start(tg, lambda *episode: on_episode(p, *episode))
                await tg.create_task(learn(p))
                await p.collection.quiesce()  # every actor parked between two steps: their state can be saved
                for task in helpers:
                    task.cancel()
            summary = await finish(p)
        finally:
            p.writer.close()
            for scorer in (p.scorer, p.members):
                if scorer is not None:
                    scorer.close()
            await p.collection.aclose()
    plot_learning_curve(out_dir / "metrics.jsonl", out_dir / "learning_curve.png",
                        f"{cfg.scenario} (seed {cfg.seed}, K={cfg.learner.num_nets})")
    return summary


def build(cfg: RunConfig, out_dir: Path, stop: asyncio.Event, interrupt: asyncio.Event, t0: float,
          collection_class: type) -> Parts:
    """Every stage of the run, seeded from `cfg.seed` through one SeedSequence."""
    seq_init, seq_replay, seq_eval, *seq_actors = np.random.SeedSequence(cfg.seed).spawn(3 + cfg.actors.num_actors)
    train_kwargs, eval_kwargs = env_kwargs(cfg, evaluation=False), env_kwargs(cfg, evaluation=True)
    first_env = make_env(cfg.env, train_kwargs)
    spec = spec_of(first_env)
    env_meta = getattr(first_env.unwrapped, "policy_metadata", lambda: {})()
    k = cfg.learner.num_nets
    learner = Learner(cfg.learner, cfg.merge, spec.obs_shape, spec.n_actions, int(seq_init.generate_state(1)[0]),
                      input_scale_for(spec.obs_dtype, getattr(first_env.observation_space, "high", 1.0)),
                      spec.obs_classes, cfg.population)  # a Discrete space has no `high`; only conv nets scale their input
    acting = copy.deepcopy(learner.online).requires_grad_(False)
    if cfg.replay.frames == "stack" and len(spec.obs_shape) < 2:
        raise UserError(f"config: replay.frames = 'stack' needs stacked frames; this env's observations have "
                        f"shape {spec.obs_shape}")
    pool_class = FramePool if cfg.replay.frames == "stack" else ReplayPool
    replay = pool_class(cfg.replay.capacity, spec.obs_shape, spec.obs_dtype, np.random.default_rng(seq_replay),
                        cfg.replay.prioritized, cfg.replay.alpha, k)
    total_updates, step_limit = budget(cfg)
    gate = StepGate(step_limit(0))
    ladder = actor_epsilons(cfg.actors.num_actors, k, cfg.actors.eps_base, cfg.actors.eps_alpha, cfg.actors.layout)
    heldout = None
    if cfg.merge.score == "heldout_td":  # its own small uniform pool, seeded apart from replay's
        held_pool = ReplayPool(max(cfg.replay.batch_size, cfg.replay.capacity // cfg.merge.heldout_every),
                               spec.obs_shape, spec.obs_dtype, np.random.default_rng(seq_replay.spawn(1)[0]), False,
                               cfg.replay.alpha, k)
        heldout = HeldOutSplit(replay, held_pool, cfg.merge.heldout_every)
    parts: list[Parts] = []  # the collection's log needs the parts it belongs to
    collection = collection_class(cfg, seq_actors, train_kwargs, spec, first_env, acting, gate, heldout or replay,
                                  ladder, lambda rec: parts[0].emit({**rec, "env_steps": gate.steps}))
    make_eval_env, eval_seed = (lambda: make_env(cfg.env, eval_kwargs)), int(seq_eval.generate_state(1)[0] % 2**31)
    parts.append(Parts(cfg, Path(out_dir), spec, env_meta, learner, acting, replay, gate, total_updates, step_limit,
                       ScoreBoard(k, cfg.merge.score_window), collection, make_eval_env, eval_seed,
                       RunState(next_eval=cfg.eval.every), stop, interrupt, t0, heldout=heldout))
    if cfg.merge.score == "greedy":
        parts[0].scorer = MemberScorer(make_eval_env, k, cfg.merge.score_episodes)
    if cfg.eval.members:
        parts[0].members = MemberScorer(make_eval_env, k, cfg.eval.episodes)
    return parts[0]


def merge_scorer(p: Parts) -> Scorer:
    """What the learner asks at each merge in the coming call: the scores of `merge.score`, each over what
    happened since the last merge when `merge.since_merge` is set."""
    mc, cfg = p.cfg.merge, p.cfg
    since = p.learner.last_merge if mc.since_merge else 0
    if mc.score == "return":
        returns = p.returns.scores("return", since)  # read on the loop: the episode hook appends to it
        return lambda learner: returns
    if mc.score == "td_loss":
        return lambda learner: learner.losses.scores("td_loss", learner.last_merge if mc.since_merge else 0)
    if mc.score == "greedy":
        scorer, episodes, base = p.scorer, mc.score_episodes, p.eval_seed + 500_000
        assert scorer is not None  # new starts at each merge, a function of the update count (resume-exact)
        return lambda learner: scorer(learner.online, base + episodes * learner.updates)
    assert p.heldout is not None
    held = p.heldout.held
    if len(held) == 0:
        return lambda learner: np.full(cfg.learner.num_nets, np.nan)
    batch = held.sample(1, cfg.replay.batch_size)  # one batch for every merge of the call: the same rows for all K
    return lambda learner: learner.heldout_scores(batch)


def _resume(p: Parts, resume: dict) -> None:
    """Restore, with any inconsistency in the saved state reported as one line."""
    try:
        restore(p, resume)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise UserError(f"the checkpoint's resume state is damaged or from another config ({first_line(exc)})") \
            from None
    copy_params_(p.acting, p.learner.online)
    p.collection.published(p.state.updates)


def on_episode(p: Parts, actor: int, net: int, ret: float, length: int) -> None:
    p.returns.add_return(net, ret, p.state.updates)
    p.recent.append(ret)
    p.emit({"kind": "episode", "env_steps": p.gate.steps, "actor": actor, "net": net, "return": ret,
            "length": length})


async def learn(p: Parts) -> None:
    """Train until the update budget is spent or the run is stopped, then let the actors use the rest of
    the env-step budget. Each learner call runs in a thread; the batches are sampled here, on the loop."""
    cfg, s, gate = p.cfg, p.state, p.gate
    while s.updates < p.total_updates and not p.stop.is_set():
        n = min(cfg.learner.updates_per_call, p.total_updates - s.updates)
        await _first(gate.wait_steps(p.step_limit.steps_needed(s.updates + n)), p.stop.wait())
        if p.stop.is_set():
            break
        if cfg.learner.max_lead == 0:  # sample only once every actor is parked and every chunk is in
            await p.collection.settle()
        if len(p.replay) == 0 and not await fill_pool(p):
            break
        beta = beta_at(cfg.replay.beta, gate.steps, cfg.total_steps)
        batches = [p.replay.sample(cfg.learner.num_nets, cfg.replay.batch_size, beta) for _ in range(n)]
        s.stats, merges = await asyncio.to_thread(p.learner.run, batches, merge_scorer(p))
        if p.learner.diverged:
            raise RunFailed(diverged_message(p))
        s.updates += n
        for b, st in zip(batches, s.stats):
            p.replay.update_priorities(b.idx_KB, st.td_abs_KB, b.stamp_KB)
        copy_params_(p.acting, p.learner.online)
        p.collection.published(s.updates)
        for m in merges:
            p.emit(merge_record(m, gate.steps, p.replay))
        if cfg.checkpoint_every and s.updates % cfg.checkpoint_every < n:
            await save_checkpoint(p, p.policy_now())
        gate.set_limit(p.step_limit(s.updates))
    await _first(gate.wait_steps(cfg.total_steps), p.stop.wait())


async def fill_pool(p: Parts) -> bool:
    """Let the actors step one chunk further at a time until a chunk reached the pool, each time waiting
    for all of them to park (so lockstep runs stay reproducible). The pool is empty when learning_starts
    is below a chunk per actor, or after a resume without the pool; the learner then makes up the updates
    it owes. False when the budget or a stop came first."""
    gate = p.gate
    while len(p.replay) == 0:
        if gate.steps >= p.cfg.total_steps or p.stop.is_set():
            return False
        limit = max(gate.limit, min(p.cfg.total_steps, gate.steps + p.cfg.actors.chunk_rows))
        gate.set_limit(limit)
        await _first(gate.wait_steps(limit), p.stop.wait())
        if p.stop.is_set():
            return False
        await p.collection.settle()
    return True


async def save_checkpoint(p: Parts, policy: GreedyPolicy) -> None:
    """Quiesce, snapshot on the loop (copies), write in a thread, then let the actors go on."""
    await p.collection.quiesce()
    await asyncio.to_thread(checkpoint.save, p.out_dir / checkpoint.FILENAME, payload(p, policy, p.wall()))
    p.gate.set_limit(p.step_limit(p.state.updates))


async def log_periodically(p: Parts) -> None:
    while True:
        await p.gate.wait_steps(p.gate.steps + p.cfg.log_every)
        p.emit(train_record(p))


async def evaluate_periodically(p: Parts) -> None:
    """Every `eval.every` env steps: greedy episodes of the current policy in a thread; a mean at
    `eval.stop_at` (confirmed by more episodes, when asked) stops the run."""
    if p.cfg.eval.every == 0:
        return
    ec, s = p.cfg.eval, p.state
    while True:
        await p.gate.wait_steps(s.next_eval)
        steps, policy = p.gate.steps, p.policy_now()
        s.next_eval = steps + ec.every
        seed = p.eval_seed + 10_000 * (1 + s.evals)
        res = await asyncio.to_thread(evaluate, p.make_eval_env, policy, ec.episodes, seed)
        eval_wall, eval_updates = p.wall(), s.updates
        # each net's own greedy policy, from the same starts as the ensemble's; both are done before either is
        # recorded, so a run that ends during the members' episodes logs neither, never one without the other
        means = None if p.members is None else await asyncio.to_thread(p.members, policy.net, seed)
        s.evals, s.last_eval = s.evals + 1, res.mean
        p.emit({"kind": "eval", "env_steps": steps, "updates": eval_updates, "mean": res.mean, "std": res.std,
                "wall_s": eval_wall})
        if means is not None:
            p.emit({"kind": "member_eval", "env_steps": steps, "updates": s.updates, "means": means,
                    "wall_s": p.wall()})
        score, reached = res.mean, res.mean >= ec.stop_at
        if reached and ec.confirm_episodes:
            # A 10-episode mean at the threshold is often luck; more episodes on other starts decide,
            # and the policy is ranked by the mean over all of them.
            more = await asyncio.to_thread(evaluate, p.make_eval_env, policy, ec.confirm_episodes, seed + 5_000)
            score = float(np.mean(np.concatenate([res.returns, more.returns])))
            reached = more.mean >= ec.stop_at
            p.emit({"kind": "eval_confirm", "env_steps": steps, "mean": more.mean, "std": more.std,
                    "confirmed": reached, "wall_s": p.wall()})
        if score >= s.best.mean:
            s.best = Best(score, policy, steps)
        if reached:
            p.stop.set()


async def report(p: Parts, progress: Callable[[Progress], None]) -> None:
    while True:
        progress(Progress(p.gate.steps, p.cfg.total_steps, p.state.updates,
                          float(np.mean(p.recent)) if p.recent else math.nan, p.collection.queue_depth(),
                          [round(float(w), 3) for w in p.learner.weights_K], p.state.last_eval,
                          evals=p.state.evals, wall_s=p.wall()))
        await asyncio.sleep(0.25)


async def finish(p: Parts) -> dict:
    """After the actors parked: the final evaluation (skipped when interrupted), the checkpoint, the summary."""
    train_wall = p.wall()
    best = p.state.best
    policy = best.policy if (p.cfg.eval.keep_best and best.policy is not None) else p.policy_now()
    final = None
    if not p.interrupt.is_set():
        final = await asyncio.to_thread(evaluate, p.make_eval_env, policy, p.cfg.eval.final_episodes, p.eval_seed)
        p.emit({"kind": "final_eval", "env_steps": p.gate.steps, "mean": final.mean, "std": final.std})
    await asyncio.to_thread(checkpoint.save, p.out_dir / checkpoint.FILENAME, payload(p, policy, train_wall))
    result = summary(p, train_wall, final, policy)
    checkpoint.atomic_write_text(p.out_dir / "summary.json", json.dumps(json.loads(to_json(result)), indent=2))
    return result
