"""`asyncdqn signal RUN_DIR --data CSV`: the position a trading run's policy takes for the bar after the CSV's
last close, as one line; and its refusals, each one line with exit status 2."""

from __future__ import annotations

import re

import pytest
from conftest import run_in_fresh_loop, tiny_values
from conftest_trading import make_ohlcv, write_csv

from asyncdqn import checkpoint, config, runtime
from asyncdqn.cli import main
from asyncdqn.envs.trading import FACTORY, make_env_for_policy
from asyncdqn.envs.trading.backtest import next_position, walk

LINE = re.compile(r"^(\S+) close: (long|flat|short) (-?[\d.]+) for the next bar \((hold|from \w+ -?[\d.]+); "
                  r"fill at the next bar's open\)$")


@pytest.fixture(scope="module")
def trading_run(tmp_path_factory):
    """A tiny trading run on a synthetic CSV (seconds)."""
    folder = tmp_path_factory.mktemp("signal")
    csv = write_csv(make_ohlcv(300, seed=21), folder / "prices.csv")
    values = tiny_values(seed=1, total_steps=700, learner={"max_lead": 0})
    values["env"] = {"factory": FACTORY, "eval_kwargs": {"evaluation": True},
                     "kwargs": {"data": str(csv), "train_end": "2020-10-30", "window": 8, "episode_length": 32,
                                "validation_bars": 40}}
    run_in_fresh_loop(runtime.run(config.from_dict(values), folder / "run"))
    return folder / "run", csv


@pytest.mark.parametrize("last_bar", [150, 230, 299])
def test_the_signal_is_the_position_a_backtest_takes_once_the_next_bar_exists(trading_run, tmp_path, capsys,
                                                                              last_bar):
    run, csv = trading_run
    frame = make_ohlcv(300, seed=21)
    upto = write_csv(frame.iloc[:last_bar + 1], tmp_path / "upto.csv")
    assert main(["signal", str(run), "--data", str(upto)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    match = LINE.match(lines[0])
    assert match, lines[0]
    date, _, target, change = match.groups()
    assert date == f"{frame.index[last_bar]:%Y-%m-%d}"
    # the same policy walking one bar further (any prices: the decision at the close cannot see them) ends
    # holding exactly that position, entered from the one it held before
    nudged = frame.iloc[:last_bar + 2].copy()
    nudged.iloc[-1] = nudged.iloc[-1] * 1.37
    ckpt = checkpoint.load(run)
    env = make_env_for_policy(ckpt["env"]["metadata"], nudged)
    walked = walk(env, checkpoint.policy_from(ckpt))
    held, taken = walked.position_N1[-2], walked.position_N1[-1]
    assert taken == float(target)
    assert change == ("hold" if held == taken else f"from {'long' if held > 0 else 'short' if held < 0 else 'flat'} "
                                                   f"{held:g}")


def test_next_position_agrees_with_a_walk_one_bar_longer_at_every_cut(trading_run):
    """The decision at a close depends on the position the policy holds (part of its observation): across
    many cuts the signal must be what the walk one bar further actually did."""
    run, _ = trading_run
    ckpt = checkpoint.load(run)
    meta, act = ckpt["env"]["metadata"], checkpoint.policy_from(ckpt)
    frame = make_ohlcv(300, seed=21)
    changes = 0
    for last_bar in range(40, 299, 3):
        date, held, target = next_position(make_env_for_policy(meta, frame.iloc[:last_bar + 1]), act)
        longer = walk(make_env_for_policy(meta, frame.iloc[:last_bar + 2]), act)
        assert (date, held, target) == (f"{frame.index[last_bar]:%Y-%m-%d}", *longer.position_N1[-2:]), last_bar
        changes += held != target
    assert changes >= 5  # the cuts include decisions that change the position


def run_main(argv: list[str], capsys) -> tuple[int, list[str]]:
    rc = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return rc, captured.err.splitlines()


def test_refusals_are_one_line_and_exit_2(trading_run, trained_run, tmp_path, capsys):
    run, csv = trading_run
    short = write_csv(make_ohlcv(15, seed=2), tmp_path / "short.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("Date,Open,High,Low,Close\n2020-01-02,1,2,0.5,1.5\n")
    cases = [
        (["signal", str(tmp_path / "nowhere"), "--data", str(csv)], "checkpoint not found"),
        (["signal", str(trained_run.out), "--data", str(csv)], "not a trading policy"),
        (["signal", str(run), "--data", str(bad)], "missing required column(s) volume"),
        (["signal", str(run), "--data", str(tmp_path / "none.csv")], "none.csv: file not found"),
        (["signal", str(run), "--data", str(short)], "leaves no decision step"),
        (["signal", str(run)], "the following arguments are required: --data"),
    ]
    for argv, fragment in cases:
        rc, err = run_main(argv, capsys)
        assert rc == 2 and len(err) == 1 and fragment in err[0], (argv, err)


def test_signal_reads_the_csv_shapes_the_loader_accepts(trading_run, tmp_path, capsys):
    run, _ = trading_run
    frame = make_ohlcv(120, seed=21)
    newest_first = tmp_path / "newest_first.csv"
    frame.iloc[::-1].rename_axis(None).to_csv(newest_first)  # pandas' own header, newest row first
    assert main(["signal", str(run), "--data", str(newest_first)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 and captured.out.startswith(f"{frame.index[-1]:%Y-%m-%d} close: ")
    assert captured.err.count("\n") == 1 and "newest-first" in captured.err  # the loader's one notice
