"""Wall-clock time to solve CartPole-v1: asyncdqn (scenario `cartpole`) vs Stable-Baselines3 DQN (rl-zoo).

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
  * SB3 `wall_s` = from building the envs and `DQN(...)` to the return of `model.learn`.
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

from _common import (machine_info, median, parse_seeds, print_table, ratio, run_child, write_child_result,
                     finish)

SCRIPT = Path(__file__).resolve()
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0..4", help="asyncdqn seeds ('0..4', '0,2,5')")
    p.add_argument("--sb3-seeds", default="0..4", help="SB3 seeds")
    p.add_argument("--out", help="write the full result (per-seed details, eval histories) to this JSON file")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: seed 0 only, tiny budgets (3000 steps), short evals; figures are meaningless")
    p.add_argument("--eval-every", type=int, default=2500, help="E, env steps between periodic evaluations")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--final-episodes", type=int, default=20)
    p.add_argument("--stop-at", type=float, default=SOLVED_AT,
                   help="SB3's stop threshold, and the final mean that counts as solved for both")
    p.add_argument("--sb3-steps", type=int, default=SB3_STEPS,
                   help="the step budget of both systems (rl-zoo's n_timesteps for SB3; asyncdqn gets "
                        "total_steps = the same, issue 16)")
    p.add_argument("--sb3-threads", type=int, default=1, help="torch.set_num_threads for SB3")
    p.add_argument("--asyncdqn-threads", type=int, default=1, help="torch threads for asyncdqn")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra asyncdqn config override (repeatable)")
    p.add_argument("--runs-dir", help="keep each run's output here (default: a temporary folder, deleted)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per child run")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--result-file", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        spec = json.loads(args.child)
        fn = child_asyncdqn if spec["system"] == "asyncdqn" else child_sb3
        write_child_result(args.result_file, fn(spec))
        return 0

    if importlib.util.find_spec("stable_baselines3") is None:
        print("stable_baselines3 is not installed: run `make bench` (installs the `bench` extra), "
              "or `.venv/bin/pip install -e '.[bench]'`.")
        return 2

    seeds, sb3_seeds = parse_seeds(args.seeds), parse_seeds(args.sb3_seeds)
    overrides = list(args.overrides)
    if args.quick:
        seeds, sb3_seeds = seeds[:1], sb3_seeds[:1]
        args.eval_every, args.eval_episodes, args.final_episodes, args.sb3_steps = 1000, 3, 3, 3000
    overrides = [f"total_steps={args.sb3_steps}", *overrides]  # the same budget for both systems
    common = {"eval_every": args.eval_every, "eval_episodes": args.eval_episodes, "stop_at": args.stop_at,
              "final_episodes": args.final_episodes}
    machine = machine_info()
    print(f"CartPole-v1 time-to-solve: asyncdqn seeds {seeds}, SB3 seeds {sb3_seeds}"
          f"{'  [QUICK smoke run: figures meaningless]' if args.quick else ''}")
    print(f"machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, torch {machine['torch']}, "
          f"SB3 {machine['stable_baselines3']}, load {machine['loadavg_at_start']}")

    # Interleave the two systems so slow drifts in machine load hit both alike.
    plan = []
    for i in range(max(len(seeds), len(sb3_seeds))):
        if i < len(seeds):
            plan.append({"system": "asyncdqn", "seed": seeds[i], "threads": args.asyncdqn_threads,
                         "overrides": overrides, **common})
        if i < len(sb3_seeds):
            plan.append({"system": "sb3", "seed": sb3_seeds[i], "threads": args.sb3_threads,
                         "sb3_steps": args.sb3_steps, **common})
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
            r = run_child(SCRIPT, spec, args.timeout)
            r["solved"] = r["final_mean"] is not None and r["final_mean"] >= args.stop_at
            rows.append(r)
            print(f"  {r['system']:8s} seed {r['seed']}: wall {r['wall_s']:.1f}s, {r['env_steps']} steps, "
                  f"final {r['final_mean']:.1f}, solved {r['solved']}", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()

    print_table("Per seed (wall_s: training call incl. construction; SB3 eval_s is inside its wall_s)",
                [("system", ""), ("seed", ""), ("wall_s", ".2f"), ("eval_s", ".2f"), ("wall_ex_eval_s", ".2f"),
                 ("env_steps", ""), ("stop_step", ""), ("updates", ""), ("final_mean", ".1f"), ("solved", ""),
                 ("cpu_s", ".1f")], rows)
    summaries = [summarise(s, [r for r in rows if r["system"] == s]) for s in ("asyncdqn", "sb3")]
    print_table("Medians over seeds",
                [("system", ""), ("runs", ""), ("solved", ""), ("median_wall_all_s", ".2f"),
                 ("median_charged_s", ".2f"), ("median_time_to_solve_s", ".2f"),
                 ("median_time_to_solve_ex_eval_s", ".2f"), ("median_env_steps", ".0f"),
                 ("median_final_mean", ".1f"), ("median_cpu_s", ".1f")], summaries)
    a, s = summaries
    headline = {
        "asyncdqn_solved": f"{a['solved']}/{a['runs']}", "sb3_solved": f"{s['solved']}/{s['runs']}",
        "asyncdqn_median_time_to_solve_s": a["median_time_to_solve_s"],
        "sb3_median_time_to_solve_s": s["median_time_to_solve_s"],
        "ratio_time_to_solve": ratio(a["median_time_to_solve_s"], s["median_time_to_solve_s"]),
        "ratio_time_to_solve_vs_sb3_ex_eval": ratio(a["median_time_to_solve_s"],
                                                    s["median_time_to_solve_ex_eval_s"]),
        "ratio_wall_all_seeds": ratio(a["median_wall_all_s"], s["median_wall_all_s"]),
        "asyncdqn_median_charged_s": a["median_charged_s"], "sb3_median_charged_s": s["median_charged_s"],
        "ratio_charged_all_seeds": (a["median_charged_s"] / s["median_charged_s"]
                                    if a["median_charged_s"] and math.isfinite(s["median_charged_s"] or math.inf)
                                    else None),
    }
    print("\nasyncdqn / SB3 median time-to-solve: "
          + (f"{headline['ratio_time_to_solve']:.3f}" if headline["ratio_time_to_solve"] is not None
             else "n/a (a system solved no seed)")
          + (f"  (vs SB3 without its blocking evals: {headline['ratio_time_to_solve_vs_sb3_ex_eval']:.3f})"
             if headline["ratio_time_to_solve_vs_sb3_ex_eval"] is not None else "")
          + (f"; over all seeds: {headline['ratio_wall_all_seeds']:.3f}"
             if headline["ratio_wall_all_seeds"] is not None else ""))
    result = {"benchmark": "cartpole_vs_sb3", "quick": args.quick, "machine": machine,
              "protocol": {**common, "sb3_steps": args.sb3_steps, "sb3_threads": args.sb3_threads,
                           "asyncdqn_threads": args.asyncdqn_threads, "asyncdqn_overrides": overrides,
                           "rl_zoo": RL_ZOO},
              "runs": rows, "summary": summaries, **headline}
    finish(result, {**headline, "summary": summaries}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
