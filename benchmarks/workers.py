"""Env-step throughput through `EnvWorkerPool`: in-process vs 1 worker vs 2 workers.

Setup: E envs (default 8), one actor-like coroutine each, as in `asyncdqn.collect.actor`: an actor waits for
its action from a batcher, which answers every waiting actor with one simulated inference per tick (a
fixed ~INFER us of numpy on the event-loop thread, standing in for the batched forward), then steps its
env and resets it at episode ends. In-process, `env.step` runs on the event loop (today's actors); with
workers, the actor awaits `pool.step(i, a, autoreset=True)` (fork-server workers, envs round robin).
Envs:
  busy      a fake env burning ~BUSY us of CPU per step in numpy elementwise ops (one thread, no BLAS),
            calibrated once in this process so it costs the same in every mode; 200-step episodes;
  cartpole  gymnasium.make("CartPole-v1"), ~10 us a step: the IPC round trip dominates.
Method: per (env, mode), start the pool, wait for every env's first reset (worker start-up excluded),
run WARM s, then count the steps completed in the next SECONDS s. Rounds interleave the modes so load
drift hits them alike; each of REPEATS rounds gives one figure per mode. Reported: median and min..max
per mode, and the ratio 2 workers / 1 worker per round (median, min..max). Per run it also prints the
CPU time our processes (parent + workers) spent per step and the cores they kept busy: when they keep
well under the cores they could use, the limit is hand-off latency or other processes' load, not work.
The load average is printed: other processes on a 2-core machine move these figures a lot.

While learning (`--train SCENARIO`): real training runs of a scenario (e.g. minatar-breakout, which needs
the games extra) with `actors.env_workers` = 1 and 2 (and 0, envs on the event loop), rounds interleaved,
each for --steps env steps with the scenario's learner (replay ratio, nets) and no periodic evaluation.
Reported: steady env steps/s from metrics.jsonl's 'train' records (start-up and warm-up excluded: the
first record is taken after learning starts), and the ratio 2 workers / 1 worker per round. Over the same
window, the cores kept busy by the event loop (main thread), by the process's other threads (the learner,
evaluation and file writes) and by the worker processes, from /proc sampled every 0.5 s: on a 2-core
machine they show whether the learner leaves the workers a second core to use.

Run:   .venv/bin/python benchmarks/workers.py [--envs 8] [--seconds 3] [--repeats 3] [--out r.json]
       .venv/bin/python benchmarks/workers.py --train minatar-breakout [--steps 30000] [--repeats 2]
Smoke: .venv/bin/python benchmarks/workers.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from _common import finish, machine_info, median, print_table

from asyncdqn.collect.workers import EnvWorkerPool

MODES = ("in-process", "1 worker", "2 workers")


def burn(buf: np.ndarray, reps: int) -> None:
    for _ in range(reps):
        np.sin(buf, out=buf)


def calibrate(target_us: float) -> int:
    """Repetitions of `burn`'s inner op that take about target_us on an idle core: the best of 30
    short timings, so that other processes' load does not shrink the env."""
    buf = np.linspace(0, 1, 1000)
    per = min(_timed(buf, 100) for _ in range(30)) / 100
    return max(1, round(target_us * 1e-6 / per))


def _timed(buf: np.ndarray, reps: int) -> float:
    t0 = time.perf_counter()
    burn(buf, reps)
    return time.perf_counter() - t0


class BusyEnv(gym.Env):
    """obs float32[16]; each step burns `reps` numpy ops; episodes of 200 steps."""

    def __init__(self, reps: int):
        self.observation_space = gym.spaces.Box(-1, 1, (16,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.reps, self.t = reps, 0
        self.buf = np.linspace(0, 1, 1000)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(16, np.float32), {}

    def step(self, action):
        burn(self.buf, self.reps)
        self.t += 1
        return self.buf[:16].astype(np.float32), 1.0, self.t >= 200, False, {}


def _timed_step(env: gym.Env) -> float:
    t0 = time.perf_counter()
    env.step(0)
    return time.perf_counter() - t0


def stat_cpu_s(path: str) -> float:
    """CPU seconds (user + system) of the process or thread whose /proc stat file this is."""
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def cpu_parts() -> dict:
    """CPU seconds so far of this process's main thread (the event loop: actors, inference, replay writes),
    of its other threads (the learner, evaluation and file writes run in asyncio's thread pool), and of its
    live descendant processes (env workers and the fork server that starts them)."""
    me = os.getpid()
    loop = stat_cpu_s(f"/proc/{me}/task/{me}/stat")
    threads = time.process_time() - loop
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:  # gone meanwhile
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    descendants, todo = 0.0, list(children.get(me, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            descendants += stat_cpu_s(f"/proc/{pid}/stat")
        except OSError:
            pass
    return {"loop": loop, "threads": threads, "workers": descendants}


class CpuSampler:
    """Samples `cpu_parts()` every `every_s` s in a thread, on the perf_counter clock less `t0`."""

    def __init__(self, every_s: float, t0: float):
        import threading

        self.every_s, self.t0, self.samples = every_s, t0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append((time.perf_counter() - self.t0, cpu_parts()))

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def cores_between(self, lo: float, hi: float) -> dict | None:
        """Cores each part kept busy from the first sample at or after `lo` to the last at or before `hi`."""
        inside = [(t, parts) for t, parts in self.samples if lo <= t <= hi]
        if len(inside) < 2:
            return None
        (ta, a), (tb, b) = inside[0], inside[-1]
        return {key: (b[key] - a[key]) / (tb - ta) for key in a}


def make_cartpole() -> gym.Env:
    return gym.make("CartPole-v1")


class Batcher:
    """One simulated forward per tick for all waiting actors (as `asyncdqn.collect.actor.InferenceBatcher`)."""

    def __init__(self, reps: int):
        self.reps, self.buf = reps, np.linspace(0, 1, 1000)
        self.waiting: list[asyncio.Future] = []
        self.wake = asyncio.Event()
        self.forwards = 0

    async def act(self) -> int:
        fut = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        self.wake.set()
        return await fut

    async def serve(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self.waiting = self.waiting, []
            burn(self.buf, self.reps)
            self.forwards += 1
            for i, fut in enumerate(batch):
                fut.set_result(i % 2)


async def measure(mode: str, env_fn, obs_shape: tuple, envs: int, warm: float, seconds: float,
                  infer_reps: int) -> dict:
    batcher = Batcher(infer_reps)
    count = [0]
    stop = asyncio.Event()
    ready = [0]  # actors past their first reset: the warm-up starts when all are (worker start-up excluded)

    async def actor_inprocess(i: int) -> None:
        env = env_fn()
        env.reset(seed=i)
        ready[0] += 1
        while not stop.is_set():
            _, _, term, trunc, _ = env.step(await batcher.act())
            count[0] += 1
            if term or trunc:
                env.reset()

    async def actor_pool(pool: EnvWorkerPool, i: int) -> None:
        await pool.reset(i, seed=i)
        ready[0] += 1
        while not stop.is_set():
            await pool.step(i, await batcher.act(), autoreset=True)  # resets at episode ends, same trip
            count[0] += 1

    async def drive(make_actor) -> dict:
        server = asyncio.ensure_future(batcher.serve())
        actors = [asyncio.ensure_future(make_actor(i)) for i in range(envs)]
        while ready[0] < envs:
            await asyncio.sleep(0.01)
        await asyncio.sleep(warm)
        c0, f0, t0, u0 = count[0], batcher.forwards, time.perf_counter(), sum(cpu_parts().values())
        await asyncio.sleep(seconds)
        c1, f1, t1, u1 = count[0], batcher.forwards, time.perf_counter(), sum(cpu_parts().values())
        stop.set()
        await asyncio.gather(*actors)
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        return {"steps_per_s": (c1 - c0) / (t1 - t0), "actors_per_forward": (c1 - c0) / max(1, f1 - f0),
                "cpu_us_per_step": (u1 - u0) / max(1, c1 - c0) * 1e6, "cores_used": (u1 - u0) / (t1 - t0)}

    if mode == "in-process":
        return await drive(actor_inprocess)
    workers = 1 if mode == "1 worker" else 2
    async with EnvWorkerPool(env_fn, envs, workers, obs_shape, np.float32, "forkserver") as pool:
        return await drive(functools.partial(actor_pool, pool))


TRAIN_MODES = {"1 worker": 1, "2 workers": 2, "in-process": 0}


def train_rate(scenario: str, workers: int, steps: int, seed: int) -> dict:
    """Steady env steps/s of one training run with `workers` env worker processes."""
    import tempfile

    from asyncdqn import config, runtime
    from asyncdqn.metrics import read_records

    cfg = config.load(scenario, [f"actors.env_workers={workers}", f"total_steps={steps}", "eval.every=0",
                                 "eval.final_episodes=1", "log_every=1000", "eval.stop_at=inf"], seed=seed)
    with tempfile.TemporaryDirectory(prefix="asyncdqn-workers-") as tmp:
        # runtime.run starts its clock (the records' wall_s) within a millisecond of this call.
        with CpuSampler(0.5, time.perf_counter()) as sampler:
            summary = asyncio.run(runtime.run(cfg, tmp))
        recs = read_records(Path(tmp) / "metrics.jsonl")
    train = [r for r in recs if r["kind"] == "train" and r["env_steps"] > cfg.learner.learning_starts]
    if len(train) < 2:
        raise SystemExit(f"workers.py: --steps {steps} leaves no steady window after learning starts at step "
                         f"{cfg.learner.learning_starts}; use --steps {cfg.learner.learning_starts + 3000} or more")
    rate = (train[-1]["env_steps"] - train[0]["env_steps"]) / (train[-1]["wall_s"] - train[0]["wall_s"])
    return {"steps_per_s": rate, "updates": summary["updates"], "train_wall_s": summary["train_wall_s"],
            "window": [train[0]["env_steps"], train[-1]["env_steps"]],
            "cores": sampler.cores_between(train[0]["wall_s"], train[-1]["wall_s"])}


def main_train(args) -> int:
    machine = machine_info()
    print(f"Env workers while learning: {args.train}, {args.steps} steps per run, {args.repeats} rounds")
    print(f"machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, "
          f"load {machine['loadavg_at_start']}")
    runs = []
    for rnd in range(args.repeats):
        for mode, workers in TRAIN_MODES.items():
            r = train_rate(args.train, workers, args.steps, seed=rnd)
            runs.append({"mode": mode, "round": rnd, **r})
            cores = r["cores"] or {}
            print(f"  round {rnd} {mode:10s}: {r['steps_per_s']:7.0f} steps/s while learning "
                  f"({r['updates']} updates); cores busy: event loop {cores.get('loop', float('nan')):.2f}, "
                  f"learner and other threads {cores.get('threads', float('nan')):.2f}, "
                  f"worker processes {cores.get('workers', float('nan')):.2f}", flush=True)
    rows = []
    by_mode = {m: [r["steps_per_s"] for r in runs if r["mode"] == m] for m in TRAIN_MODES}
    ratios = [b / a for a, b in zip(by_mode["1 worker"], by_mode["2 workers"])]
    for m, xs in by_mode.items():
        rows.append({"mode": m, "median": median(xs), "min": min(xs), "max": max(xs)})
    rows.append({"mode": "2w / 1w", "median": median(ratios), "min": min(ratios), "max": max(ratios)})
    print_table(f"{args.train}: env steps/s while learning (ratio row: 2 workers / 1 worker, per round)",
                [("mode", ""), ("median", ".2f"), ("min", ".2f"), ("max", ".2f")], rows)
    finish({"benchmark": "workers-train", "quick": args.quick, "scenario": args.train, "args": vars(args), "runs": runs,
            "machine": machine}, {"train_2w_over_1w": median(ratios)}, args.out)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", type=int, default=8, help="env instances (= actors), split over the workers")
    p.add_argument("--seconds", type=float, default=3.0, help="measured window per (env, mode, round)")
    p.add_argument("--warm", type=float, default=1.0, help="warm-up before each window")
    p.add_argument("--repeats", type=int, default=3, help="rounds; each runs every mode once")
    p.add_argument("--busy-us", type=float, default=200.0, help="CPU per step of the busy env")
    p.add_argument("--infer-us", type=float, default=200.0, help="CPU of one simulated inference batch")
    p.add_argument("--quick", action="store_true", help="smoke run: 0.5 s windows, one round")
    p.add_argument("--out", help="write the full result to this JSON file")
    p.add_argument("--train", metavar="SCENARIO", help="measure real training runs of SCENARIO instead")
    p.add_argument("--steps", type=int, default=30_000, help="env steps per training run (--train)")
    args = p.parse_args()
    if args.train:
        return main_train(args)
    if args.quick:
        args.seconds, args.warm, args.repeats = 0.5, 0.5, 1

    busy_reps, infer_reps = calibrate(args.busy_us), calibrate(args.infer_us)
    probe = BusyEnv(busy_reps)
    busy_step_us = min(_timed_step(probe) for _ in range(20)) * 1e6
    kinds = {"busy": (functools.partial(BusyEnv, busy_reps), (16,)), "cartpole": (make_cartpole, (4,))}
    machine = machine_info()
    print(f"Env workers: {args.envs} envs, busy env {busy_step_us:.0f} us/step ({busy_reps} ops), inference "
          f"{args.infer_us:.0f} us/tick, {args.seconds} s windows, {args.repeats} rounds"
          f"{'  [QUICK smoke run]' if args.quick else ''}")
    print(f"machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, "
          f"load {machine['loadavg_at_start']}")

    runs = []
    for kind, (env_fn, obs_shape) in kinds.items():
        for rnd in range(args.repeats):
            for mode in MODES:
                r = asyncio.run(measure(mode, env_fn, obs_shape, args.envs, args.warm, args.seconds, infer_reps))
                runs.append({"env": kind, "mode": mode, "round": rnd, **r})
                print(f"  {kind:8s} round {rnd} {mode:10s}: {r['steps_per_s']:8.0f} steps/s, "
                      f"{r['actors_per_forward']:.1f} actors/forward, {r['cpu_us_per_step']:.0f} us CPU/step "
                      f"(ours, all processes), {r['cores_used']:.2f} cores", flush=True)

    rows, headline = [], {}
    for kind in kinds:
        by_mode = {m: [r["steps_per_s"] for r in runs if r["env"] == kind and r["mode"] == m] for m in MODES}
        ratios = [b / a for a, b in zip(by_mode["1 worker"], by_mode["2 workers"])]
        for m, xs in by_mode.items():
            rows.append({"env": kind, "mode": m, "median": median(xs), "min": min(xs), "max": max(xs)})
        rows.append({"env": kind, "mode": "2w / 1w", "median": median(ratios), "min": min(ratios), "max": max(ratios)})
        headline[f"{kind}_2w_over_1w"] = median(ratios)
        headline[f"{kind}_2w_over_inprocess"] = median(by_mode["2 workers"]) / median(by_mode["in-process"])
    print_table("env steps/s (ratio rows: 2 workers / 1 worker, per round)",
                [("env", ""), ("mode", ""), ("median", ".2f"), ("min", ".2f"), ("max", ".2f")], rows)
    finish({"benchmark": "workers", "quick": args.quick, "args": vars(args), "busy_reps": busy_reps,
            "busy_step_us": busy_step_us,
            "infer_reps": infer_reps, "runs": runs, "machine": machine}, headline, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
