"""Backtest reports: report.json, equity.csv, trades.csv and equity.png, and the terminal table.

Place in the flow: after backtest.run_backtest; used by the `asyncdqn backtest` command (cli.py). Every file
is written with the engine's one atomic write (asyncdqn.checkpoint.atomic_write_bytes: temp file, fsync,
rename), so a reader never sees a half-written report.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from rich.table import Table

from asyncdqn.checkpoint import atomic_write_bytes
from asyncdqn.envs.trading.backtest import BacktestResult, Metrics, drawdown
from asyncdqn.envs.trading.stats import QuantStats


class ReportPaths(NamedTuple):
    report_json: Path
    equity_csv: Path
    trades_csv: Path
    equity_png: Path


def _json_safe(values: Any) -> Any:
    """A dataclass, NamedTuple, dict or number with every NaN or infinity as None (null in JSON)."""
    if hasattr(values, "_asdict"):
        values = values._asdict()
    elif not isinstance(values, dict) and hasattr(values, "__dataclass_fields__"):
        values = asdict(values)
    if isinstance(values, dict):
        return {k: _json_safe(v) for k, v in values.items()}
    return None if isinstance(values, float) and not math.isfinite(values) else values


def stats_dict(stats: QuantStats) -> dict[str, Any]:
    """report.json's "statistics": everything in QuantStats but the gross metrics (reported beside the net)."""
    out = {k: v for k, v in asdict(stats).items() if k not in ("strategy_gross", "benchmark_gross", "random")}
    out["random_policies"] = {"trials_asked": out.pop("random_trials"), "seed": out.pop("random_seed"),
                              **stats.random._asdict(), "statistic": "sharpe after costs"}
    return _json_safe(out)


def report_dict(result: BacktestResult, stats: QuantStats | None = None) -> dict[str, Any]:
    """report.json's content; with `stats`, also the metrics without costs and the statistics (stats.py)."""
    out = {
        "policy": result.policy, "data": result.data_source, "start": result.start, "end": result.end,
        "periods_per_year": result.periods_per_year,
        "periods_per_year_from": "given" if result.periods_per_year_basis == "given" else
        f"inferred: {result.periods_per_year_basis}",
        "risk_free": result.risk_free, "fill": result.fill,
        "cost_bps": result.cost_bps, "slippage_bps": result.slippage_bps, "positions": list(result.positions),
        "benchmark_policy": "buy-and-hold long 1.0, same fills and costs",
        "strategy": _json_safe(result.strategy_metrics), "benchmark": _json_safe(result.benchmark_metrics),
    }
    if stats is not None:
        out.update({"strategy_gross": _json_safe(stats.strategy_gross),
                    "benchmark_gross": _json_safe(stats.benchmark_gross), "statistics": stats_dict(stats)})
    return out


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda handle: handle.write(text.encode("utf-8")))


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    return buffer.getvalue()


def _date_text(stamp: np.datetime64) -> str:
    return str(stamp).removesuffix("T00:00:00")


def equity_figure(result: BacktestResult) -> Figure:
    """Equity of strategy and benchmark (log scale, strategy drawdowns shaded) over their drawdowns."""
    figure = Figure(figsize=(10, 6), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    dates = result.strategy.dates_N1
    strategy, bench = result.strategy.equity_N1, result.benchmark.equity_N1
    top.plot(dates, strategy, label=result.policy, color="tab:blue", linewidth=1.2)
    top.plot(dates, bench, label="buy & hold", color="tab:gray", linewidth=1.0)
    top.fill_between(dates, strategy, np.maximum.accumulate(strategy), color="tab:red", alpha=0.25,
                     linewidth=0, label=f"{result.policy} drawdown")
    top.set_yscale("log")
    top.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    top.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    top.yaxis.set_minor_formatter(NullFormatter())
    top.set_ylabel("equity (start = 1)")
    top.set_title(f"{result.policy} vs buy & hold\n{result.start} .. {result.end}, fill={result.fill}, "
                  f"cost={result.cost_bps:g} bps, slippage={result.slippage_bps:g} bps")
    top.legend(loc="upper left")
    bottom.fill_between(dates, 100 * drawdown(strategy), 0, color="tab:red", alpha=0.4, linewidth=0)
    bottom.plot(dates, 100 * drawdown(bench), color="tab:gray", linewidth=0.8)
    bottom.set_ylabel("drawdown %")
    return figure


def write_report(result: BacktestResult, out_dir: str | os.PathLike, stats: QuantStats | None = None) -> ReportPaths:
    """Write report.json (with `stats`, its statistics too), equity.csv, trades.csv and equity.png into out_dir,
    each atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(out / "report.json", out / "equity.csv", out / "trades.csv", out / "equity.png")
    _write_text(paths.report_json, json.dumps(report_dict(result, stats), indent=2, allow_nan=False) + "\n")
    s, b = result.strategy, result.benchmark
    _write_text(paths.equity_csv, _csv_text(
        ("date", "position", "equity", "benchmark_equity"),
        [(_date_text(d), repr(float(p)), repr(float(e)), repr(float(be)))
         for d, p, e, be in zip(s.dates_N1, s.position_N1, s.equity_N1, b.equity_N1)]))
    _write_text(paths.trades_csv, _csv_text(
        ("date", "from_position", "to_position", "price", "cost"),
        [(f.date, repr(f.from_position), repr(f.to_position), repr(f.price), repr(f.cost)) for f in s.fills]))
    figure = equity_figure(result)
    atomic_write_bytes(paths.equity_png, lambda handle: FigureCanvasAgg(figure).print_figure(handle, format="png",
                                                                                        dpi=100))
    return paths


_PERCENT = {"total_return", "cagr", "volatility", "max_drawdown", "win_rate", "exposure"}


def _cell(name: str, value: float | int) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if name in _PERCENT:
        return f"{100 * value:.2f}%"
    if isinstance(value, int):
        return str(value)
    return f"{value:.2f}" if name != "final_equity" else f"{value:.4f}"


def metrics_table(result: BacktestResult, stats: QuantStats | None = None) -> Table:
    """Strategy and benchmark metrics side by side, for the terminal (rich); with `stats`, each also without costs.

    The title's first line holds the range; the table is at least as wide as that line, because rich folds a
    word longer than the table (an intraday stamp such as 2017-01-02T22:00:00) in the middle."""
    span = f"Backtest {result.start} .. {result.end}"
    costs = f"cost={result.cost_bps:g} bps  slippage={result.slippage_bps:g} bps"
    table = Table(title=f"{span}\nfill={result.fill}  {costs}", min_width=len(span))
    columns: list[tuple[str, Metrics]] = [(result.policy, result.strategy_metrics)]
    if stats is not None:
        columns.append(("no costs", stats.strategy_gross))
    columns.append(("buy & hold", result.benchmark_metrics))
    if stats is not None:
        columns.append(("b&h no costs", stats.benchmark_gross))
    table.add_column("metric")
    for title, _ in columns:
        table.add_column(title, justify="right")
    for field in fields(Metrics):
        table.add_row(field.name, *(_cell(field.name, getattr(m, field.name)) for _, m in columns))
    return table


def _number(value: float, text: str = "{:.2f}") -> str:
    return "n/a" if not math.isfinite(value) else text.format(value)


def stats_table(result: BacktestResult, stats: QuantStats) -> Table:
    """The statistics of stats.py, one per row, for the terminal."""
    table = Table(title="Statistics (after costs unless said)")
    table.add_column("statistic")
    table.add_column(result.policy, justify="right")
    r = stats.random
    rows = [
        (f"commission paid ({result.cost_bps:g} bps/fill)", _number(stats.commission_paid, "{:.4f}")),
        (f"slippage paid ({result.slippage_bps:g} bps/fill)", _number(stats.slippage_paid, "{:.4f}")),
        ("information ratio vs buy & hold", _number(stats.information_ratio)),
        ("skewness / kurtosis of returns", f"{_number(stats.skewness)} / {_number(stats.kurtosis)}"),
        ("PSR: P(true Sharpe > 0)", _number(stats.psr, "{:.3f}")),
        (f"DSR: P(true Sharpe > {_number(stats.dsr_benchmark_sharpe)}, best of {stats.n_trials} trial(s))",
         _number(stats.dsr, "{:.3f}")),
        ("turnover per bar / annualised", f"{_number(stats.turnover_per_bar, '{:.3f}')} / "
                                          f"{_number(stats.turnover_annualised, '{:.1f}')}"),
        ("holding period (bars between changes)", _number(stats.holding_period_bars, "{:.1f}")),
        ("random policies / position changes of each", f"{r.trials} / {r.changes}"),
        ("their Sharpe: median [2.5%, 97.5%]", f"{_number(r.median)} [{_number(r.low)}, {_number(r.high)}]"),
        ("percentile among them / one-sided p-value", f"{_number(r.percentile, '{:.1f}')} / "
                                                      f"{_number(r.p_value, '{:.4f}')}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
