"""`asyncdqn backtest` end to end: reference policies, a trained trading checkpoint, and refusals."""

import json

from asyncdqn.cli import main


def test_long_policy_equals_buy_and_hold(tmp_path, capsys):
    assert main(["backtest", "--policy", "long", "--data", "data/GOOGL.csv", "--start", "2017-01-01",
                 "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert abs(report["strategy"]["total_return"] - report["benchmark"]["total_return"]) < 1e-9
    for name in ("equity.csv", "trades.csv", "equity.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_trained_trading_checkpoint_backtests_and_cartpole_one_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "trading", "--quiet", "--out", str(run), "--set", "total_steps=2500",
                 "--set", "learning_starts=500", "--set", "eval.every=0"]) == 0
    assert main(["backtest", str(run), "--data", "data/GOOGL.csv", "--start", "2017-03-01"]) == 0
    report = json.loads((run / "backtest" / "report.json").read_text())
    assert report["fill"] == "open" and report["strategy"]["trades"] >= 0
    cart = tmp_path / "cart"
    assert main(["train", "cartpole", "--quiet", "--out", str(cart), "--set", "total_steps=600",
                 "--set", "learning_starts=200", "--set", "eval.every=0", "--set", "eval.final_episodes=1"]) == 0
    capsys.readouterr()
    assert main(["backtest", str(cart), "--data", "data/GOOGL.csv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a trading policy" in err[0]


def test_backtest_needs_exactly_one_policy_source(capsys):
    assert main(["backtest", "--data", "data/GOOGL.csv"]) == 2
    assert "either a CHECKPOINT or --policy" in capsys.readouterr().err
