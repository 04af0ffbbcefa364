"""Shared fixtures for the engine's tests: a tiny, fast run config and one trained run to inspect.

The tiny config trains CartPole for about a second on one core: two small nets, a few actors, short
chunks, no periodic evaluation. Tests that need a finished run (artifacts, checkpoints, `asyncdqn eval`)
share `trained_run`, which trains once per session; they must copy its files before changing them.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass
from pathlib import Path

import pytest

from asyncdqn import config, runtime

# Hand-sized so that the budget is easy to compute: replay_ratio 0.25 exactly representable,
# 0.25 * (1100 - 200) = 225 updates, which is not a multiple of updates_per_call (8).
TINY: dict = {
    "scenario": "tiny",
    "seed": 0,
    "total_steps": 1100,
    "log_every": 250,
    "actors": {"num_actors": 3, "chunk_rows": 16, "queue_chunks": 4, "eps_anneal_steps": 500},
    "replay": {"capacity": 5000, "batch_size": 16},
    "learner": {"num_nets": 2, "hidden": [16, 16], "learning_starts": 200, "replay_ratio": 0.25,
                "updates_per_call": 8, "max_lead": 32},
    "merge": {"every": 25},
    "eval": {"every": 0, "episodes": 2, "final_episodes": 2},
}


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def tiny_values(**extra) -> dict:
    """TINY with nested overrides, e.g. tiny_values(seed=3, learner={"max_lead": 0})."""
    return _merge(TINY, extra)


def tiny_config(**extra) -> config.RunConfig:
    return config.from_dict(tiny_values(**extra))


def tiny_sets(total_steps: int = 600) -> list[str]:
    """`--set` arguments that shrink the cartpole scenario to a run of about a second."""
    return [f"total_steps={total_steps}", "actors.num_actors=2", "actors.chunk_rows=16", "replay.capacity=5000",
            "replay.batch_size=16", "learner.num_nets=2", "learner.hidden=[16, 16]", "learner.learning_starts=200",
            "learner.replay_ratio=0.25",
            "merge.every=25", "eval.every=0", "eval.final_episodes=2", "log_every=200"]


def run_in_fresh_loop(coro):
    """Run a coroutine in a private event loop that is closed afterwards (no global loop is touched)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


@dataclass(frozen=True)
class TrainedRun:
    cfg: config.RunConfig
    out: Path
    summary: dict


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    """One tiny training run per session (read-only: copy files before modifying them)."""
    cfg = tiny_config()
    out = tmp_path_factory.mktemp("trained_run")
    summary = run_in_fresh_loop(runtime.run(cfg, out))
    return TrainedRun(cfg, out, summary)
