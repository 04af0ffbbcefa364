"""The merge's scores measured so that the K nets are compared under the same conditions.

Place in the flow: beside the learner (merge.py turns scores into weights). Two unconfounded measurements
live here; the learner computes the third (`Learner.heldout_scores`, which needs the target):

- `member_returns`: every net's own greedy episodes, on the same starts for all K nets (common random
  numbers), stepped together with one batched forward of the whole ensemble per step. Blocking; the learner
  calls it in its thread just before a merge (`merge.score = "greedy"`), the evaluator in its thread for
  'member_eval' records (`eval.members`).
- `HeldOutSplit`: a replay sink that keeps one chunk in `every` out of replay. Its rows are never trained on,
  so minus each net's TD error on one batch of them (`merge.score = "heldout_td"`) ranks the nets by how well
  they predict returns they have not fitted, the same rows for every net.

Legend: K nets, E episodes per net, B rows, O observation shape.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from asyncdqn.transitions import Chunk


def member_returns(envs: list[gym.Env], net: torch.nn.Module, episodes: int, seed: int) -> np.ndarray:
    """Mean greedy return of each of the K nets of `net` over `episodes` episodes; episode j of every net
    starts from `reset(seed=seed + j)`. `envs` holds K * episodes envs (env k * episodes + j plays net k's
    episode j); one forward of all K nets per step serves every live env."""
    k = net.k
    if len(envs) != k * episodes:
        raise ValueError(f"member_returns needs {k * episodes} envs, got {len(envs)}")
    returns = np.zeros(k * episodes)
    obs = [env.reset(seed=seed + slot % episodes)[0] for slot, env in enumerate(envs)]
    live = list(range(len(envs)))
    with torch.no_grad():
        while live:
            x = torch.as_tensor(np.stack([np.asarray(obs[s], dtype=np.float32) for s in live]))
            q_KBA = net.forward_all(x)
            rows = torch.arange(len(live))
            nets = torch.as_tensor([s // episodes for s in live])
            actions = q_KBA[nets, rows].argmax(-1).tolist()
            still = []
            for s, a in zip(live, actions):
                obs[s], r, term, trunc, _ = envs[s].step(int(a))
                returns[s] += float(r)
                if not (term or trunc):
                    still.append(s)
            live = still
    return returns.reshape(k, episodes).mean(1)


class MemberScorer:
    """`member_returns` on env copies kept for the whole run."""

    def __init__(self, make_env: Callable[[], gym.Env], k: int, episodes: int):
        self.make_env, self.k, self.episodes = make_env, k, episodes
        self.envs: list[gym.Env] = []

    def __call__(self, net: torch.nn.Module, seed: int) -> np.ndarray:
        """Each net's mean greedy return over episodes starting from seeds seed, seed + 1, ..."""
        if not self.envs:
            self.envs = [self.make_env() for _ in range(self.k * self.episodes)]
        return member_returns(self.envs, net, self.episodes, seed)

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


class HeldOutSplit:
    """A ReplaySink: chunk n goes to `held` when n % every == every - 1, else to `replay`."""

    def __init__(self, replay, held, every: int):
        self.replay, self.held, self.every = replay, held, every
        self.chunks = 0

    def add(self, chunk: Chunk) -> None:
        target = self.held if self.chunks % self.every == self.every - 1 else self.replay
        self.chunks += 1
        target.add(chunk)

    def state_dict(self, with_rows: bool = True) -> dict:
        return {"chunks": self.chunks, "held": self.held.state_dict(with_rows=with_rows)}

    def load_state_dict(self, state: dict) -> None:
        self.chunks = int(state["chunks"])
        self.held.load_state_dict(state["held"])
