"""Soak: a long CartPole training, with its resident memory (RSS) sampled over time. Not run in CI.

What it shows: that nothing grows without bound in a long run (replay, queue, metrics writer, checkpoints,
evaluations, merges). The run is the `cartpole` scenario with overrides
    total_steps=10**9 eval.stop_at=inf eval.every=50000 checkpoint_every=2000
stopped through runtime.run's `stop` event after --minutes. A thread reads VmRSS from /proc/self/status every
--every seconds. The replay pool (100k rows) fills within the first ~10 s, so from then on RSS should be flat;
the table reports RSS at the first sample after the pool filled, the last sample, and the maximum, plus the
least-squares slope of RSS over the second half of the run (MiB per hour).

Run:   .venv/bin/python benchmarks/soak.py [--minutes 30] [--every 10] [--out docs/results/soak.json]
Smoke: .venv/bin/python benchmarks/soak.py --minutes 0.5 --every 1
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from _common import finish, machine_info, print_table


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--every", type=float, default=10.0, help="seconds between RSS samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch._dynamo  # noqa: F401  imported lazily by the first optimizer; keep it out of the samples

    from asyncdqn import config, runtime

    cfg = config.load("cartpole", ["total_steps=1000000000", "eval.stop_at=inf", "eval.every=50000",
                                   "checkpoint_every=2000"], seed=args.seed)
    samples: list[dict] = []
    latest = {"env_steps": 0, "updates": 0}
    done = threading.Event()
    t0 = time.perf_counter()

    def sample() -> None:
        while not done.is_set():
            samples.append({"t_s": round(time.perf_counter() - t0, 1), "rss_mib": round(rss_mib(), 1), **latest})
            done.wait(args.every)

    def progress(p: runtime.Progress) -> None:
        latest.update(env_steps=p.env_steps, updates=p.updates)

    async def soak(out: Path) -> dict:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(args.minutes * 60, stop.set)
        return await runtime.run(cfg, out, progress=progress, stop=stop)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory() as tmp:
        summary = asyncio.run(soak(Path(tmp)))
        metrics_mib = (Path(tmp) / "metrics.jsonl").stat().st_size / 2**20
    done.set()
    sampler.join()
    samples.append({"t_s": round(time.perf_counter() - t0, 1), "rss_mib": round(rss_mib(), 1), **latest,
                    "after_run": True})  # after the final eval and the plot (matplotlib's import shows here)

    during = [s for s in samples if not s.get("after_run")]
    filled = next((s for s in during if s["env_steps"] >= cfg.replay.capacity), during[0])
    half = [s for s in during if s["t_s"] >= during[-1]["t_s"] / 2]
    slope = float(np.polyfit([s["t_s"] / 3600 for s in half], [s["rss_mib"] for s in half], 1)[0]) \
        if len(half) >= 3 else float("nan")
    headline = {
        "minutes": args.minutes, "seed": args.seed, "env_steps": summary["env_steps"], "updates": summary["updates"],
        "rss_mib_after_replay_filled": filled["rss_mib"], "rss_mib_last_during_run": during[-1]["rss_mib"],
        "rss_mib_max_during_run": max(s["rss_mib"] for s in during), "rss_mib_after_run": samples[-1]["rss_mib"], "rss_slope_mib_per_hour_second_half": round(slope, 2),
        "metrics_jsonl_mib": round(metrics_mib, 1), "final_eval": summary["eval_return_mean"],
    }
    print_table("RSS over the run (every n-th sample)",
                [("t_s", ".1f"), ("env_steps", "d"), ("updates", "d"), ("rss_mib", ".1f")],
                samples[:: max(1, len(samples) // 20)] + [samples[-1]])
    result = {"benchmark": "soak", "quick": args.minutes < 30, "headline": headline, "samples": samples,
              "summary": summary, "machine": machine_info()}
    finish(result, headline, args.out)


if __name__ == "__main__":
    main()
