"""benchmarks/ablation.py: its statistics on hand-computed cases, its settings, and the resumable sweep.

The sweep is driven by a fake runner that writes the files a finished `asyncdqn train` leaves (summary.json,
metrics.jsonl), so the tests train nothing; one slow test runs two real tiny runs through the CLI.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from asyncdqn import config
from helpers.bench_scripts import load_benchmark

ab = load_benchmark("ablation")


# --------------------------------------------------------------------------------------------- statistics

def test_auc_is_the_mean_of_the_first_eval_points():
    assert ab.auc([0.0, 100.0, 200.0, 500.0, 999.0], points=4) == 200.0
    assert ab.auc([10.0, 30.0], points=4) == 20.0  # fewer evaluations than points: the mean of those there
    assert math.isnan(ab.auc([], points=4))


def test_time_to_threshold_is_the_wall_time_of_the_first_eval_that_reaches_it():
    evals = [{"mean": 100.0, "wall_s": 10.0}, {"mean": 480.0, "wall_s": 20.0}, {"mean": 475.0, "wall_s": 30.0}]
    assert ab.time_to_threshold(evals, 475.0) == 20.0
    assert ab.time_to_threshold(evals, 100.0) == 10.0  # >=, not >
    assert math.isnan(ab.time_to_threshold(evals, 500.0))
    assert math.isnan(ab.time_to_threshold([{"mean": None, "wall_s": 1.0}], 0.0))


def test_bootstrap_of_a_constant_is_that_constant():
    assert ab.bootstrap_ci([7.0, 7.0, 7.0], np.random.default_rng(0)) == (7.0, 7.0)


def test_bootstrap_of_two_values_follows_the_resampling_distribution():
    # Resampling [0, 10] gives a mean of 0 with probability 1/4, 5 with 1/2 and 10 with 1/4. So the 2.5% and
    # 97.5% quantiles are 0 and 10, and the 30% and 70% quantiles are both 5.
    rng = np.random.default_rng(1)
    assert ab.bootstrap_ci([0.0, 10.0], rng, n_boot=20_000) == (0.0, 10.0)
    assert ab.bootstrap_ci([0.0, 10.0], rng, n_boot=20_000, level=0.4) == (5.0, 5.0)


def test_bootstrap_is_reproducible_drops_nans_and_is_nan_without_values():
    values = [1.0, 4.0, 2.0, 8.0, 5.0]
    a = ab.bootstrap_ci(values, np.random.default_rng(3))
    assert a == ab.bootstrap_ci(values + [math.nan], np.random.default_rng(3))
    assert min(values) <= a[0] < np.mean(values) < a[1] <= max(values)
    assert all(math.isnan(x) for x in ab.bootstrap_ci([math.nan], np.random.default_rng(0)))


def test_eval_points_leave_out_an_evaluation_due_at_the_very_end():
    assert ab.PLANS["cartpole"].eval_points == 19  # 2,500 ... 47,500 of a 50k budget
    assert ab.QUICK["cartpole"].eval_points == 3


# --------------------------------------------------------------------------------------------- settings

@pytest.mark.parametrize("name", list(ab.SETTINGS))
def test_every_setting_builds_a_valid_config_with_the_merge_pinned(name):
    cfg = config.load("cartpole", ab.PLANS["cartpole"].overrides(name), seed=0)
    expected = {"k1": (1, "params", 1.0, "return", 1.0), "k2": (2, "params", 1.0, "return", 1.0),
                "k4": (4, "params", 1.0, "return", 1.0), "k8": (8, "params", 1.0, "return", 1.0),
                "k4-noresync": (4, "params", 0.0, "return", 1.0), "k4-outputs": (4, "outputs", 1.0, "return", 1.0),
                "k4-tdloss": (4, "params", 1.0, "td_loss", 1.0), "k4-tau0.1": (4, "params", 1.0, "return", 0.1),
                "k4-tau10": (4, "params", 1.0, "return", 10.0), "k4-tauinf": (4, "params", 1.0, "return", math.inf),
                "k4-greedy": (4, "params", 1.0, "greedy", 1.0), "k4-heldout": (4, "params", 1.0, "heldout_td", 1.0),
                "k4-best": (4, "params", 1.0, "return", 0.0), "k1-averaged": (1, "averaged", 1.0, "return", 1.0),
                "k4-pop": (4, "params", 1.0, "return", 1.0)}
    m = cfg.merge
    assert (cfg.learner.num_nets, m.space, m.resync, m.score, m.tau) == expected[name]
    assert cfg.population.lrs == ((1e-4, 3e-4, 1e-3, 3e-3) if name == "k4-pop" else ())
    assert cfg.total_steps == 50_000 and cfg.eval.stop_at == math.inf and not cfg.eval.keep_best


def test_minatar_plan_builds_a_valid_config():
    cfg = config.load("minatar-breakout", ab.PLANS["minatar-breakout"].overrides("k4-tauinf"), seed=0)
    assert (cfg.total_steps, cfg.learner.learning_starts, cfg.merge.every, cfg.merge.tau) == (25_000, 2000, 250,
                                                                                               math.inf)


# --------------------------------------------------------------------------------------------- the sweep

PLAN = ab.Plan("cartpole", 1_000, 250, 2, 50.0, ("k1", "k4"))


def _fake_runner(calls: list, returns: dict | None = None, fail: dict | None = None):
    """Writes what a finished run leaves. returns[(setting, seed)] = eval means; fail[(setting, seed)] = rc."""

    def run(job) -> int:
        calls.append((job.setting, job.seed))
        rc = (fail or {}).get((job.setting, job.seed), 0)
        if rc:
            return rc
        means = (returns or {}).get((job.setting, job.seed), [10.0, 20.0, 30.0, 40.0])
        lines = [{"kind": "eval", "env_steps": 250 * (i + 1), "mean": m, "std": 0.0, "wall_s": 1.0 + i}
                 for i, m in enumerate(means)]
        lines.append({"kind": "merge", "env_steps": 600, "entropy": 1.0, "q_disagreement": 0.5,
                      "distance": [1.0, 3.0], "replay_share": [0.25, 0.75], "weights": [0.5, 0.5]})
        (job.run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        (job.run_dir / "summary.json").write_text(json.dumps({
            "interrupted": False, "eval_return_mean": means[-1] + 1, "eval_return_std": 0.0, "train_wall_s": 5.0,
            "steps_per_s": 200.0, "env_steps": 1000, "updates": 100}))
        return 0

    return run


def test_a_killed_sweep_resumes_where_it_stopped(tmp_path):
    jobs = ab.make_jobs("cartpole", PLAN, [0, 1], tmp_path)
    assert [(j.setting, j.seed) for j in jobs] == [("k1", 0), ("k4", 0), ("k1", 1), ("k4", 1)]  # seeds outermost
    calls: list = []
    with pytest.raises(KeyboardInterrupt):  # the third run is interrupted (exit 130)
        ab.run_sweep(jobs, _fake_runner(calls, fail={("k1", 1): 130}), say=lambda m: None)
    assert calls == [("k1", 0), ("k4", 0), ("k1", 1)]
    assert [ab.is_done(j) for j in jobs] == [True, True, False, False]

    calls.clear()
    counts = ab.run_sweep(ab.make_jobs("cartpole", PLAN, [0, 1], tmp_path), _fake_runner(calls), say=lambda m: None)
    assert calls == [("k1", 1), ("k4", 1)]
    assert counts == {"done_before": 2, "ran": 2, "failed": 0}


def test_a_half_written_or_interrupted_run_is_trained_again(tmp_path):
    jobs = ab.make_jobs("cartpole", PLAN, [0], tmp_path)
    ab.run_sweep(jobs, _fake_runner([]), say=lambda m: None)
    (jobs[0].run_dir / "summary.json").unlink()  # killed before the summary
    summary = json.loads((jobs[1].run_dir / "summary.json").read_text())
    (jobs[1].run_dir / "summary.json").write_text(json.dumps({**summary, "interrupted": True}))  # SIGTERM'd
    (jobs[1].run_dir / "stale.txt").write_text("left by the killed run")
    calls: list = []
    ab.run_sweep(jobs, _fake_runner(calls), say=lambda m: None)
    assert calls == [("k1", 0), ("k4", 0)]
    assert not (jobs[1].run_dir / "stale.txt").exists()  # the folder starts clean


def test_a_changed_spec_is_not_taken_for_a_finished_run(tmp_path):
    ab.run_sweep(ab.make_jobs("cartpole", PLAN, [0], tmp_path), _fake_runner([]), say=lambda m: None)
    longer = ab.Plan(**{**PLAN.__dict__, "total_steps": 2_000})
    assert not any(ab.is_done(j) for j in ab.make_jobs("cartpole", longer, [0], tmp_path))
    # the scenario is snapshot once: a later change to the package's scenario does not reach a resumed sweep
    snapshot = tmp_path / "cartpole" / "scenario.toml"
    assert snapshot.read_text() == (config.SCENARIO_DIR / "cartpole.toml").read_text()


def test_a_failed_run_is_recorded_counted_and_not_retried(tmp_path):
    jobs = ab.make_jobs("cartpole", PLAN, [0], tmp_path)
    counts = ab.run_sweep(jobs, _fake_runner([], fail={("k4", 0): 1}), say=lambda m: None)
    assert counts == {"done_before": 0, "ran": 2, "failed": 1}
    assert (jobs[1].run_dir / "failed.txt").read_text().startswith("exit 1")
    calls: list = []
    ab.run_sweep(jobs, _fake_runner(calls), say=lambda m: None)
    assert calls == []
    rows = ab.aggregate([ab.summarise_run(j, PLAN) for j in jobs], PLAN)
    assert [(r["setting"], r["seeds"], r["failed"]) for r in rows] == [("k1", 1, 0), ("k4", 0, 1)]
    assert math.isnan(rows[1]["auc"])


def test_results_are_summarised_per_run_and_aggregated_per_setting(tmp_path):
    jobs = ab.make_jobs("cartpole", PLAN, [0, 1], tmp_path)
    returns = {("k1", 0): [0.0, 40.0, 80.0, 100.0], ("k1", 1): [20.0, 20.0, 20.0, 20.0],
               ("k4", 0): [60.0, 60.0, 60.0, 60.0], ("k4", 1): [0.0, 0.0, 90.0, 90.0]}
    ab.run_sweep(jobs, _fake_runner([], returns), say=lambda m: None)
    runs = [ab.summarise_run(j, PLAN) for j in jobs]
    k1_0 = runs[0]
    # PLAN: 1000 steps, eval every 250 -> 3 points: (0 + 40 + 80) / 3; the eval at 1000 is left out
    assert k1_0["auc"] == 40.0 and k1_0["final"] == 101.0
    assert k1_0["time_to_threshold_s"] == 3.0  # the third eval (80, at wall 3 s) is the first >= 50
    assert (k1_0["entropy"], k1_0["distance"], k1_0["max_replay_share"]) == (1.0, 2.0, 0.75)
    rows = {r["setting"]: r for r in ab.aggregate(runs, PLAN)}
    assert rows["k1"]["auc"] == 30.0 and rows["k4"]["auc"] == 45.0  # (40 + 20) / 2, (60 + 30) / 2
    assert rows["k1"]["reached"] == 1 and rows["k1"]["time_to_threshold_s"] == 3.0  # seed 1 never reached 50
    assert rows["k4"]["reached"] == 2 and rows["k4"]["time_to_threshold_s"] == 2.0  # (1 + 3) / 2
    assert (rows["k4"]["auc_lo"], rows["k4"]["auc_hi"]) == (30.0, 60.0)  # two seeds: min and max of the means
    table = ab.markdown_table(list(rows.values()), PLAN.threshold)
    assert "| K=1 (DQN) | 2 | 30.0 [" in table and "| 1/2 |" in table
    ab.plot(runs, PLAN, "cartpole", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0


@pytest.mark.slow
def test_quick_sweep_trains_through_the_cli_and_resumes(tmp_path):
    out = tmp_path / "ablation-{env}.json"
    args = ["--quick", "--seeds", "0", "--settings", "k1,k4", "--runs-dir", str(tmp_path), "--out", str(out)]
    assert ab.main(args) == 0
    result = json.loads((tmp_path / "ablation-cartpole.json").read_text())
    assert result["finished"] == 2 and result["counts"]["ran"] == 2
    assert (tmp_path / "ablation-cartpole.png").is_file()
    assert ab.main(args) == 0  # nothing left to train
    assert json.loads((tmp_path / "ablation-cartpole.json").read_text())["counts"]["done_before"] == 2
