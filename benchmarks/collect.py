"""Collection-only throughput: asyncdqn's actors (no learning) vs a raw single-env gymnasium loop.

asyncdqn runs the `cartpole` scenario with overrides
    learner.replay_ratio=0 actors.num_actors=N eval.every=0 eval.final_episodes=1 total_steps=STEPS
so the run is pure collection: N actor coroutines, one batched K-net forward per tick for all waiting actors,
chunks through the bounded queue into the replay pool. Two rates are read from the run:
  * steady-state: (env_steps_last - env_steps_first) / (wall_s_last - wall_s_first) over the 'train' records
    of metrics.jsonl (written every `log_every` steps), which leaves out start-up (env construction, first
    forward, metrics writer start);
  * end-to-end: summary.json env_steps / train_wall_s (start of `runtime.run` to the end of collection).
The raw loop is `gymnasium.make("CartPole-v1")` stepped with random actions drawn from a numpy Generator
before the clock starts (issue 16), resetting on terminated/truncated: the cost of the env alone, with gymnasium's default wrappers (asyncdqn's
actors get the same wrappers). It is measured two ways, in the same child process as the asyncdqn run:
  * interleaved (the headline): every PROBE_EVERY s a task on the run's own event loop steps the raw loop
    PROBE_STEPS times, blocking the loop (so the actors stand still meanwhile). The steady window's raw
    rate is the bursts' steps over their time; asyncdqn's steady rate leaves the bursts' time out. Both
    sides thus sample the same seconds. This machine's speed swings ~2x in phases of a few seconds (a
    bare loop alone: 35k-75k steps/s from one second to the next), which a raw loop run minutes apart
    cannot cancel;
  * bracketed (kept for comparison with earlier results): STEPS raw steps once before and once after the
    run (their mean), against asyncdqn's steady rate.
Ratio = asyncdqn rate / raw rate (goal >= 0.4 at 64 actors). After the run, two vector envs as wide as the
run has actors are stepped with pre-drawn actions (bracketed, not interleaved): gymnasium's native vectorised
CartPole (`vector_entry_point`) and a SyncVectorEnv; `native_vector_ratio` is issue 16's yardstick (goal there:
>= 0.5 with vectorised actors). The same native env is then stepped once more with only the scenario's K-net
forward and an epsilon-greedy choice added (`policy_vector_loop`): `policy_ceiling`, its rate over the bare
loop's, bounds that ratio for any actor that evaluates the net every step. `actors_per_forward` (summary.json)
is how many actor requests each batched forward answered. The vector arm (`--width`, default all actors in one
vector env) runs the same steps with `actors.envs_per_actor = width`, seed by seed after the coroutine arm; its
ratio to the raw native vector loop is sampled by the same interleaved bursts.

Each (actor count, seed) runs in a fresh subprocess with torch.set_num_threads(1) (`--threads`).
`torch._dynamo` is imported before the run: torch imports it lazily in the first optimizer constructor
(`Learner.__init__`), ~1.5 s on a 2-core EPYC, which would otherwise sit inside train_wall_s and swamp the
end-to-end rate of a short run. So end-to-end = the run's own start-up + collection, imports excluded.

Run:   .venv/bin/python benchmarks/collect.py [--steps 100000] [--seeds 0..2] [--sweep] [--out r.json]
Smoke: .venv/bin/python benchmarks/collect.py --quick [--sweep]   (6400 steps, seed 0)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import finish, fmt, machine_info, median, parse_seeds, print_table, ratio, run_child, write_child_result

SCRIPT = Path(__file__).resolve()
ENV_ID = "CartPole-v1"
GOAL = 0.4           # coroutine actors against one raw env
VECTOR_GOAL = 0.5    # issue 16: vector actors against the raw vector loop of their width
SPEEDUP_GOAL = 3.0   # issue 16: vector actors against the coroutine actors, in the same invocation


def raw_steps(env, actions: list[int]) -> None:
    """The raw loop itself: one env step per action, resetting at episode ends. The actions are drawn before
    the clock starts (issue 16: drawing each with `rng.integers` inside the loop made the raw loop ~1.23x
    slower, which flattered our ratio)."""
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()


def raw_loop(steps: int, seed: int) -> float:
    """Steps per second of a bare gymnasium loop with pre-drawn random actions."""
    import gymnasium as gym
    import numpy as np

    env = gym.make(ENV_ID)
    actions = np.random.default_rng(seed).integers(int(env.action_space.n), size=steps).tolist()
    env.reset(seed=seed)
    t0 = time.perf_counter()
    raw_steps(env, actions)
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate


def vector_loop(steps: int, seed: int, width: int, mode: str) -> float:
    """Env steps per second (all sub-envs together) of a gymnasium vector env of `width` CartPoles stepped
    with pre-drawn random actions: mode "vector_entry_point" is gymnasium's native vectorised CartPole (numpy
    over all sub-envs at once), "sync" a SyncVectorEnv of `width` ordinary envs. Both autoreset."""
    import gymnasium as gym
    import numpy as np

    env = gym.make_vec(ENV_ID, num_envs=width, vectorization_mode=mode)
    batches = max(1, steps // width)
    actions = np.random.default_rng(seed).integers(2, size=(batches, width))
    env.reset(seed=seed)
    t0 = time.perf_counter()
    for a in actions:
        env.step(a)
    rate = batches * width / (time.perf_counter() - t0)
    env.close()
    return rate


def policy_vector_loop(steps: int, seed: int, width: int, cfg) -> float:
    """`vector_loop`'s native vector env with the least a learning agent adds per vector step: the
    scenario's K-net forward (numpy, the actors' own inference path) on all sub-envs' observations and an
    epsilon-greedy choice against pre-drawn uniforms and random actions. No replay, no episode records, no
    event loop: its ratio to the bare native loop bounds any actor design that runs the net every step."""
    import gymnasium as gym
    import numpy as np

    from asyncdqn.nets import make_qnet
    from asyncdqn.nets.mlp import numpy_forward

    env = gym.make_vec(ENV_ID, num_envs=width, vectorization_mode="vector_entry_point")
    k = cfg.learner.num_nets
    net = make_qnet(k, env.single_observation_space.shape, 2, cfg.learner.hidden).reset_parameters(seed)
    forward = numpy_forward(net)
    rows = -(-width // k)
    obs_KMO = np.zeros((k, rows, *env.single_observation_space.shape), dtype=np.float32)
    net_W, row_W = np.arange(width) % k, np.arange(width) // k  # sub-env j on net j mod K (the actors' layout)
    batches = max(1, steps // width)
    rng = np.random.default_rng(seed)
    pick, explore, eps_W = rng.integers(2, size=(batches, width)), rng.random((batches, width)), rng.random(width)
    obs, _ = env.reset(seed=seed)
    t0 = time.perf_counter()
    for i in range(batches):
        obs_KMO[net_W, row_W] = obs
        greedy_W = forward(obs_KMO).argmax(-1)[net_W, row_W]
        obs, *_ = env.step(np.where(explore[i] < eps_W, pick[i], greedy_W))
    rate = batches * width / (time.perf_counter() - t0)
    env.close()
    return rate


def steady_rates(train: list[dict], bursts: list[tuple[float, float, int]],
                 other_bursts: list[tuple[float, float, int]] = ()) -> tuple[float | None, float | None]:
    """(asyncdqn steps/s, raw steps/s) over the steady window, from the first to the last 'train' record.

    `train`: records with `env_steps` and `wall_s` (seconds since the run's start); `bursts`: raw-loop
    bursts as (start, end, steps) on the same clock. A burst counts if it lies inside the window; the
    window's asyncdqn time is its length less those bursts' time, and less `other_bursts`' (another raw
    loop's, which the raw rate leaves out). None where there is nothing to divide."""
    if len(train) < 2:
        return None, None
    lo, hi = train[0]["wall_s"], train[-1]["wall_s"]
    inside = [(a, b, n) for a, b, n in bursts if a >= lo and b <= hi]
    raw_time = sum(b - a for a, b, _ in inside)
    other_time = sum(b - a for a, b, _ in other_bursts if a >= lo and b <= hi)
    ours_time = (hi - lo) - raw_time - other_time
    ours = (train[-1]["env_steps"] - train[0]["env_steps"]) / ours_time if ours_time > 0 else None
    raw = sum(n for *_, n in inside) / raw_time if raw_time > 0 else None
    return ours, raw


class RawProbe:
    """Raw-loop bursts on the event loop: every `every_s` s, `steps` steps of a bare env, then `vector_steps`
    env steps of gymnasium's native vector CartPole of `width` sub-envs, each timed (issue 16's yardstick:
    the raw vector loop of the width the vector actors use, sampled in the same seconds as they run)."""

    def __init__(self, steps: int, every_s: float, seed: int, t0: float, width: int = 0, vector_steps: int = 0):
        import gymnasium as gym
        import numpy as np

        self.env = gym.make(ENV_ID)
        self.env.reset(seed=seed)
        self.rng = np.random.default_rng(seed)
        self.n_actions = int(self.env.action_space.n)
        self.steps, self.every_s, self.t0 = steps, every_s, t0
        self.bursts: list[tuple[float, float, int]] = []  # (start, end, steps), seconds since t0
        self.vector_bursts: list[tuple[float, float, int]] = []
        self.vec = None
        if width and vector_steps:
            self.vec = gym.make_vec(ENV_ID, num_envs=width, vectorization_mode="vector_entry_point")
            self.vec.reset(seed=seed)
            self.width, self.vector_batches = width, max(1, vector_steps // width)

    def burst(self) -> None:
        actions = self.rng.integers(self.n_actions, size=self.steps).tolist()  # drawn before the clock starts
        t0 = time.perf_counter()
        raw_steps(self.env, actions)
        self.bursts.append((t0 - self.t0, time.perf_counter() - self.t0, self.steps))
        if self.vec is not None:
            batches = self.rng.integers(self.n_actions, size=(self.vector_batches, self.width))
            t0 = time.perf_counter()
            for a in batches:
                self.vec.step(a)
            self.vector_bursts.append((t0 - self.t0, time.perf_counter() - self.t0, self.vector_batches * self.width))

    async def run(self) -> None:
        import asyncio

        while self.every_s > 0:
            await asyncio.sleep(self.every_s)
            self.burst()


def child(spec: dict) -> dict:
    import asyncio

    import torch
    import torch._dynamo  # noqa: F401  (see the module docstring)

    from asyncdqn import config, runtime
    from asyncdqn.metrics import read_records

    torch.set_num_threads(spec["threads"])
    width = spec.get("width", 1)
    overrides = ["learner.replay_ratio=0", f"actors.num_actors={spec['actors']}", "eval.every=0",
                 "eval.final_episodes=1", f"total_steps={spec['steps']}", f"torch_threads={spec['threads']}",
                 f"actors.envs_per_actor={width}", *spec["overrides"]]
    cfg = config.load("cartpole", overrides, seed=spec["seed"])
    raw_before = raw_loop(spec["steps"], spec["seed"])
    out_dir = Path(spec["run_dir"])

    async def run_with_probe() -> tuple[dict, RawProbe]:
        # runtime.run starts its clock (the records' wall_s) within a millisecond of this call.
        probe = RawProbe(spec["probe_steps"], spec["probe_every"], spec["seed"] + 2, time.perf_counter(),
                         spec.get("vector_width", 0), spec.get("vector_probe_steps", 0))
        task = asyncio.create_task(probe.run())
        try:
            return await runtime.run(cfg, out_dir), probe
        finally:
            task.cancel()

    summary, probe = asyncio.run(run_with_probe())
    raw_after = raw_loop(spec["steps"], spec["seed"] + 1)
    vwidth = spec.get("vector_width") or spec["actors"]  # the vector actors' width (else the actor count)
    native = vector_loop(spec["steps"], spec["seed"], vwidth, "vector_entry_point")
    sync = vector_loop(spec["steps"], spec["seed"], vwidth, "sync")
    policy = policy_vector_loop(spec["steps"], spec["seed"], vwidth, cfg)
    train = [r for r in read_records(out_dir / "metrics.jsonl") if r["kind"] == "train"]
    # asyncdqn's rate leaves both probes' bursts out; each raw rate is its own bursts'
    steady, raw_il = steady_rates(train, probe.bursts, probe.vector_bursts)
    _, vector_il = steady_rates(train, probe.vector_bursts, probe.bursts)
    raw = (raw_before + raw_after) / 2
    probe_s = sum(b - a for a, b, _ in probe.bursts + probe.vector_bursts if b <= summary["train_wall_s"])
    end_to_end = summary["env_steps"] / (summary["train_wall_s"] - probe_s)
    return {
        "actors": spec["actors"], "width": width, "seed": spec["seed"], "num_nets": cfg.learner.num_nets,
        "env_steps": summary["env_steps"], "train_wall_s": summary["train_wall_s"],
        "steady_steps_per_s": steady, "end_to_end_steps_per_s": end_to_end,
        "raw_steps_per_s": raw, "raw_before_steps_per_s": raw_before, "raw_after_steps_per_s": raw_after,
        "interleaved_raw_steps_per_s": raw_il, "interleaved_ratio": ratio(steady, raw_il),
        "probe_bursts": len(probe.bursts),
        "bracketed_ratio": ratio(steady, raw), "end_to_end_ratio": ratio(end_to_end, raw),
        "native_vector_steps_per_s": native, "sync_vector_steps_per_s": sync, "vector_width": vwidth,
        "interleaved_vector_steps_per_s": vector_il, "interleaved_vector_ratio": ratio(steady, vector_il),
        "vector_probe_bursts": len(probe.vector_bursts),
        "native_vector_ratio": ratio(steady, native), "sync_vector_ratio": ratio(steady, sync),
        "policy_vector_steps_per_s": policy, "policy_ceiling": ratio(policy, native),
        "actors_per_forward": summary["actors_per_forward"], "train_records": len(train),
        "steady_window_steps": [train[0]["env_steps"], train[-1]["env_steps"]] if train else None,
        "updates": summary["updates"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0..2", help="seeds ('0..2', '0,4'); each is one run per actor count")
    p.add_argument("--steps", type=int, default=100_000, help="env steps per run (both asyncdqn and raw loop)")
    p.add_argument("--actors", type=int, default=64, help="actor count of the headline run")
    p.add_argument("--sweep", action="store_true", help="also run 1 and 8 actors (actor counts 1, 8, 64)")
    p.add_argument("--width", type=int, default=0,
                   help="envs per vector actor of the vector arm (default: all --actors in one vector env)")
    p.add_argument("--vector-probe-steps", type=int, default=12_000,
                   help="raw native vector-loop env steps per interleaved burst")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--probe-steps", type=int, default=1500, help="raw-loop steps per interleaved burst")
    p.add_argument("--probe-every", type=float, default=0.2,
                   help="seconds between interleaved raw-loop bursts (0: none, bracketed ratio only)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra asyncdqn config override (repeatable)")
    p.add_argument("--out", help="write the full result to this JSON file")
    p.add_argument("--quick", action="store_true", help="smoke run: 5000 steps, first seed only")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per child run")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--result-file", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        write_child_result(args.result_file, child(json.loads(args.child)))
        return 0

    seeds = parse_seeds(args.seeds)
    if args.quick:
        seeds, args.steps = seeds[:1], 6400
    width = args.width or args.actors
    if args.actors % width or args.steps % width:
        p.error(f"--width {width} must divide --actors {args.actors} and --steps {args.steps}")
    counts = sorted({1, 8, 64, args.actors}) if args.sweep else [args.actors]
    arms = [(n, 1) for n in counts] + [(args.actors, width)]  # coroutine actors, then the vector actors
    machine = machine_info()
    print(f"Collection throughput, CartPole-v1, {args.steps} steps, seeds {seeds}, actors {counts}, vector actors "
          f"of {width} envs{'  [QUICK smoke run on whatever load the machine has]' if args.quick else ''}")
    print(f"machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, torch {machine['torch']}, "
          f"load {machine['loadavg_at_start']}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="asyncdqn-collect-") as tmp:
        for seed in seeds:  # the arms interleave seed by seed: the machine's speed swings fall on both
            for n, w in arms:
                spec = {"actors": n, "width": w, "seed": seed, "steps": args.steps, "threads": args.threads,
                        "probe_steps": args.probe_steps, "probe_every": args.probe_every,
                        "vector_width": width, "vector_probe_steps": args.vector_probe_steps,
                        "overrides": args.overrides, "run_dir": str(Path(tmp) / f"a{n}_w{w}_s{seed}")}
                r = run_child(SCRIPT, spec, args.timeout)
                rows.append(r)
                print(f"  actors {n:3d} width {w:3d} seed {seed}: steady {fmt(r['steady_steps_per_s'], '.0f')}/s, "
                      f"raw interleaved {fmt(r['interleaved_raw_steps_per_s'], '.0f')}/s, raw vector interleaved "
                      f"{fmt(r['interleaved_vector_steps_per_s'], '.0f')}/s", flush=True)

    columns = [("steady_steps_per_s", ".0f"), ("interleaved_raw_steps_per_s", ".0f"), ("interleaved_ratio", ".3f"),
               ("interleaved_vector_steps_per_s", ".0f"), ("interleaved_vector_ratio", ".3f"),
               ("raw_steps_per_s", ".0f"), ("bracketed_ratio", ".3f"), ("end_to_end_ratio", ".3f"),
               ("native_vector_steps_per_s", ".0f"), ("native_vector_ratio", ".3f"),
               ("sync_vector_steps_per_s", ".0f"), ("sync_vector_ratio", ".3f"),
               ("policy_vector_steps_per_s", ".0f"), ("policy_ceiling", ".3f"), ("actors_per_forward", ".2f")]
    print_table("Per run (steps/s; raw_steps_per_s is the bracketed raw loop; the vector loops are "
                f"{width} wide)", [("actors", ""), ("width", ""), ("seed", ""), *columns], rows)
    by_arm = [{"actors": n, "width": w, "runs": len(rs), **{key: median(r[key] for r in rs) for key, _ in columns}}
              for n, w in arms for rs in [[r for r in rows if (r["actors"], r["width"]) == (n, w)]]]
    print_table(f"Medians over seeds (ratio = asyncdqn / raw loop)",
                [("actors", ""), ("width", ""), ("runs", ""), *columns], by_arm)
    coroutines = next(b for b in by_arm if (b["actors"], b["width"]) == (args.actors, 1))
    vector = by_arm[-1]
    speedups = [v["steady_steps_per_s"] / c["steady_steps_per_s"] for seed in seeds
                for c in rows if (c["actors"], c["width"], c["seed"]) == (args.actors, 1, seed)
                for v in rows if (v["actors"], v["width"], v["seed"]) == (args.actors, width, seed)
                if v["steady_steps_per_s"] and c["steady_steps_per_s"]]
    speedup = median(speedups)
    meets = coroutines["interleaved_ratio"] is not None and coroutines["interleaved_ratio"] >= GOAL
    meets_vector = vector["interleaved_vector_ratio"] is not None and vector["interleaved_vector_ratio"] >= VECTOR_GOAL
    meets_speedup = speedup is not None and speedup >= SPEEDUP_GOAL
    print(f"\n{args.actors} coroutine actors: interleaved ratio {fmt(coroutines['interleaved_ratio'], '.3f')} against "
          f"one raw env (goal >= {GOAL}: {'met' if meets else 'NOT met'})")
    print(f"{args.actors} envs as vector actors of {width}: {fmt(vector['interleaved_vector_ratio'], '.3f')} x the raw "
          f"native vector loop of {width} (goal >= {VECTOR_GOAL}: {'met' if meets_vector else 'NOT met'}); "
          f"{fmt(speedup, '.2f')} x the coroutine actors, median over seeds of the per-seed ratio "
          f"(goal >= {SPEEDUP_GOAL}: {'met' if meets_speedup else 'NOT met'})")
    print(f"the native vector loop of {width} with only the nets' forward and epsilon-greedy added runs at "
          f"{fmt(vector['policy_ceiling'], '.3f')} x the bare loop (bracketed): the ceiling for any actor that runs "
          f"the net every step")
    headline = {"actors": args.actors, "width": width, "steps": args.steps,
                **{key: coroutines[key] for key, _ in columns},
                "vector": {key: vector[key] for key, _ in columns}, "vector_speedup": speedup,
                "vector_speedups": speedups, "goal": GOAL, "goal_met_interleaved": meets,
                "vector_goal": VECTOR_GOAL, "vector_goal_met": meets_vector, "speedup_goal": SPEEDUP_GOAL,
                "speedup_goal_met": meets_speedup, "by_arm": by_arm}
    result = {"benchmark": "collect", "quick": args.quick, "machine": machine,
              "protocol": {"steps": args.steps, "seeds": seeds, "actor_counts": counts, "width": width,
                           "threads": args.threads, "probe_steps": args.probe_steps,
                           "vector_probe_steps": args.vector_probe_steps, "probe_every": args.probe_every,
                           "overrides": args.overrides}, "runs": rows, **headline}
    finish(result, headline, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
