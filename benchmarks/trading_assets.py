"""One policy on several assets against one policy per asset, on held-out time and on a held-out asset (issue 14).

Assets: the shipped daily CSVs whose bars reach past the trading scenario's train_end (2016-12-30): GOOGL,
SP500, NASDAQ, MSFT, BTCUSD. Two kinds of arm, each run as the trading scenario ships (60k steps, selection on
the validation slice before train_end; nothing here looks at a bar after train_end until the backtests):
  * single-A: trained on asset A alone;
  * pooled-without-H: trained on the other four assets at once (`env.kwargs.assets`), H left out.
The runs go through `asyncdqn sweep` (one folder each, resumable, `--parallel` at a time). Then every policy is
backtested on each asset's held-out bars (after train_end and its purge gap): single-A on A with `asyncdqn
backtest RUN` (its own held-out walk: `--data` would walk the whole CSV, training bars included);
pooled-without-H with `asyncdqn backtest RUN --data CSV` on its four training assets (held-out time) and on H
(held-out time on a held-out asset). Every report's first bar is checked to lie after train_end. Each backtest reports Sharpe and return after costs, buy-and-hold's, and the
policy's p-value against random policies with its turnover (1000 draws); `--n-trials` is left at 1 per
backtest, since no arm is chosen among the others here.

Summary per (asset, role): the median over seeds of each figure, and how many seeds beat the random policies at
p < 0.05. Roles: "alone" (single-A on A), "pooled" (A as one of four training assets, median over the four
pooled runs that hold it and the seeds), "held out" (pooled-without-A on A).

Run: .venv/bin/python benchmarks/trading_assets.py [--seeds 0..2] [--parallel 2] [--out-dir runs/trading-assets]
         [--out docs/results/trading-assets.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import finish, machine_info, median, parse_seeds, print_table

ASSETS = ("GOOGL", "SP500", "NASDAQ", "MSFT", "BTCUSD")
TRAIN_END = "2016-12-30"  # the trading scenario's train_end (its last bar on or before 2016-12-31)
FIGURES = ("sharpe", "total_return", "bh_total_return", "p_value", "turnover_annualised")


def csv_path(asset: str) -> str:
    from asyncdqn.envs.trading.market_data import shipped_csv

    return str(shipped_csv(f"{asset}.csv"))


def grid_text(seeds: list[int], parallel: int) -> str:
    """The sweep grid: single-A and pooled-without-H arms of the trading scenario."""
    lines = [f"parallel = {parallel}", f"seeds = {seeds}", "", "[scenarios.trading]", ""]
    for a in ASSETS:
        lines += [f"[arms.single-{a}]", f'set = {{ "env.kwargs.data" = {json.dumps(csv_path(a))} }}', ""]
    for h in ASSETS:
        others = json.dumps([csv_path(a) for a in ASSETS if a != h])
        lines += [f"[arms.pooled-without-{h}]", f'set = {{ "env.kwargs.assets" = {others} }}', ""]
    return "\n".join(lines)


def backtests_of(arm: str) -> list[tuple[str, str]]:
    """(asset, role) pairs that an arm's policy is backtested on."""
    kind, _, name = arm.partition("-")
    if kind == "single":
        return [(name, "alone")]
    held = name.removeprefix("without-")
    return [(a, "pooled") for a in ASSETS if a != held] + [(held, "held out")]


def backtest_command(run: Path, asset: str, role: str, out: Path) -> list[str]:
    """The backtest of one (asset, role): a single-asset run walks its own held-out range (with --data it would
    walk the whole CSV, in-sample bars included); a pooled run is pointed at the asset's CSV."""
    data = [] if role == "alone" else ["--data", csv_path(asset)]
    return [sys.executable, "-m", "asyncdqn.cli", "backtest", str(run), *data, "--out", str(out)]


def held_out_report(report: dict, source: str) -> dict:
    """`report`, refused unless its walk starts after the scenario's train_end."""
    if report["start"] <= TRAIN_END:
        raise SystemExit(f"trading_assets.py: {source} walked from {report['start']}, not after train_end {TRAIN_END}")
    return report


def backtest(run: Path, asset: str, role: str, out: Path) -> dict:
    if not (out / "report.json").exists():
        done = subprocess.run(backtest_command(run, asset, role, out), capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"trading_assets.py: backtest of {run} on {asset} failed: {done.stderr.strip()}")
    r = held_out_report(json.loads((out / "report.json").read_text()), str(out))
    return {"sharpe": r["strategy"]["sharpe"], "total_return": r["strategy"]["total_return"],
            "bh_total_return": r["benchmark"]["total_return"], "p_value": r["statistics"]["random_policies"]["p_value"],
            "turnover_annualised": r["statistics"]["turnover_annualised"], "start": r["start"], "end": r["end"]}


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for asset in ASSETS:
        for role in ("alone", "pooled", "held out"):
            mine = [r for r in rows if r["asset"] == asset and r["role"] == role]
            if mine:
                out.append({"asset": asset, "role": role, "backtests": len(mine),
                            **{f: median(r[f] for r in mine) for f in FIGURES},
                            "beat_random": sum(r["p_value"] < 0.05 for r in mine)})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0..2")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--out-dir", default="runs/trading-assets", help="the sweep's folder (resumable)")
    p.add_argument("--out", help="write the full result to this JSON file")
    args = p.parse_args()
    seeds, out_dir = parse_seeds(args.seeds), Path(args.out_dir)
    machine = machine_info()
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = out_dir / "assets-grid.toml"
    grid.write_text(grid_text(seeds, args.parallel))
    sweep = subprocess.run([sys.executable, "-m", "asyncdqn.cli", "sweep", str(grid), "--out", str(out_dir / "sweep")])
    if sweep.returncode:
        return sweep.returncode
    rows = []
    for arm in [f"single-{a}" for a in ASSETS] + [f"pooled-without-{h}" for h in ASSETS]:
        for seed in seeds:
            run = out_dir / "sweep" / "trading" / arm / f"seed{seed}"
            for asset, role in backtests_of(arm):
                rows.append({"arm": arm, "seed": seed, "asset": asset, "role": role,
                             **backtest(run, asset, role, run / f"backtest-{asset}")})
        print(f"  {arm}: backtested", flush=True)
    table = summarise(rows)
    print_table(f"held-out bars after {TRAIN_END} + 32: medians over seeds (and over pooled runs); beat_random = "
                "backtests with p < 0.05 against random policies of equal turnover",
                [("asset", ""), ("role", ""), ("backtests", ""), ("sharpe", ".2f"), ("total_return", ".3f"),
                 ("bh_total_return", ".3f"), ("p_value", ".3f"), ("turnover_annualised", ".0f"), ("beat_random", "")],
                table)
    headline = {"summary": table}
    finish({"benchmark": "trading_assets", "quick": False, "machine": machine, "seeds": seeds, "rows": rows,
            **headline}, headline, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
