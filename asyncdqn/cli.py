"""The `asyncdqn` command: train, eval, backtest, scenarios.

Place in the flow: the outermost layer. It parses arguments, builds the config, draws progress, handles
signals, and turns every UserError/DataError into one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

from asyncdqn import config, export
from asyncdqn.cli_options import (backtest_options, compare_options, signal_options, sweep_options,
                                  walkforward_options)
from asyncdqn.errors import UserError, brief

# torch (through asyncdqn.checkpoint and the runtime) is imported inside the commands, within main's
# KeyboardInterrupt handler: a Ctrl-C during the seconds those imports take is one line, not a traceback.

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        command = self.prog.partition(" ")[2]  # a subcommand's parser names it: "asyncdqn train"
        raise UserError(f"{command}: {message}" if command else message)


EXAMPLES = {
    "train": ["asyncdqn train cartpole --seed 1 --out runs/cp1",
              "asyncdqn train cartpole --env Acrobot-v1 --set total_steps=50000",
              "asyncdqn train --resume runs/cp1 --set total_steps=200000"],
    "eval": ["asyncdqn eval runs/cp1 --episodes 20",
             "asyncdqn eval runs/cp1 --record cp1.gif --record-episodes 2"],
    "scenarios": ["asyncdqn scenarios --fields"],
    "backtest": ["asyncdqn backtest runs/tr", "asyncdqn backtest --policy long --start 2017-01-01"],
    "signal": ["asyncdqn signal runs/tr --data prices.csv"],
    "export": ["asyncdqn export runs/cp1 --format onnx", "asyncdqn export runs/cp1 --format torchscript --out cp1.pt"],
    "walkforward": ["asyncdqn walkforward trading --folds 4 --out runs/wf",
                    "asyncdqn walkforward trading --folds 3 --rolling --train-blocks 2 --set total_steps=20000"],
    "sweep": ["asyncdqn sweep smoke", "asyncdqn sweep my_grid.toml --parallel 1 --out runs/g1"],
    "compare": ["asyncdqn compare runs/sweep-smoke", "asyncdqn compare runs/g1 --baseline k1 --reps 5000"],
}


def _command(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with examples that work as written."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])
    # argparse %-formats `help` (not the description): a literal % there would crash `asyncdqn --help`
    return sub.add_parser(name, help=help_text.replace("%", "%%"), description=help_text[0].upper() + help_text[1:] + ".",
                          epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="asyncdqn", description="Parallel DQN: K Q-nets, one replay pool, a softmax-merged target.",
                epilog="examples:\n  asyncdqn scenarios\n  asyncdqn train cartpole --seed 0\n"
                       "  asyncdqn train --help", formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND",
                           help="train, eval, scenarios, backtest, signal, walkforward, export, sweep or compare "
                                "(each has --help)")
    _train_options(_command(sub, "train", "train on a scenario (built-in name or TOML path)"))

    e = _command(sub, "eval", "greedy evaluation of a checkpoint")
    e.add_argument("checkpoint", metavar="RUN_DIR", help="a run folder or its checkpoint.pt")
    e.add_argument("--episodes", type=int, default=20, help="greedy episodes to play (default 20)")
    e.add_argument("--seed", type=int, default=12345, help="seed of the first episode's reset (default 12345)")
    e.add_argument("--record", type=Path, default=None, metavar="FILE.gif",
                   help="also write an animated GIF of greedy episodes with an episode counter and the return "
                        "(classic control, MinAtar, Atari: envs that render rgb_array)")
    e.add_argument("--record-episodes", type=int, default=1, metavar="N",
                   help="episodes to record (default 1): the evaluation's first N episodes (same seeds), played "
                        "again on a rendering env; the statistics are those of --episodes as without --record")
    e.add_argument("--fps", type=float, default=30.0, help="frames per second of the GIF (default 30)")

    s = _command(sub, "scenarios", "list the built-in scenarios")
    s.add_argument("--fields", action="store_true", help="also list every config field with its meaning")
    backtest_options(_command(sub, "backtest", "backtest a trading policy (or a reference policy) on a CSV"))
    signal_options(_command(sub, "signal", "the position a trading run's policy takes for the bar after a CSV's "
                                           "last close"))
    walkforward_options(_command(sub, "walkforward", "train, validate and test a trading scenario fold by fold, "
                                                      "out of sample"))
    export.add_parser(_command(sub, "export", export.HELP))
    sweep_options(_command(sub, "sweep", "run scenarios x arms x seeds from a grid TOML, N runs at a time, "
                                          "resumable"))
    compare_options(_command(sub, "compare", "compare arms over seeds: IQM, mean and P(improvement) with 95% "
                                              "bootstrap intervals (rliable)"))
    return p


def _train_options(t: argparse.ArgumentParser) -> None:
    t.add_argument("scenario", nargs="?", default=None,
                   help="a built-in scenario (see `asyncdqn scenarios`) or the path of a scenario TOML")
    t.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue the run saved in DIR (only --set total_steps=N may change)")
    t.add_argument("--seed", type=int, default=None, help="the run's seed (default: the scenario's)")
    t.add_argument("--out", type=Path, default=None, help="run folder (default runs/<scenario>-seed<S>-<time>)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set lr=1e-3 --set merge.tau=inf")
    t.add_argument("--env", default=None, help="gymnasium id to train on instead, e.g. Acrobot-v1 or pkg:Env-v0")
    t.add_argument("--env-factory", default=None, help="pkg.module:callable returning a gymnasium.Env")
    t.add_argument("--force", action="store_true", help="overwrite a run folder that holds a checkpoint")
    t.add_argument("--backend", choices=["local", "ray"], default=None,
                   help="where the actors run: this process (local) or Ray actor processes (ray; the ray extra)")
    t.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join the Ray cluster at ADDR (host:port, ray://host:port or auto; implies --backend ray); "
                        "without it --backend ray starts a local Ray instance")
    t.add_argument("--quiet", action="store_true", help="no progress bar")


def _progress_display():
    """A rich progress bar fed by the runtime's Progress snapshots; steps/s, updates/s and the ETA are over
    the last 30 s (progress_rates), not since the start."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from asyncdqn.progress_rates import RecentRates, describe

    bar = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed:>8.0f}/{task.total:.0f}"),
                   TimeElapsedColumn(), TextColumn("{task.fields[info]}"), transient=False, auto_refresh=False)
    task = bar.add_task("train", total=1, info="")
    rates = RecentRates()

    def update(p) -> None:
        w = " ".join(f"{x:.2f}" for x in p.merge_weights)
        ret = "—" if math.isnan(p.recent_return) else f"{p.recent_return:.1f}"
        bar.update(task, completed=p.env_steps, total=p.total_steps,
                   info=f"{describe(rates.add(p))}  upd {p.updates}  return {ret}  queue {p.queue_depth}  w [{w}]")
        bar.refresh()

    return bar, update


def _backend_overrides(args: argparse.Namespace) -> list[str]:
    """--backend / --ray-address as config overrides."""
    if args.ray_address is not None and args.backend == "local":
        raise UserError("--ray-address needs --backend ray (the local backend runs no Ray)")
    out = []
    if args.backend is not None or args.ray_address is not None:
        out.append(f"backend.kind={json.dumps(args.backend or 'ray')}")
    if args.ray_address is not None:
        out.append(f"backend.ray_address={json.dumps(args.ray_address)}")
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from asyncdqn import checkpoint

    args.overrides = list(args.overrides) + _backend_overrides(args)
    if args.resume is not None:
        cfg, out, resume = _resume_setup(args)
    else:
        if args.scenario is None:
            raise UserError("train needs a SCENARIO (or --resume DIR)")
        overrides = list(args.overrides)
        if args.env:
            overrides += [f"env.id={json.dumps(args.env)}", 'env.factory=""']
        if args.env_factory:
            overrides += [f"env.factory={json.dumps(args.env_factory)}"]
        cfg = config.load(args.scenario, overrides, seed=args.seed)
        out = args.out or Path("runs") / f"{cfg.scenario}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (out / checkpoint.FILENAME).exists() and not args.force:
            raise UserError(f"{out} already holds a checkpoint; pick another --out, pass --force, or --resume {out}")
        resume = None
    if args.quiet or not sys.stderr.isatty():
        summary = asyncio.run(_train(cfg, out, None, resume))
    else:
        bar, update = _progress_display()
        with bar:
            summary = asyncio.run(_train(cfg, out, update, resume))
    if summary["interrupted"]:
        print(f"interrupted at {summary['env_steps']} steps, {summary['updates']} updates; checkpoint and metrics "
              f"saved to {out}/ (continue with: asyncdqn train --resume {out})")
        return EXIT_INTERRUPTED
    print(f"eval_return_mean {summary['eval_return_mean']:.1f} ± {summary['eval_return_std']:.1f} "
          f"over {summary['eval_episodes']} episodes; {summary['env_steps']} steps, {summary['updates']} updates "
          f"in {summary['wall_s']:.1f} s; merge weights {[round(w, 3) for w in summary['merge_weights']]}")
    print(f"saved to {out}/ (checkpoint.pt, summary.json, metrics.jsonl, learning_curve.png, config.toml)")
    return 0


RESUMABLE_KEYS = {"total_steps", "backend.kind", "backend.ray_address"}  # where the actors run may change


def _resume_setup(args: argparse.Namespace):
    """The config, folder and resume state of `train --resume DIR`."""
    from asyncdqn import checkpoint

    if args.scenario or args.env or args.env_factory or args.seed is not None or args.out:
        raise UserError("--resume takes the scenario, env, seed and folder from the checkpoint; "
                        "only --set total_steps=N may be given")
    ckpt = checkpoint.load(args.resume)
    if "resume" not in ckpt:
        raise UserError(f"{args.resume}: this checkpoint holds no resume state (written by an older asyncdqn)")
    resume = ckpt["resume"]
    parts = ("learner", "replay", "actors", "returns", "run")
    if not (isinstance(resume, dict) and all(isinstance(resume.get(p), dict if p != "actors" else list)
                                             for p in parts)):
        raise UserError(f"{args.resume}: the checkpoint's resume state is damaged (it needs the tables "
                        f"{', '.join(parts)})")
    done = resume["run"].get("env_steps")
    if type(done) is not int or done < 0:
        raise UserError(f"{args.resume}: the checkpoint's resume state is damaged (env_steps is {brief(done)})")
    checkpoint.config_from(ckpt)  # the stored config itself must be valid before overrides apply
    for item in args.overrides:
        key = item.split("=", 1)[0].strip()
        if key not in RESUMABLE_KEYS:
            raise UserError(f"--resume: {key!r} cannot change in a resumed run "
                            f"(only {', '.join(sorted(RESUMABLE_KEYS))})")
    cfg = config.from_dict(config.apply_overrides(ckpt["config"], args.overrides))
    if done >= cfg.total_steps:
        raise UserError(f"{args.resume}: the run already took {done} of total_steps = {cfg.total_steps} steps; "
                        f"extend it with --set total_steps=N")
    return cfg, checkpoint.resolve(args.resume).parent, resume


async def _train(cfg, out: Path, progress, resume):
    """`runtime.run` with SIGINT/SIGTERM handled: the first one stops the actors and saves a resumable
    checkpoint (exit 130); a second one aborts at once, leaving the last checkpoint on disk intact (every
    checkpoint is written to a temp file and renamed)."""
    from asyncdqn.runtime import run

    loop = asyncio.get_running_loop()
    stop, interrupt = asyncio.Event(), asyncio.Event()

    def on_signal(name: str) -> None:
        if interrupt.is_set():
            print(f"asyncdqn: second {name}: aborting now; the last checkpoint on disk is intact", file=sys.stderr,
                  flush=True)
            os._exit(EXIT_INTERRUPTED)
        print(f"asyncdqn: {name}: stopping the actors and saving a checkpoint ({name} again to abort)",
              file=sys.stderr, flush=True)
        interrupt.set()
        stop.set()

    signals = [signal.SIGINT, signal.SIGTERM]
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        return await run(cfg, out, progress=progress, stop=stop, interrupt=interrupt, resume=resume)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def cmd_eval(args: argparse.Namespace) -> int:
    from asyncdqn import checkpoint
    from asyncdqn.evaluation import evaluate, load_policy

    if args.episodes < 1:
        raise UserError("--episodes must be >= 1")
    saved = load_policy(args.checkpoint)
    if args.record is not None:  # first, so that an env that cannot render fails before the evaluation runs
        from asyncdqn.recording import record

        rec = record(saved.config, saved.policy, args.record, args.record_episodes, args.seed, args.fps)
        note = " (stopped at the frame limit)" if rec.truncated else ""
        print(f"recorded {len(rec.returns)} episode(s), {len(rec.frames)} frames, returns "
              f"{[round(r, 2) for r in rec.returns]} to {args.record}{note}")
    res = evaluate(saved.make_env, saved.policy, args.episodes, args.seed)
    result = {"checkpoint": str(saved.path), "env": saved.env_name, "episodes": args.episodes,
              "seed": args.seed, "return_mean": res.mean, "return_std": res.std,
              "returns": res.returns.tolist(), "lengths": res.lengths.tolist()}
    out = saved.path.parent / "eval.json"
    checkpoint.atomic_write_text(out, json.dumps(result, indent=2))
    print(f"{result['env']}: greedy return {res.mean:.2f} ± {res.std:.2f} over {args.episodes} episodes "
          f"(written to {out})")
    return 0


def cmd_scenarios(args: argparse.Namespace) -> int:
    for name in config.scenario_names():
        print(f"{name:<24} {config.scenario_summary(name)}")
    if args.fields:
        for section, cls in [("", config.RunConfig), *config.SECTION_TYPES.items()]:
            for key, doc in config.field_docs(cls).items():
                print(f"  {section + '.' if section else ''}{key:<20} {doc}")
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from asyncdqn.envs.trading.cli import backtest_command  # imported here: pandas and matplotlib are slow

    return backtest_command(args)


def cmd_signal(args: argparse.Namespace) -> int:
    from asyncdqn.envs.trading.cli import signal_command  # imported here: pandas is slow

    return signal_command(args)


def cmd_walkforward(args: argparse.Namespace) -> int:
    from asyncdqn.envs.trading.cli import walkforward_command

    return walkforward_command(args)


def cmd_sweep(args: argparse.Namespace) -> int:
    from asyncdqn import sweep

    return sweep.command(args)


def cmd_compare(args: argparse.Namespace) -> int:
    from asyncdqn import compare

    return compare.command(args)


def _user_error(exc: BaseException) -> BaseException | None:
    """The UserError behind `exc` (the trading loader's DataError is one), looking inside TaskGroup exception
    groups."""
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _user_error(inner)
            if found is not None:
                return found
    return None


def main(argv: list[str] | None = None) -> int:
    commands = {"train": cmd_train, "eval": cmd_eval, "scenarios": cmd_scenarios, "backtest": cmd_backtest,
                "signal": cmd_signal, "walkforward": cmd_walkforward, "export": export.command, "sweep": cmd_sweep, "compare": cmd_compare}
    try:
        args = _parser().parse_args(argv)
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("asyncdqn: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        found = _user_error(exc)
        if found is None:
            raise
        message = str(found).replace("\r", "\\r").replace("\n", "\\n")  # a newline in a path stays one line
        print(f"asyncdqn: error: {message}", file=sys.stderr)
        return getattr(found, "exit_code", EXIT_USAGE)


if __name__ == "__main__":
    sys.exit(main())
