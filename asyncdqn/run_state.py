"""What a run carries, and how it is saved, restored, logged and summarised.

Place in the flow: beside `runtime`, which owns the tasks; this module owns the records. `RunState` holds
the counters the learner, the evaluator and the logger share (no string-keyed dict); `Parts` holds the
stages one run is built from. `payload` and `restore` are inverses: what a checkpoint holds for the
eval/backtest commands and for an exact resume. Plain functions of these two dataclasses; nothing awaits.
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np

from asyncdqn import checkpoint
from asyncdqn.collect.protocol import Collection
from asyncdqn.config import RunConfig, to_dict
from asyncdqn.envs.make import EnvSpec
from asyncdqn.errors import UserError
from asyncdqn.evaluation import EvalResult
from asyncdqn.learner import Learner, MergeEvent, UpdateStats
from asyncdqn.merge import ScoreBoard
from asyncdqn.metrics import MetricsWriter
from asyncdqn.nets import EnsembleQNet, GreedyPolicy
from asyncdqn.replay import FramePool, ReplayPool
from asyncdqn.schedule import StepGate
from asyncdqn.scoring import HeldOutSplit, MemberScorer


@dataclass
class Best:
    """The best periodic evaluation so far (kept as the final policy under `eval.keep_best`)."""

    mean: float = -math.inf
    policy: GreedyPolicy | None = None
    env_steps: int = 0


@dataclass
class RunState:
    """Counters shared by the run's tasks; `resume.run` in a checkpoint is this, less the update stats."""

    next_eval: int
    updates: int = 0
    evals: int = 0
    last_eval: float = math.nan
    wall_before: float = 0.0  # training wall-clock of the runs this one resumes
    stats: list[UpdateStats] = field(default_factory=list)  # of the last learner call, for the train record
    best: Best = field(default_factory=Best)


@dataclass
class Parts:
    """The stages of one run, built by `runtime.build` and owned by `runtime.run`."""

    cfg: RunConfig
    out_dir: Path
    spec: EnvSpec
    env_meta: dict                 # the env's policy metadata (trading: features and normalisation)
    learner: Learner
    acting: EnsembleQNet           # the actors' copy of the online nets, refreshed after every learner call
    replay: ReplayPool | FramePool
    gate: StepGate
    total_updates: int
    step_limit: Callable[[int], int]
    returns: ScoreBoard            # training-episode returns per net (the "return" merge score)
    collection: Collection         # LocalCollection or RayCollection
    make_eval_env: Callable[[], gym.Env]
    eval_seed: int
    state: RunState
    stop: asyncio.Event
    interrupt: asyncio.Event
    t0: float
    heldout: HeldOutSplit | None = None    # merge.score = "heldout_td": the rows no net trains on
    scorer: MemberScorer | None = None     # merge.score = "greedy": each net's own greedy episodes
    members: MemberScorer | None = None    # eval.members: each net's greedy return at every periodic eval
    writer: MetricsWriter | None = None
    recent: deque = field(default_factory=lambda: deque(maxlen=20))  # last training returns, any net

    def emit(self, record: dict) -> None:
        """Queue a metrics record (the writer exists once the run's files may be written)."""
        assert self.writer is not None
        self.writer.emit(record)

    def wall(self) -> float:
        return time.perf_counter() - self.t0

    def policy_now(self) -> GreedyPolicy:
        return GreedyPolicy(copy.deepcopy(self.acting), self.learner.policy_weights())


def payload(p: Parts, policy: GreedyPolicy, wall: float) -> dict:
    """The checkpoint: the policy for eval/backtest, and (under `resume`) everything an exact resume needs.
    Call only while the actors are parked; arrays are copied, so the write may run in a thread."""
    s, learner = p.state, p.learner
    resume = {
        "learner": copy.deepcopy(learner.state_dict()),
        "replay": p.replay.state_dict(with_rows=p.cfg.checkpoint_replay),
        "actors": p.collection.actor_states(),
        "returns": p.returns.state_dict(),
        **({"heldout": p.heldout.state_dict(with_rows=p.cfg.checkpoint_replay)} if p.heldout else {}),
        "run": {"env_steps": p.gate.steps, "updates": s.updates, "evals": s.evals, "last_eval": s.last_eval,
                "next_eval": s.next_eval, "wall_s": s.wall_before + wall, "best_mean": s.best.mean,
                "best_env_steps": s.best.env_steps},
    }
    if s.best.policy is not None:
        resume["best_policy"] = checkpoint.policy_payload(s.best.policy.net, s.best.policy.w_K.reshape(-1).numpy())
    spec = p.spec
    return {
        "config": to_dict(p.cfg),
        "env": {"id": p.cfg.env.id, "factory": p.cfg.env.factory, "obs_shape": list(spec.obs_shape),
                "obs_dtype": str(spec.obs_dtype), "n_actions": spec.n_actions, "metadata": p.env_meta},
        "policy": checkpoint.policy_payload(policy.net, policy.w_K.reshape(-1).numpy()),
        "online": {k: v.detach().clone() for k, v in learner.online.state_dict().items()},
        "target": {k: v.detach().clone() for k, v in learner.target.state_dict().items()},
        "counters": {"env_steps": p.gate.steps, "updates": s.updates, "skipped": learner.skipped},
        "resume": resume,
    }


def restore(p: Parts, resume: dict) -> None:
    """Put a checkpoint's `resume` state back into freshly built parts (the inverse of `payload`)."""
    if len(resume["actors"]) != p.collection.num_actors:
        raise UserError(f"checkpoint has {len(resume['actors'])} actors; the config asks for "
                        f"{p.collection.num_actors}")
    p.learner.load_state_dict(resume["learner"])
    p.replay.load_state_dict(resume["replay"])
    p.returns.load_state_dict(resume["returns"])
    if p.heldout is not None and "heldout" in resume:
        p.heldout.load_state_dict(resume["heldout"])
    p.collection.load_actor_states(resume["actors"])
    saved, s = resume["run"], p.state
    p.gate.steps = int(saved["env_steps"])
    s.updates, s.evals = int(saved["updates"]), int(saved["evals"])
    s.last_eval, s.next_eval = float(saved["last_eval"]), int(saved["next_eval"])
    s.wall_before = float(saved["wall_s"])
    p.gate.set_limit(p.step_limit(s.updates))
    if "best_policy" in resume:
        s.best = Best(float(saved["best_mean"]), checkpoint.policy_from({"policy": resume["best_policy"]}),
                      int(saved["best_env_steps"]))


def merge_record(m: MergeEvent, steps: int, replay: ReplayPool | FramePool) -> dict:
    return {"kind": "merge", "env_steps": steps, "updates": m.update, "scores": m.scores_K, "weights": m.weights_K,
            "entropy": m.entropy, "distance": m.distance_K, "q_disagreement": m.q_std, "lrs": m.lrs_K,
            "replay_share": replay.share_by_net()}


def train_record(p: Parts) -> dict:
    """The periodic 'train' record: losses of the last learner call, rates, replay and collection figures."""
    applied = [s for s in p.state.stats if not s.skipped]
    loss = np.mean([s.loss_K for s in applied], axis=0) if applied else []
    wall, steps = p.wall(), p.gate.steps
    return {"kind": "train", "env_steps": steps, "updates": p.state.updates, "wall_s": wall,
            "return_recent": float(np.mean(p.recent)) if p.recent else None,
            "steps_per_s": steps / max(wall, 1e-9), "loss": float(np.mean(loss)) if applied else None,
            "loss_per_net": loss, "q_mean": float(np.mean([s.q_mean for s in applied])) if applied else None,
            "skipped_updates": p.learner.skipped, "replay_rows": len(p.replay), **p.collection.train_record()}


def summary(p: Parts, train_wall: float, final: EvalResult | None, policy: GreedyPolicy) -> dict:
    """summary.json. An interrupted run has no final evaluation: its eval fields are null."""
    s, best = p.state, p.state.best
    total_wall = s.wall_before + train_wall
    return {
        "scenario": p.cfg.scenario, "seed": p.cfg.seed, "env": p.cfg.env.factory or p.cfg.env.id,
        "env_steps": p.gate.steps, "updates": s.updates, "skipped_updates": p.learner.skipped,
        "train_wall_s": round(train_wall, 3), "wall_s": round(p.wall(), 3),
        "total_train_wall_s": round(total_wall, 3),
        "steps_per_s": round(p.gate.steps / max(total_wall, 1e-9), 1),
        "eval_return_mean": final.mean if final else None, "eval_return_std": final.std if final else None,
        "eval_episodes": len(final.returns) if final else 0,
        "evaluated_policy": "best periodic eval" if best.policy is policy else "last",
        "best_periodic_eval": best.mean if best.policy is not None else None,
        "best_periodic_eval_env_steps": best.env_steps if best.policy is not None else None,
        "stopped_early": p.stop.is_set(), "interrupted": p.interrupt.is_set(), "resumed": s.wall_before > 0,
        "merge_weights": policy.w_K.reshape(-1).tolist(), **p.collection.summary(),
        "replay_bytes_per_row": p.replay.nbytes_per_row(),
    }


def diverged_message(p: Parts) -> str:
    ckpt = p.out_dir / checkpoint.FILENAME
    where = f"the last good checkpoint is {ckpt}" if ckpt.exists() else \
        "no checkpoint was written before it (set checkpoint_every to keep one)"
    return (f"stopped: {p.learner.bad_in_a_row} updates in a row had a NaN/inf loss or gradient, or |Q| > "
            f"learner.q_limit = {p.cfg.learner.q_limit:g} (lower learner.lr or check the rewards); {where}")
