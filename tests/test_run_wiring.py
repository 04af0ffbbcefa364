"""The run uses the schedules it is tested with: prioritized replay is sampled with PER's β annealed from
`replay.beta` towards 1 over the run (Schaul et al. 2016), as `schedule.beta_at` computes it."""

from __future__ import annotations

import pytest

from asyncdqn import runtime
from asyncdqn.replay import ReplayPool
from asyncdqn.schedule import beta_at
from conftest import tiny_config


@pytest.mark.timeout(60)
async def test_prioritized_replay_is_sampled_with_the_annealed_beta(tmp_path, monkeypatch):
    cfg = tiny_config(replay={"prioritized": True, "beta": 0.4}, learner={"max_lead": 0})
    seen: list[tuple[float, int]] = []
    sample = ReplayPool.sample

    def recording(self, num_nets, batch_size, beta=0.4):
        seen.append((beta, self.ring.added_steps))
        return sample(self, num_nets, batch_size, beta)

    monkeypatch.setattr(ReplayPool, "sample", recording)
    summary = await runtime.run(cfg, tmp_path)
    assert len(seen) == summary["updates"] == 225
    betas = [b for b, _ in seen]
    assert betas == sorted(betas) and betas[0] > 0.4 and betas[-1] <= 1.0
    # beta_at(0.4, steps, total) for a whole number of steps at least the pool's (chunks still being built by
    # the actors, at most a chunk each, are not in the pool yet)
    a = cfg.actors
    for beta, in_pool in seen:
        steps = round((beta - 0.4) / 0.6 * cfg.total_steps)
        assert beta == pytest.approx(beta_at(0.4, steps, cfg.total_steps), abs=1e-12)
        assert in_pool <= steps <= in_pool + a.num_actors * a.chunk_rows
    assert betas[-1] - betas[0] > 0.25  # 200 -> ~1100 of 1100 steps: most of the way from 0.4 to 1
