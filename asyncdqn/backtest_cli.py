"""`asyncdqn backtest`: a learned trading policy (or a reference policy) against buy-and-hold on a CSV.

Place in the flow: after training; reads a checkpoint (never executing it) and the trading env's saved
metadata, then hands a policy callable to `asyncdqn.backtest`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from asyncdqn import checkpoint
from asyncdqn.backtest import metrics_table, reference_policy, run_backtest, write_report
from asyncdqn.errors import UserError


def _check_date(flag: str, value: str | None) -> None:
    """The env reads --start/--end with pd.Timestamp; refuse what it cannot read or place in datetime64[ns]."""
    if value is None:
        return
    try:
        stamp = pd.Timestamp(value)
        if stamp is pd.NaT:
            raise ValueError("not a date")
        stamp.as_unit("ns")
    except (ValueError, OverflowError) as exc:  # DateParseError and OutOfBoundsDatetime are ValueErrors
        reason = str(exc).splitlines()[0] if str(exc) else "not a date"
        raise UserError(f"{flag} {value!r} is not a usable date, e.g. 2017-01-31 ({reason[:80]})") from None


def _check_options(args: argparse.Namespace) -> None:
    """Refuse option values the env or the metrics would fail on (one-line UserErrors naming the option)."""
    _check_date("--start", args.start)
    _check_date("--end", args.end)
    # at least one bar a year: below that the per-period risk-free rate (1 + rf) ** (1 / ppy) overflows
    if not (math.isfinite(args.periods_per_year) and args.periods_per_year >= 1):
        raise UserError(f"--periods-per-year must be a finite number >= 1, got {args.periods_per_year:g}")
    if not (math.isfinite(args.risk_free) and args.risk_free > -1):
        raise UserError(f"--risk-free must be a finite annual rate above -1 (e.g. 0.02), got {args.risk_free:g}")
    if args.cost_bps is not None and not (math.isfinite(args.cost_bps) and args.cost_bps >= 0):
        raise UserError(f"--cost-bps must be a finite number >= 0, got {args.cost_bps:g}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")


def _check_cost(cost_bps: float | None, positions: tuple[float, ...]) -> None:
    """The env's rule, as a user error: the largest position change must cost less than all the equity."""
    largest = max(positions) - min(positions)
    if cost_bps is not None and cost_bps / 1e4 * largest >= 1.0:
        raise UserError(f"--cost-bps {cost_bps:g} makes the largest trade ({largest:g}) cost 100% or more; "
                        f"use less than {1e4 / largest:g}")


def backtest_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from envs.trading import env_kwargs_from_metadata

    if (args.checkpoint is None) == (args.policy is None):
        raise UserError("backtest needs either a CHECKPOINT or --policy long|flat|short|random, not both")
    _check_options(args)
    loader = {"date_format": args.date_format, "dayfirst": args.dayfirst, "dropna": args.dropna}
    if args.checkpoint is not None:
        ckpt = checkpoint.load(args.checkpoint)
        meta = ckpt.get("env", {}).get("metadata") or {}
        if not meta:
            raise UserError(f"{args.checkpoint}: not a trading policy (trained on {ckpt.get('env', {}).get('id')!r})")
        kwargs = env_kwargs_from_metadata(meta, args.data, start=args.start, end=args.end, cost_bps=args.cost_bps,
                                          fill=args.fill, **loader)
        act, name, meta_check = checkpoint.policy_from(ckpt), f"checkpoint:{args.checkpoint}", meta
    else:
        kwargs = {"data": args.data, "start": args.start, "end": args.end, "cost_bps": args.cost_bps,
                  "fill": args.fill, **loader}
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        positions = (-1.0, 0.0, 1.0)
        kwargs["positions"] = positions
        act, name, meta_check = reference_policy(args.policy, positions, seed=args.seed), args.policy, None
    _check_cost(kwargs.get("cost_bps"), kwargs["positions"])
    result = run_backtest(kwargs, act, policy_name=name, periods_per_year=args.periods_per_year,
                          risk_free=args.risk_free, policy_metadata=meta_check)
    out = args.out or (Path(args.checkpoint).parent if args.checkpoint and Path(args.checkpoint).is_file()
                       else Path(args.checkpoint) if args.checkpoint else Path("runs") / f"backtest-{args.policy}")
    out = Path(out) / "backtest" if args.checkpoint and args.out is None else Path(out)
    try:
        write_report(result, out)
    except OSError as exc:  # an --out under a file, a read-only folder, a full disk
        raise UserError(f"cannot write the report to {out}/ ({exc.strerror or exc})") from None
    Console().print(metrics_table(result))
    print(f"fills at the {result.fill} ({'next bar open' if result.fill == 'open' else 'same bar close'}), "
          f"cost {result.cost_bps:g} bps; report written to {out}/ (report.json, equity.csv, trades.csv, equity.png)")
    return 0
