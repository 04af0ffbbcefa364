"""benchmarks/against_commit.py: medians per side and the new-vs-old figures, from hand-made rows."""

from __future__ import annotations

import pytest

from helpers.bench_scripts import load_benchmark

against = load_benchmark("against_commit")


def row(side: str, ratio: float, rate: float, k1: float, k8: float, wall: float, final: float) -> dict:
    learner = {"learner_k1_ms": k1, "learner_k8_ms": k8, "learner_k8_over_k1": k8 / k1}
    return {"side": side, "collect_ratio": ratio, "collect_steps_per_s": rate, **learner,
            **{key.replace("learner", "learner64"): value for key, value in learner.items()},
            "solve_wall_s": wall, "final_mean": final, "solved": final >= 475}


def test_new_vs_old_reads_above_one_when_the_new_side_is_faster_for_rates_and_for_times():
    rows = [row("old", 0.40, 20_000, 1.0, 2.0, 40.0, 500), row("old", 0.44, 22_000, 1.2, 2.4, 60.0, 400),
            row("old", 0.42, 21_000, 1.1, 2.2, 50.0, 480),
            row("new", 0.42, 21_000, 1.0, 1.8, 40.0, 500), row("new", 0.46, 23_000, 1.0, 2.0, 45.0, 490),
            row("new", 0.50, 25_000, 1.0, 2.2, 35.0, 300)]
    out = against.compare(rows)
    assert out["median"]["old"]["collect_ratio"] == pytest.approx(0.42)
    assert out["new_vs_old"]["collect_ratio"] == pytest.approx(0.46 / 0.42)       # higher is better: new / old
    assert out["new_vs_old"]["solve_wall_s"] == pytest.approx(50.0 / 40.0)        # lower is better: old / new
    assert out["new_vs_old"]["learner_k8_ms"] == pytest.approx(2.2 / 2.0)
    assert out["new_vs_old"]["learner_k8_over_k1"] == pytest.approx(2.0 / 2.0)
    assert out["solved"] == {"old": 2, "new": 2}
