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


@pytest.mark.timeout(60)
@pytest.mark.parametrize("score", ["greedy", "heldout_td"])
async def test_the_merge_scores_reach_the_merges_and_members_are_evaluated(tmp_path, monkeypatch, score):
    """The run's merges use the configured score: each net's own greedy episodes, or its held-out TD error
    (finite once held-out rows exist); the population's rates reach the learner; eval.members logs K means."""
    from asyncdqn.learner import Learner
    from asyncdqn.metrics import read_records

    cfg = tiny_config(total_steps=1500, merge={"every": 25, "score": score, "heldout_every": 4, "score_episodes": 1},
                      population={"lrs": [1e-4, 3e-3]}, eval={"every": 500, "episodes": 2, "members": True})
    asked: list[str] = []
    greedy, heldout = Learner.merge, Learner.heldout_scores

    def merge(self, scores_K, probe_BO=None):
        asked.append("merge")
        return greedy(self, scores_K, probe_BO)

    def heldout_scores(self, batch):
        asked.append("heldout")
        return heldout(self, batch)

    monkeypatch.setattr(Learner, "merge", merge)
    monkeypatch.setattr(Learner, "heldout_scores", heldout_scores)
    await runtime.run(cfg, tmp_path)
    records = read_records(tmp_path / "metrics.jsonl")
    merges = [r for r in records if r["kind"] == "merge"]
    assert len(merges) >= 5 and all(r["lrs"] == [1e-4, 3e-3] for r in merges)
    scores = [r["scores"] for r in merges]
    if score == "greedy":   # whole CartPole returns of each net (>= 8 steps each), one episode per net
        assert all(all(s >= 8 and s == int(s) for s in row) for row in scores) and "heldout" not in asked
    else:                   # minus a Huber error: <= 0; NaN only before the first held-out chunk
        finite = [row for row in scores if all(s == s for s in row)]
        assert len(finite) >= len(scores) - 1 and all(s <= 0 for row in finite for s in row)
        assert asked.count("heldout") == asked.count("merge")
    members = [r for r in records if r["kind"] == "member_eval"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert len(members) == len(evals) >= 2 and all(len(r["means"]) == 2 for r in members)
    assert [r["env_steps"] for r in members] == [r["env_steps"] for r in evals]
