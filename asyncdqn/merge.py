"""The softmax target merge: scores -> weights -> a target built from all K nets.

Place in the flow: learner -> **merge**. Plain functions, no event loop; the learner calls them every
`merge.every` updates.

    w = softmax(standardise(scores) / tau)
    params space:  target <- sum_k w_k theta_k ; online_k <- (1 - b) online_k + b target  (b = resync)
    outputs space: lagged_k <- online_k ; target Q(s) = sum_k w_k Q_lagged_k(s)

Standardising makes tau independent of the score's scale (returns of 500 vs TD losses of 0.01). With
K = 1 the weight is 1 and the params merge is a hard target copy: plain DQN (Mnih et al. 2015).
A prototype here showed that averaging params *without* re-syncing the online nets broke CartPole
learning (the target drifts away from every online net), so resync defaults to 1.

Legend: K nets.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch


def standardise(scores_K: np.ndarray) -> np.ndarray:
    """(s - mean) / std over the nets with a score; NaN (no score yet) and a zero spread give 0."""
    s = np.asarray(scores_K, dtype=np.float64)
    known = ~np.isnan(s)
    z = np.zeros_like(s)
    if known.sum() >= 2:
        std = s[known].std()
        if std > 0:
            z[known] = (s[known] - s[known].mean()) / std
    return z


def softmax_weights(scores_K: np.ndarray, tau: float) -> np.ndarray:
    """softmax(standardise(scores) / tau); tau = inf gives the uniform average, tau = 0 copies the best net
    (its limit: the weight is shared equally among the nets tied at the top score)."""
    z = standardise(scores_K)
    if math.isinf(tau):
        return np.full(len(z), 1.0 / len(z))
    if tau == 0:
        top = (z == z.max()).astype(np.float64)
        return top / top.sum()
    logits = z / tau
    e = np.exp(logits - logits.max())
    return e / e.sum()


def weight_entropy(w_K: np.ndarray) -> float:
    """Entropy in nats; log K for uniform weights, 0 when one net takes all the weight."""
    w = np.asarray(w_K, dtype=np.float64)
    w = w[w > 0]
    return float(-(w * np.log(w)).sum())


# The torch functions below enter no_grad in their body rather than through a decorator: mutmut 3 skips
# decorated functions, and these are part of the mutation-tested core (docs/mutation.md).
def merge_params(params_K: Sequence[torch.Tensor], w_K: np.ndarray) -> list[torch.Tensor]:
    """sum_k w_k theta_k for each parameter tensor shaped [K, ...]; returns tensors shaped [1, ...]."""
    with torch.no_grad():
        w = torch.as_tensor(np.asarray(w_K), dtype=params_K[0].dtype)
        return [(p * w.reshape(-1, *([1] * (p.dim() - 1)))).sum(0, keepdim=True) for p in params_K]


def resync_(params_K: Sequence[torch.Tensor], merged: Sequence[torch.Tensor], blend: float) -> None:
    """online_k <- (1 - blend) * online_k + blend * merged, in place, for every k."""
    with torch.no_grad():
        for p, m in zip(params_K, merged):
            p.lerp_(m.expand_as(p), blend)


def distance_to(params_K: Sequence[torch.Tensor], merged: Sequence[torch.Tensor]) -> np.ndarray:
    """L2 distance of each net's flattened parameters from the merged parameters."""
    with torch.no_grad():
        sq = sum(((p - m) ** 2).reshape(p.shape[0], -1).sum(1) for p, m in zip(params_K, merged))
        return torch.sqrt(sq).numpy()


class ScoreBoard:
    """Recent performance of each net: its actors' episode returns, and its TD losses, each stamped with the
    learner update count at which it was recorded (so a score can count only what came after a merge)."""

    def __init__(self, k: int, window: int):
        self.returns: list[deque] = [deque(maxlen=window) for _ in range(k)]  # (value, update) pairs
        self.losses: list[deque] = [deque(maxlen=window) for _ in range(k)]

    def add_return(self, net: int, ret: float, at: int = 0) -> None:
        self.returns[net].append((float(ret), int(at)))

    def add_losses(self, loss_K: np.ndarray, at: int = 0) -> None:
        for dq, loss in zip(self.losses, loss_K):
            dq.append((float(loss), int(at)))

    def state_dict(self) -> dict:
        return {"returns": [[list(v) for v in d] for d in self.returns],
                "losses": [[list(v) for v in d] for d in self.losses]}

    def load_state_dict(self, state: dict) -> None:
        """Entries are [value, update] pairs, or plain values in checkpoints from before the stamps (update 0)."""
        for dqs, saved in ((self.returns, state["returns"]), (self.losses, state["losses"])):
            for dq, values in zip(dqs, saved):
                dq.clear()
                dq.extend((float(v[0]), int(v[1])) if isinstance(v, (list, tuple)) else (float(v), 0) for v in values)

    def scores(self, kind: str, since: int = 0) -> np.ndarray:
        """Mean recent return, or minus the mean recent TD loss, over the entries stamped at update >= since;
        NaN for a net with none."""
        source = self.returns if kind == "return" else self.losses
        sign = 1.0 if kind == "return" else -1.0
        out = []
        for d in source:
            values = [v for v, at in d if at >= since]
            out.append(sign * float(np.mean(values)) if values else np.nan)
        return np.array(out)
