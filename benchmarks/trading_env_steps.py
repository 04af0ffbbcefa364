"""Throughput of TradingEnv.step on data/GOOGL.csv (the env stage of the trading data flow).

Three figures for the same random action sequence over the whole evaluation walk, repeated:
  env.step        the gymnasium API on the bare env (obs copy, info dict, checks);
  gym.make env    the same through gymnasium.make's wrappers (OrderEnforcing, PassiveEnvChecker);
  raw loop        a plain Python/numpy loop doing the same per-step arithmetic and observation copy;
  vectorised      the whole equity curve in one numpy expression (no observations): a lower bound.
All three must agree on the final equity (checked), so the comparison is like for like.

Run: .venv/bin/python benchmarks/trading_env_steps.py [--repeats 20] [--window 32]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from asyncdqn.envs.trading import ENV_ID, TradingEnv, load_ohlcv
from asyncdqn.envs.trading.env import OBS_CLIP, compute_features

DATA = Path(__file__).resolve().parent.parent / "data" / "GOOGL.csv"


def env_steps(env: gym.Env, actions: np.ndarray) -> float:
    env.reset(seed=0)
    for action in actions.tolist():
        _, _, terminated, truncated, info = env.step(action)
    assert terminated
    return info["equity"]


def raw_loop(open_T, close_T, z_TF, first, positions, actions, cost, window) -> float:
    equity, held = 1.0, 0.0
    obs = np.empty(z_TF.shape[1] * window + 2, dtype=np.float32)
    for k, action in enumerate(actions.tolist()):
        t = first + k
        new = positions[action]
        at_fill = equity * (1.0 + held * (open_T[t + 1] / close_T[t] - 1.0))
        equity = at_fill * (1.0 - cost * abs(new - held)) * (1.0 + new * (close_T[t + 1] / open_T[t + 1] - 1.0))
        held = new
        obs[:-2] = z_TF[t + 2 - window:t + 2].reshape(-1)
        obs[-2] = held
        _ = math.log(equity)
    return equity


def vectorised(open_T, close_T, first, positions, actions, cost) -> float:
    held = np.asarray(positions)[actions]
    prev = np.concatenate([[0.0], held[:-1]])
    t = first + np.arange(len(actions))
    factor = (1.0 + prev * (open_T[t + 1] / close_T[t] - 1.0)) * (1.0 - cost * np.abs(held - prev)) \
        * (1.0 + held * (close_T[t + 1] / open_T[t + 1] - 1.0))
    return float(np.prod(factor))


def best_rate(run, steps: int, repeats: int) -> tuple[float, float]:
    times, result = [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return steps / min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--window", type=int, default=32)
    args = parser.parse_args()

    env = TradingEnv(str(DATA), window=args.window, cost_bps=10.0)
    actions = np.random.default_rng(0).integers(0, len(env.positions), env.decision_steps)
    frame = load_ohlcv(DATA)
    open_T, close_T = frame["open"].to_numpy(), frame["close"].to_numpy()
    first = int(frame.index.get_loc(env.first_date))
    features_TF = compute_features(*(frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume")))
    z_TF = np.nan_to_num(np.clip((features_TF - env.norm.mean) / env.norm.std, -OBS_CLIP, OBS_CLIP)).astype(np.float32)

    rate_env, eq_env = best_rate(lambda: env_steps(env, actions), len(actions), args.repeats)
    wrapped = gym.make(ENV_ID, data=str(DATA), window=args.window, cost_bps=10.0)
    rate_wrapped, eq_wrapped = best_rate(lambda: env_steps(wrapped, actions), len(actions), args.repeats)
    rate_raw, eq_raw = best_rate(lambda: raw_loop(open_T.tolist(), close_T.tolist(), z_TF, first, env.positions,
                                                  actions, env.cost_rate, args.window), len(actions), args.repeats)
    rate_vec, eq_vec = best_rate(lambda: vectorised(open_T, close_T, first, env.positions, actions, env.cost_rate),
                                 len(actions), args.repeats)
    assert eq_env == eq_wrapped
    assert math.isclose(eq_env, eq_raw, rel_tol=1e-12) and math.isclose(eq_env, eq_vec, rel_tol=1e-9), \
        (eq_env, eq_raw, eq_vec)

    print(f"data {DATA.name}: {len(actions)} steps per walk, window {args.window}, obs_dim {env.obs_dim}, "
          f"best of {args.repeats}")
    print(f"env.step    {rate_env:>12,.0f} steps/s")
    print(f"gym.make    {rate_wrapped:>12,.0f} steps/s")
    print(f"raw loop    {rate_raw:>12,.0f} steps/s   env.step is {rate_env / rate_raw:.2f}x of it")
    print(f"vectorised  {rate_vec:>12,.0f} steps/s   (equity only, no observations)")


if __name__ == "__main__":
    main()
