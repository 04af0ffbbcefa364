"""`asyncdqn compare RUN_DIRS...`: arms against a baseline, over seeds, with rliable's aggregate metrics.

Place in the flow: after training; reads finished run folders (summary.json, metrics.jsonl and the sweep's
sweep_run.json). asyncdqn.sweep makes such folders; any `train` folders will do.

Which run is which: a sweep's folder names its scenario, arm and seed in sweep_run.json; another run folder
takes its scenario and seed from config.toml and its arm from the name of the folder above it.

Per run (plain functions below, tested by hand):
  * AUC: the mean of the periodic greedy evaluations up to the scenario's horizon (the earliest last
    evaluation of its runs, so every run is averaged over the same env steps);
  * final: the final greedy evaluation (summary.json's eval_return_mean);
  * at equal wall-clock, W = the baseline's median training wall time in the scenario (what the baseline needs
    for the whole budget): the mean of the evaluations made in the first W seconds (AUC@W) and the last of
    them (final@W); a run that finished sooner keeps its whole curve;
  * members: the mean over evaluations of each net's own greedy return (`eval.members` runs only), to catch
    nets that do worse than a lone agent (Lin et al., ICLR 2024, "the curse of diversity").
Scores are normalised per scenario with the grid's score_range [low, high]: (x - low) / (high - low).

Per arm, over seeds (never over episodes): the IQM and the mean (rliable.metrics) with 95% stratified-bootstrap
intervals (seeds resampled within each scenario), and P(arm > baseline) (rliable.metrics, a Mann-Whitney
statistic averaged over scenarios) with its interval. Only seeds that finished for every arm of a scenario
count (failed and interrupted runs are listed, not scored); the suite aggregate uses the first n seeds of each
scenario, n being the smallest such count, since rliable's score matrices are runs x tasks.

Why our own bootstrap: rliable 1.2's interval code subclasses arch's bootstrap and pins arch < 8, and arch 7
fails to import under pandas 3 (which the trading side uses). The resampling itself is a few lines
(`stratified_bootstrap`); the metrics and the plots are rliable's.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asyncdqn.errors import UserError, first_line

FIGURES = ("auc", "final", "auc_wall", "final_wall")
TITLES = {"auc": "AUC (equal env steps)", "final": "final return (equal env steps)",
          "auc_wall": "AUC (equal wall-clock)", "final_wall": "return at equal wall-clock"}


@dataclass(frozen=True)
class Run:
    folder: Path
    scenario: str
    arm: str
    seed: int
    label: str
    score_range: tuple[float, float] | None
    baseline: str | None
    evals: list[tuple[int, float, float]]  # (env_steps, mean return, wall_s) of each periodic evaluation
    members: list[list[float]]  # each periodic member_eval's per-net means
    final: float | None
    train_wall_s: float


# ------------------------------------------------------------------------------------------- per run

def auc(evals: Sequence[tuple[int, float, float]], horizon: int) -> float:
    """Mean of the periodic evaluation means at env steps <= horizon (NaN with none)."""
    xs = [m for steps, m, _ in evals if steps <= horizon]
    return float(np.mean(xs)) if xs else math.nan


def at_wall(evals: Sequence[tuple[int, float, float]], wall_s: float) -> tuple[float, float]:
    """(mean, last) of the evaluation means finished within the first wall_s seconds (NaN, NaN with none)."""
    xs = [m for _, m, w in evals if w <= wall_s]
    return (float(np.mean(xs)), float(xs[-1])) if xs else (math.nan, math.nan)


def normalise(x: float, score_range: tuple[float, float] | None) -> float:
    if score_range is None:
        return x
    low, high = score_range
    return (x - low) / (high - low)


def figures(run: Run, horizon: int, wall_s: float) -> dict[str, float]:
    """A run's figures, normalised by its scenario's score range."""
    auc_w, final_w = at_wall(run.evals, wall_s)
    raw = {"auc": auc(run.evals, horizon), "final": math.nan if run.final is None else run.final,
           "auc_wall": auc_w, "final_wall": final_w}
    out = {k: normalise(v, run.score_range) for k, v in raw.items()}
    if run.members:
        per_net = np.asarray(run.members, dtype=float).mean(0)  # each net's mean over the evaluations
        out["members_mean"] = normalise(float(per_net.mean()), run.score_range)
        out["members_best"] = normalise(float(per_net.max()), run.score_range)
    return out


# ------------------------------------------------------------------------------------------- statistics

def stratified_bootstrap(matrices: Sequence[np.ndarray], stat: Callable[..., float], reps: int,
                         rng: np.random.Generator, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of stat(*matrices): each rep resamples the rows (seeds) of every runs x tasks matrix
    with replacement, column by column (a stratum per task), each matrix on its own draws."""
    values = np.empty(reps)
    for r in range(reps):
        resampled = []
        for m in matrices:
            rows = rng.integers(0, m.shape[0], size=m.shape)  # a row index per (seed, task) cell
            resampled.append(np.take_along_axis(m, rows, axis=0))
        values[r] = stat(*resampled)
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def estimates(score: dict[str, np.ndarray], baseline: str, reps: int, seed: int = 0) -> dict[str, dict]:
    """Per arm: IQM, mean and P(arm > baseline), each with its 95% stratified-bootstrap interval."""
    from rliable import metrics

    rng = np.random.default_rng(seed)
    out = {}
    for arm, m in score.items():
        row = {"iqm": float(metrics.aggregate_iqm(m)), "iqm_ci": stratified_bootstrap([m], metrics.aggregate_iqm,
                                                                                      reps, rng),
               "mean": float(metrics.aggregate_mean(m)),
               "mean_ci": stratified_bootstrap([m], metrics.aggregate_mean, reps, rng)}
        if arm != baseline:
            b = score[baseline]
            row["p_improve"] = float(metrics.probability_of_improvement(m, b))
            row["p_improve_ci"] = stratified_bootstrap([m, b], metrics.probability_of_improvement, reps, rng)
        out[arm] = row
    return out


# ------------------------------------------------------------------------------------------- reading runs

def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not readable JSON ({first_line(exc)})") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: not a JSON object")
    return value


def read_run(folder: Path) -> Run:
    """One finished run folder -> Run; UserError (one line) for a folder that is not one."""
    from asyncdqn.metrics import read_records

    summary = _json(folder / "summary.json")
    if (folder / "sweep_run.json").is_file():
        spec = _json(folder / "sweep_run.json")
        meta, spec = spec.get("meta", {}), spec.get("spec", {})
        scenario, arm, seed = spec.get("scenario"), spec.get("arm"), spec.get("seed")
    else:
        try:
            cfg = tomllib.loads((folder / "config.toml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UserError(f"{folder}: no readable config.toml or sweep_run.json ({first_line(exc)})") from None
        meta, scenario, arm, seed = {}, cfg.get("scenario"), folder.parent.name, cfg.get("seed")
    if not (isinstance(scenario, str) and isinstance(arm, str) and isinstance(seed, int)):
        raise UserError(f"{folder}: cannot tell the run's scenario, arm and seed")
    try:
        records = read_records(folder / "metrics.jsonl")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{folder / 'metrics.jsonl'}: not readable ({first_line(exc)})") from None
    evals = [(int(r["env_steps"]), float(r["mean"]), float(r["wall_s"])) for r in records
             if r.get("kind") == "eval" and r.get("mean") is not None]
    members = [list(map(float, r["means"])) for r in records if r.get("kind") == "member_eval"]
    score_range = meta.get("score_range")
    return Run(folder, scenario, arm, seed, str(meta.get("label", arm)),
               tuple(score_range) if score_range else None, meta.get("baseline"), evals, members,
               summary.get("eval_return_mean"), float(summary.get("train_wall_s") or math.nan))


def find_runs(paths: Sequence[Path]) -> tuple[list[Run], list[str]]:
    """Finished runs under the given folders, and a note for each folder left out (failed, interrupted)."""
    runs, left_out = [], []
    folders: list[Path] = []
    for p in paths:
        if not Path(p).is_dir():
            raise UserError(f"not a folder: {p}")
        if (Path(p) / "summary.json").is_file() or (Path(p) / "failed.txt").is_file():
            folders.append(Path(p))
        else:
            folders += sorted({f.parent for name in ("summary.json", "failed.txt") for f in Path(p).rglob(name)})
    for f in folders:
        if (f / "failed.txt").is_file():
            left_out.append(f"{f}: failed")
        elif _json(f / "summary.json").get("interrupted") is not False:
            left_out.append(f"{f}: interrupted or unfinished")
        else:
            runs.append(read_run(f))
    if not runs:
        raise UserError(f"no finished runs under {', '.join(map(str, paths))}")
    return runs, left_out


# ------------------------------------------------------------------------------------------- the comparison

def compare(runs: list[Run], baseline: str | None = None, reps: int = 2000, seed: int = 0) -> dict:
    """Per-scenario and suite estimates of every figure; see the module docstring for the rules."""
    arms = list(dict.fromkeys(r.arm for r in runs))
    baseline = baseline or next((r.baseline for r in runs if r.baseline), None) or ("k1" if "k1" in arms
                                                                                     else arms[0])
    if baseline not in arms:
        raise UserError(f"baseline {baseline!r} is not among the runs' arms ({', '.join(arms)})")
    arms = [baseline] + [a for a in arms if a != baseline]  # the baseline's row first in tables and plots
    scenarios = list(dict.fromkeys(r.scenario for r in runs))
    if len(scenarios) > 1 and any(r.score_range is None for r in runs):
        raise UserError("runs of several scenarios need each scenario's score_range (a sweep grid's "
                        "[scenarios.NAME] score_range) to be put on one scale")
    per_scenario, matrices, tables = {}, {f: {a: [] for a in arms} for f in FIGURES}, {}
    for sc in scenarios:
        mine = [r for r in runs if r.scenario == sc]
        by_arm = {a: {r.seed: r for r in mine if r.arm == a} for a in arms}
        seeds = sorted(set.intersection(*(set(d) for d in by_arm.values())))
        if not seeds:
            raise UserError(f"scenario {sc}: no seed finished for every arm ({', '.join(arms)})")
        paired = [r for d in by_arm.values() for s, r in d.items() if s in seeds]
        horizon = min(r.evals[-1][0] if r.evals else 0 for r in paired)
        wall = float(np.median([by_arm[baseline][s].train_wall_s for s in seeds]))
        figs = {a: [figures(by_arm[a][s], horizon, wall) for s in seeds] for a in arms}
        tables[sc] = {"seeds": seeds, "horizon_env_steps": horizon, "wall_s": wall,
                      "unpaired": sorted(r.folder.name for r in mine if r.seed not in seeds),
                      "runs": {a: [{"seed": s, **f} for s, f in zip(seeds, figs[a])] for a in arms}}
        per_scenario[sc] = {}
        for f in FIGURES:
            score = {a: np.array([[x[f]] for x in figs[a]]) for a in arms}
            per_scenario[sc][f] = estimates(score, baseline, reps, seed)
            for a in arms:
                matrices[f][a].append(score[a][:, 0])
        for a in arms:
            members = [x["members_mean"] for x in figs[a] if "members_mean" in x]
            if members:
                tables[sc].setdefault("members", {})[a] = {
                    "members_mean": float(np.mean(members)),
                    "members_best": float(np.mean([x["members_best"] for x in figs[a] if "members_best" in x]))}
    n = min(len(t["seeds"]) for t in tables.values())
    suite = {f: estimates({a: np.stack([col[:n] for col in cols], axis=1) for a, cols in matrices[f].items()},
                          baseline, reps, seed) for f in FIGURES} if len(scenarios) > 1 else None
    labels = {r.arm: r.label for r in runs}
    return {"baseline": baseline, "arms": arms, "labels": labels, "scenarios": tables,
            "per_scenario": per_scenario, "suite": suite, "suite_seeds": n, "reps": reps,
            "normalised": all(r.score_range is not None for r in runs)}


def _ci(est: dict, key: str) -> str:
    lo, hi = est[f"{key}_ci"]
    return f"{est[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(result: dict) -> str:
    """The tables: one per scenario (and one for the suite), a row per arm."""
    out = []
    blocks = [(sc, result["per_scenario"][sc], result["scenarios"][sc]) for sc in result["scenarios"]]
    if result["suite"]:
        blocks.append((f"suite ({result['suite_seeds']} seeds per scenario)", result["suite"], None))
    scale = "normalised" if result["normalised"] else "raw"
    for name, est, table in blocks:
        head = f"**{name}**"
        if table:
            head += (f": seeds {table['seeds'][0]}..{table['seeds'][-1]} ({len(table['seeds'])}), AUC up to "
                     f"{table['horizon_env_steps']} env steps, equal wall-clock = {table['wall_s']:.0f} s")
        out += ["", head, "",
                f"| arm | {scale} AUC: IQM | mean | P(> {result['baseline']}) | final: IQM | P(> baseline) "
                f"| AUC@wall: IQM | P(> baseline) | final@wall: IQM | P(> baseline) | members' AUC |", "|" + "---|" * 11]
        for a in result["arms"]:
            cells = [result["labels"][a]]
            for f in FIGURES:
                e = est[f][a]
                cells.append(_ci(e, "iqm"))
                if f == "auc":
                    cells.append(_ci(e, "mean"))
                cells.append(_ci(e, "p_improve") if "p_improve" in e else "—")
            mem = (table or {}).get("members", {}).get(a)
            cells.append(f"{mem['members_mean']:.3f} (best {mem['members_best']:.3f})" if mem else "—")
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out).strip()


def plot(result: dict, runs: list[Run], out_png: Path, seed: int = 0) -> None:
    """Learning curves per scenario (mean over seeds, 95% bootstrap band), the AUC interval estimates and
    P(arm > baseline), with rliable's plotting functions where it has them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    rng = np.random.default_rng(seed)
    scenarios = list(result["scenarios"])
    fig, axes = plt.subplots(1, len(scenarios) + 2, figsize=(4.6 * (len(scenarios) + 2), 3.8), squeeze=False)
    for ax, sc in zip(axes[0], scenarios):
        seeds = set(result["scenarios"][sc]["seeds"])
        for a in result["arms"]:
            curves = [r.evals for r in runs if r.scenario == sc and r.arm == a and r.seed in seeds and r.evals]
            n = min(len(c) for c in curves)
            y = np.array([[m for _, m, _ in c[:n]] for c in curves])
            x = np.array([[s for s, _, _ in c[:n]] for c in curves]).mean(0)
            band = np.array([stratified_bootstrap([col[:, None]], np.mean, 500, rng) for col in y.T])
            ax.plot(x, y.mean(0), label=f"{result['labels'][a]} ({len(curves)})")
            ax.fill_between(x, band[:, 0], band[:, 1], alpha=0.2)
        ax.set_title(sc, fontsize=10)
        ax.set_xlabel("env steps")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("greedy eval return (mean over seeds)")
    est = result["suite"] or result["per_scenario"][scenarios[0]]
    ax = axes[0][-2]
    arms = result["arms"]
    ys = np.arange(len(arms))[::-1]
    mid = np.array([est["auc"][a]["iqm"] for a in arms])
    err = np.array([[mid[i] - est["auc"][a]["iqm_ci"][0] for i, a in enumerate(arms)],
                    [est["auc"][a]["iqm_ci"][1] - mid[i] for i, a in enumerate(arms)]])
    ax.errorbar(mid, ys, xerr=err, fmt="o", capsize=3)
    ax.set_yticks(ys, [result["labels"][a] for a in arms], fontsize=7)
    ax.set_xlabel(("normalised " if result["normalised"] else "") + "AUC, IQM and 95% interval")
    others = [a for a in arms if a != result["baseline"]]
    if others:  # rliable names a pair "X<sep>Y": a tab, since labels may hold commas (its default separator)
        def pair(a: str) -> str:
            return "\t".join(result["labels"][x].replace("\t", " ") for x in (a, result["baseline"]))

        pairs = {pair(a): est["auc"][a]["p_improve"] for a in others}
        intervals = {pair(a): np.array(est["auc"][a]["p_improve_ci"])[:, None] for a in others}
        plot_utils.plot_probability_of_improvement(pairs, intervals, pair_separator="\t", ax=axes[0][-1],
                                                   xlabel="P(X > Y), AUC")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def command(args) -> int:
    """The CLI's `compare`: tables on stdout, compare.json and compare.png in --out."""
    try:
        import rliable  # noqa: F401
    except ImportError:
        raise UserError("asyncdqn compare needs rliable: pip install 'asyncdqn[compare]'") from None
    if args.reps < 100:
        raise UserError(f"--reps must be >= 100, got {args.reps}")
    runs, left_out = find_runs(args.runs)
    result = compare(runs, args.baseline, args.reps, args.seed)
    result["left_out"] = left_out
    table = markdown(result)
    print(table)
    for note in left_out:
        print(f"left out: {note}")
    out = args.out or (Path(args.runs[0]) / "compare")
    out.mkdir(parents=True, exist_ok=True)
    from asyncdqn.checkpoint import atomic_write_text
    from asyncdqn.metrics import to_json

    atomic_write_text(out / "compare.json", json.dumps(json.loads(to_json({**result, "table": table})), indent=2))
    plot(result, runs, out / "compare.png", args.seed)
    print(f"written to {out}/ (compare.json, compare.png)")
    return 0
