"""`asyncdqn backtest` end to end: reference policies, a trained trading checkpoint, and refusals."""

import json

from conftest_trading import make_ohlcv, write_csv

from asyncdqn.cli import main
from asyncdqn.envs.trading import DEFAULT_DATA, load_ohlcv


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


TRAIN_SMOKE = ["--quiet", "--set", "total_steps=2500", "--set", "learning_starts=500", "--set", "eval.every=0"]


def test_a_run_backtests_its_own_held_out_range_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no data/ folder here: the scenario's CSV is package data (asyncdqn.data)
    assert main(["train", "trading", "--out", "run", "--set", "train_end=2016-12-30", *TRAIN_SMOKE]) == 0
    capsys.readouterr()
    assert main(["backtest", "run"]) == 0  # no --data: the run's own data and range
    assert "in-sample" not in capsys.readouterr().out
    # --data walks that CSV's whole range: a walk that reaches into the training bars says so
    assert main(["backtest", "run", "--data", str(DEFAULT_DATA), "--out", "whole"]) == 0
    assert "partly in-sample" in capsys.readouterr().out
    assert main(["backtest", "run", "--data", str(DEFAULT_DATA), "--start", "2017-03-01", "--out", "late"]) == 0
    assert "in-sample" not in capsys.readouterr().out
    report = json.loads((tmp_path / "run" / "backtest" / "report.json").read_text())
    dates = [f"{d:%Y-%m-%d}" for d in load_ohlcv(DEFAULT_DATA).index]
    # the held-out walk: 32 bars purged after train_end (window = 32), decisions from the next one (the run's
    # evaluations walked the validation bars before train_end instead)
    first_test_bar = dates[dates.index("2016-12-30") + 33]
    assert (report["data"], report["start"], report["end"]) == (str(DEFAULT_DATA), first_test_bar, "2018-08-29")


def test_a_run_on_its_own_csv_backtests_that_csv_after_its_purge_gap(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = write_csv(make_ohlcv(420, seed=5), tmp_path / "prices.csv")
    assert main(["train", "trading", "--out", "run", "--set", f"data={json.dumps(str(csv))}", "--set", "window=8",
                 "--set", "train_end=2021-01-29", "--set", "episode_length=64", "--set", "validation_bars=60",
                 *TRAIN_SMOKE]) == 0
    assert main(["backtest", "run", "--end", "2021-06-30"]) == 0  # --end narrows the run's own range
    report = json.loads((tmp_path / "run" / "backtest" / "report.json").read_text())
    dates = [f"{d:%Y-%m-%d}" for d in load_ohlcv(csv).index]
    assert (report["data"], report["start"], report["end"]) == (str(csv), dates[dates.index("2021-01-29") + 9],
                                                                "2021-06-30")


def test_reference_policy_without_data_walks_the_shipped_csv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["backtest", "--policy", "flat", "--start", "2018-01-01", "--out", "bt"]) == 0
    report = json.loads((tmp_path / "bt" / "report.json").read_text())
    assert report["data"] == str(DEFAULT_DATA) and report["end"] == "2018-08-29"


def test_a_run_whose_data_is_gone_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    csv = write_csv(make_ohlcv(300, seed=6), tmp_path / "gone.csv")
    assert main(["train", "trading", "--out", "run", "--set", f"data={json.dumps(str(csv))}", "--set", "window=8",
                 "--set", 'train_end=""', "--set", "episode_length=64", "--set", "validation_bars=60",
                 *TRAIN_SMOKE]) == 0
    csv.unlink()
    capsys.readouterr()
    assert main(["backtest", "run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("gone.csv: file not found"), err
