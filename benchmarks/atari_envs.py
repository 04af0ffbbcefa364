"""Raw Atari env steps/s: envpool's C++ Atari against ale-py with gymnasium's wrappers (asyncdqn's Atari env).

Both produce what the atari-pong scenario trains on: 30 no-op starts, frame skip 4 with a max over the last two
frames, 84x84 grayscale, 4 stacked frames (4, 84, 84) uint8, a lost life ends the episode, rewards clipped to
[-1, 1], sticky actions 0.25, episodes capped at 108,000 frames. One side is `asyncdqn.envs.games.atari(game)`
(ale-py's emulator under gymnasium's AtariPreprocessing, LifeLossTerminal, ClipReward, FrameStackObservation),
W copies stepped one after another and reset at episode ends, as W single-env actors or a SyncVectorEnv step
them. The other is `envpool.make(<Game>-v5, env_type="gymnasium", num_envs=W, batch_size=W, num_threads=T)`
with the same settings, stepped as one batch (its sub-envs reset themselves). Actions are random and drawn
before the clock starts; no policy, no learning: the env alone.

Timing: every arm is built and stepped once first, then `--rounds` rounds step each arm `--steps` agent steps
in turn (interleaved, so the machine's speed swings fall on every arm); the figure is the median over rounds,
and each envpool arm's ratio to ale-py is the median of its per-round ratios.

Needs the games extra and envpool: pip install -e '.[games,envpool]'.
Run: .venv/bin/python benchmarks/atari_envs.py [--game pong] [--width 8] [--threads 1,2] [--rounds 5] [--out r.json]
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import finish, machine_info, median, print_table

ENVPOOL_SETTINGS = {"episodic_life": True, "reward_clip": True, "stack_num": 4, "img_height": 84, "img_width": 84,
                    "gray_scale": True, "frame_skip": 4, "noop_max": 30, "repeat_action_probability": 0.25,
                    "use_fire_reset": False, "max_episode_steps": 27_000, "full_action_space": False}


def envpool_id(game: str) -> str:
    """'pong' -> 'Pong-v5', 'space_invaders' -> 'SpaceInvaders-v5' (envpool's Atari task ids)."""
    return "".join(part.capitalize() for part in game.split("_")) + "-v5"


class AleArm:
    """W asyncdqn Atari envs (ale-py + gymnasium wrappers), stepped one after another."""

    def __init__(self, game: str, width: int, seed: int):
        from asyncdqn.envs.games import atari

        self.envs = [atari(game) for _ in range(width)]
        for j, env in enumerate(self.envs):
            env.reset(seed=seed + j)

    def step(self, actions_SW) -> None:
        for row in actions_SW:
            for env, a in zip(self.envs, row.tolist()):
                _, _, terminated, truncated, _ = env.step(a)
                if terminated or truncated:
                    env.reset()


class EnvpoolArm:
    """One envpool batch of W envs on T threads, stepped synchronously."""

    def __init__(self, game: str, width: int, threads: int, seed: int):
        import envpool

        self.env = envpool.make(envpool_id(game), env_type="gymnasium", num_envs=width, batch_size=width,
                                num_threads=threads, seed=seed, **ENVPOOL_SETTINGS)
        self.env.reset()

    def step(self, actions_SW) -> None:
        for row in actions_SW:
            self.env.step(row)


def time_arm(arm, actions_SW) -> float:
    t0 = time.perf_counter()
    arm.step(actions_SW)
    return actions_SW.size / (time.perf_counter() - t0)


def main() -> int:
    import numpy as np

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--game", default="pong")
    p.add_argument("--width", type=int, default=8, help="envs per arm (the scenario's 8 actors)")
    p.add_argument("--threads", default="1,2", help="envpool thread counts, comma-separated")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=4000, help="agent steps per arm per round (all envs together)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the full result to this JSON file")
    args = p.parse_args()
    try:
        arms = {"ale-py + gymnasium wrappers": AleArm(args.game, args.width, args.seed)}
        arms |= {f"envpool, {t} thread(s)": EnvpoolArm(args.game, args.width, t, args.seed)
                 for t in (int(x) for x in args.threads.split(","))}
    except ImportError as exc:
        print(f"atari_envs.py: needs the games extra and envpool (pip install -e '.[games,envpool]'): {exc}",
              file=sys.stderr)
        return 2
    machine = machine_info()
    print(f"Atari {args.game}: {args.width} envs per arm, {args.rounds} rounds x {args.steps} agent steps, "
          f"load {machine['loadavg_at_start']}, {machine['cpu_model']}")
    rng = np.random.default_rng(args.seed)
    n_actions = int(arms["ale-py + gymnasium wrappers"].envs[0].action_space.n)
    rows_per_round = max(1, args.steps // args.width)
    for arm in arms.values():  # warm-up: first frames, lazy allocations
        arm.step(rng.integers(n_actions, size=(4, args.width)))
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(args.rounds):
        for name, arm in arms.items():
            rates[name].append(time_arm(arm, rng.integers(n_actions, size=(rows_per_round, args.width))))
        print(f"  round {r}: " + ", ".join(f"{n} {v[-1]:.0f}/s" for n, v in rates.items()), flush=True)
    base = rates["ale-py + gymnasium wrappers"]
    rows = [{"arm": name, "agent_steps_per_s": median(v),
             "vs_ale": median(x / b for x, b in zip(v, base)), "frames_per_s": median(v) * 4} for name, v in rates.items()]
    print_table("median over rounds (agent steps: 4 emulator frames each)",
                [("arm", ""), ("agent_steps_per_s", ".0f"), ("frames_per_s", ".0f"), ("vs_ale", ".2f")], rows)
    headline = {"game": args.game, "width": args.width, "table": rows}
    finish({"benchmark": "atari_envs", "quick": False, "machine": machine,
            "protocol": {k: getattr(args, k) for k in ("game", "width", "threads", "rounds", "steps", "seed")},
            "rates": rates, **headline}, headline, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
