"""No behaviour lost: this tree's speed against an older commit's, measured interleaved in one run.

Method. `--old DIR` is a worktree of the older commit (`git worktree add DIR COMMIT`). Each round runs every
benchmark once on each side, the side that goes first alternating between rounds, so both sample the same
minutes of a machine whose speed drifts. Each side runs its OWN copy of the benchmark script: the old side with
`PYTHONPATH=DIR` (its package shadows the installed one), the new side with the installed package, both with
this interpreter, one at a time. Measured per round and side:
  * collection: `benchmarks/collect.py` on one seed (64 actors, no learning), its interleaved ratio to the raw
    CartPole loop (the machine-speed-free figure) and its steady rate;
  * learner: `benchmarks/learner_k.py`, ms per update at K = 1 and K = 8 and their ratio, for hidden 64x64 (the
    cartpole scenario's nets, `learner64_*`) and 128x128 (`learner_*`);
  * time to solve: `asyncdqn train cartpole --seed S`, its training wall-clock (summary.json train_wall_s,
    unsolved seeds counted at their full wall time) and its final 20-episode greedy mean.
It prints medians per side and new / old for each figure (higher is better for rates and ratios to the raw
loop; lower for times, so for those it prints old / new: every printed "new vs old" reads >= 1 when the new
code is at least as fast). The goal of issue 17 is >= 0.95 on each.

Command: `.venv/bin/python benchmarks/against_commit.py --old ../old [--rounds 5] [--out r.json]`
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import finish, machine_info

HERE = Path(__file__).resolve().parent
SOLVED = 475.0


def _env(tree: Path | None) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return env


def _last_json(cmd: list[str], env: dict, timeout: float) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def collect(tree: Path, old: bool, seed: int, steps: int) -> dict:
    line = _last_json([sys.executable, str(tree / "benchmarks" / "collect.py"), "--seeds", str(seed), "--steps",
                       str(steps)], _env(tree if old else None), 1800)
    return {"collect_ratio": line["interleaved_ratio"], "collect_steps_per_s": line["steady_steps_per_s"]}


def learner(tree: Path, old: bool, seed: int) -> dict:
    line = _last_json([sys.executable, str(tree / "benchmarks" / "learner_k.py"), "--seeds", str(seed), "--rounds",
                       "3", "--updates", "200"], _env(tree if old else None), 1800)
    rows = {(r["hidden"], r["K"]): r["ensemble_ms"] for r in line["table"]}
    out = {}
    for hidden, tag in (("64x64", "64"), ("128x128", "")):  # 64x64: the cartpole scenario's nets
        out |= {f"learner{tag}_k1_ms": rows[(hidden, 1)], f"learner{tag}_k8_ms": rows[(hidden, 8)],
                f"learner{tag}_k8_over_k1": line["ratio_k8_k1"][hidden]}
    return out


def cartpole(tree: Path, old: bool, seed: int, tmp: Path) -> dict:
    out = tmp / f"{'old' if old else 'new'}-seed{seed}"
    code = "import sys; from asyncdqn.cli import main; sys.exit(main())"
    proc = subprocess.run([sys.executable, "-c", code, "train", "cartpole", "--seed", str(seed), "--out", str(out),
                           "--quiet"], capture_output=True, text=True, env=_env(tree if old else None), timeout=1800,
                          cwd=tmp)
    if proc.returncode != 0:
        raise RuntimeError(f"cartpole seed {seed} ({'old' if old else 'new'}) failed:\n{proc.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"solve_wall_s": summary["train_wall_s"], "final_mean": summary["eval_return_mean"],
            "solved": summary["eval_return_mean"] >= SOLVED}


def one_round(i: int, old_tree: Path, new_tree: Path, steps: int, tmp: Path) -> list[dict]:
    sides = [(True, old_tree), (False, new_tree)]
    rows = []
    for old, tree in (sides if i % 2 == 0 else sides[::-1]):
        row = {"round": i, "side": "old" if old else "new", **collect(tree, old, i, steps),
               **learner(tree, old, i), **cartpole(tree, old, i, tmp)}
        print(f"  round {i} {row['side']}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                          for k, v in row.items() if k not in ("round", "side")),
              flush=True)
        rows.append(row)
    return rows


HIGHER_IS_BETTER = ["collect_ratio", "collect_steps_per_s"]
LOWER_IS_BETTER = ["learner64_k1_ms", "learner64_k8_ms", "learner64_k8_over_k1", "learner_k1_ms", "learner_k8_ms",
                   "learner_k8_over_k1", "solve_wall_s"]


def compare(rows: list[dict]) -> dict:
    """Medians per side and the new-vs-old figure of each (>= 1: the new code is at least as good)."""
    med = {side: {k: statistics.median(r[k] for r in rows if r["side"] == side)
                  for k in HIGHER_IS_BETTER + LOWER_IS_BETTER} for side in ("old", "new")}
    vs = {k: med["new"][k] / med["old"][k] for k in HIGHER_IS_BETTER}
    vs |= {k: med["old"][k] / med["new"][k] for k in LOWER_IS_BETTER}
    solved = {side: sum(r["solved"] for r in rows if r["side"] == side) for side in ("old", "new")}
    return {"median": med, "new_vs_old": vs, "solved": solved}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True, type=Path, help="a worktree of the older commit")
    p.add_argument("--rounds", type=int, default=5, help="rounds; round i uses seed i")
    p.add_argument("--steps", type=int, default=100_000, help="collection steps per run")
    p.add_argument("--out", help="write the full result to this JSON file")
    args = p.parse_args()
    if not (args.old / "asyncdqn").is_dir():
        print(f"against_commit: {args.old} holds no asyncdqn/ (make it with git worktree add)", file=sys.stderr)
        return 2
    machine = machine_info()
    print(f"this tree vs {args.old.resolve()}, {args.rounds} rounds, load {machine['loadavg_at_start']}")
    with tempfile.TemporaryDirectory(prefix="asyncdqn-against-") as tmp:
        rows = [r for i in range(args.rounds) for r in one_round(i, args.old.resolve(), HERE.parent, args.steps,
                                                                  Path(tmp))]
    headline = compare(rows)
    for key, value in headline["new_vs_old"].items():
        print(f"{key:>22}: old {headline['median']['old'][key]:.4g}, new {headline['median']['new'][key]:.4g}, "
              f"new vs old {value:.3f} (goal >= 0.95: {'met' if value >= 0.95 else 'NOT met'})")
    print(f"solved (final 20-episode mean >= {SOLVED:g}): old {headline['solved']['old']}/{args.rounds}, "
          f"new {headline['solved']['new']}/{args.rounds}")
    finish({"benchmark": "against_commit", "quick": False, "machine": machine, "old": str(args.old.resolve()),
            "rows": rows, **headline}, headline, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
