"""Learner micro-benchmark: milliseconds per `Learner.update` of a K-net ensemble, K = 1, 2, 4, 8.

`asyncdqn.learner.Learner(LearnerConfig(num_nets=K, hidden=H), MergeConfig(), obs_shape=4, n_actions=2)` is
updated on random CartPole-shaped `replay.Batch`es (64 rows per net; obs ~ N(0, 1), random actions,
rewards 1, discount 0.99 with 5% terminal rows, unit IS weights), cycling through 8 pre-made batches so
sampling is not timed. Only `update` is timed (no merges: `Learner.run` would add one every 250 updates).

Reference ("separate"): what the same work costs without the ensemble, K independent plain DQNs, each an
`nn.Sequential` MLP with its own target copy and its own fused Adam, updated one after another on slice k of
the same batch, with the same steps as `Learner.update` (Double-DQN target from one forward over
[obs; next_obs], Huber loss times IS weights, loss/|TD| to numpy, finiteness check, zero_grad, backward,
per-net grad clip 10, Adam step). Its time is for all K updates, so `speedup` = separate / ensemble is the
batching gain at equal work.

`--compile` adds a third kind (issue 16: "try torch.compile on the ensemble update"): the same `Learner`, its
online and target ensembles wrapped in `torch.compile(dynamic=False)` (inductor, C++ on CPU), so every forward
and backward of `Learner.update` runs compiled; `compiled_vs_eager` = compiled / ensemble (< 1: compile pays).
Its warm-up includes the compilation, whose seconds are reported apart (`compile_s`).

Method: torch.set_num_threads(1) (`--threads`); every configuration is built and warmed up first, then
timing rounds run every configuration once per round (interleaved, so load changes hit all alike); the
figure is the median over rounds (and seeds) of ms per update. Goal: ensemble K=8 / K=1 <= 2.5.

Run:   .venv/bin/python benchmarks/learner_k.py [--rounds 7] [--updates 200] [--seeds 0] [--out r.json]
Smoke: .venv/bin/python benchmarks/learner_k.py --quick
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _common import machine_info, median, parse_seeds, print_table, ratio, finish
from asyncdqn.config import LearnerConfig, MergeConfig
from asyncdqn.learner import Learner
from asyncdqn.transitions import Batch

OBS, ACTIONS, BATCH = 4, 2, 64
KS = (1, 2, 4, 8)
HIDDENS = ((64, 64), (128, 128))
GOAL = 2.5
N_BATCHES = 8


def random_batches(k: int, rng: np.random.Generator, n: int = N_BATCHES) -> list[Batch]:
    def one() -> Batch:
        shape = (k, BATCH)
        disc = np.where(rng.random(shape) < 0.05, 0.0, 0.99).astype(np.float32)
        return Batch(rng.standard_normal((*shape, OBS)).astype(np.float32),
                     rng.integers(0, ACTIONS, shape).astype(np.int64),
                     np.ones(shape, dtype=np.float32), disc,
                     rng.standard_normal((*shape, OBS)).astype(np.float32),
                     np.ones(shape, dtype=np.float32),
                     rng.integers(0, 100_000, shape).astype(np.int64), np.zeros(shape, dtype=np.int64))
    return [one() for _ in range(n)]


class PlainDQN:
    """One ordinary DQN learner: nn.Sequential online net, target copy, fused Adam."""

    def __init__(self, hidden: tuple, cfg: LearnerConfig):
        sizes = (OBS, *hidden)
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.online = nn.Sequential(*layers, nn.Linear(sizes[-1], ACTIONS))
        self.target = copy.deepcopy(self.online).requires_grad_(False)  # own tensors, not shared layers
        self.opt = torch.optim.Adam(self.online.parameters(), lr=cfg.lr, fused=True)
        self.cfg = cfg
        self.skipped = 0

    def update(self, obs, act, ret, disc, next_obs, weight) -> None:
        b = obs.shape[0]
        with torch.no_grad():
            q_next_target = self.target(next_obs)
        q_both = self.online(torch.cat([obs, next_obs], 0))
        q_all, q_next_online = q_both[:b], q_both[b:].detach()
        a_star = q_next_online.argmax(-1, keepdim=True)
        y = ret + disc * q_next_target.gather(-1, a_star).squeeze(-1)
        q = q_all.gather(-1, act.unsqueeze(-1)).squeeze(-1)
        loss = (F.huber_loss(q, y, reduction="none", delta=self.cfg.huber_delta) * weight).mean()
        loss_np = loss.detach().numpy()
        _ = (q - y).detach().abs().numpy()
        if not np.isfinite(loss_np).all():
            self.skipped += 1
            return
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.online.parameters(), self.cfg.grad_clip)
        self.opt.step()


class Ensemble:
    def __init__(self, k: int, hidden: tuple, seed: int):
        self.learner = Learner(LearnerConfig(num_nets=k, hidden=hidden), MergeConfig(), OBS, ACTIONS, seed)

    def step(self, batch: Batch) -> None:
        self.learner.update(batch)

    @property
    def skipped(self) -> int:
        return self.learner.skipped


class Separate:
    def __init__(self, k: int, hidden: tuple, seed: int):
        torch.manual_seed(seed)  # nn.Linear's init uses the global generator; this is a benchmark only
        self.nets = [PlainDQN(hidden, LearnerConfig(num_nets=1, hidden=hidden)) for _ in range(k)]

    def step(self, batch: Batch) -> None:
        t = [torch.as_tensor(x) for x in batch[:6]]  # obs, act, ret, disc, next_obs, weight; each [K, B, ...]
        for i, net in enumerate(self.nets):
            net.update(*(x[i] for x in t))

    @property
    def skipped(self) -> int:
        return sum(n.skipped for n in self.nets)


class Compiled(Ensemble):
    def __init__(self, k: int, hidden: tuple, seed: int):
        super().__init__(k, hidden, seed)
        self.learner.online = torch.compile(self.learner.online, dynamic=False)
        self.learner.target = torch.compile(self.learner.target, dynamic=False)


def time_block(model, batches: list[Batch], updates: int, start: int) -> float:
    t0 = time.perf_counter()
    for i in range(updates):
        model.step(batches[(start + i) % len(batches)])
    return (time.perf_counter() - t0) * 1000 / updates


def bench_seed(seed: int, rounds: int, updates: int, warmup: int, compiled: bool = False) -> list[dict]:
    rng = np.random.default_rng(seed)
    configs = []
    kinds = (("ensemble", Ensemble), ("separate", Separate), *((("compiled", Compiled),) if compiled else ()))
    for hidden in HIDDENS:
        for k in KS:
            batches = random_batches(k, rng)
            for kind, cls in kinds:
                model = cls(k, hidden, seed)
                t0 = time.perf_counter()
                time_block(model, batches, warmup, 0)
                configs.append({"kind": kind, "hidden": hidden, "k": k, "model": model, "batches": batches,
                                "ms": [], "warmup_s": time.perf_counter() - t0})
    for r in range(rounds):
        for c in configs:
            c["ms"].append(time_block(c["model"], c["batches"], updates, warmup + r * updates))
    return [{"seed": seed, "kind": c["kind"], "hidden": list(c["hidden"]), "k": c["k"], "ms_rounds": c["ms"],
             "ms": median(c["ms"]), "skipped": c["model"].skipped, "warmup_s": c["warmup_s"]} for c in configs]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0", help="seeds for the init and the random batches ('0', '0..2')")
    p.add_argument("--rounds", type=int, default=7, help="timing rounds (the median is reported)")
    p.add_argument("--updates", type=int, default=200, help="updates per configuration per round")
    p.add_argument("--warmup", type=int, default=50, help="untimed updates per configuration first")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--compile", action="store_true", help="also time the Learner with torch.compile'd nets")
    p.add_argument("--out", help="write the full result to this JSON file")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 rounds of 20 updates, 5 warm-up, seed 0")
    args = p.parse_args()

    seeds = parse_seeds(args.seeds)
    if args.quick:
        seeds, args.rounds, args.updates, args.warmup = seeds[:1], 3, 20, 5
    torch.set_num_threads(args.threads)
    machine = machine_info()
    print(f"Learner.update, batch {BATCH} per net, K {list(KS)}, hidden {[list(h) for h in HIDDENS]}, "
          f"{args.rounds} rounds x {args.updates} updates, torch threads {args.threads}"
          f"{'  [QUICK smoke run on whatever load the machine has]' if args.quick else ''}")
    print(f"machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, torch {machine['torch']}, "
          f"load {machine['loadavg_at_start']}")

    runs = [row for s in seeds for row in bench_seed(s, args.rounds, args.updates, args.warmup, args.compile)]
    rows = []
    for hidden in HIDDENS:
        def ms(kind: str, k: int) -> float | None:
            return median(r["ms"] for r in runs if r["kind"] == kind and r["k"] == k and r["hidden"] == list(hidden))
        for k in KS:
            ens, sep = ms("ensemble", k), ms("separate", k)
            row = {"hidden": "x".join(map(str, hidden)), "K": k, "ensemble_ms": ens, "separate_ms": sep,
                   "ensemble_vs_K1": ratio(ens, ms("ensemble", 1)),
                   "separate_vs_K1": ratio(sep, ms("separate", 1)), "speedup": ratio(sep, ens)}
            if args.compile:
                comp = ms("compiled", k)
                row |= {"compiled_ms": comp, "compiled_vs_eager": ratio(comp, ens),
                        "compile_s": median(r["warmup_s"] for r in runs if r["kind"] == "compiled" and r["k"] == k
                                            and r["hidden"] == list(hidden))}
            rows.append(row)
    print_table("ms per update of all K nets (separate = K plain nn.Sequential DQN updates one after another)",
                [("hidden", ""), ("K", ""), ("ensemble_ms", ".3f"), ("separate_ms", ".3f"),
                 ("ensemble_vs_K1", ".2f"), ("separate_vs_K1", ".2f"), ("speedup", ".2f"),
                 *([("compiled_ms", ".3f"), ("compiled_vs_eager", ".2f"), ("compile_s", ".1f")] if args.compile
                   else [])], rows)
    k8 = {r["hidden"]: r["ensemble_vs_K1"] for r in rows if r["K"] == 8}
    skipped = sum(r["skipped"] for r in runs)
    for h, v in k8.items():
        print(f"hidden {h}: ensemble K=8 / K=1 = {v:.2f} (goal <= {GOAL}: {'met' if v <= GOAL else 'NOT met'})")
    if skipped:
        print(f"warning: {skipped} updates had a non-finite loss and were skipped (faster than real ones)")
    headline = {"ratio_k8_k1": k8, "goal": GOAL, "goal_met": all(v <= GOAL for v in k8.values()),
                "table": rows, "skipped_updates": skipped}
    result = {"benchmark": "learner_k", "quick": args.quick, "machine": machine,
              "protocol": {"seeds": seeds, "rounds": args.rounds, "updates": args.updates, "warmup": args.warmup,
                           "threads": args.threads, "compile": args.compile, "batch_per_net": BATCH, "ks": list(KS),
                           "hiddens": [list(h) for h in HIDDENS]},
              "runs": runs, **headline}
    finish(result, headline, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
