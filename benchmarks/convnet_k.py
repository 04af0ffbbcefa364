"""Conv ensemble micro-benchmark: ms per forward+backward of a K-net `EnsembleConvQNet`, K = 1 vs 4.

For both torsos (Nature DQN on Atari's (4, 84, 84) uint8 frames, input scale 1/255; MinAtar on (4, 10, 10)
0/1 grids), one timed step is: `net(x)` on a [K, 32, C, H, W] uint8 batch (32 rows per net), a loss
(sum of squares of the Q-values, a stand-in: its cost is nil next to the convs), `backward()`. Gradients
are dropped first with `zero_grad(set_to_none=True)`. No optimizer step (it is the same per parameter for
the MLP and is timed by learner_k.py), no target forward. `--rows 64` gives the learner's real online
forward, which runs over [obs; next_obs] (Double DQN) and so sees 2 x batch rows.

Reference ("separate"): K plain nets (nn.Conv2d / nn.Linear in an nn.Sequential) doing the same forward and
backward one after another, each on its own 32 rows; `speedup` = separate / ensemble is the gain from one
grouped conv per layer at equal work. Conv nets are compute bound, so K nets cost about K times one net
either way; what the ensemble removes is per-call overhead (large for MinAtar's small convs).

Method: torch.set_num_threads(1) (`--threads`); every configuration is built and warmed up first, then
timing rounds run every configuration once per round (interleaved, so load changes hit all alike); the
figure is the median over rounds of ms per step.

Run:   .venv/bin/python benchmarks/convnet_k.py [--rounds 7] [--steps 10] [--rows 32] [--out r.json]
Smoke: .venv/bin/python benchmarks/convnet_k.py --quick
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

from _common import finish, machine_info, median, print_table, ratio
from asyncdqn.nets import TORSOS, EnsembleConvQNet

KS = (1, 4)
ACTIONS = 6
SHAPES = {"nature": (4, 84, 84), "minatar": (4, 10, 10)}
SCALES = {"nature": 1 / 255, "minatar": 1.0}


def plain_net(torso: str, shape: tuple) -> nn.Module:
    spec = TORSOS[torso]
    layers: list[nn.Module] = []
    c = shape[0]
    for out, kernel, stride in spec.convs:
        layers += [nn.Conv2d(c, out, kernel, stride), nn.ReLU()]
        c = out
    h, w = spec.out_hw(*shape[1:])
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * h * w, spec.fc), nn.ReLU(), nn.Linear(spec.fc, ACTIONS))


class Ensemble:
    def __init__(self, torso: str, k: int):
        self.net = EnsembleConvQNet(k, SHAPES[torso], ACTIONS, torso, input_scale=SCALES[torso]).reset_parameters(0)

    def step(self, x_KB: torch.Tensor) -> None:
        self.net.zero_grad(set_to_none=True)
        self.net(x_KB).square().sum().backward()


class Separate:
    def __init__(self, torso: str, k: int):
        torch.manual_seed(0)  # nn.Conv2d's init uses the global generator; this is a benchmark only
        self.nets = [plain_net(torso, SHAPES[torso]) for _ in range(k)]
        self.scale = SCALES[torso]

    def step(self, x_KB: torch.Tensor) -> None:
        for i, net in enumerate(self.nets):
            net.zero_grad(set_to_none=True)
            q = net(x_KB[i].float() * self.scale) if self.scale != 1.0 else net(x_KB[i].float())
            q.square().sum().backward()


def time_block(model, x_KB: torch.Tensor, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        model.step(x_KB)
    return (time.perf_counter() - t0) * 1000 / steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7, help="timing rounds (the median is reported)")
    p.add_argument("--steps", type=int, default=10, help="steps per configuration per round (x10 for MinAtar)")
    p.add_argument("--rows", type=int, default=32, help="rows per net (the learner forwards 2 x batch)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--out", help="write the full result to this JSON file")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 2 steps")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.steps = 2, 2
    torch.set_num_threads(args.threads)
    machine = machine_info()
    print(f"EnsembleConvQNet forward+backward, {args.rows} rows per net, K {list(KS)}, {args.rounds} rounds, "
          f"torch threads {args.threads}{'  [QUICK smoke run]' if args.quick else ''}")
    print(f"machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, torch {machine['torch']}, "
          f"load {machine['loadavg_at_start']}")

    gen = torch.Generator().manual_seed(0)
    configs = []
    for torso, shape in SHAPES.items():
        high = 256 if torso == "nature" else 2
        for k in KS:
            x_KB = torch.randint(0, high, (k, args.rows, *shape), generator=gen, dtype=torch.uint8)
            steps = args.steps * (10 if torso == "minatar" else 1)
            for kind, cls in (("ensemble", Ensemble), ("separate", Separate)):
                model = cls(torso, k)
                time_block(model, x_KB, max(2, steps // 3))
                configs.append({"torso": torso, "k": k, "kind": kind, "model": model, "x": x_KB, "steps": steps,
                                "ms": []})
    for _ in range(args.rounds):
        for c in configs:
            c["ms"].append(time_block(c["model"], c["x"], c["steps"]))

    def ms(torso: str, kind: str, k: int) -> float | None:
        return median(next(c["ms"] for c in configs if (c["torso"], c["kind"], c["k"]) == (torso, kind, k)))

    rows = []
    for torso in SHAPES:
        for k in KS:
            ens, sep = ms(torso, "ensemble", k), ms(torso, "separate", k)
            rows.append({"torso": torso, "K": k, "ensemble_ms": ens, "separate_ms": sep,
                         "ensemble_vs_K1": ratio(ens, ms(torso, "ensemble", 1)), "speedup": ratio(sep, ens)})
    print_table("ms per forward+backward of all K nets (separate = K plain nn.Sequential nets one after another)",
                [("torso", ""), ("K", ""), ("ensemble_ms", ".2f"), ("separate_ms", ".2f"),
                 ("ensemble_vs_K1", ".2f"), ("speedup", ".2f")], rows)
    k4 = {r["torso"]: r["ensemble_vs_K1"] for r in rows if r["K"] == 4}
    for torso, v in k4.items():
        print(f"{torso}: ensemble K=4 / K=1 = {v:.2f}")
    headline = {"ratio_k4_k1": k4, "table": rows}
    result = {"benchmark": "convnet_k", "quick": args.quick, "machine": machine,
              "protocol": {"rounds": args.rounds, "steps": args.steps, "rows_per_net": args.rows,
                           "threads": args.threads, "ks": list(KS), "shapes": {t: list(s) for t, s in SHAPES.items()}},
              "runs": [{"torso": c["torso"], "kind": c["kind"], "k": c["k"], "ms_rounds": c["ms"]} for c in configs],
              **headline}
    finish(result, headline, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
