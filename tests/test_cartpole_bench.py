"""benchmarks/cartpole_vs_sb3.py: what an unsolved seed counts in the all-seeds median (issue 16)."""

from __future__ import annotations

import math

from helpers.bench_scripts import load_benchmark

bench = load_benchmark("cartpole_vs_sb3")


def _run(wall, steps, solved, budget=50_000):
    return {"wall_s": wall, "env_steps": steps, "budget_steps": budget, "solved": solved, "wall_ex_eval_s": wall,
            "final_mean": 500.0 if solved else 100.0, "cpu_s": wall}


def test_an_unsolved_seed_counts_at_its_full_budget_or_as_never_measured():
    assert bench.charged_time(_run(12.0, 20_000, True)) == 12.0          # solved early: its time
    assert bench.charged_time(_run(40.0, 50_000, False)) == 40.0         # ran the whole budget: its full time
    assert bench.charged_time(_run(9.0, 20_000, False)) == math.inf      # stopped early, then failed


def test_the_all_seeds_median_keeps_the_unsolved_seeds():
    rows = [_run(10.0, 20_000, True), _run(11.0, 22_000, True), _run(40.0, 50_000, False),
            _run(9.0, 15_000, False), _run(12.0, 25_000, True)]
    s = bench.summarise("asyncdqn", rows)
    assert s["median_charged_s"] == 12.0          # of 10, 11, 12, 40, inf
    assert s["median_time_to_solve_s"] == 11.0    # the solved seeds only
    assert s["solved"] == 3 and s["runs"] == 5
