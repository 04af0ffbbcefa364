"""`asyncdqn walkforward`: the fold layout, stitching, the summary, and one tiny two-fold run end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from asyncdqn.cli import main
from asyncdqn.envs.trading import walkforward as wf
from asyncdqn.errors import UserError


def test_the_fold_layout_cuts_folds_plus_one_blocks_and_tests_each_fold_on_the_next():
    # 100 bars, 4 folds: blocks [0, 20), [20, 40), [40, 60), [60, 80), [80, 100)
    assert wf.fold_layout(100, 4) == [(0, 19, 39), (0, 39, 59), (0, 59, 79), (0, 79, 99)]
    assert wf.fold_layout(100, 4, anchored=False) == [(0, 19, 39), (20, 39, 59), (40, 59, 79), (60, 79, 99)]
    assert wf.fold_layout(100, 4, anchored=False, train_blocks=2) == [(0, 19, 39), (0, 39, 59), (20, 59, 79),
                                                                      (40, 79, 99)]
    assert wf.fold_layout(10, 2) == [(0, 2, 6), (0, 6, 9)]   # edges round(10/3 * j): 0, 3, 7, 10
    with pytest.raises(UserError, match="--folds"):
        wf.fold_layout(100, 0)


def test_stitching_chains_each_fold_from_where_the_last_one_ended():
    out = wf.stitch([np.array([1.0, 1.1, 1.21]), np.array([1.0, 0.9]), np.array([1.0, 2.0])])
    assert np.allclose(out, [1.0, 1.1, 1.21, 1.089, 2.178])


def test_the_summary_means_over_asset_folds_with_intervals_and_counts_wins():
    rows = [{"sharpe": s, "benchmark_sharpe": 1.0, "excess_return": e, "total_return": e + 0.1,
             "benchmark_return": 0.1, "random_p": p, "turnover_per_bar": t, "validation_turnover_per_bar": 0.1}
            for s, e, p, t in ((0.5, -0.1, 0.3, 0.3), (1.5, 0.2, 0.01, 0.1), (1.0, 0.05, 0.049, 0.06))]
    s = wf.summarise(rows)
    assert s["asset_folds"] == 3 and s["sharpe"] == pytest.approx(1.0) and s["beats_buy_and_hold"] == 2
    assert s["beats_random_p05"] == 2 and s["turnover_within_2x"] == 2     # 0.3 is 3x the validation's 0.1
    flat = wf.summarise(rows + [{**rows[0], "sharpe": float("nan")}])     # a flat fold has no Sharpe
    assert flat["sharpe"] == pytest.approx(1.0) and flat["sharpe_undefined"] == 1
    assert s["sharpe_ci"][0] < 1.0 < s["sharpe_ci"][1] and s["benchmark_sharpe_ci"] == [1.0, 1.0]
    assert s["excess_return"] == pytest.approx(0.05)


def test_each_folds_csv_ends_with_its_test_block(tmp_path):
    from asyncdqn.envs.trading.env import DEFAULT_DATA
    from asyncdqn.envs.trading.market_data import read_ohlcv

    whole = read_ohlcv(DEFAULT_DATA).frame
    frame, layout = wf._layout_for("", 3, False, 1, window=32)
    plans = wf._write_folds(frame, layout, tmp_path)
    assert layout == wf.fold_layout(len(whole), 3, anchored=False)
    for plan, fold in zip(plans, layout):
        part = read_ohlcv(plan["csv"]).frame
        assert part.index[0] == whole.index[fold.first] and part.index[-1] == whole.index[fold.last]
        assert len(part) == fold.last - fold.first + 1 and plan["train_end"] == str(whole.index[fold.train_end].date())
    with pytest.raises(UserError, match="holds no decision after the purge gap"):
        wf._layout_for("", 200, True, 1, window=32)


def test_a_tiny_two_fold_walk_forward_end_to_end(tmp_path, capsys):
    out = tmp_path / "wf"
    argv = ["walkforward", "trading", "--folds", "2", "--out", str(out), "--set", "total_steps=600",
            "--set", "learner.learning_starts=200", "--set", "eval.every=300", "--set", "actors.num_actors=2",
            "--set", "validation_bars=60", "--set", "learner.hidden=[16]"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "over 2 asset-folds" in text and "| GOOGL | 1 |" in text
    report = json.loads((out / "walkforward.json").read_text())
    folds = report["folds"]
    assert [f["fold"] for f in folds] == [0, 1] and report["summary"]["asset_folds"] == 2
    for f in folds:  # each test walk starts after the run's train_end and its purge gap, inside the fold's CSV
        assert pd.Timestamp(f["test_first"]) > pd.Timestamp(f["train_end"])
        assert (out / "GOOGL" / f"fold{f['fold']}" / "backtest" / "report.json").is_file()
    stitched = pd.read_csv(out / "stitched_equity.csv")
    marks = [len(pd.read_csv(out / "GOOGL" / f"fold{i}" / "backtest" / "equity.csv")) for i in range(2)]
    assert len(stitched) == sum(marks) - 1 and stitched["policy_equity"].iloc[0] == 1.0
    assert (out / "stitched_equity.png").stat().st_size > 10_000
    for f in folds:  # the statistics of each fold's row
        assert f["sharpe_ci"][0] < f["sharpe"] < f["sharpe_ci"][1] and 0 <= f["dsr"] <= 1
        assert 0 < f["random_p"] <= 1 and f["random_sharpe_ci"][0] <= f["random_median_sharpe"]
        assert f["validation_turnover_per_bar"] >= 0 and f["total_return_gross"] >= f["total_return"]
    assert 0 <= report["summary"]["beats_random_p05"] <= 2
    assert main(argv) == 0                                              # again: both folds are done
    assert "2 done before, 0 to go" in capsys.readouterr().out


def test_walkforward_refuses_a_scenario_that_is_not_trading_and_bad_options(tmp_path, capsys):
    assert main(["walkforward", "cartpole", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("asyncdqn: error: walkforward needs a trading scenario") and "\n" not in err
    assert main(["walkforward", "trading", "--random-trials", "0", "--out", str(tmp_path / "y")]) == 2
    assert "--random-trials in [1," in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("date,open\n2020-01-01,1\n")
    for bad in (["--folds", "0"], ["--data", str(tmp_path / "bad.csv")], ["--data", str(tmp_path / "no.csv")]):
        assert main(["walkforward", "trading", *bad, "--out", str(tmp_path / "z")]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "z").exists()                              # refused before anything was written


def test_the_within_2x_rule_and_the_sharpe_interval_on_hand_computed_cases():
    from asyncdqn.envs.trading.stats import sharpe_interval

    assert wf._within_2x(0.2, 0.1) and wf._within_2x(0.05, 0.1) and not wf._within_2x(0.21, 0.1)
    assert wf._within_2x(0.0, 0.0) and not wf._within_2x(0.0, 0.1)
    # SR 0.1 per period, 101 normal returns: se = sqrt((1 + 0.5 * 0.01) / 100) = 0.100250
    lo, hi = sharpe_interval(0.1, 101, 0.0, 3.0)
    assert lo == pytest.approx(0.1 - 1.959964 * 0.100250, abs=1e-5) and hi == pytest.approx(0.1 + 0.196486, abs=1e-5)
