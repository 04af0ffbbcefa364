"""`asyncdqn compare`: per-run figures, rliable's aggregates over hand-made run folders, the bootstrap.

The run folders are written by hand with known evaluation means, so every figure has a value computed here
by hand (in the comments) and checked against both compare's output and rliable's own functions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rliable")
from rliable import metrics  # noqa: E402

from asyncdqn import compare  # noqa: E402
from asyncdqn.cli import main  # noqa: E402
from asyncdqn.errors import UserError  # noqa: E402


def write_run(folder: Path, scenario: str, arm: str, seed: int, means: list[float], final: float,
              wall_s: float = 100.0, score_range=(0.0, 100.0), sweep: bool = True, members=None) -> Path:
    """A finished run folder: evaluations every 1000 env steps, evenly spread over wall_s seconds."""
    folder.mkdir(parents=True)
    n = len(means)
    lines = [{"kind": "episode", "env_steps": 10, "return": 1.0}]
    lines += [{"kind": "eval", "env_steps": 1000 * (i + 1), "mean": m, "std": 0.0, "wall_s": wall_s * (i + 1) / n}
              for i, m in enumerate(means)]
    for i, ms in enumerate(members or []):
        lines.append({"kind": "member_eval", "env_steps": 1000 * (i + 1), "means": ms, "wall_s": 1.0})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (folder / "summary.json").write_text(json.dumps({"interrupted": False, "eval_return_mean": final,
                                                     "train_wall_s": wall_s}))
    if sweep:
        spec = {"spec": {"scenario": scenario, "arm": arm, "seed": seed},
                "meta": {"label": arm.upper(), "score_range": list(score_range), "baseline": "k1"}}
        (folder / "sweep_run.json").write_text(json.dumps(spec))
    else:
        (folder / "config.toml").write_text(f'scenario = "{scenario}"\nseed = {seed}\n')
    return folder


# normalised AUCs (score_range [0, 100]): k1 [0.1, 0.2, 0.3, 0.4], k4 [0.2, 0.3, 0.5, 0.9]
K1 = [10, 20, 30, 40]
K4 = [20, 30, 50, 90]


def make_sweep(root: Path, scenarios=("a",), **kw) -> Path:
    for sc in scenarios:
        for arm, aucs in (("k1", K1), ("k4", K4)):
            for seed, a in enumerate(aucs):
                # two evaluations whose mean is the AUC: a - 5 and a + 5; the final return is 2a
                write_run(root / sc / arm / f"seed{seed}", sc, arm, seed, [a - 5, a + 5], 2 * a, **kw)
    return root


def test_the_per_run_figures_on_hand_computed_cases():
    evals = [(1000, 10.0, 5.0), (2000, 30.0, 10.0), (3000, 50.0, 20.0)]
    assert compare.auc(evals, 2000) == 20.0                # (10 + 30) / 2
    assert compare.auc(evals, 3000) == 30.0
    assert math.isnan(compare.auc(evals, 500))
    assert compare.at_wall(evals, 12.0) == (20.0, 30.0)    # evaluations done by 12 s: 10, 30
    assert all(math.isnan(x) for x in compare.at_wall(evals, 1.0))
    assert compare.normalise(75.0, (50.0, 150.0)) == 0.25
    assert compare.normalise(75.0, None) == 75.0


def test_iqm_mean_and_p_improvement_match_a_hand_computation_and_rliable(tmp_path):
    runs, left_out = compare.find_runs([make_sweep(tmp_path)])
    assert len(runs) == 8 and left_out == []
    result = compare.compare(runs, reps=200)
    est = result["per_scenario"]["a"]
    # IQM of 4 values: the mean of the middle two (rliable trims 25% each side)
    assert est["auc"]["k1"]["iqm"] == pytest.approx(0.25)   # (0.2 + 0.3) / 2
    assert est["auc"]["k4"]["iqm"] == pytest.approx(0.40)   # (0.3 + 0.5) / 2
    assert est["auc"]["k4"]["mean"] == pytest.approx(0.475)
    assert est["final"]["k4"]["iqm"] == pytest.approx(0.80)  # finals are 2 x AUC
    # P(k4 > k1): of the 16 pairs, 0.2 beats 1 and ties 1 (1.5), 0.3 beats 2 and ties 1 (2.5), 0.5 and 0.9
    # beat all 4: 12 / 16
    assert est["auc"]["k4"]["p_improve"] == pytest.approx(0.75)
    x, y = np.array(K4)[:, None] / 100, np.array(K1)[:, None] / 100
    assert est["auc"]["k4"]["p_improve"] == pytest.approx(float(metrics.probability_of_improvement(x, y)))
    assert est["auc"]["k4"]["iqm"] == pytest.approx(float(metrics.aggregate_iqm(x)))
    assert "p_improve" not in est["auc"]["k1"]             # the baseline is not compared with itself
    assert compare.compare(runs, baseline="k4", reps=100)["arms"] == ["k4", "k1"]   # its row comes first
    lo, hi = est["auc"]["k4"]["p_improve_ci"]
    assert 0.0 <= lo < 0.75 < hi <= 1.0
    assert result["suite"] is None                         # one scenario: no suite aggregate


def test_the_suite_stacks_scenarios_as_tasks_and_uses_the_common_seeds(tmp_path):
    root = make_sweep(tmp_path, scenarios=("a", "b"))
    for arm in ("k1", "k4"):  # scenario b gets a fifth seed: the suite uses the first 4 of each
        write_run(root / "b" / arm / "seed4", "b", arm, 4, [95, 105], 200)
    result = compare.compare(compare.find_runs([root])[0], reps=200)
    assert result["scenarios"]["b"]["seeds"] == [0, 1, 2, 3, 4] and result["suite_seeds"] == 4
    # 8 values per arm (4 seeds x 2 identical scenarios): IQM = mean of the middle 4 = k4's 0.3, 0.3, 0.5, 0.5
    assert result["suite"]["auc"]["k4"]["iqm"] == pytest.approx(0.40)
    matrix = np.array([K4, K4]).T / 100
    assert result["suite"]["auc"]["k4"]["iqm"] == pytest.approx(float(metrics.aggregate_iqm(matrix)))
    assert result["per_scenario"]["b"]["auc"]["k4"]["mean"] == pytest.approx((0.475 * 4 + 1.0) / 5)


def test_unpaired_failed_and_interrupted_runs_are_left_out_and_named(tmp_path):
    root = make_sweep(tmp_path)
    write_run(root / "a" / "k1" / "seed9", "a", "k1", 9, [50, 50], 100)        # no k4 seed 9
    (root / "a" / "k4" / "seed7").mkdir()
    (root / "a" / "k4" / "seed7" / "failed.txt").write_text("exit 1\n")
    broken = write_run(root / "a" / "k4" / "seed8", "a", "k4", 8, [50, 50], 100)
    (broken / "summary.json").write_text(json.dumps({"interrupted": True}))
    runs, left_out = compare.find_runs([root])
    assert sorted(Path(n.split(":")[0]).name for n in left_out) == ["seed7", "seed8"]
    result = compare.compare(runs, reps=200)
    assert result["scenarios"]["a"]["seeds"] == [0, 1, 2, 3]
    assert result["scenarios"]["a"]["unpaired"] == ["seed9"]


def test_equal_wall_clock_cuts_every_run_at_the_baselines_median_time(tmp_path):
    # k1 takes 140 and 160 s (median 150); k4 takes 200 s, its 4 evaluations at 50, 100, 150 and 200 s
    for seed, wall in enumerate((140.0, 160.0)):
        write_run(tmp_path / "k1" / f"seed{seed}", "a", "k1", seed, [40, 60], 100, wall_s=wall)
        write_run(tmp_path / "k4" / f"seed{seed}", "a", "k4", seed, [20, 40, 60, 80], 160, wall_s=200.0)
    result = compare.compare(compare.find_runs([tmp_path])[0], reps=200)
    est, table = result["per_scenario"]["a"], result["scenarios"]["a"]
    assert table["wall_s"] == 150.0
    assert est["auc"]["k4"]["iqm"] == pytest.approx(0.3)             # up to k1's 2000 steps: (20 + 40) / 2
    assert est["auc_wall"]["k4"]["iqm"] == pytest.approx(0.4)        # (20 + 40 + 60) / 3: those by 150 s
    assert est["final_wall"]["k4"]["iqm"] == pytest.approx(0.6)      # its last evaluation by 150 s
    # k1 seed 0 (evaluations at 70 and 140 s) keeps both: AUC@W 0.5, final@W 0.6; seed 1 (80 and 160 s) only its
    # first: 0.4 and 0.4. Over the two seeds: 0.45 and 0.5
    assert est["auc_wall"]["k1"]["iqm"] == pytest.approx(0.45)
    assert est["final_wall"]["k1"]["iqm"] == pytest.approx(0.5)
    # P(k4 > k1) on AUC@W: k4's 0.4 loses to 0.5 and ties 0.4, twice: (0 + 0.5) * 2 / 4
    assert est["auc_wall"]["k4"]["p_improve"] == pytest.approx(0.25)


def test_members_report_each_nets_own_mean(tmp_path):
    for seed in range(2):
        write_run(tmp_path / "k1" / f"seed{seed}", "a", "k1", seed, [50, 50], 100)
        write_run(tmp_path / "k4" / f"seed{seed}", "a", "k4", seed, [50, 50], 100,
                  members=[[10, 30, 50, 70], [30, 50, 70, 90]])  # per-net means 20, 40, 60, 80
    result = compare.compare(compare.find_runs([tmp_path])[0], reps=200)
    assert result["scenarios"]["a"]["members"]["k4"] == {"members_mean": pytest.approx(0.5),
                                                         "members_best": pytest.approx(0.8)}
    assert "k1" not in result["scenarios"]["a"]["members"]


def test_plain_train_folders_name_their_arm_by_the_folder_above(tmp_path):
    for arm, aucs in (("k1", K1), ("k4", K4)):
        for seed, a in enumerate(aucs):
            write_run(tmp_path / arm / f"seed{seed}", "a", arm, seed, [a - 5, a + 5], 2 * a, sweep=False)
    result = compare.compare(compare.find_runs([tmp_path])[0], baseline="k1", reps=200)
    assert result["normalised"] is False                              # no score range: raw returns
    assert result["per_scenario"]["a"]["auc"]["k4"]["iqm"] == pytest.approx(40.0)


def test_several_scenarios_need_a_score_range(tmp_path):
    for sc in ("a", "b"):
        for arm in ("k1", "k4"):
            write_run(tmp_path / sc / arm / "seed0", sc, arm, 0, [1, 2], 3, sweep=False)
    with pytest.raises(UserError, match="score_range"):
        compare.compare(compare.find_runs([tmp_path])[0], baseline="k1")


def test_the_stratified_bootstrap_resamples_seeds_within_each_task():
    rng = np.random.default_rng(0)
    # column 0 all ones, column 1 all zeros: resampling within columns keeps the mean at 0.5 exactly
    m = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert compare.stratified_bootstrap([m], np.mean, 200, rng) == (0.5, 0.5)
    # one task with runs 0 and 1: resampled means are 0, 0.5 or 1 (1/4, 1/2, 1/4): the 95% interval is [0, 1]
    assert compare.stratified_bootstrap([np.array([[0.0], [1.0]])], np.mean, 2000, rng) == (0.0, 1.0)
    # rows [0, 0] and [1, 1]: each column draws its own row, so a mean of 0.25 (one 1 of four cells) occurs;
    # resampling whole rows would give only 0, 0.5 and 1
    draws = [compare.stratified_bootstrap([np.array([[0.0, 0.0], [1.0, 1.0]])], np.mean, 1, rng)[0]
             for _ in range(200)]
    assert 0.25 in draws and 0.75 in draws


def test_the_compare_command_writes_its_report_and_refuses_bad_folders(tmp_path, capsys):
    root = make_sweep(tmp_path / "sweep")
    spec_file = root / "a" / "k4" / "seed0" / "sweep_run.json"   # a label with a comma (rliable's separator)
    for f in (root / "a" / "k4").glob("seed*/sweep_run.json"):
        spec = json.loads(f.read_text())
        spec["meta"]["label"] = "K4, masks"
        f.write_text(json.dumps(spec))
    assert spec_file.is_file()
    assert main(["compare", str(root), "--reps", "200"]) == 0
    out = capsys.readouterr().out
    assert "| K4, masks |" in out and "0.750 [" in out
    report = json.loads((root / "compare" / "compare.json").read_text())
    assert report["baseline"] == "k1" and report["per_scenario"]["a"]["auc"]["k4"]["p_improve"] == 0.75
    assert (root / "compare" / "compare.png").stat().st_size > 10_000
    assert main(["compare", str(tmp_path / "nowhere")]) == 2
    assert main(["compare", str(root), "--baseline", "k9"]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("asyncdqn: error: ") for line in err)
    assert "not a folder" in err[0] and "'k9' is not among" in err[1] and "no finished runs" in err[2]


def test_the_auc_horizon_is_the_earliest_last_evaluation_of_the_scenario(tmp_path):
    for seed in range(2):  # k4 stopped after its first evaluation (at 1000 steps): k1's second one is not counted
        write_run(tmp_path / "k1" / f"seed{seed}", "a", "k1", seed, [40, 60], 100)
        write_run(tmp_path / "k4" / f"seed{seed}", "a", "k4", seed, [20], 100)
    result = compare.compare(compare.find_runs([tmp_path])[0], reps=200)
    assert result["scenarios"]["a"]["horizon_env_steps"] == 1000
    assert result["per_scenario"]["a"]["auc"]["k1"]["iqm"] == pytest.approx(0.4)
