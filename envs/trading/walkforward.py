"""`asyncdqn walkforward SCENARIO --folds N [--anchored | --rolling]`: train, validate and test fold by fold.

Place in the flow: after the CLI, beside `backtest`. Each fold is one `asyncdqn train` run (run by
asyncdqn.sweep, so folds run `--parallel` at a time and a second call skips finished folds), then one backtest
of the run's kept policy on the fold's test block; the test blocks are stitched into one out-of-sample curve.

Fold layout (`fold_layout`): the bars are cut into N + 1 equal blocks; fold i tests on block i + 1. It trains
on every bar before that block (anchored) or on the last `train_blocks` blocks before it (rolling). Each fold
gets its own CSV holding only its training and test bars, so no later bar is even in the file its run reads.
Inside a fold the trading scenario's own split applies (config.split): training, then a purge gap, then the
validation slice that picks the kept policy (`validation_bars` up to train_end), then another purge gap of
`window` bars before the first test decision. The test block is never read by the run.

Outputs in --out: one folder per asset and fold (the run, its `backtest/` report), `walkforward.json` (the
per-fold table and the summary), `stitched_equity.csv` and `stitched_equity.png`. The summary gives, over all
asset-folds, the mean Sharpe of the policy and of buy-and-hold and the mean difference in total return, each
with a 95% percentile-bootstrap interval over the asset-folds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np

from asyncdqn.errors import UserError


class Fold(NamedTuple):
    """Bar indices into the asset's whole series."""

    first: int      # first bar of the fold's CSV (its training starts here)
    train_end: int  # last bar of training + validation: the run's train_end
    last: int       # last bar of the test block (the CSV's last row)


def fold_layout(n_bars: int, folds: int, anchored: bool = True, train_blocks: int = 1) -> list[Fold]:
    """N + 1 equal blocks of bars (edges rounded); fold i trains up to the end of block i and tests on block
    i + 1, training from bar 0 (anchored) or from the start of the last `train_blocks` blocks (rolling)."""
    if folds < 1 or train_blocks < 1:
        raise UserError(f"--folds and --train-blocks must be >= 1, got {folds} and {train_blocks}")
    edges = [round(j * n_bars / (folds + 1)) for j in range(folds + 2)]
    return [Fold(0 if anchored else edges[max(0, i + 1 - train_blocks)], edges[i + 1] - 1, edges[i + 2] - 1)
            for i in range(folds)]


def stitch(curves: list[np.ndarray]) -> np.ndarray:
    """Chain equity curves that each start at 1.0: every fold starts where the previous one ended (its first
    mark, a repeat of the last one's end, is dropped)."""
    out = [np.asarray(curves[0], dtype=float)]
    for c in curves[1:]:
        out.append(out[-1][-1] * np.asarray(c, dtype=float)[1:])
    return np.concatenate(out)


def _interval(values: list[float], seed: int) -> list[float]:
    from asyncdqn.compare import stratified_bootstrap

    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return [math.nan, math.nan]
    return list(stratified_bootstrap([x[:, None]], np.mean, 5000, np.random.default_rng(seed)))


def summarise(rows: list[dict], seed: int = 0) -> dict:
    """Means over the asset-folds, each with its 95% bootstrap interval over them."""
    out: dict = {"asset_folds": len(rows)}
    for key in ("sharpe", "benchmark_sharpe", "excess_return", "total_return", "benchmark_return"):
        vals = [r[key] for r in rows if math.isfinite(r[key])]  # a policy that stays flat has no Sharpe
        out[key] = float(np.mean(vals)) if vals else math.nan
        out[f"{key}_ci"] = _interval(vals, seed)
        out[f"{key}_undefined"] = len(rows) - len(vals)
    out["beats_buy_and_hold"] = sum(r["excess_return"] > 0 for r in rows)
    # issue 14's goals: beating the random same-turnover policies after costs, and a turnover out of sample
    # within 2x of the one on the validation slice that chose the policy
    out["beats_random_p05"] = sum(r["random_p"] < 0.05 for r in rows if math.isfinite(r["random_p"]))
    out["turnover_within_2x"] = sum(_within_2x(r["turnover_per_bar"], r["validation_turnover_per_bar"]) for r in rows)
    return out


def _within_2x(test: float, validation: float) -> bool:
    if validation == 0 or test == 0:
        return test == validation
    return 0.5 <= test / validation <= 2.0


# ------------------------------------------------------------------------------------------- the command

def _layout_for(data: str, folds: int, anchored: bool, train_blocks: int, window: int):
    """(the asset's validated frame, its folds); UserError when a test block holds no decision after the purge
    gap. Reads, never writes: every asset is checked before anything is written."""
    from asyncdqn.envs.trading.env import DEFAULT_DATA
    from asyncdqn.envs.trading.market_data import read_ohlcv

    frame = read_ohlcv(data or DEFAULT_DATA).frame
    layout = fold_layout(len(frame), folds, anchored, train_blocks)
    for i, f in enumerate(layout):
        if f.last - (f.train_end + window + 1) < 1:
            raise UserError(f"{data or 'GOOGL.csv'}: fold {i}'s test block ({f.last - f.train_end} bars) holds no "
                            f"decision after the purge gap of {window} bars; use fewer folds")
    return frame, layout


def _write_folds(frame, layout: list[Fold], out: Path) -> list[dict]:
    """Each fold's CSV (its training and test bars only) in `out`; {fold, csv, train_first, train_end,
    test_last} per fold."""
    dates = frame.index
    out.mkdir(parents=True, exist_ok=True)
    plans = []
    for i, f in enumerate(layout):
        csv = out / f"fold{i}.csv"
        if not csv.is_file():  # once: a resumed walk-forward trains on the files it started with
            frame.iloc[f.first:f.last + 1].to_csv(csv, index_label="date")
        plans.append({"fold": i, "csv": str(csv.resolve()), "train_first": str(dates[f.first].date()),
                      "train_end": str(dates[f.train_end].date()), "test_last": str(dates[f.last].date())})
    return plans


def _fold_backtest(folder: Path, periods_per_year: float | None):
    """(the backtest of the fold's test block, the turnover per bar of the same policy on its validation
    walk: the slice that chose it)."""
    from asyncdqn import checkpoint
    from asyncdqn.envs.trading.backtest import run_backtest, walk
    from asyncdqn.envs.trading.cli import checkpoint_walk
    from asyncdqn.envs.trading.config import read_settings, scenario_kwargs
    from asyncdqn.envs.trading.env import TradingEnv
    from asyncdqn.envs.trading.stats import turnover_per_bar

    ckpt = checkpoint.load(folder)
    kwargs, act, meta = checkpoint_walk(ckpt, str(folder))
    result = run_backtest(kwargs, act, policy_name=f"checkpoint:{folder}", periods_per_year=periods_per_year,
                          policy_metadata=meta)
    cfg = checkpoint.config_from(ckpt)
    validation = TradingEnv(**scenario_kwargs(read_settings(dict(cfg.env.kwargs))[0], evaluation=True))
    return result, turnover_per_bar(walk(validation, act).position_N1)


def fold_row(result, validation_turnover: float, n_trials: int, random_trials: int, seed: int) -> dict:
    """One fold's figures: after and before costs, against buy-and-hold and the random same-turnover policies,
    the Sharpe's 95% interval (stats.sharpe_interval), the deflated Sharpe and the two turnovers."""
    from asyncdqn.envs.trading.stats import quant_stats, sharpe_interval, turnover_per_bar

    q = quant_stats(result, n_trials=n_trials, random_trials=random_trials, seed=seed)
    s, b = result.strategy_metrics, result.benchmark_metrics
    root = math.sqrt(result.periods_per_year)
    lo, hi = sharpe_interval(s.sharpe / root, s.periods, q.skewness, q.kurtosis)
    return {"test_first": result.start, "test_last_mark": result.end, "periods_per_year": result.periods_per_year,
            "sharpe": s.sharpe, "sharpe_ci": [lo * root, hi * root], "dsr": q.dsr, "psr": q.psr,
            "benchmark_sharpe": b.sharpe, "total_return": s.total_return,
            "total_return_gross": q.strategy_gross.total_return, "benchmark_return": b.total_return,
            "excess_return": s.total_return - b.total_return, "max_drawdown": s.max_drawdown, "trades": s.trades,
            "random_p": q.random.p_value, "random_median_sharpe": q.random.median,
            "random_sharpe_ci": [q.random.low, q.random.high], "turnover_per_bar": q.turnover_per_bar,
            "validation_turnover_per_bar": validation_turnover, "holding_period_bars": q.holding_period_bars}


def command(args: argparse.Namespace) -> int:
    from asyncdqn import config, sweep
    from asyncdqn.envs.trading.config import FACTORY, read_settings, scenario_kwargs
    from asyncdqn.envs.trading.report import write_report

    from asyncdqn.envs.trading.cli import MAX_RANDOM_TRIALS

    if args.n_trials < 1 or not 1 <= args.random_trials <= MAX_RANDOM_TRIALS:
        raise UserError(f"--n-trials must be >= 1 and --random-trials in [1, {MAX_RANDOM_TRIALS}], got "
                        f"{args.n_trials} and {args.random_trials}")
    out = Path(args.out or f"runs/walkforward-{Path(args.scenario).stem}")
    base = config.load(args.scenario, list(args.overrides))
    if base.env.factory != FACTORY:
        raise UserError(f"walkforward needs a trading scenario (env.factory = {FACTORY!r}); "
                        f"{args.scenario} builds {base.env.factory or base.env.id!r}")
    assets = []
    for data in args.data or [str(base.env.kwargs.get("data", ""))]:  # every asset checked before any write
        trading, _ = read_settings({**base.env.kwargs, "data": data})
        assets.append((data, Path(data).stem if data else "GOOGL",
                       *_layout_for(data, args.folds, not args.rolling, args.train_blocks, trading.window)))
    copy = out / "scenario.toml"
    if not copy.is_file():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config.SCENARIO_DIR / f"{args.scenario}.toml" if not Path(args.scenario).suffix
                        else Path(args.scenario), copy)
    runs, plans = [], []
    for data, name, frame, layout in assets:
        for plan in _write_folds(frame, layout, out / name):
            overrides = (*args.overrides, sweep.override_text("data", plan["csv"]),
                         sweep.override_text("train_end", plan["train_end"]))
            fold_cfg = config.load(str(copy), list(overrides))
            scenario_kwargs(read_settings(dict(fold_cfg.env.kwargs))[0], evaluation=False)  # split errors: now
            runs.append(sweep.Run("trading", f"{name} fold {plan['fold']}", args.seed, overrides,
                                  (out / name / f"fold{plan['fold']}").resolve(),
                                  copy.resolve(), {"label": name}))
            plans.append({"asset": name, **plan})
    counts = asyncio.run(sweep.run_sweep(sweep.Grid(out, args.parallel, runs), say=lambda m: print(m, flush=True)))
    if counts["failed"]:
        raise UserError(f"{counts['failed']} fold run(s) failed; see failed.txt in their folders under {out}")
    rows, curves = [], {}
    for run, plan in zip(runs, plans):
        result, validation_turnover = _fold_backtest(run.folder, args.periods_per_year)
        write_report(result, run.folder / "backtest")
        rows.append({**plan, **fold_row(result, validation_turnover, args.n_trials, args.random_trials, args.seed)})
        curves.setdefault(plan["asset"], []).append(result)
    summary = summarise(rows, args.seed)
    _write(out, rows, summary, curves)
    return 0


def _write(out: Path, rows: list[dict], summary: dict, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from asyncdqn.checkpoint import atomic_write_text
    from asyncdqn.metrics import to_json

    lines = ["asset,date,policy_equity,buy_and_hold_equity"]
    cols = min(3, len(curves))
    nrows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(curves):]:
        ax.set_visible(False)
    for ax, (asset, results) in zip(axes.flat, curves.items()):
        dates = np.concatenate([results[0].strategy.dates_N1] + [r.strategy.dates_N1[1:] for r in results[1:]])
        pol = stitch([r.strategy.equity_N1 for r in results])
        bh = stitch([r.benchmark.equity_N1 for r in results])
        lines += [f"{asset},{str(d)[:19]},{p:.6f},{q:.6f}" for d, p, q in zip(dates, pol, bh)]
        ax.plot(dates, pol, label="policy")
        ax.plot(dates, bh, ls="--", alpha=0.7, label="buy and hold")
        for r in results[1:]:  # where each later fold's test block starts
            ax.axvline(r.strategy.dates_N1[0], color="grey", lw=0.5, ls=":")
        ax.set_yscale("log")
        ax.set_title(asset, fontsize=10)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("equity, log scale (stitched test blocks)")
    fig.suptitle("walk-forward: out-of-sample equity, fold boundaries dotted", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "stitched_equity.png", dpi=110)
    plt.close(fig)
    atomic_write_text(out / "stitched_equity.csv", "\n".join(lines) + "\n")
    atomic_write_text(out / "walkforward.json", json.dumps(json.loads(to_json({"folds": rows, "summary": summary})),
                                                           indent=2))
    print("| asset | fold | test bars | policy Sharpe [95%] | DSR | buy-and-hold Sharpe | random Sharpe median [95%] "
          "| p vs random | return net / gross | buy-and-hold return | turnover test / validation |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["sharpe_ci"]
        rlo, rhi = r["random_sharpe_ci"]
        print(f"| {r['asset']} | {r['fold']} | {r['test_first']} .. {r['test_last']} | {r['sharpe']:.2f} "
              f"[{lo:.2f}, {hi:.2f}] | {r['dsr']:.2f} | {r['benchmark_sharpe']:.2f} | {r['random_median_sharpe']:.2f} "
              f"[{rlo:.2f}, {rhi:.2f}] | {r['random_p']:.3f} | {r['total_return']:+.1%} / "
              f"{r['total_return_gross']:+.1%} | {r['benchmark_return']:+.1%} | {r['turnover_per_bar']:.3f} / "
              f"{r['validation_turnover_per_bar']:.3f} |")
    s = summary
    print(f"over {s['asset_folds']} asset-folds: policy Sharpe {s['sharpe']:.2f} {_pair(s['sharpe_ci'])}, "
          f"buy-and-hold {s['benchmark_sharpe']:.2f} {_pair(s['benchmark_sharpe_ci'])}; return minus buy-and-hold "
          f"{s['excess_return']:+.1%} {_pair(s['excess_return_ci'], '+.1%')}; beat buy-and-hold on "
          f"{s['beats_buy_and_hold']} of {s['asset_folds']}; beat the random policies (p < 0.05) on "
          f"{s['beats_random_p05']}; test turnover within 2x of validation on {s['turnover_within_2x']}")
    print(f"written to {out}/ (walkforward.json, stitched_equity.csv, stitched_equity.png)")


def _pair(ci: list[float], spec: str = ".2f") -> str:
    return f"[{ci[0]:{spec}}, {ci[1]:{spec}}]"
