"""The progress display's rates, ETA and last evaluation (asyncdqn/progress_rates.py), on hand-made snapshots."""

from __future__ import annotations

import math

import pytest

from asyncdqn.progress_rates import Rates, RecentRates, clock, describe
from asyncdqn.runtime import Progress


def snap(wall_s: float, env_steps: int, updates: int = 0, evals: int = 0, last_eval: float = math.nan,
         total_steps: int = 10_000) -> Progress:
    return Progress(env_steps=env_steps, total_steps=total_steps, updates=updates, last_eval=last_eval,
                    evals=evals, wall_s=wall_s)


def test_rates_are_over_the_recent_window_not_since_the_start():
    r = RecentRates(window_s=10)
    assert math.isnan(r.add(snap(0, 0)).steps_per_s)              # one snapshot: no rate yet
    # Before learning_starts the actors run alone: 1,000 steps/s for 5 s, no updates.
    for t in range(1, 6):
        out = r.add(snap(t, 1000 * t))
    assert out.steps_per_s == 1000 and out.updates_per_s == 0
    # Then the learner slows them to 100 steps/s, 50 updates/s.
    for t in range(6, 31):
        out = r.add(snap(t, 5000 + 100 * (t - 5), updates=50 * (t - 5)))
    assert out.steps_per_s == pytest.approx(100) and out.updates_per_s == pytest.approx(50)
    # 10,000 - 7,500 steps left at 100 steps/s; since the start it would claim about 1 s per 250 steps.
    assert out.eta_s == pytest.approx(25)


def test_a_window_spans_at_least_window_s_once_the_run_is_that_old():
    r = RecentRates(window_s=10)
    for t in range(0, 80):                                         # 20 s of snapshots every 0.25 s
        r.add(snap(t * 0.25, 100 * t))
    times = [h[0] for h in r.history]
    assert times[-1] - times[0] >= 10 and times[-1] - times[1] < 10


def test_eta_is_zero_when_done_and_unknown_when_nothing_moves():
    r = RecentRates()
    r.add(snap(0, 500))
    assert math.isnan(r.add(snap(1, 500)).eta_s)                   # no steps in the window: no ETA
    assert r.add(snap(2, 10_000)).eta_s == 0.0
    assert math.isnan(RecentRates().add(snap(0, 0)).eta_s)


def test_the_last_evaluation_is_kept_with_its_age():
    r = RecentRates()
    assert math.isnan(r.add(snap(0, 0)).last_eval)
    out = r.add(snap(5, 100, evals=1, last_eval=20.0))
    assert out.last_eval == 20.0 and out.eval_age_s == 0
    out = r.add(snap(65, 900, evals=1, last_eval=20.0))
    assert out.last_eval == 20.0 and out.eval_age_s == 60
    out = r.add(snap(70, 1000, evals=2, last_eval=20.0))           # a new evaluation with the same mean
    assert out.eval_age_s == 0
    resumed = RecentRates().add(snap(0, 5000, evals=3, last_eval=7.5))
    assert resumed.last_eval == 7.5 and math.isnan(resumed.eval_age_s)  # it came from before the resume


def test_clock_and_describe():
    assert [clock(x) for x in (0, 59.4, 61, 3600, 3725, math.nan, math.inf)] == \
        ["0:00", "0:59", "1:01", "1:00:00", "1:02:05", "—", "—"]
    line = describe(Rates(1234.4, 56.78, 3725, 180.25, 61))
    assert line == "1,234 steps/s  56.8 upd/s  ETA 1:02:05  eval 180.2 (1:01 ago)"
    assert describe(Rates(math.nan, math.nan, math.nan, math.nan, math.nan)) == \
        "— steps/s  — upd/s  ETA —  eval —"


def test_the_runtime_sends_its_wall_clock_and_evaluation_count(tmp_path):
    from asyncdqn import runtime
    from conftest import run_in_fresh_loop, tiny_config

    seen: list[Progress] = []
    cfg = tiny_config(total_steps=2000, eval={"every": 400, "episodes": 2, "final_episodes": 2})
    run_in_fresh_loop(runtime.run(cfg, tmp_path, progress=seen.append))
    walls = [p.wall_s for p in seen]
    assert len(seen) >= 2 and walls == sorted(walls) and walls[-1] > walls[0] > 0
    assert seen[-1].evals >= 1 and [p.evals for p in seen] == sorted(p.evals for p in seen)
    assert all(math.isnan(p.last_eval) == (p.evals == 0) for p in seen)
