"""Learning quality on the local backend (slow suite): the shipped cartpole scenario, as a user runs it,
solves CartPole-v1. Run with `make test-slow` (about a minute per seed on 2 cores)."""

from __future__ import annotations

import asyncio

import pytest

from asyncdqn import config, runtime


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [0, 1])
def test_the_cartpole_scenario_solves_cartpole_on_the_local_backend(tmp_path, seed):
    cfg = config.load("cartpole", seed=seed)
    assert cfg.backend.kind == "local"
    summary = asyncio.run(runtime.run(cfg, tmp_path))
    # The scenario's final evaluation: 20 greedy episodes on seeds no periodic evaluation used. 475 is
    # gymnasium's reward threshold for CartPole-v1; a random policy scores about 22.
    assert summary["eval_episodes"] == cfg.eval.final_episodes >= 20
    assert summary["eval_return_mean"] >= 475, summary
