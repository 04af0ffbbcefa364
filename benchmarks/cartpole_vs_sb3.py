"""Wall-clock time to solve CartPole-v1: asyncdqn (scenario `cartpole`) vs Stable-Baselines3 DQN (rl-zoo).

A third system, Tianshou's own CartPole DQN recipe (tianshou_cartpole.py; method in its docstring), joins when
its venv exists: `make bench-tianshou` builds `.venv-tianshou` (tianshou 2.0.1 needs pandas<3, the project's
venv has pandas 3), and `--tianshou-python PATH` names another python ('' leaves tianshou out). Its runs are
subprocesses of that python, interleaved seed by seed with the others, with SB3's budget and stop rule; its
test steps block training like SB3's evaluations (inside `wall_s`, also reported without, `wall_ex_eval_s`).
Without it the output is as before, after a printed note; with it the summary gains a tianshou row and the
headline `tianshou_*` figures and asyncdqn / tianshou ratios (`*_vs_tianshou`).

Protocol, the same for both systems:
  * Periodic greedy evaluation every E = 2500 env steps, 10 episodes; training stops when the stop rule
    below is met, or at the step budget: 5e4 for both (rl-zoo's n_timesteps; asyncdqn gets
    `total_steps` = the same, where its scenario has 1e5: issue 16 found the uneven budgets).
    - SB3: `EvalCallback(eval_freq=E, n_eval_episodes=10, deterministic=True)` on a separate, seeded env,
      with `StopTrainingOnRewardThreshold(475)` as `callback_on_new_best` and `best_model_save_path`.
    - asyncdqn: overrides `eval.every=E eval.episodes=10` (+ `eval.final_episodes=20`) and keeps its
      scenario's own, stricter stop rule: a 10-episode mean >= `eval.stop_at` (490 in the cartpole scenario),
      confirmed on 20 more episodes with other starts (`eval.confirm_episodes=20`). It stops later than SB3's
      bare 10-episode trigger at 475, and that extra training is inside asyncdqn's time. Pass
      `--set eval.stop_at=475 --set eval.confirm_episodes=0` for SB3's rule.
  * Then a final 20-episode greedy evaluation of the kept policy on fresh seeds. SB3: the best model
    EvalCallback saved (the final model if none was saved), evaluated here on an env seeded
    1_000_000 + 1000 * seed + episode; asyncdqn: `eval_return_mean` of summary.json (best periodic policy,
    its own final-eval seeds, which differ from the periodic ones). "Solved" = final mean >= 475.
  * SB3 hyperparameters: rl-zoo's CartPole-v1 DQN entry (`RL_ZOO` below), device cpu.

Timing. Each (system, seed) runs in a fresh subprocess; the Python/torch/SB3 imports happen before the
clock starts (both pay them equally; they are reported as `import_s`). `torch.set_num_threads(1)` for both
(`--sb3-threads`, `--asyncdqn-threads` change it; asyncdqn also gets `torch_threads=N`).
`torch._dynamo` is imported before the clock too: torch imports it lazily in the first
`torch.optim.Optimizer.__init__` (~1.5 s on a 2-core EPYC), which both systems would otherwise pay inside
their timed construction (asyncdqn's `Learner`, SB3's `DQN`); it is an import, not training.
  * asyncdqn `wall_s` = summary.json `train_wall_s`: from the start of `runtime.run` (env and learner
    construction included) to the end of training, before the final evaluation.
  * SB3 `wall_s` = from building the envs and `DQN(...)` to the return of `model.learn`; tianshou's the
    same, to the return of `run_training`.
Time-to-solve = `wall_s` of a solved seed. The headline over all seeds (issue 16) is `median_charged_s`: each
seed's wall time, an unsolved seed's at its full budget (`charged_time`: infinite if it stopped early and
then failed, since its full-budget time was never measured), the median over every seed of each system.

Evaluation time is NOT treated the same way by the two systems, and the headline keeps both as they are:
  * SB3's EvalCallback runs inside `learn` and blocks training, so its evaluations (and the best-model
    save) are inside SB3's `wall_s`. The script times them (`eval_s`) and also reports
    `wall_ex_eval_s` = wall_s - eval_s, i.e. SB3's training alone, as a secondary figure.
  * asyncdqn evaluates in a worker thread while actors and learner keep going, so its evaluations cost
    only what they take from the other threads (GIL, cores); they cannot be subtracted. Training also
    continues while the deciding evaluation runs, so asyncdqn's `env_steps` is a little above
    `stop_step` (the step of the first evaluation that reached its stop threshold).
The headline ratio is asyncdqn median time-to-solve / SB3 median time-to-solve, both as measured (eval
included); the ratio against SB3's eval-excluded time is printed beside it. Note also that asyncdqn runs its
learner and evaluator in Python threads beside the actors, so it may use more than one core even with one
torch thread; `cpu_s` (process CPU time of the whole child call) shows how much each system used.

Run:   .venv/bin/python benchmarks/cartpole_vs_sb3.py [--seeds 0..4] [--sb3-seeds 0..2] [--out r.json]
       [--tianshou-seeds 0..4] [--tianshou-python .venv-tianshou/bin/python]
Smoke: .venv/bin/python benchmarks/cartpole_vs_sb3.py --quick   (tiny budgets: checks the plumbing only)
Needs stable-baselines3 (`make bench` installs the `bench` extra); exits 2 without it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import tianshou_cartpole
from _common import (machine_info, median, parse_seeds, print_table, ratio, run_child, write_child_result,
                     finish)

SCRIPT = Path(__file__).resolve()
TIANSHOU_SCRIPT = SCRIPT.parent / "tianshou_cartpole.py"
TIANSHOU_PYTHON = SCRIPT.parents[1] / ".venv-tianshou" / "bin" / "python"  # `make bench-tianshou`
ENV_ID = "CartPole-v1"
SOLVED_AT = 475.0
# rl-zoo (hyperparams/dqn.yml) CartPole-v1; n_timesteps 5e4 is the budget (--sb3-steps).
RL_ZOO = dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
              target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
              exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256]))
SB3_STEPS = 50_000
SB3_EVAL_ENV_SEED = 500_000        # + seed: the EvalCallback env
SB3_FINAL_SEED = 1_000_000         # + 1000 * seed + episode: the final evaluation


# ----------------------------------------------------------------------------------------------- children

def child_asyncdqn(spec: dict) -> dict:
    t = time.perf_counter()
    import asyncio

    import torch
    import torch._dynamo  # noqa: F401  (see "Timing": the first optimizer would import it inside the clock)

    from asyncdqn import config, runtime
    import_s = time.perf_counter() - t
    torch.set_num_threads(spec["threads"])
    overrides = [f"eval.every={spec['eval_every']}", f"eval.episodes={spec['eval_episodes']}",
                 f"eval.final_episodes={spec['final_episodes']}", f"torch_threads={spec['threads']}",
                 *spec["overrides"]]
    cfg = config.load("cartpole", overrides, seed=spec["seed"])
    out_dir = Path(spec["run_dir"])
    cpu0, t0 = time.process_time(), time.perf_counter()
    summary = asyncio.run(runtime.run(cfg, out_dir))
    call_wall, call_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line]
    evals = [{"env_steps": r["env_steps"], "mean": r["mean"], "wall_s": r["wall_s"]}
             for r in records if r["kind"] == "eval"]
    stop_step = next((e["env_steps"] for e in evals if e["mean"] is not None and e["mean"] >= cfg.eval.stop_at),
                     None)
    return {
        "system": "asyncdqn", "seed": spec["seed"], "import_s": import_s, "threads": spec["threads"],
        "wall_s": summary["train_wall_s"], "eval_s": None, "wall_ex_eval_s": None,
        "env_steps": summary["env_steps"], "stop_step": stop_step, "budget_steps": cfg.total_steps,
        "updates": summary["updates"], "final_mean": summary["eval_return_mean"],
        "final_std": summary["eval_return_std"], "final_episodes": summary["eval_episodes"],
        "kept_policy": summary["evaluated_policy"], "stopped_early": summary["stopped_early"],
        "call_wall_s": call_wall, "cpu_s": call_cpu, "evals": evals,
        "config": config.to_dict(cfg),
    }


def child_sb3(spec: dict) -> dict:
    t = time.perf_counter()
    import gymnasium as gym
    import numpy as np
    import torch
    import torch._dynamo  # noqa: F401  (see "Timing")
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv
    import_s = time.perf_counter() - t
    torch.set_num_threads(spec["threads"])
    seed, run_dir = spec["seed"], Path(spec["run_dir"])

    class TimedEvalCallback(EvalCallback):
        """EvalCallback that records how long each (training-blocking) evaluation took."""

        def __init__(self, *args, t_start: float, **kwargs):
            super().__init__(*args, **kwargs)
            self.t_start, self.evals = t_start, []

        def _on_step(self) -> bool:
            is_eval = self.eval_freq > 0 and self.n_calls % self.eval_freq == 0
            t_eval = time.perf_counter()
            keep_going = super()._on_step()
            if is_eval:
                now = time.perf_counter()
                self.evals.append({"env_steps": self.num_timesteps, "mean": self.last_mean_reward,
                                   "eval_s": now - t_eval, "wall_s": now - self.t_start})
            return keep_going

    cpu0, t0 = time.process_time(), time.perf_counter()
    train_env = gym.make(ENV_ID)
    eval_env = DummyVecEnv([lambda: Monitor(gym.make(ENV_ID))])
    eval_env.seed(SB3_EVAL_ENV_SEED + seed)
    model = DQN("MlpPolicy", train_env, seed=seed, device="cpu", verbose=0, **RL_ZOO)
    callback = TimedEvalCallback(eval_env, t_start=t0, n_eval_episodes=spec["eval_episodes"],
                                 eval_freq=spec["eval_every"], deterministic=True,
                                 best_model_save_path=str(run_dir), verbose=0,
                                 callback_on_new_best=StopTrainingOnRewardThreshold(spec["stop_at"], verbose=0))
    model.learn(total_timesteps=spec["sb3_steps"], callback=callback)
    wall = time.perf_counter() - t0
    eval_s = sum(e["eval_s"] for e in callback.evals)

    best_path = run_dir / "best_model.zip"
    kept = DQN.load(best_path, device="cpu") if best_path.is_file() else model
    env = gym.make(ENV_ID)
    returns = []
    for ep in range(spec["final_episodes"]):
        obs, _ = env.reset(seed=SB3_FINAL_SEED + 1000 * seed + ep)
        total, done = 0.0, False
        while not done:
            action, _ = kept.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    call_wall, call_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stop_step = next((e["env_steps"] for e in callback.evals if e["mean"] >= spec["stop_at"]), None)
    return {
        "system": "sb3", "seed": seed, "import_s": import_s, "threads": spec["threads"],
        "wall_s": wall, "eval_s": eval_s, "wall_ex_eval_s": wall - eval_s,
        "env_steps": int(model.num_timesteps), "stop_step": stop_step, "budget_steps": spec["sb3_steps"],
        "updates": int(model._n_updates), "final_mean": float(np.mean(returns)),
        "final_std": float(np.std(returns)), "final_episodes": len(returns),
        "kept_policy": "best periodic eval" if best_path.is_file() else "last",
        "stopped_early": stop_step is not None, "call_wall_s": call_wall, "cpu_s": call_cpu,
        "evals": callback.evals, "hyperparameters": {**RL_ZOO, "n_timesteps": spec["sb3_steps"]},
    }


# ----------------------------------------------------------------------------------------------- parent

def charged_time(r: dict) -> float:
    """What a seed counts in the all-seeds median (issue 16): its wall time when solved, or when it ran its
    whole budget unsolved (its full wall time); infinity when it stopped early and then failed the final
    evaluation, since its time for the whole budget was never measured."""
    if r["solved"] or r["env_steps"] >= r["budget_steps"]:
        return float(r["wall_s"])
    return math.inf


def summarise(system: str, rows: list[dict]) -> dict:
    solved = [r for r in rows if r["solved"]]
    return {
        "system": system, "runs": len(rows), "solved": len(solved),
        "median_wall_all_s": median(r["wall_s"] for r in rows),
        "median_charged_s": statistics.median([charged_time(r) for r in rows]) if rows else None,
        "median_time_to_solve_s": median(r["wall_s"] for r in solved),
        "median_time_to_solve_ex_eval_s": median(r["wall_ex_eval_s"] for r in solved),
        "median_env_steps": median(r["env_steps"] for r in rows),
        "median_final_mean": median(r["final_mean"] for r in rows),
        "median_cpu_s": median(r["cpu_s"] for r in rows),
    }


def tianshou_python(arg: str | None) -> tuple[str | None, str | None]:
    """The interpreter for the tianshou runs and a note to print: `arg` (--tianshou-python) if given, ''
    turns the system off; without it TIANSHOU_PYTHON if that exists, else the system is skipped with a note."""
    if arg == "":
        return None, "tianshou: off (--tianshou-python '')"
    path = Path(arg) if arg else TIANSHOU_PYTHON
    if path.is_file():
        return str(path), None
    if arg:
        raise SystemExit(f"--tianshou-python {arg}: no such file")
    return None, (f"tianshou: skipped ({path} not found; `make bench-tianshou` builds that venv, "
                  "or pass --tianshou-python PATH)")


def common_spec(args: argparse.Namespace) -> dict:
    """The protocol settings every system's child gets."""
    return {"eval_every": args.eval_every, "eval_episodes": args.eval_episodes, "stop_at": args.stop_at,
            "final_episodes": args.final_episodes}


def build_plan(args: argparse.Namespace, seeds: dict[str, list[int]], overrides: list[str]) -> list[dict]:
    """One spec per (system, seed), interleaved seed by seed (asyncdqn, sb3, tianshou, then the next seed) so
    that slow drifts in machine load hit every system alike. SB3 and tianshou get the same budget."""
    common = common_spec(args)
    base = {"asyncdqn": {"threads": args.asyncdqn_threads, "overrides": overrides, **common},
            "sb3": {"threads": args.sb3_threads, "sb3_steps": args.sb3_steps, **common},
            "tianshou": {"threads": args.tianshou_threads, "sb3_steps": args.sb3_steps, **common}}
    return [{"system": system, "seed": system_seeds[i], **base[system]}
            for i in range(max(map(len, seeds.values())))
            for system, system_seeds in seeds.items() if i < len(system_seeds)]


def versus(a: dict, o: dict, suffix: str = "") -> dict:
    """Headline figures of asyncdqn (summary `a`) against another system's summary `o`; the ratios are
    asyncdqn / other, named with `suffix` (none for SB3, whose keys came first)."""
    n = o["system"]
    return {
        "asyncdqn_solved": f"{a['solved']}/{a['runs']}", f"{n}_solved": f"{o['solved']}/{o['runs']}",
        "asyncdqn_median_time_to_solve_s": a["median_time_to_solve_s"],
        f"{n}_median_time_to_solve_s": o["median_time_to_solve_s"],
        f"ratio_time_to_solve{suffix}": ratio(a["median_time_to_solve_s"], o["median_time_to_solve_s"]),
        f"ratio_time_to_solve_vs_{n}_ex_eval": ratio(a["median_time_to_solve_s"],
                                                     o["median_time_to_solve_ex_eval_s"]),
        f"ratio_wall_all_seeds{suffix}": ratio(a["median_wall_all_s"], o["median_wall_all_s"]),
        "asyncdqn_median_charged_s": a["median_charged_s"], f"{n}_median_charged_s": o["median_charged_s"],
        f"ratio_charged_all_seeds{suffix}": (a["median_charged_s"] / o["median_charged_s"]
                                             if a["median_charged_s"]
                                             and math.isfinite(o["median_charged_s"] or math.inf) else None),
    }


def print_ratio(headline: dict, name: str, label: str, suffix: str = "") -> None:
    tts, ex_eval = headline[f"ratio_time_to_solve{suffix}"], headline[f"ratio_time_to_solve_vs_{name}_ex_eval"]
    wall = headline[f"ratio_wall_all_seeds{suffix}"]
    print(f"asyncdqn / {label} median time-to-solve: "
          + (f"{tts:.3f}" if tts is not None else "n/a (a system solved no seed)")
          + (f"  (vs {label} without its blocking evals: {ex_eval:.3f})" if ex_eval is not None else "")
          + (f"; over all seeds: {wall:.3f}" if wall is not None else ""))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0..4", help="asyncdqn seeds ('0..4', '0,2,5')")
    p.add_argument("--sb3-seeds", default="0..4", help="SB3 seeds")
    p.add_argument("--tianshou-seeds", default="0..4", help="tianshou seeds")
    p.add_argument("--tianshou-python",
                   help="python of a venv with tianshou 2.0.1 for the third system (default: "
                        ".venv-tianshou/bin/python if it exists, else tianshou is skipped; '' turns it off)")
    p.add_argument("--out", help="write the full result (per-seed details, eval histories) to this JSON file")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: seed 0 only, tiny budgets (3000 steps), short evals; figures are meaningless")
    p.add_argument("--eval-every", type=int, default=2500, help="E, env steps between periodic evaluations")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--final-episodes", type=int, default=20)
    p.add_argument("--stop-at", type=float, default=SOLVED_AT,
                   help="SB3's (and tianshou's) stop threshold, and the final mean that counts as solved for all")
    p.add_argument("--sb3-steps", type=int, default=SB3_STEPS,
                   help="the step budget of every system (rl-zoo's n_timesteps for SB3; asyncdqn gets "
                        "total_steps = the same, issue 16; tianshou too)")
    p.add_argument("--sb3-threads", type=int, default=1, help="torch.set_num_threads for SB3")
    p.add_argument("--asyncdqn-threads", type=int, default=1, help="torch threads for asyncdqn")
    p.add_argument("--tianshou-threads", type=int, default=1, help="torch.set_num_threads for tianshou")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra asyncdqn config override (repeatable)")
    p.add_argument("--runs-dir", help="keep each run's output here (default: a temporary folder, deleted)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per child run")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--result-file", help=argparse.SUPPRESS)
    return p


def main() -> int:
    args = parser().parse_args()

    if args.child:
        spec = json.loads(args.child)
        fn = child_asyncdqn if spec["system"] == "asyncdqn" else child_sb3
        write_child_result(args.result_file, fn(spec))
        return 0

    if importlib.util.find_spec("stable_baselines3") is None:
        print("stable_baselines3 is not installed: run `make bench` (installs the `bench` extra), "
              "or `.venv/bin/pip install -e '.[bench]'`.")
        return 2

    ts_python, ts_note = tianshou_python(args.tianshou_python)
    seeds = {"asyncdqn": parse_seeds(args.seeds), "sb3": parse_seeds(args.sb3_seeds)}
    if ts_python:
        seeds["tianshou"] = parse_seeds(args.tianshou_seeds)
    overrides = list(args.overrides)
    if args.quick:
        seeds = {system: system_seeds[:1] for system, system_seeds in seeds.items()}
        args.eval_every, args.eval_episodes, args.final_episodes, args.sb3_steps = 1000, 3, 3, 3000
    if ts_python and (problem := tianshou_cartpole.budget_problem(args.sb3_steps, args.eval_every)):
        print(f"tianshou: {problem}")
        return 2
    overrides = [f"total_steps={args.sb3_steps}", *overrides]  # the same budget for both systems
    plan = build_plan(args, seeds, overrides)
    machine = machine_info()
    print(f"CartPole-v1 time-to-solve: asyncdqn seeds {seeds['asyncdqn']}, SB3 seeds {seeds['sb3']}"
          + (f", tianshou seeds {seeds['tianshou']}" if ts_python else "")
          + f"{'  [QUICK smoke run: figures meaningless]' if args.quick else ''}")
    print(f"machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, torch {machine['torch']}, "
          f"SB3 {machine['stable_baselines3']}, load {machine['loadavg_at_start']}")
    if ts_note:
        print(ts_note)

    children = {"asyncdqn": (SCRIPT, None), "sb3": (SCRIPT, None), "tianshou": (TIANSHOU_SCRIPT, ts_python)}
    tmp = None if args.runs_dir else tempfile.TemporaryDirectory(prefix="cartpole-vs-sb3-")
    runs_dir = Path(args.runs_dir or tmp.name)
    rows = []
    try:
        for spec in plan:
            run_dir = runs_dir / f"{spec['system']}_seed{spec['seed']}"
            if run_dir.exists():  # asyncdqn appends to metrics.jsonl: old records would mix in
                print(f"{run_dir} exists; give --runs-dir an empty folder")
                return 1
            spec["run_dir"] = str(run_dir)
            script, python = children[spec["system"]]
            r = run_child(script, spec, args.timeout, python=python)
            r["solved"] = r["final_mean"] is not None and r["final_mean"] >= args.stop_at
            rows.append(r)
            print(f"  {r['system']:8s} seed {r['seed']}: wall {r['wall_s']:.1f}s, {r['env_steps']} steps, "
                  f"final {r['final_mean']:.1f}, solved {r['solved']}", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()

    print_table("Per seed (wall_s: training call incl. construction; "
                + ("SB3 and tianshou eval_s are inside their" if ts_python else "SB3 eval_s is inside its")
                + " wall_s)",
                [("system", ""), ("seed", ""), ("wall_s", ".2f"), ("eval_s", ".2f"), ("wall_ex_eval_s", ".2f"),
                 ("env_steps", ""), ("stop_step", ""), ("updates", ""), ("final_mean", ".1f"), ("solved", ""),
                 ("cpu_s", ".1f")], rows)
    summaries = [summarise(s, [r for r in rows if r["system"] == s]) for s in seeds]
    print_table("Medians over seeds",
                [("system", ""), ("runs", ""), ("solved", ""), ("median_wall_all_s", ".2f"),
                 ("median_charged_s", ".2f"), ("median_time_to_solve_s", ".2f"),
                 ("median_time_to_solve_ex_eval_s", ".2f"), ("median_env_steps", ".0f"),
                 ("median_final_mean", ".1f"), ("median_cpu_s", ".1f")], summaries)
    a, s, *t = summaries
    headline = versus(a, s)
    print()
    print_ratio(headline, "sb3", "SB3")
    protocol = {**common_spec(args), "sb3_steps": args.sb3_steps, "sb3_threads": args.sb3_threads,
                "asyncdqn_threads": args.asyncdqn_threads, "asyncdqn_overrides": overrides, "rl_zoo": RL_ZOO}
    if t:
        headline |= versus(a, t[0], "_vs_tianshou")
        print_ratio(headline, "tianshou", "tianshou", "_vs_tianshou")
        protocol |= {"tianshou_threads": args.tianshou_threads, "tianshou_python": ts_python,
                     "tianshou_recipe": tianshou_cartpole.RECIPE}
    result = {"benchmark": "cartpole_vs_sb3", "quick": args.quick, "machine": machine, "protocol": protocol,
              "runs": rows, "summary": summaries, **headline}
    finish(result, {**headline, "summary": summaries}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
