"""`asyncdqn backtest`: a learned trading policy (or a reference policy) against buy-and-hold on a CSV.

Place in the flow: after training; reads a checkpoint (never executing it) and the trading env's saved
metadata, then hands a policy callable to `asyncdqn.backtest`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from asyncdqn import checkpoint
from asyncdqn.backtest import metrics_table, reference_policy, run_backtest, write_report
from asyncdqn.errors import UserError


def backtest_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from envs.trading import env_kwargs_from_metadata

    if (args.checkpoint is None) == (args.policy is None):
        raise UserError("backtest needs either a CHECKPOINT or --policy long|flat|short|random, not both")
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
    result = run_backtest(kwargs, act, policy_name=name, periods_per_year=args.periods_per_year,
                          risk_free=args.risk_free, policy_metadata=meta_check)
    out = args.out or (Path(args.checkpoint).parent if args.checkpoint and Path(args.checkpoint).is_file()
                       else Path(args.checkpoint) if args.checkpoint else Path("runs") / f"backtest-{args.policy}")
    out = Path(out) / "backtest" if args.checkpoint and args.out is None else Path(out)
    write_report(result, out)
    Console().print(metrics_table(result))
    print(f"fills at the {result.fill} ({'next bar open' if result.fill == 'open' else 'same bar close'}), "
          f"cost {result.cost_bps:g} bps; report written to {out}/ (report.json, equity.csv, trades.csv, equity.png)")
    return 0
