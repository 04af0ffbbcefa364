"""benchmarks/walkforward_select.py: the choice among walk-forward candidates uses each fold's validation score."""

from __future__ import annotations

import json

from helpers.bench_scripts import load_benchmark

sel = load_benchmark("walkforward_select")


def _candidate(root, scores):
    rows = []
    for (asset, fold), score in scores.items():
        d = root / asset / f"fold{fold}"
        d.mkdir(parents=True)
        # the test block's figures are present too, and deliberately opposite: they must not sway the choice
        (d / "summary.json").write_text(json.dumps({"eval_return_mean": score}))
        rows.append({"asset": asset, "fold": fold, "train_end": "2010-01-01", "test_last": "2011-01-01",
                     "total_return": -score})
    (root / "walkforward.json").write_text(json.dumps({"folds": rows}))
    return root


def test_each_fold_takes_the_candidate_with_the_best_validation_score(tmp_path):
    a = _candidate(tmp_path / "a", {("X", 0): 0.10, ("X", 1): -0.20, ("Y", 0): 0.00})
    b = _candidate(tmp_path / "b", {("X", 0): 0.05, ("X", 1): 0.30, ("Y", 0): 0.00})
    picks = sel.choose([a, b])
    assert [(p["asset"], p["fold"], p["chosen"]) for p in picks] == [("X", 0, str(a)), ("X", 1, str(b)),
                                                                     ("Y", 0, str(a))]   # a tie keeps the first
    assert picks[1]["validation_scores"] == [-0.20, 0.30] and picks[1]["folder"] == b / "X" / "fold1"


def test_a_flat_fold_prints_as_flat_and_a_traded_one_with_its_interval():
    assert sel.sharpe_text({"sharpe": None, "sharpe_ci": None}) == "flat"
    assert sel.sharpe_text({"sharpe": 0.5, "sharpe_ci": [-0.25, 1.0]}) == "0.50 [-0.25, 1.00]"
