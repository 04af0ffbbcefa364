"""benchmarks/trading_assets.py: its grid is a valid sweep of the arms it names, and its summary's roles."""

from __future__ import annotations

import pytest

from asyncdqn.config import load
from asyncdqn.sweep import read_grid
from helpers.bench_scripts import load_benchmark

bench = load_benchmark("trading_assets")


def test_the_grid_holds_one_single_and_one_pooled_arm_per_asset_with_the_held_out_asset_left_out(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(bench.grid_text([0, 1], 2))
    grid = read_grid(path, out=tmp_path / "sweep")  # loads every run's config: a bad key fails here
    assert grid.parallel == 2 and len(grid.runs) == 2 * 2 * len(bench.ASSETS)
    arms = {run.arm: run for run in grid.runs}
    msft = bench.csv_path("MSFT")
    pooled = arms["pooled-without-MSFT"]
    assert msft not in str(pooled.overrides) and all(bench.csv_path(a) in str(pooled.overrides)
                                                      for a in bench.ASSETS if a != "MSFT")
    assert msft in str(arms["single-MSFT"].overrides)


def test_each_pooled_policy_is_tried_on_its_four_assets_and_the_held_out_one():
    assert bench.backtests_of("single-GOOGL") == [("GOOGL", "alone")]
    pairs = bench.backtests_of("pooled-without-MSFT")
    assert pairs[-1] == ("MSFT", "held out") and sorted(a for a, r in pairs if r == "pooled") == \
        sorted(a for a in bench.ASSETS if a != "MSFT")


def test_the_summary_takes_medians_per_asset_and_role_and_counts_p_below_5_percent():
    def row(asset, role, sharpe, p):
        return {"asset": asset, "role": role, "sharpe": sharpe, "total_return": 0.0, "bh_total_return": 0.1,
                "p_value": p, "turnover_annualised": 10.0}
    rows = [row("GOOGL", "alone", 1.0, 0.01), row("GOOGL", "alone", 3.0, 0.2), row("GOOGL", "alone", 2.0, 0.04),
            row("GOOGL", "held out", -1.0, 0.5)]
    table = {(t["asset"], t["role"]): t for t in bench.summarise(rows)}
    assert table[("GOOGL", "alone")]["sharpe"] == 2.0 and table[("GOOGL", "alone")]["beat_random"] == 2
    assert table[("GOOGL", "held out")]["backtests"] == 1 and ("GOOGL", "pooled") not in table


def test_a_single_asset_run_walks_its_own_held_out_range_and_a_pooled_run_is_given_the_csv(tmp_path):
    alone = bench.backtest_command(tmp_path / "run", "GOOGL", "alone", tmp_path / "out")
    assert "--data" not in alone  # with --data a single-asset policy would walk the whole CSV, in-sample included
    pooled = bench.backtest_command(tmp_path / "run", "MSFT", "held out", tmp_path / "out")
    assert pooled[pooled.index("--data") + 1] == bench.csv_path("MSFT")


def test_a_report_that_starts_on_or_before_train_end_is_refused():
    assert bench.TRAIN_END == load("trading").env.kwargs["train_end"]
    assert bench.held_out_report({"start": "2017-02-17"}, "r")["start"] == "2017-02-17"
    for start in (bench.TRAIN_END, "2009-07-28"):
        with pytest.raises(SystemExit, match="not after train_end"):
            bench.held_out_report({"start": start}, "r")
