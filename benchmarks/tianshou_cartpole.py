"""Tianshou's own CartPole-v1 DQN recipe, timed with the protocol of cartpole_vs_sb3.py (its third system).

Standalone: it runs under the python of `.venv-tianshou` (`make bench-tianshou`; a venv of its own because
tianshou 2.0.1 needs pandas<3, the project's venv has pandas 3), imports neither asyncdqn nor anything of the
project's venv, and prints one JSON line shaped like cartpole_vs_sb3.py's SB3 result (system "tianshou").
Its top level imports only the standard library, so cartpole_vs_sb3.py imports it for `RECIPE` and
`budget_problem`.

The recipe is Tianshou's examples/discrete/discrete_dqn.py (tag v2.0.1): `DiscreteQLearningPolicy` on
`Net(hidden_sizes=[128, 128, 128])`, `ts.algorithm.DQN(gamma=0.9, n_step_return_horizon=3,
target_update_freq=320)`, Adam lr 1e-3, 10 `DummyVectorEnv` training envs, `VectorReplayBuffer(20000)`,
eps 0.1 in training, 10 env steps per collection step and 0.1 gradient steps per sample (one update of 64
rows per collection step), trained by `algorithm.run_training(OffPolicyTrainerParams(...))`. Changed for the
protocol, and only that:
  * the budget and the evaluation: `epoch_num_steps` = E (2500) and `max_epochs` = budget / E (50k / 2500;
    the example: 10 epochs of 10,000 steps, 100 test episodes), so that Tianshou's test step, run after each
    epoch, is the periodic evaluation every E env steps, on 10 episodes (`test_step_num_episodes`; 10 test
    envs seeded 500_000 + 10 * seed + i, one episode each);
  * the test collector runs greedy (`exploration_noise=False`; the example tests with eps 0.05);
  * `stop_fn`: mean >= 475 (the example: the env's reward threshold, 475 for CartPole-v1, too), and
    `test_in_training=False`: the example also runs an extra test step whenever training episodes reach the
    threshold, outside the every-E schedule of the other two systems;
  * no logger, progress bar or printing (the example logs to TensorBoard).
Tianshou compiles numba helpers in the constructors of its policies and buffers (~seconds, once per process):
that is done before the clock on throwaway objects (`jit_s`), like the imports (`import_s`) and like
cartpole_vs_sb3.py's early `torch._dynamo` import. Tianshou also runs a test step before training (its
initial best policy); it is inside the timed call, is in `evals` at env step 0, and is never a stop. The kept
policy is the best test step's (`save_best_fn`, on a strictly better mean, like SB3's EvalCallback); it is
the initial, untrained one only when no later test beat it. Final evaluation: 20 greedy episodes of the kept
policy on an env seeded 1_000_000 + 1000 * seed + episode (SB3's seeds). `wall_s`: from building the envs
to the return of `run_training`; the test steps block training and are inside it (`eval_s` is their sum,
`wall_ex_eval_s` the rest), as for SB3.

Run:  .venv-tianshou/bin/python benchmarks/tianshou_cartpole.py [--seed 0] [--steps 50000] [--eval-every 2500]
cartpole_vs_sb3.py runs it as `... --child SPEC --result-file F` (the protocol of _common.run_child).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from importlib import metadata
from pathlib import Path

ENV_ID = "CartPole-v1"
# examples/discrete/discrete_dqn.py of Tianshou 2: the hyperparameters, in its names.
RECIPE = dict(lr=1e-3, batch_size=64, num_train_envs=10, gamma=0.9, n_step_return_horizon=3,
              target_update_freq=320, buffer_size=20_000, eps_training=0.1, hidden_sizes=[128, 128, 128],
              collection_step_num_env_steps=10, update_step_num_gradient_steps_per_sample=0.1)
TRAIN_SEED = 10         # * seed + i: the training envs
EVAL_SEED = 500_000     # + 10 * seed + i: the test envs
FINAL_SEED = 1_000_000  # + 1000 * seed + episode: the final evaluation (as SB3's)


def budget_problem(steps: int, eval_every: int) -> str | None:
    """Why this budget cannot be run as whole epochs of E env steps (None if it can): an epoch of Tianshou
    collects whole collection steps of `collection_step_num_env_steps`, and the test step ends each epoch."""
    per_collect = RECIPE["collection_step_num_env_steps"]
    if eval_every <= 0 or eval_every % per_collect:
        return f"the eval interval ({eval_every}) must be a positive multiple of {per_collect} env steps"
    if steps <= 0 or steps % eval_every:
        return f"the step budget ({steps}) must be a positive multiple of the eval interval ({eval_every})"
    return None


def run(spec: dict) -> dict:
    t = time.perf_counter()
    import gymnasium as gym
    import numpy as np
    import torch
    import torch._dynamo  # noqa: F401  (cartpole_vs_sb3.py, "Timing": an import, not training)

    import tianshou as ts
    from tianshou.algorithm.modelfree.dqn import DiscreteQLearningPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory
    from tianshou.data import CollectStats
    from tianshou.trainer import OffPolicyTrainerParams
    from tianshou.utils.net.common import Net
    from tianshou.utils.space_info import SpaceInfo
    import_s = time.perf_counter() - t
    # numba's JIT: a policy's and a buffer manager's constructors compile Tianshou's numba helpers, once per
    # process (no on-disk cache). Done here on throwaway objects, before the clock, like the imports.
    t = time.perf_counter()
    DiscreteQLearningPolicy(model=Net(state_shape=4, action_shape=2), action_space=gym.spaces.Discrete(2))
    ts.data.VectorReplayBuffer(2, 2)
    jit_s = time.perf_counter() - t

    problem = budget_problem(spec["sb3_steps"], spec["eval_every"])
    if problem:
        raise ValueError(problem)
    torch.set_num_threads(spec["threads"])
    seed, n_envs = spec["seed"], RECIPE["num_train_envs"]
    np.random.seed(seed)  # Tianshou's eps-greedy draws from numpy's global generator
    torch.manual_seed(seed)

    evals: list[dict] = []
    pending: dict = {}
    best: dict = {}

    def test_fn(epoch: int, env_step: int | None) -> None:  # called as each test step starts
        pending.update(env_steps=int(env_step or 0), t=time.perf_counter())

    def score_fn(stat) -> float:  # called once per test step, on its result
        now, mean = time.perf_counter(), float(stat.returns_stat.mean)
        evals.append({"env_steps": pending["env_steps"], "mean": mean, "eval_s": now - pending["t"],
                      "wall_s": now - t0})
        return mean

    def save_best_fn(algorithm) -> None:
        best.update(state=copy.deepcopy(algorithm.policy.state_dict()), env_steps=evals[-1]["env_steps"])

    cpu0, t0 = time.process_time(), time.perf_counter()
    train_envs = ts.env.DummyVectorEnv([lambda: gym.make(ENV_ID) for _ in range(n_envs)])
    test_envs = ts.env.DummyVectorEnv([lambda: gym.make(ENV_ID) for _ in range(spec["eval_episodes"])])
    train_envs.seed(TRAIN_SEED * seed)
    test_envs.seed(EVAL_SEED + 10 * seed)
    env = gym.make(ENV_ID)
    space_info = SpaceInfo.from_env(env)
    net = Net(state_shape=space_info.observation_info.obs_shape,
              action_shape=space_info.action_info.action_shape, hidden_sizes=RECIPE["hidden_sizes"])
    policy = DiscreteQLearningPolicy(model=net, action_space=env.action_space,
                                     eps_training=RECIPE["eps_training"], eps_inference=0.0)
    algorithm = ts.algorithm.DQN(policy=policy, optim=AdamOptimizerFactory(lr=RECIPE["lr"]),
                                 gamma=RECIPE["gamma"], n_step_return_horizon=RECIPE["n_step_return_horizon"],
                                 target_update_freq=RECIPE["target_update_freq"])
    training_collector = ts.data.Collector[CollectStats](
        algorithm, train_envs, ts.data.VectorReplayBuffer(RECIPE["buffer_size"], n_envs), exploration_noise=True)
    test_collector = ts.data.Collector[CollectStats](algorithm, test_envs, exploration_noise=False)
    info = algorithm.run_training(OffPolicyTrainerParams(
        training_collector=training_collector, test_collector=test_collector,
        max_epochs=spec["sb3_steps"] // spec["eval_every"], epoch_num_steps=spec["eval_every"],
        collection_step_num_env_steps=RECIPE["collection_step_num_env_steps"],
        test_step_num_episodes=spec["eval_episodes"], batch_size=RECIPE["batch_size"],
        update_step_num_gradient_steps_per_sample=RECIPE["update_step_num_gradient_steps_per_sample"],
        stop_fn=lambda score: score >= spec["stop_at"], compute_score_fn=score_fn, test_fn=test_fn,
        save_best_fn=save_best_fn, test_in_training=False, logger=None, verbose=False, show_progress=False))
    wall = time.perf_counter() - t0
    eval_s = sum(e["eval_s"] for e in evals)

    policy.load_state_dict(best["state"])
    policy.eval()
    returns = []
    with torch.no_grad():
        for ep in range(spec["final_episodes"]):
            obs, _ = env.reset(seed=FINAL_SEED + 1000 * seed + ep)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(policy.compute_action(obs))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    env.close()
    train_envs.close()
    test_envs.close()
    call_wall, call_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stop_step = next((e["env_steps"] for e in evals if e["env_steps"] > 0 and e["mean"] >= spec["stop_at"]),
                     None)
    return {
        "system": "tianshou", "seed": seed, "import_s": import_s, "jit_s": jit_s, "threads": spec["threads"],
        "wall_s": wall, "eval_s": eval_s, "wall_ex_eval_s": wall - eval_s,
        "env_steps": int(info.train_step), "stop_step": stop_step, "budget_steps": spec["sb3_steps"],
        "updates": int(algorithm._iter), "final_mean": float(np.mean(returns)),
        "final_std": float(np.std(returns)), "final_episodes": len(returns),
        "kept_policy": "best periodic eval" if best["env_steps"] > 0 else "initial (untrained)",
        "stopped_early": stop_step is not None, "call_wall_s": call_wall, "cpu_s": call_cpu,
        "evals": evals, "hyperparameters": {**RECIPE, "n_timesteps": spec["sb3_steps"]},
        "versions": {d: metadata.version(d) for d in ("tianshou", "torch", "gymnasium", "numpy")},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=50_000, help="env-step budget (cartpole_vs_sb3.py --sb3-steps)")
    p.add_argument("--eval-every", type=int, default=2500)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--final-episodes", type=int, default=20)
    p.add_argument("--stop-at", type=float, default=475.0)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--result-file", help=argparse.SUPPRESS)
    args = p.parse_args()
    spec = json.loads(args.child) if args.child else {
        "seed": args.seed, "sb3_steps": args.steps, "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes, "final_episodes": args.final_episodes, "stop_at": args.stop_at,
        "threads": args.threads}
    result = run(spec)
    if args.result_file:
        Path(args.result_file).write_text(json.dumps(result))
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
