"""A scenario's learning curve over seeds: train (or resume) one run per seed, then average their evaluations.

Issue 7 asks for `minatar-breakout`'s return at 500k env steps, mean over 5 seeds, with wall-clock. Each seed
is one `python -m asyncdqn.cli train SCENARIO --seed S --quiet --out RUNS/seedS --set total_steps=STEPS`
subprocess (the scenario as shipped otherwise; its periodic evaluation gives the curve: `eval.every` env
steps, `eval.episodes` greedy episodes, and a final evaluation of `eval.final_episodes` episodes of the last
policy at STEPS). Seeds whose folder already holds a summary.json are not run again, so an interrupted
sweep goes on where it stopped (a seed cut off mid-run starts again from its last checkpoint with
`asyncdqn train --resume`). `--parallel P` runs P seeds at a time; on a 2-core machine the runs then share
the cores, which stretches each run's wall-clock (reported as measured).

The summary reads every seed's metrics.jsonl ('eval' records) and summary.json: per evaluation step the mean
and standard deviation over the seeds that reached it, the final 20-episode evaluation, and each run's train
wall-clock. The final figure also gets a 95% Student-t interval of the mean over seeds (n seeds, n - 1
degrees of freedom: seeds are the independent samples, never a run's episodes). A scenario that stops early
(`eval.stop_at`, as cartpole, acrobot and lunarlander do) ends some runs before STEPS: each seed's env steps
and whether it stopped early are in the result. `--summarize-only` skips training (e.g. to summarize seeds
still running: their curves so far).

Run:   .venv/bin/python benchmarks/game_curve.py minatar-breakout --steps 500000 --seeds 0..4 \\
           --runs-dir runs/minatar-500k [--parallel 2] [--out r.json] [--png curve.png]
       .venv/bin/python benchmarks/game_curve.py lunarlander --steps 100000 --seeds 0..4 \\
           --runs-dir runs/lunarlander-100k   (needs Box2D: pip install -e '.[games]')
Smoke: .venv/bin/python benchmarks/game_curve.py cartpole --quick --runs-dir /tmp/curve-smoke
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import finish, machine_info, parse_seeds, print_table
from asyncdqn.metrics import read_records

ROOT = Path(__file__).resolve().parents[1]


def train_command(scenario: str, seed: int, steps: int, run_dir: Path, extra: list[str]) -> list[str]:
    if (run_dir / "checkpoint.pt").exists():  # cut off earlier: continue that run
        return [sys.executable, "-m", "asyncdqn.cli", "train", "--resume", str(run_dir), "--quiet"]
    sets = [a for kv in [f"total_steps={steps}", *extra] for a in ("--set", kv)]
    return [sys.executable, "-m", "asyncdqn.cli", "train", scenario, "--seed", str(seed), "--quiet",
            "--out", str(run_dir), *sets]


def run_seed(scenario: str, seed: int, steps: int, runs_dir: Path, extra: list[str]) -> int:
    run_dir = runs_dir / f"seed{seed}"
    if (run_dir / "summary.json").exists():
        return 0
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / f"seed{seed}.log", "a", encoding="utf-8") as log:
        return subprocess.run(train_command(scenario, seed, steps, run_dir, extra), cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, check=False).returncode


def read_run(run_dir: Path) -> dict:
    """One seed's evaluation curve ({env_steps: mean}), and its summary when the run finished."""
    metrics = run_dir / "metrics.jsonl"
    records = read_records(metrics) if metrics.exists() else []
    curve = {int(r["env_steps"]): r["mean"] for r in records if r.get("kind") == "eval"}
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return {"curve": curve, "summary": summary}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# Two-sided 95% quantiles of Student's t, t(0.975; df) for df = 1..30 (any statistics table; tests/test_game_curve.py
# checks them against the density). Past 30 the Cornish-Fisher expansion below is within 1e-4 of the quantile.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """t(0.975; df): the half-width of a 95% interval of a mean is t975(n - 1) * std / sqrt(n)."""
    if df < 1:
        raise ValueError(f"a t interval needs df >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964  # the normal quantile; two terms of its expansion in 1/df (Abramowitz & Stegun 26.7.5)
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def ci95(values: list[float]) -> tuple[float, float]:
    """95% Student-t interval of the mean of `values` (one per seed); NaN for fewer than 2 values."""
    if len(values) < 2:
        return math.nan, math.nan
    m, sd = mean_std(values)
    half = t975(len(values) - 1) * sd / math.sqrt(len(values))
    return m - half, m + half


def summarize(runs: dict[int, dict]) -> tuple[list[dict], dict]:
    """Rows per evaluation step (over the seeds that reached it) and the finished runs' final figures."""
    steps = sorted({s for r in runs.values() for s in r["curve"]})
    rows = []
    for s in steps:
        vals = [r["curve"][s] for r in runs.values() if s in r["curve"]]
        m, sd = mean_std(vals)
        rows.append({"env_steps": s, "seeds": len(vals), "mean": m, "std": sd})
    done = {seed: r["summary"] for seed, r in runs.items() if r["summary"] is not None}
    final = {"seeds_finished": sorted(done)}
    if done:
        finals = [d["eval_return_mean"] for d in done.values()]
        walls = [d["total_train_wall_s"] for d in done.values()]
        final.update({"final_eval_per_seed": {s: d["eval_return_mean"] for s, d in done.items()},
                      "final_mean": mean_std(finals)[0], "final_std": mean_std(finals)[1],
                      "final_ci95": list(ci95(finals)),
                      "evaluated_policy_per_seed": {s: d.get("evaluated_policy") for s, d in done.items()},
                      "policy_env_steps_per_seed": {s: d.get("best_periodic_eval_env_steps")
                                                    for s, d in done.items()},
                      "stopped_early_per_seed": {s: d.get("stopped_early") for s, d in done.items()},
                      "train_wall_s_per_seed": {s: d["total_train_wall_s"] for s, d in done.items()},
                      "env_steps_per_seed": {s: d["env_steps"] for s, d in done.items()},
                      "median_train_wall_s": statistics.median(walls)})
    return rows, final


def plot(runs: dict[int, dict], rows: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for seed, r in sorted(runs.items()):
        xs = sorted(r["curve"])
        ax.plot(xs, [r["curve"][x] for x in xs], color="0.75", linewidth=1,
                label="one seed" if seed == min(runs) else None)
    ax.plot([r["env_steps"] for r in rows], [r["mean"] for r in rows], color="C0", linewidth=2,
            label="mean over seeds")
    ax.set_xlabel("env steps")
    ax.set_ylabel("greedy eval return")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", help="built-in scenario name or TOML path")
    p.add_argument("--steps", type=int, default=500_000, help="env steps per run (total_steps)")
    p.add_argument("--seeds", default="0..4")
    p.add_argument("--runs-dir", required=True, help="one folder per seed goes here (kept: the sweep resumes)")
    p.add_argument("--parallel", type=int, default=1, help="seeds trained at the same time")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every run (repeatable)")
    p.add_argument("--summarize-only", action="store_true", help="do not train; summarize what the folders hold")
    p.add_argument("--quick", action="store_true", help="smoke run: 3000 steps, seeds 0-1, eval every 1000")
    p.add_argument("--out", help="write the full result to this JSON file")
    p.add_argument("--png", help="write the curves to this PNG")
    args = p.parse_args()

    seeds = parse_seeds(args.seeds)
    if args.quick:
        seeds, args.steps = seeds[:2], 3000
        args.overrides += ["eval.every=1000", "eval.episodes=2", "eval.final_episodes=2", "eval.stop_at=inf"]
    runs_dir = Path(args.runs_dir).resolve()
    machine = machine_info()
    print(f"{args.scenario}: {args.steps} env steps, seeds {seeds}, runs in {runs_dir}"
          f"{'  [QUICK smoke run]' if args.quick else ''}")
    if not args.summarize_only:
        with ThreadPoolExecutor(max(1, args.parallel)) as pool:
            codes = list(pool.map(lambda s: run_seed(args.scenario, s, args.steps, runs_dir, args.overrides), seeds))
        for seed, code in zip(seeds, codes):
            if code != 0:
                print(f"  seed {seed}: exit code {code} (see {runs_dir / f'seed{seed}.log'})")
    runs = {s: read_run(runs_dir / f"seed{s}") for s in seeds if (runs_dir / f"seed{s}").exists()}
    rows, final = summarize(runs)
    print_table("Greedy evaluation return over seeds", [("env_steps", ""), ("seeds", ""), ("mean", ".2f"),
                                                       ("std", ".2f")], rows)
    if "final_mean" in final:
        lo, hi = final["final_ci95"]
        print(f"\nfinal evaluation ({len(final['seeds_finished'])} seeds finished): "
              f"{final['final_mean']:.2f} ± {final['final_std']:.2f} (mean ± std over seeds; 95% interval "
              f"[{lo:.2f}, {hi:.2f}]); median train wall {final['median_train_wall_s']:.0f} s")
        for seed, value in final["final_eval_per_seed"].items():
            print(f"  seed {seed}: {value:.2f} ({final['evaluated_policy_per_seed'][seed]}, "
                  f"{final['env_steps_per_seed'][seed]} env steps"
                  f"{', stopped early' if final['stopped_early_per_seed'][seed] else ''})")
    if args.png and rows:
        plot(runs, rows, f"{args.scenario}: {len(runs)} seeds", Path(args.png))
    headline = {"scenario": args.scenario, "steps": args.steps, "seeds": seeds, **final,
                "mean_at_last_eval_step": rows[-1]["mean"] if rows else None}
    result = {"benchmark": "game_curve", "quick": args.quick, "machine": machine,
              "protocol": {"steps": args.steps, "seeds": seeds, "overrides": args.overrides,
                           "parallel": args.parallel},
              "curve": rows, "runs": {s: r["curve"] for s, r in runs.items()}, **headline}
    finish(result, headline, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
