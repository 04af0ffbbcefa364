"""The options of the commands that sit beside training (backtest, signal, walkforward, sweep, compare).

Place in the flow: part of the CLI (asyncdqn/cli.py builds the parser with these); argparse only, so that the
command line still starts without importing torch, pandas or the trading package.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def walkforward_options(w: argparse.ArgumentParser) -> None:
    w.add_argument("scenario", help="a trading scenario: built-in name (trading) or the path of a scenario TOML")
    w.add_argument("--folds", type=int, default=4, help="test blocks (default 4): the bars are cut into folds + 1")
    how = w.add_mutually_exclusive_group()
    how.add_argument("--anchored", action="store_true", help="train each fold on every earlier bar (the default)")
    how.add_argument("--rolling", action="store_true", help="train each fold on the last --train-blocks blocks only")
    w.add_argument("--train-blocks", type=int, default=1, help="blocks a rolling fold trains on (default 1)")
    w.add_argument("--data", action="append", default=None, metavar="CSV",
                   help="an asset's CSV; repeat for several assets (default: the scenario's data)")
    w.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field of every fold's run, e.g. --set total_steps=20000")
    w.add_argument("--seed", type=int, default=0, help="seed of every fold's run and of the bootstrap (default 0)")
    w.add_argument("--parallel", type=int, default=2, help="fold runs at a time (default 2)")
    w.add_argument("--periods-per-year", type=float, default=None,
                   help="bars per year for annualised figures (default: inferred from the timestamps)")
    w.add_argument("--n-trials", type=int, default=1,
                   help="configurations tried before this one, for the deflated Sharpe ratio (default 1)")
    w.add_argument("--random-trials", type=int, default=1000,
                   help="random same-turnover policies each fold is compared with (default 1000)")
    w.add_argument("--out", type=Path, default=None, help="folder (default runs/walkforward-<scenario>)")


def sweep_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("grid", type=Path, metavar="GRID",
                   help="a grid TOML (format: the docstring of asyncdqn/sweep.py, or README's 'Sweeps') or a "
                        "built-in grid's name: smoke, screen-cartpole")
    s.add_argument("--out", type=Path, default=None, help="sweep folder (default: the grid's `out`)")
    s.add_argument("--parallel", type=int, default=None, help="runs at a time (default: the grid's, else 2)")


def compare_options(c: argparse.ArgumentParser) -> None:
    c.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="run folders, or folders holding them (a sweep's folder)")
    c.add_argument("--baseline", default=None, help="the arm to beat (default: the sweep's baseline, else k1)")
    c.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    c.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    c.add_argument("--out", type=Path, default=None, help="report folder (default FIRST_RUN_DIR/compare)")


def backtest_options(b: argparse.ArgumentParser) -> None:
    b.add_argument("checkpoint", nargs="?", default=None, metavar="RUN_DIR",
                   help="a trading run folder or checkpoint (else --policy)")
    b.add_argument("--data", default=None,
                   help="CSV to walk (default: the run's own data and held-out range; the shipped GOOGL.csv "
                        "for --policy)")
    b.add_argument("--policy", choices=["long", "flat", "short", "random"], default=None,
                   help="a reference policy instead of a run: always long, flat or short, or uniformly random")
    b.add_argument("--start", default=None, help="first date to walk, YYYY-MM-DD (default: the range's first)")
    b.add_argument("--end", default=None, help="last date to walk, YYYY-MM-DD (default: the range's last)")
    b.add_argument("--cost-bps", type=float, default=None,
                   help="cost per fill in basis points of the traded notional (default: the run's, or 10)")
    b.add_argument("--slippage-bps", type=float, default=None,
                   help="slippage per fill on top of --cost-bps, in basis points of the traded notional "
                        "(default: the run's, or 0)")
    b.add_argument("--fill", choices=["open", "close"], default=None,
                   help="fill at the next bar's open (realistic) or at the close just seen (default: the run's)")
    b.add_argument("--periods-per-year", type=float, default=None,
                   help="bars per year, for annualised figures (default: inferred from the timestamps: 252 for "
                        "daily bars on weekdays, 365 with weekends, 52 weekly, as observed for intraday bars)")
    b.add_argument("--risk-free", type=float, default=0.0, help="annual risk-free rate, e.g. 0.02")
    b.add_argument("--date-format", default=None, help="strftime format of the CSV's dates (default: inferred)")
    b.add_argument("--dayfirst", action="store_true", help="read ambiguous dates as day/month (01/02 = 1 Feb)")
    b.add_argument("--dropna", action="store_true", help="drop rows with missing values instead of refusing them")
    b.add_argument("--n-trials", type=int, default=1,
                   help="strategies tried before settling on this one, for the deflated Sharpe ratio (default 1)")
    b.add_argument("--random-trials", type=int, default=1000, metavar="N",
                   help="random policies with the strategy's number of position changes to rank it against "
                        "(default 1000; 0: none)")
    b.add_argument("--seed", type=int, default=0, help="seed of the random reference policy and random trials")
    b.add_argument("--out", type=Path, default=None,
                   help="report folder (default: RUN_DIR/backtest, or runs/backtest-<policy>)")


def signal_options(g: argparse.ArgumentParser) -> None:
    g.add_argument("checkpoint", metavar="RUN_DIR", help="a trading run folder or its checkpoint.pt")
    g.add_argument("--data", required=True, help="CSV of bars up to the latest close")
    g.add_argument("--date-format", default=None, help="strftime format of the CSV's dates (default: inferred)")
    g.add_argument("--dayfirst", action="store_true", help="read ambiguous dates as day/month (01/02 = 1 Feb)")
    g.add_argument("--dropna", action="store_true", help="drop rows with missing values instead of refusing them")
