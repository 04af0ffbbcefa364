"""benchmarks/learner_share.py: the time inside Learner.run is counted for every update of a real run."""

from __future__ import annotations

from asyncdqn.learner import Learner
from helpers.bench_scripts import load_benchmark

share = load_benchmark("learner_share")


def test_every_update_of_the_run_is_timed_and_the_learner_is_put_back():
    original = Learner.run
    r = share.timed_run(0, ["total_steps=1600", "learner.learning_starts=400", "eval.every=0",
                            "eval.final_episodes=1", "actors.num_actors=4"])
    assert Learner.run is original
    assert r["updates"] > 0 and r["updates"] == round(r["learner_wall_s"] / r["ms_per_update_wall"] * 1e3)
    assert 0 < r["learner_cpu_s"] and 0 < r["learner_wall_s"] < r["train_wall_s"]
    assert 0 < r["learner_share"] < 1
