"""`asyncdqn backtest`: a learned trading policy (or a reference policy) against buy-and-hold on a CSV; and
`asyncdqn signal`: the position a learned policy takes for the bar after a CSV's last close.

Place in the flow: after training; reads a checkpoint (never executing it) and the trading env's saved
metadata, then hands a policy callable to backtest.run_backtest and the result to report.write_report.
asyncdqn/cli.py parses the arguments and calls `backtest_command`.

Which bars: `asyncdqn backtest RUN_DIR` without --data walks the run's own held-out range: the data and
train_end of its saved config (the trading factory's `env.kwargs`), starting after the purge gap
(config.heldout_kwargs). The run's evaluations walked a validation slice before train_end instead, so these
bars played no part in choosing the policy. --data walks a CSV's whole range; --start/--end narrow either.
A reference policy (--policy) without --data walks the shipped GOOGL.csv.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from asyncdqn import checkpoint
from asyncdqn.envs.trading.backtest import next_position, reference_policy, run_backtest
from asyncdqn.envs.trading.config import (FACTORY, TradingConfig, heldout_kwargs, read_settings,
                                          training_and_test_dates)
from asyncdqn.envs.trading.env import DEFAULT_COST_BPS, FEATURE_NAMES, TradingEnv
from asyncdqn.envs.trading.market_data import DataError
from asyncdqn.envs.trading.multi import PER_ASSET
from asyncdqn.envs.trading.policy import check_policy_metadata, env_kwargs_from_metadata
from asyncdqn.envs.trading.report import metrics_table, stats_table, write_report
from asyncdqn.envs.trading.stats import quant_stats
from asyncdqn.errors import UserError, first_line

MAX_RANDOM_TRIALS = 100_000


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
        reason = first_line(exc, 80) if str(exc).strip() else "not a date"
        raise UserError(f"{flag} {value!r} is not a usable date, e.g. 2017-01-31 ({reason})") from None


def _check_options(args: argparse.Namespace) -> None:
    """Refuse option values the env or the metrics would fail on (one-line UserErrors naming the option)."""
    _check_date("--start", args.start)
    _check_date("--end", args.end)
    # at least one bar a year: below that the per-period risk-free rate (1 + rf) ** (1 / ppy) overflows
    if args.periods_per_year is not None and not (math.isfinite(args.periods_per_year) and args.periods_per_year >= 1):
        raise UserError(f"--periods-per-year must be a finite number >= 1, got {args.periods_per_year:g}")
    if not (math.isfinite(args.risk_free) and args.risk_free > -1):
        raise UserError(f"--risk-free must be a finite annual rate above -1 (e.g. 0.02), got {args.risk_free:g}")
    if args.cost_bps is not None and not (math.isfinite(args.cost_bps) and args.cost_bps >= 0):
        raise UserError(f"--cost-bps must be a finite number >= 0, got {args.cost_bps:g}")
    if args.slippage_bps is not None and not (math.isfinite(args.slippage_bps) and args.slippage_bps >= 0):
        raise UserError(f"--slippage-bps must be a finite number >= 0, got {args.slippage_bps:g}")
    if args.n_trials < 1:
        raise UserError(f"--n-trials must be >= 1 (the strategies tried before this one, itself included), "
                        f"got {args.n_trials}")
    if not 0 <= args.random_trials <= MAX_RANDOM_TRIALS:
        raise UserError(f"--random-trials must be in 0..{MAX_RANDOM_TRIALS} (0: no random comparison), "
                        f"got {args.random_trials}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")


def _check_cost(cost_bps: float, slippage_bps: float, positions: tuple[float, ...]) -> None:
    """The env's rule, as a user error: the largest position change must cost less than all the equity."""
    largest = max(positions) - min(positions)
    if (cost_bps + slippage_bps) / 1e4 * largest >= 1.0:
        if slippage_bps == 0:
            raise UserError(f"--cost-bps {cost_bps:g} makes the largest trade ({largest:g}) cost 100% or more; "
                            f"use less than {1e4 / largest:g}")
        raise UserError(f"--cost-bps {cost_bps:g} + --slippage-bps {slippage_bps:g} make the largest trade "
                        f"({largest:g}) cost 100% or more; use less than {1e4 / largest:g} in all")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_plain(value: object) -> bool:
    """str/int/float/bool/None and lists of them: what TradingEnv.policy_metadata writes."""
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def _trading_metadata(ckpt: dict, source: str) -> dict:
    """The checkpoint's trading metadata, checked so that rebuilding the env from it fails only with one-line
    errors: a damaged or foreign file must not reach the env with a None window or a tensor of positions.
    Keys that are absent are left to env_kwargs_from_metadata, which names them."""
    env = ckpt.get("env")
    meta = env.get("metadata") if isinstance(env, dict) else None
    if not meta:
        trained_on = env.get("id") if isinstance(env, dict) else None
        raise UserError(f"{source}: not a trading policy (trained on {trained_on!r})")

    def malformed(why: str) -> UserError:
        return UserError(f"{source}: trading policy metadata is malformed ({why})")

    if not isinstance(meta, dict) or not all(isinstance(k, str) and _is_plain(v) for k, v in meta.items()):
        raise malformed("not a table of plain values")
    width = len(FEATURE_NAMES)
    checks = {
        "window": lambda v: type(v) is int and v >= 1,
        "positions": lambda v: isinstance(v, list) and v and all(map(_is_number, v)) and len(set(v)) == len(v),
        "cost_bps": lambda v: _is_number(v) and v >= 0,
        "slippage_bps": lambda v: _is_number(v) and v >= 0,
        "fill": lambda v: v in ("open", "close"),
        "feature_names": lambda v: isinstance(v, list),
        "norm_mean": lambda v: isinstance(v, list) and len(v) == width and all(map(_is_number, v)),
        "norm_std": lambda v: isinstance(v, list) and len(v) == width and all(_is_number(x) and x > 0 for x in v),
        "obs_dim": lambda v: type(v) is int,
    }
    for key, ok in checks.items():
        if key in meta and not ok(meta[key]):
            raise malformed(f"{key} = {str(meta[key])[:60]!r}")
    return meta


def _check_policy_shape(act: object, meta: dict, source: str) -> None:
    """The net must read obs_dim inputs and choose among the metadata's positions."""
    net = act.net  # type: ignore[attr-defined]
    if "obs_dim" in meta and net.obs_size != meta["obs_dim"]:
        raise UserError(f"{source}: the policy reads {net.obs_size} inputs but its metadata says obs_dim "
                        f"{meta['obs_dim']}")
    if "positions" in meta and net.n_actions != len(meta["positions"]):
        raise UserError(f"{source}: the policy has {net.n_actions} actions for {len(meta['positions'])} positions")


def run_range(ckpt: dict, source: str) -> dict:
    """The data, start and end of a run's held-out walk, from its saved config: for a run of the trading factory,
    the bars after train_end and its purge gap (config.heldout_kwargs: bars the run never evaluated on); for an env
    built otherwise, `data`/`start`/`end` of its eval kwargs."""
    cfg = checkpoint.config_from(ckpt)
    settings = {**cfg.env.kwargs, **cfg.env.eval_kwargs}
    if cfg.env.factory == FACTORY:
        trading, _ = read_settings(settings)
        settings = heldout_kwargs(trading)
    elif "data" not in settings:
        raise UserError(f"{source}: its config names no data (env {cfg.env.factory or cfg.env.id!r}); pass --data CSV")
    return {key: settings.get(key) for key in ("data", "start", "end")}


def _policy_setup(args: argparse.Namespace, loader: dict) -> tuple[dict, object, str, dict | None]:
    """(env kwargs, act, policy name, metadata to check) for a checkpoint or a reference policy."""
    if args.checkpoint is None:
        kwargs = {"data": args.data, "start": args.start, "end": args.end, "cost_bps": args.cost_bps,
                  "slippage_bps": args.slippage_bps, "fill": args.fill, **loader}
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        kwargs["positions"] = positions = (-1.0, 0.0, 1.0)
        return kwargs, reference_policy(args.policy, positions, seed=args.seed), args.policy, None
    kwargs, act, meta = checkpoint_walk(checkpoint.load(args.checkpoint), args.checkpoint, args.data, args.start,
                                        args.end, cost_bps=args.cost_bps, slippage_bps=args.slippage_bps,
                                        fill=args.fill, **loader)
    return kwargs, act, f"checkpoint:{args.checkpoint}", meta


def _asset_walk(ckpt: dict, source: str, data: str | None, meta: dict) -> dict:
    """The walk of a multi-asset run's policy on one CSV: that CSV's held-out bars under the run's split (after
    train_end and its purge gap), normalised on its own training bars (`norm_end`), whether the run trained
    on it or not (a held-out asset)."""
    if data is None:
        names = ", ".join(Path(str(a)).name for a in meta.get("assets", []))
        raise UserError(f"{source}: the policy was trained on several assets ({names}); pass --data CSV to walk "
                        f"one of them, or a held-out one")
    trading = _run_settings_on(ckpt, data)
    norm_end, test_first = training_and_test_dates(trading)
    if trading.train_end and test_first is None:
        raise DataError(str(data), f"no held-out bars after train_end {trading.train_end} and a purge gap of "
                                   f"{trading.window} bars")
    return {"data": data, "start": test_first, "end": None, "norm_end": norm_end}


def _run_settings_on(ckpt: dict, data: str) -> TradingConfig:
    """The run's trading settings (split, window, ...) with `data` as its one CSV."""
    trading, _ = read_settings(dict(checkpoint.config_from(ckpt).env.kwargs))
    return dataclasses.replace(trading, data=str(data), assets=())


def _own_norm(kwargs: dict, norm_end: str) -> dict:
    """`kwargs` with the CSV's own statistics (fitted on its bars up to norm_end, as its training env was) in
    place of the saved ones."""
    return {**{k: v for k, v in kwargs.items() if k != "norm_stats"}, "norm_end": norm_end}


def checkpoint_walk(ckpt: dict, source: str, data: str | None = None, start: str | None = None,
                    end: str | None = None, **env_options) -> tuple[dict, object, dict]:
    """(env kwargs, policy, metadata) of a trading checkpoint's walk: the run's own held-out range (run_range),
    or the whole of `data` when given; start/end narrow either; env_options (cost_bps, slippage_bps, fill, the
    loader's options) override the trained ones where not None."""
    meta = _trading_metadata(ckpt, source)
    if meta.get("normalisation") == PER_ASSET:
        walk = _asset_walk(ckpt, source, data, meta)
    else:
        walk = {"data": data, "start": None, "end": None} if data is not None else run_range(ckpt, source)
    walk.update({k: v for k, v in (("start", start), ("end", end)) if v is not None})
    kwargs = env_kwargs_from_metadata(meta, walk["data"], start=walk["start"], end=walk["end"], **env_options)
    if "norm_end" in walk:
        kwargs = _own_norm(kwargs, walk["norm_end"])
    act = checkpoint.policy_from(ckpt)
    _check_policy_shape(act, meta, source)
    return kwargs, act, meta


def in_sample_notice(first_date: str, meta: Mapping) -> str | None:
    """A warning when a checkpoint's walk starts on or before the last bar its policy was trained on (its
    normalisation's end, `norm_end`): then part of what the report measures is in-sample. None otherwise."""
    trained_to = meta.get("norm_end")
    if not trained_to or first_date > str(trained_to):
        return None
    return (f"note: this walk starts {first_date}, within the policy's training period (to {trained_to}): its figures "
            f"are partly in-sample; `asyncdqn backtest RUN_DIR` without --data walks the run's held-out bars")


def backtest_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    if (args.checkpoint is None) == (args.policy is None):
        raise UserError("backtest needs either a CHECKPOINT or --policy long|flat|short|random, not both")
    _check_options(args)
    loader = {"date_format": args.date_format, "dayfirst": args.dayfirst, "dropna": args.dropna}
    kwargs, act, name, meta_check = _policy_setup(args, loader)
    _check_cost(kwargs.get("cost_bps", DEFAULT_COST_BPS), kwargs.get("slippage_bps", 0.0), kwargs["positions"])
    result = run_backtest(kwargs, act, policy_name=name, periods_per_year=args.periods_per_year,
                          risk_free=args.risk_free, policy_metadata=meta_check)
    stats = quant_stats(result, n_trials=args.n_trials, random_trials=args.random_trials, seed=args.seed)
    out = args.out or (Path(args.checkpoint).parent if args.checkpoint and Path(args.checkpoint).is_file()
                       else Path(args.checkpoint) if args.checkpoint else Path("runs") / f"backtest-{args.policy}")
    out = Path(out) / "backtest" if args.checkpoint and args.out is None else Path(out)
    try:
        write_report(result, out, stats)
    except OSError as exc:  # an --out under a file, a read-only folder, a full disk
        raise UserError(f"cannot write the report to {out}/ ({exc.strerror or exc})") from None
    Console().print(metrics_table(result, stats))
    Console().print(stats_table(result, stats))
    if meta_check is not None and (notice := in_sample_notice(result.start, meta_check)):
        print(notice)
    how = "given" if result.periods_per_year_basis == "given" else f"inferred: {result.periods_per_year_basis}"
    print(f"annualised with {result.periods_per_year:g} periods per year ({how})")
    print(f"fills at the {result.fill} ({'next bar open' if result.fill == 'open' else 'same bar close'}), "
          f"cost {result.cost_bps:g} bps + slippage {result.slippage_bps:g} bps per fill; report written to {out}/ "
          f"(report.json, equity.csv, trades.csv, equity.png)")
    return 0


def _position_name(position: float) -> str:
    return "long" if position > 0 else "short" if position < 0 else "flat"


def signal_command(args: argparse.Namespace) -> int:
    """`asyncdqn signal RUN_DIR --data CSV`: one line, the position the run's policy takes for the next bar.

    The policy walks the CSV's whole range from its first decision bar (so the position it holds, part of its
    observation, is its own), then decides once more at the last close. Run it after the close; with the
    trained fill (`open`) the position is entered at the next bar's open."""
    ckpt = checkpoint.load(args.checkpoint)
    meta = _trading_metadata(ckpt, args.checkpoint)
    kwargs = env_kwargs_from_metadata(meta, args.data, date_format=args.date_format, dayfirst=args.dayfirst,
                                      dropna=args.dropna)
    if meta.get("normalisation") == PER_ASSET:  # the CSV's own statistics, from its training bars under the run's split
        kwargs = _own_norm(kwargs, training_and_test_dates(_run_settings_on(ckpt, args.data))[0])
    act = checkpoint.policy_from(ckpt)
    _check_policy_shape(act, meta, args.checkpoint)
    env = TradingEnv(**kwargs)
    check_policy_metadata(meta, env)
    try:
        date, held, target = next_position(env, act)
    except ValueError as exc:
        raise UserError(f"{args.data}: {first_line(exc)}") from None
    change = "hold" if target == held else f"from {_position_name(held)} {held:g}"
    when = "at the next bar's open" if env.fill == "open" else "at this close (fill=close, as trained)"
    print(f"{date} close: {_position_name(target)} {target:g} for the next bar ({change}; fill {when})")
    return 0


def walkforward_command(args: argparse.Namespace) -> int:
    """`asyncdqn walkforward` (walkforward.py): the CLI reaches the trading package only through this module."""
    from asyncdqn.envs.trading.walkforward import command

    return command(args)
