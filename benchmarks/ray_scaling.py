"""Ray backend scaling: a local Ray cluster with 1 and 2 worker processes, and the figures of the scaling
model in docs/scaling.md.

Three parts, each child run in a fresh interpreter:
  1. collect: the cartpole scenario with `learner.replay_ratio=0` (collection only) and `backend.kind=ray`,
     H = 1 and 2 hosts (Ray actor processes) of `--actors-per-host` actors each, on a local Ray cluster
     built with `ray.cluster_utils.Cluster`: a head node with no CPUs and H worker nodes of 1 CPU, joined
     through `backend.ray_address` (the `--ray-address` path), so each host runs on its own node process
     group. Steady env steps/s from the 'train' records of metrics.jsonl (start-up left out), per host and
     per actor. The local backend runs the same actor count once as a reference. MinAtar Breakout and Atari
     Pong collect with 1 host too (`--game-steps`), for their env steps/s per actor.
  2. train: the cartpole scenario as shipped (replay ratio 0.125, weights broadcast after every learner call)
     with H = 1 and 2 hosts for `--train-steps` steps, no early stop: learner updates/s, policy lag (updates),
     payload bytes per transition coming back (`chunk_bytes_per_step`) and bytes per weight broadcast.
  3. learner: updates/s of `Learner.run` alone for the cartpole, minatar-breakout and atari-pong scenarios'
     learner settings on random batches (the bound a learner process puts on the whole run), plus the
     bytes of one weight broadcast and of one transition row for each (from the net and observation sizes).

Run:   .venv/bin/python benchmarks/ray_scaling.py [--steps 40000] [--train-steps 30000] [--game-steps 4000]
                                                [--out docs/results/ray_scaling.json]
Smoke: .venv/bin/python benchmarks/ray_scaling.py --quick
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import finish, machine_info, print_table, run_child, write_child_result

SCRIPT = Path(__file__).resolve()
SCENARIOS = ("cartpole", "minatar-breakout", "atari-pong")


def steady_rate(metrics: Path, key: str = "env_steps") -> float | None:
    """`key` (env steps or updates) per second between the first and last 'train' records (start-up left out)."""
    train = [json.loads(line) for line in metrics.read_text().splitlines() if line]
    train = [r for r in train if r["kind"] == "train"]
    if len(train) < 2 or train[-1]["wall_s"] <= train[0]["wall_s"]:
        return None
    return (train[-1][key] - train[0][key]) / (train[-1]["wall_s"] - train[0]["wall_s"])


def lag(metrics: Path) -> float | None:
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line]
    vals = [r["policy_lag_updates_mean"] for r in rows if r["kind"] == "train" and r.get("policy_lag_updates_mean")
            is not None]
    return float(np.mean(vals)) if vals else None


def child_run(spec: dict) -> dict:
    """One asyncdqn run (collect or train), on a local Ray cluster of spec['hosts'] worker nodes."""
    import asyncio

    import torch
    import torch._dynamo  # noqa: F401  (imported lazily by the first Adam otherwise, inside the timed run)

    from asyncdqn import config, runtime

    torch.set_num_threads(1)
    cluster = None
    overrides = list(spec["overrides"])
    if spec["backend"] == "ray":
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                                "object_store_memory": 100 * 2**20})
        for _ in range(spec["hosts"]):
            cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20)
        cluster.wait_for_nodes()
        overrides += ["backend.kind=ray", f"backend.ray_address=\"{cluster.address}\"",
                      f"backend.hosts={spec['hosts']}"]
    try:
        cfg = config.load(spec["scenario"], overrides, seed=spec["seed"])
        out = Path(spec["run_dir"])
        t0 = time.perf_counter()
        summary = asyncio.run(runtime.run(cfg, out))
        wall = time.perf_counter() - t0
    finally:
        if cluster is not None:
            cluster.shutdown()
    metrics = out / "metrics.jsonl"
    return {**{k: spec[k] for k in ("part", "scenario", "backend", "hosts", "actors", "seed")},
            "env_steps": summary["env_steps"], "updates": summary["updates"], "train_wall_s": summary["train_wall_s"],
            "wall_s": wall, "steady_steps_per_s": steady_rate(metrics),
            "steady_updates_per_s": steady_rate(metrics, "updates"),
            "policy_lag_updates_mean": lag(metrics),
            **{k: summary.get(k) for k in ("chunk_bytes_per_step", "weights_bytes", "weight_broadcasts",
                                            "host_restarts", "actors_per_forward")}}


def child_learner(spec: dict) -> dict:
    """Updates/s of one scenario's learner on random batches, and the bytes of its broadcasts and rows."""
    import torch
    import torch._dynamo  # noqa: F401

    from asyncdqn import config
    from asyncdqn.envs.make import env_kwargs, make_env, spec_of
    from asyncdqn.nets import input_scale_for
    from asyncdqn.learner import Learner
    from asyncdqn.transitions import Batch

    torch.set_num_threads(1)
    cfg = config.load(spec["scenario"])
    env = make_env(cfg.env, env_kwargs(cfg, False))
    es = spec_of(env)
    learner = Learner(cfg.learner, cfg.merge, es.obs_shape, es.n_actions, 0,
                      input_scale_for(es.obs_dtype, env.observation_space.high))
    env.close()
    rng = np.random.default_rng(0)
    k, b = cfg.learner.num_nets, cfg.replay.batch_size

    def obs():
        if np.issubdtype(es.obs_dtype, np.integer) or es.obs_dtype == np.bool_:
            return rng.integers(0, 2, (k, b, *es.obs_shape)).astype(es.obs_dtype)
        return rng.standard_normal((k, b, *es.obs_shape)).astype(es.obs_dtype)

    batches = [Batch(obs(), rng.integers(0, es.n_actions, (k, b)), np.ones((k, b), np.float32),
                     np.full((k, b), 0.99, np.float32), obs(), np.ones((k, b), np.float32),
                     np.zeros((k, b), np.int64), np.zeros((k, b), np.int64)) for _ in range(4)]
    scores = np.zeros(k)
    learner.run(batches[:2], scores)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < spec["seconds"] or n < 3:
        learner.run([batches[n % 4]], scores)
        n += 1
    seconds = time.perf_counter() - t0
    obs_bytes = int(np.prod(es.obs_shape)) * np.dtype(es.obs_dtype).itemsize
    return {"scenario": spec["scenario"], "num_nets": k, "batch_per_net": b, "updates": n,
            "updates_per_s": n / seconds, "replay_ratio": cfg.learner.replay_ratio,
            "weights_bytes": sum(p.numel() * p.element_size() for p in learner.online.parameters()),
            "obs_bytes": obs_bytes, "row_bytes": obs_bytes + 8 + 4 + 4 + 2 + 1,
            "chunk_rows": cfg.actors.chunk_rows, "n_step": cfg.actors.n_step}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40_000, help="env steps of each collection-only run")
    p.add_argument("--train-steps", type=int, default=30_000, help="env steps of each training run")
    p.add_argument("--game-steps", type=int, default=4000, help="env steps of the MinAtar collection run (Atari: half)")
    p.add_argument("--actors-per-host", type=int, default=8)
    p.add_argument("--learner-seconds", type=float, default=10.0, help="timing window per learner")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the full result to this JSON file")
    p.add_argument("--quick", action="store_true", help="smoke run: 6000/6000 steps, 2 s learner windows")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--result-file", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        spec = json.loads(args.child)
        write_child_result(args.result_file, (child_learner if spec["part"] == "learner" else child_run)(spec))
        return 0
    if args.quick:
        args.steps, args.train_steps, args.game_steps, args.learner_seconds = 6000, 6000, 1000, 2.0
    machine = machine_info()
    print(f"Ray scaling, seed {args.seed}, {args.actors_per_host} actors per host; machine: {machine['cpu_model']}, "
          f"{machine['usable_cores']} usable cores, load {machine['loadavg_at_start']}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="asyncdqn-ray-") as tmp:
        common = {"seed": args.seed, "actors": 0}
        runs = [("collect", "cartpole", "local", 1, args.steps), ("collect", "cartpole", "ray", 1, args.steps),
                ("collect", "cartpole", "ray", 2, args.steps), ("train", "cartpole", "ray", 1, args.train_steps),
                ("train", "cartpole", "ray", 2, args.train_steps),
                ("collect", "minatar-breakout", "ray", 1, args.game_steps),
                ("collect", "atari-pong", "ray", 1, args.game_steps // 2)]
        for part, scenario, backend, hosts, steps in runs:
            actors = args.actors_per_host * hosts
            overrides = [f"actors.num_actors={actors}", "eval.every=0", "eval.final_episodes=1",
                         f"total_steps={steps}", f"log_every={max(250, steps // 20)}"]
            if part == "collect":
                overrides.append("learner.replay_ratio=0")
            spec = {**common, "part": part, "scenario": scenario, "backend": backend, "hosts": hosts,
                    "actors": actors, "overrides": overrides,
                    "run_dir": str(Path(tmp) / f"{part}-{scenario}-{backend}-{hosts}")}
            r = run_child(SCRIPT, spec, args.timeout)
            r["steady_steps_per_actor"] = (r["steady_steps_per_s"] or 0) / actors
            rows.append(r)
            print(f"  {part:7s} {scenario:16s} {backend:5s} hosts {hosts}: steady "
                  f"{r['steady_steps_per_s'] or float('nan'):.0f} steps/s, "
                  f"{r['steady_updates_per_s'] or 0:.1f} updates/s", flush=True)
        learners = [run_child(SCRIPT, {"part": "learner", "scenario": s, "seconds": args.learner_seconds},
                              args.timeout) for s in SCENARIOS]
    print_table("Runs", [("part", ""), ("scenario", ""), ("backend", ""), ("hosts", ""), ("actors", ""),
                         ("steady_steps_per_s", ".0f"), ("steady_steps_per_actor", ".0f"),
                         ("steady_updates_per_s", ".1f"),
                         ("policy_lag_updates_mean", ".1f"), ("chunk_bytes_per_step", ".1f"),
                         ("weights_bytes", ""), ("train_wall_s", ".1f")], rows)
    print_table("Learner alone", [("scenario", ""), ("num_nets", ""), ("batch_per_net", ""), ("updates_per_s", ".1f"),
                                  ("replay_ratio", ".3f"), ("weights_bytes", ""), ("row_bytes", "")], learners)
    result = {"benchmark": "ray_scaling", "quick": args.quick, "machine": machine,
              "args": {k: v for k, v in vars(args).items() if k not in ("child", "result_file")},
              "runs": rows, "learners": learners}
    collect = {r["hosts"]: r["steady_steps_per_s"] for r in rows
               if r["part"] == "collect" and r["backend"] == "ray" and r["scenario"] == "cartpole"}
    finish(result, {"collect_steps_per_s_by_hosts": collect,
                    "learner_updates_per_s": {lr["scenario"]: round(lr["updates_per_s"], 1) for lr in learners}},
           args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
