"""The learner: K Q-nets trained at once on K minibatches, with the softmax-merged target.

Place in the flow: replay -> **learner** -> merge. `Learner.run` is blocking torch work; the runtime
calls it through `asyncio.to_thread` (torch releases the GIL in its kernels), so actors keep stepping.
The plain functions at the top are the algorithm; `Learner` only holds the state.

Legend: K nets, B batch per net, O observation shape, A actions.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from asyncdqn.config import LearnerConfig, MergeConfig, PopulationConfig
from asyncdqn.merge import ScoreBoard, distance_to, merge_params, resync_, softmax_weights, weight_entropy
from asyncdqn.nets import make_qnet
from asyncdqn.nets import copy_params_
from asyncdqn.transitions import Batch


def td_targets(ret_KB: torch.Tensor, disc_KB: torch.Tensor, q_next_online_KBA: torch.Tensor | None,
               q_next_target_KBA: torch.Tensor) -> torch.Tensor:
    """y = ret + disc * Q_target(s', a*), with a* = argmax Q_online(s') (Double DQN, van Hasselt et al.
    2016) or, when q_next_online is None, a* = argmax Q_target(s') (the 2015 DQN target).

    disc already holds gamma**h, or 0 if the episode terminated within the horizon; a truncated episode
    keeps gamma**h and bootstraps from its true final observation.
    """
    chooser = q_next_target_KBA if q_next_online_KBA is None else q_next_online_KBA
    a_star = chooser.argmax(-1, keepdim=True)
    return ret_KB + disc_KB * q_next_target_KBA.gather(-1, a_star).squeeze(-1)


def clip_grad_norm_per_net_(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale each net's gradient (slice k of every [K, ...] parameter) to norm <= max_norm.

    A global clip would couple the K nets; per-net clipping keeps each one an independent DQN. For
    K = 1 it equals torch.nn.utils.clip_grad_norm_ (same 1e-6 guard). no_grad is entered in the body, not
    by a decorator, because mutmut 3 skips decorated functions (docs/mutation.md).
    """
    with torch.no_grad():
        grads = [p.grad for p in params if p.grad is not None]
        norm_K = torch.cat([g.reshape(g.shape[0], -1) for g in grads], 1).norm(dim=1)
        scale_K = torch.clamp(max_norm / (norm_K + 1e-6), max=1.0)
        for g in grads:
            g.mul_(scale_K.reshape(-1, *([1] * (g.dim() - 1))))
        return norm_K


class UpdateStats(NamedTuple):
    loss_K: np.ndarray
    td_abs_KB: np.ndarray
    q_mean: float
    skipped: bool  # the loss was NaN/inf and the step was not applied


Scorer = Callable[["Learner"], np.ndarray]
"""How good each net is now, asked at each merge (in the learner's thread): `runtime.merge_scorer` builds it."""


_MIX = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53)


def bootstrap_mask(stamp_KB: np.ndarray, idx_KB: np.ndarray, seed: int, p: float) -> np.ndarray:
    """Bootstrapped DQN's masks (Osband et al. 2016): 1.0 where net k learns from the row, with probability p.

    The coin is a hash (splitmix64's finaliser) of the row's identity in replay (its write number and slot),
    the net and the seed, not a stored draw: it is fixed for the row's life in replay, costs no replay column,
    and a resumed run draws the same coins. Row (k, b) of a K x B batch is what net k trains on."""
    u64 = np.uint64
    k_KB = np.broadcast_to(np.arange(stamp_KB.shape[0], dtype=u64)[:, None], stamp_KB.shape)
    x = (stamp_KB.astype(u64) * u64(_MIX[0])) ^ (idx_KB.astype(u64) * u64(_MIX[1])) ^ (
        (k_KB + u64((seed * 64) % 2**64)) * u64(_MIX[2]))
    for mult in _MIX[3:]:
        x = (x ^ (x >> u64(33))) * u64(mult)
    x = x ^ (x >> u64(33))
    return ((x >> u64(11)).astype(np.float64) * 2.0**-53 < p).astype(np.float32)


def population_lrs(lrs: tuple, default: float, k: int, rng: np.random.Generator) -> np.ndarray:
    """Each net's learning rate: `default` for all, K given values, or K log-uniform draws from [low, high]."""
    if not lrs:
        return np.full(k, float(default))
    if len(lrs) == k:
        return np.asarray(lrs, dtype=np.float64)
    low, high = sorted(float(v) for v in lrs)
    return np.exp(rng.uniform(np.log(low), np.log(high), size=k))


def scale_step_(params: list[torch.Tensor], before: list[torch.Tensor], lr_K: torch.Tensor) -> None:
    """theta_k <- before_k + lr_k * (theta_k - before_k): an optimizer step taken with lr = 1, rescaled per net.

    Adam's step is linear in its learning rate (no weight decay), so this is Adam with a [K] learning-rate
    vector inside the one batched optimizer, not K optimizers."""
    with torch.no_grad():
        for p, b in zip(params, before):
            p.sub_(b).mul_(lr_K.reshape(-1, *([1] * (p.dim() - 1)))).add_(b)


class MergeEvent(NamedTuple):
    update: int
    scores_K: np.ndarray
    weights_K: np.ndarray
    entropy: float
    distance_K: np.ndarray  # each online net's parameter distance from the merge, before re-sync
    q_std: float            # disagreement: std over the K nets of Q(s, a), averaged over a batch of s and all a
    lrs_K: np.ndarray       # each net's learning rate after the merge (population mode may change them)


class Learner:
    """Holds the online ensemble, the target and the optimizer. Not thread-safe: one caller at a time."""

    def __init__(self, cfg: LearnerConfig, merge_cfg: MergeConfig, obs_shape: int | tuple, n_actions: int, seed: int,
                 input_scale: float = 1.0, obs_classes: int = 0, population: PopulationConfig | None = None):
        """obs_shape: an int (a flat observation) or a shape; image shapes get conv nets (`learner.net`).
        obs_classes: N > 0 for Discrete(N) observations (shape ()), which get a one-hot MLP.
        population: per-net learning rates (and PBT's explore step), see `PopulationConfig`."""
        self.cfg, self.merge_cfg, self.seed = cfg, merge_cfg, seed
        self.population = population or PopulationConfig()
        k = cfg.num_nets
        shape = (obs_shape,) if isinstance(obs_shape, int) else tuple(obs_shape)

        def make(k_nets: int):
            return make_qnet(k_nets, shape, n_actions, cfg.hidden, cfg.dueling, cfg.net, cfg.torso, input_scale,
                             obs_classes)

        self.online = make(k).reset_parameters(seed)
        if merge_cfg.space in ("params", "averaged"):
            # params: the merged net; averaged: a ring of the last `snapshots` merged nets, all the first net at first
            self.target = make(1 if merge_cfg.space == "params" else merge_cfg.snapshots)
            with torch.no_grad():
                for t, p in zip(self.target.parameters(), self.online.parameters()):
                    t.copy_(p[:1].expand_as(t))
        else:
            self.target = copy.deepcopy(self.online)  # the K lagged copies
        self.target.requires_grad_(False)
        self.weights_K = np.full(k, 1.0 / k)
        self.rng = np.random.default_rng(seed)  # population draws and PBT's explore step
        self.lrs_K = population_lrs(self.population.lrs, cfg.lr, k, self.rng)
        self.per_net_lr = bool(len(set(self.lrs_K.tolist())) > 1 or self.population.explore)
        # fused Adam: one kernel for all parameters; small nets on CPU are bound by per-op overhead. With
        # per-net learning rates it steps with lr = 1 and `scale_step_` applies each net's rate.
        self.opt = torch.optim.Adam(self.online.parameters(), lr=1.0 if self.per_net_lr else cfg.lr, fused=True)
        self.snapshot_next = 1 % merge_cfg.snapshots  # averaged: the ring slot the next merge overwrites
        self.losses = ScoreBoard(k, merge_cfg.score_window)
        self.updates = 0
        self.skipped = 0
        self.bad_in_a_row = 0

    def target_q(self, next_obs_KBO: torch.Tensor) -> torch.Tensor:
        k, b = next_obs_KBO.shape[:2]
        flat = next_obs_KBO.reshape(1, k * b, *next_obs_KBO.shape[2:])
        if self.merge_cfg.space == "params":
            return self.target(flat).reshape(k, b, -1)
        if self.merge_cfg.space == "averaged":
            return self.target(flat.expand(self.target.k, *flat.shape[1:])).mean(0).reshape(k, b, -1)
        w = torch.as_tensor(self.weights_K, dtype=torch.float32).reshape(-1, 1, 1)
        q_lag = self.target(flat.expand(self.target.k, *flat.shape[1:]))
        return (q_lag * w).sum(0).reshape(k, b, -1)

    def update(self, batch: Batch) -> UpdateStats:
        obs = torch.as_tensor(batch.obs_KBO)
        next_obs = torch.as_tensor(batch.next_obs_KBO)
        act = torch.as_tensor(batch.act_KB)
        b = obs.shape[1]
        with torch.no_grad():
            q_next_target = self.target_q(next_obs)
        if self.cfg.double:
            # One forward over [obs; next_obs] instead of two: the ops, not the FLOPs, cost the time here.
            q_both = self.online(torch.cat([obs, next_obs], 1))
            q_all, q_next_online = q_both[:, :b], q_both[:, b:].detach()
        else:
            q_all, q_next_online = self.online(obs), None
        y = td_targets(torch.as_tensor(batch.ret_KB), torch.as_tensor(batch.disc_KB), q_next_online,
                       q_next_target)
        q = q_all.gather(-1, act.unsqueeze(-1)).squeeze(-1)
        per_row = F.huber_loss(q, y, reduction="none", delta=self.cfg.huber_delta)
        weight = torch.as_tensor(batch.weight_KB)
        if self.cfg.bootstrap_p < 1.0:  # each net's loss is its mean over the rows its mask keeps
            mask = torch.as_tensor(bootstrap_mask(batch.stamp_KB, batch.idx_KB, self.seed, self.cfg.bootstrap_p))
            loss_K = (per_row * weight * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        else:
            loss_K = (per_row * weight).mean(1)
        loss_np = loss_K.detach().numpy()
        td_abs = (q - y).detach().abs().numpy()
        q_max = float(q_all.detach().abs().max())
        if not (np.isfinite(loss_np).all() and q_max <= self.cfg.q_limit):
            return self._skip(loss_np, td_abs)
        self.opt.zero_grad(set_to_none=True)
        loss_K.sum().backward()
        norm_K = clip_grad_norm_per_net_(list(self.online.parameters()), self.cfg.grad_clip)
        if not torch.isfinite(norm_K).all():  # a finite loss can still give inf gradients
            self.opt.zero_grad(set_to_none=True)
            return self._skip(loss_np, td_abs)
        if self.per_net_lr:
            params = list(self.online.parameters())
            before = [p.detach().clone() for p in params]
            self.opt.step()
            scale_step_(params, before, torch.as_tensor(self.lrs_K, dtype=params[0].dtype))
        else:
            self.opt.step()
        self.updates += 1
        self.bad_in_a_row = 0
        self.losses.add_losses(loss_np, self.updates)
        return UpdateStats(loss_np, td_abs, float(q.detach().mean()), False)

    def _skip(self, loss_np: np.ndarray, td_abs: np.ndarray) -> UpdateStats:
        """A NaN/inf or diverged update is not applied; the run stops after `max_bad_updates` in a row."""
        self.skipped += 1
        self.bad_in_a_row += 1
        return UpdateStats(loss_np, np.nan_to_num(td_abs, nan=0.0, posinf=0.0), float("nan"), True)

    @property
    def diverged(self) -> bool:
        return self.bad_in_a_row >= self.cfg.max_bad_updates

    def merge(self, scores_K: np.ndarray, probe_BO: torch.Tensor | None = None) -> MergeEvent:
        """The softmax target merge on `scores_K` (from the run's scorer). `probe_BO` (replay rows) measures how
        much the K nets disagree just before the merge."""
        q_std = float("nan")
        if probe_BO is not None and self.online.k > 1:
            with torch.no_grad():
                q_std = float(self.online.forward_all(probe_BO).std(0).mean())
        w = softmax_weights(scores_K, self.merge_cfg.tau)
        self.weights_K = w
        online = list(self.online.parameters())
        merged = merge_params(online, w)
        dist = distance_to(online, merged)  # before re-sync: how far each net wandered since the last merge
        space = self.merge_cfg.space
        if space in ("params", "averaged"):
            slot = 0 if space == "params" else self.snapshot_next
            with torch.no_grad():
                for t, m in zip(self.target.parameters(), merged):
                    t[slot:slot + 1].copy_(m)
            self.snapshot_next = (self.snapshot_next + 1) % self.merge_cfg.snapshots
            resync_(online, merged, self.merge_cfg.resync)
        else:
            copy_params_(self.target, self.online)  # the lagged copies; weights apply to their outputs
        if self.population.explore and self.online.k > 1:
            self.explore(w)
        return MergeEvent(self.updates, np.asarray(scores_K, dtype=float), w, weight_entropy(w), dist, q_std,
                          self.lrs_K.copy())

    def explore(self, w_K: np.ndarray) -> None:
        """PBT's explore step (Jaderberg et al. 2017), after the merge did a soft exploit: the lowest-weight net
        takes the top net's learning rate times 0.8 or 1.25."""
        low, top = int(np.argmin(w_K)), int(np.argmax(w_K))
        if low != top:
            self.lrs_K[low] = self.lrs_K[top] * float(self.rng.choice([0.8, 1.25]))

    def heldout_scores(self, batch: Batch) -> np.ndarray:
        """Minus each net's mean Huber TD error on one batch of held-out rows (the same rows for every net),
        against the current target: y = ret + disc * max_a Q_target(s', a), one y for all K."""
        with torch.no_grad():
            obs = torch.as_tensor(batch.obs_KBO[0])
            next_obs = torch.as_tensor(batch.next_obs_KBO[:1])
            q_next = self.target_q(next_obs)[0]                                         # [B, A]
            y = torch.as_tensor(batch.ret_KB[0]) + torch.as_tensor(batch.disc_KB[0]) * q_next.max(-1).values
            act = torch.as_tensor(batch.act_KB[0]).reshape(1, -1, 1).expand(self.online.k, -1, 1)
            q = self.online.forward_all(obs).gather(-1, act).squeeze(-1)                # [K, B]
            loss = F.huber_loss(q, y.expand_as(q), reduction="none", delta=self.cfg.huber_delta).mean(1)
        return -loss.numpy().astype(np.float64)

    def run(self, batches: list[Batch], scorer: Scorer | np.ndarray) -> tuple[list[UpdateStats], list[MergeEvent]]:
        """Blocking: apply the batches in order, merging after every `merge.every`-th update with the scores
        `scorer(self)` gives then (or fixed scores, given as an array)."""
        stats, merges = [], []
        for batch in batches:
            if self.diverged:
                break
            stats.append(self.update(batch))
            if not stats[-1].skipped and self.updates % self.merge_cfg.every == 0:
                scores = scorer(self) if callable(scorer) else scorer
                merges.append(self.merge(scores, torch.as_tensor(batch.obs_KBO[0])))
        return stats, merges

    @property
    def last_merge(self) -> int:
        """The update count of the latest merge (0 before the first)."""
        return self.updates - self.updates % self.merge_cfg.every

    def policy_weights(self) -> np.ndarray:
        return np.asarray(self.weights_K, dtype=np.float32)

    def state_dict(self) -> dict:
        return {"online": self.online.state_dict(), "target": self.target.state_dict(),
                "opt": self.opt.state_dict(), "weights": np.asarray(self.weights_K, dtype=np.float64),
                "updates": self.updates, "skipped": self.skipped, "bad_in_a_row": self.bad_in_a_row,
                "losses": self.losses.state_dict(), "lrs": self.lrs_K.copy(), "snapshot_next": self.snapshot_next,
                "rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.opt.load_state_dict(state["opt"])
        self.weights_K = np.asarray(state["weights"], dtype=np.float64)
        self.updates, self.skipped = int(state["updates"]), int(state["skipped"])
        self.bad_in_a_row = int(state["bad_in_a_row"])
        self.losses.load_state_dict(state["losses"])
        if "lrs" in state:  # absent in checkpoints from before population mode
            self.lrs_K = np.asarray(state["lrs"], dtype=np.float64)
            self.snapshot_next = int(state["snapshot_next"])
            self.rng.bit_generator.state = json.loads(state["rng"])
