"""Where a CartPole training run's wall time goes: the learner thread's share, in wall and CPU seconds.

Runs `asyncdqn.runtime.run` on the `cartpole` scenario (plus `--set` overrides) for each seed, in this process,
with `Learner.run` wrapped to add up its wall time (perf_counter) and its thread's CPU time (thread_time).
Wall >> CPU inside `Learner.run` would mean the learner waits for the GIL (the event loop's Python competing);
a learner share near 1 means the run goes as fast as its updates. Prints ms per update both ways and the
share of the run's training wall time spent in `Learner.run`.

Run: .venv/bin/python benchmarks/learner_share.py [--seeds 0..4] [--set KEY=VALUE] [--out r.json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time

from _common import finish, machine_info, median, parse_seeds, print_table


def timed_run(seed: int, overrides: list[str]) -> dict:
    import torch

    from asyncdqn import config, runtime
    from asyncdqn.learner import Learner

    torch.set_num_threads(1)
    acc = {"wall_s": 0.0, "cpu_s": 0.0, "updates": 0}
    original = Learner.run

    def run(self, batches, scorer):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return original(self, batches, scorer)
        finally:
            acc["wall_s"] += time.perf_counter() - wall
            acc["cpu_s"] += time.thread_time() - cpu
            acc["updates"] += len(batches)

    Learner.run = run
    try:
        cfg = config.load("cartpole", overrides, seed=seed)
        with tempfile.TemporaryDirectory(prefix="asyncdqn-share-") as out:
            summary = asyncio.run(runtime.run(cfg, out))
    finally:
        Learner.run = original
    n = max(1, acc["updates"])
    return {"seed": seed, "train_wall_s": summary["train_wall_s"], "env_steps": summary["env_steps"],
            "updates": summary["updates"], "learner_wall_s": acc["wall_s"], "learner_cpu_s": acc["cpu_s"],
            "ms_per_update_wall": acc["wall_s"] / n * 1e3, "ms_per_update_cpu": acc["cpu_s"] / n * 1e3,
            "learner_share": acc["wall_s"] / summary["train_wall_s"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0..4")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", help="write the full result to this JSON file")
    args = p.parse_args()
    machine = machine_info()
    rows = [timed_run(s, args.overrides) for s in parse_seeds(args.seeds)]
    columns = [("seed", ""), ("train_wall_s", ".2f"), ("updates", ""), ("learner_wall_s", ".2f"),
               ("ms_per_update_wall", ".3f"), ("ms_per_update_cpu", ".3f"), ("learner_share", ".2f")]
    print_table("cartpole scenario: time inside Learner.run", columns, rows)
    headline = {key: median(r[key] for r in rows) for key in
                ("train_wall_s", "ms_per_update_wall", "ms_per_update_cpu", "learner_share")}
    finish({"benchmark": "learner_share", "quick": False, "machine": machine, "overrides": args.overrides, "runs": rows, **headline},
           headline, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
