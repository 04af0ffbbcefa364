"""benchmarks/game_curve.py: the curve over seeds, from hand-made run folders; the 95% interval over seeds;
and which command a seed gets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from helpers.bench_scripts import load_benchmark

gc = load_benchmark("game_curve")


def _run(folder: Path, evals: dict[int, float], final: float | None = None, wall: float = 100.0) -> None:
    folder.mkdir(parents=True)
    lines = [{"kind": "episode", "env_steps": 10, "return": 99.0}]
    lines += [{"kind": "eval", "env_steps": s, "mean": m, "std": 0.0} for s, m in evals.items()]
    lines += [{"kind": "eval_confirm", "env_steps": 1, "mean": 77.0}]  # not part of the curve
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if final is not None:
        (folder / "summary.json").write_text(json.dumps({"eval_return_mean": final, "total_train_wall_s": wall,
                                                         "env_steps": max(evals)}))


def test_the_curve_averages_each_eval_step_over_the_seeds_that_reached_it(tmp_path):
    _run(tmp_path / "seed0", {100: 1.0, 200: 3.0}, final=4.0, wall=50.0)
    _run(tmp_path / "seed1", {100: 3.0, 200: 5.0}, final=6.0, wall=70.0)
    _run(tmp_path / "seed2", {100: 5.0})  # still running: no summary, one eval so far
    runs = {s: gc.read_run(tmp_path / f"seed{s}") for s in range(3)}
    rows, final = gc.summarize(runs)
    assert [(r["env_steps"], r["seeds"], r["mean"]) for r in rows] == [(100, 3, 3.0), (200, 2, 4.0)]
    assert rows[0]["std"] == pytest.approx(2.0)  # sample std of 1, 3, 5
    assert final["seeds_finished"] == [0, 1]
    assert final["final_mean"] == 5.0 and final["final_std"] == pytest.approx(2 ** 0.5)
    assert final["median_train_wall_s"] == 60.0
    half = 12.706 * 2 ** 0.5 / 2 ** 0.5                       # t(0.975; 1) * std / sqrt(2 seeds)
    assert final["final_ci95"] == pytest.approx([5.0 - half, 5.0 + half])


def test_the_interval_is_students_t_over_seeds():
    lo, hi = gc.ci95([1.0, 2.0, 3.0, 4.0, 5.0])              # std sqrt(2.5), 4 degrees of freedom
    half = 2.776 * 2.5 ** 0.5 / 5 ** 0.5
    assert (lo, hi) == pytest.approx((3.0 - half, 3.0 + half))
    assert all(math.isnan(x) for x in gc.ci95([7.0]))


def _t_cdf(t: float, df: int, n: int = 20_000) -> float:
    """P(T <= t) for t > 0, by Simpson's rule on Student's t density."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    f = [c * (1 + (t * i / n) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
    return 0.5 + t / n / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))


@pytest.mark.parametrize("df", [*range(1, 31), 31, 40, 100, 1000])
def test_t975_is_the_975_quantile(df):
    # The table's 3 decimals (and the expansion past 30) put the quantile within 1e-4 of probability
    assert _t_cdf(gc.t975(df), df) == pytest.approx(0.975, abs=1e-4)


def test_a_seed_with_a_checkpoint_is_resumed_and_a_new_one_trained(tmp_path):
    fresh = gc.train_command("minatar-breakout", 3, 500_000, tmp_path / "seed3", ["eval.every=1000"])
    assert fresh[3:8] == ["train", "minatar-breakout", "--seed", "3", "--quiet"]
    assert fresh[-6:] == ["--out", str(tmp_path / "seed3"), "--set", "total_steps=500000", "--set",
                          "eval.every=1000"]
    (tmp_path / "seed3").mkdir()
    (tmp_path / "seed3" / "checkpoint.pt").write_bytes(b"")
    resumed = gc.train_command("minatar-breakout", 3, 500_000, tmp_path / "seed3", [])
    assert resumed[3:] == ["train", "--resume", str(tmp_path / "seed3"), "--quiet"]
