"""The merge's unconfounded scores, its baselines (copy-the-best, Averaged-DQN) and population mode.

Hand-computed cases: the actor layout, each net's greedy return on a toy env whose return is the count of
action-1 steps, a held-out TD error, the averaged target, the per-net Adam step, PBT's explore step."""

from __future__ import annotations

from collections import Counter

import gymnasium as gym
import numpy as np
import pytest
import torch

from asyncdqn.config import LearnerConfig, MergeConfig, PopulationConfig
from asyncdqn.learner import Learner, population_lrs, scale_step_
from asyncdqn.merge import ScoreBoard, softmax_weights
from asyncdqn.schedule import actor_epsilons, actor_net, epsilon_ladder
from asyncdqn.scoring import HeldOutSplit, MemberScorer, member_returns
from asyncdqn.transitions import Batch


# --- the actor layout -----------------------------------------------------------------------------------

@pytest.mark.parametrize("n, k", [(8, 4), (12, 3), (16, 4), (6, 1)])
def test_balanced_layout_gives_every_net_the_same_epsilons(n, k):
    eps = actor_epsilons(n, k, 0.4, 7.0, "balanced")
    owned = [sorted(eps[i] for i in range(n) if actor_net(i, k) == net) for net in range(k)]
    assert all(o == owned[0] for o in owned)
    assert sorted(set(eps.tolist()), reverse=True) == epsilon_ladder(n // k, 0.4, 7.0).tolist()


def test_spread_layout_is_the_ape_x_ladder_where_net_0_owns_the_most_exploratory_actors():
    eps = actor_epsilons(8, 4, 0.4, 7.0, "spread")
    assert eps.tolist() == pytest.approx([0.4 ** (1 + 7 * i / 7) for i in range(8)])
    assert [actor_net(i, 4) for i in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]


@pytest.mark.parametrize("layout, biased", [("balanced", False), ("spread", True)])
def test_return_scores_of_equally_good_nets_show_no_position_bias_under_the_balanced_layout(layout, biased):
    """Every net is equally good; an episode's return falls with its actor's epsilon (more random actions,
    shorter CartPole episodes) plus noise. Over many merges each net's mean weight is uniform only when the
    layout gives every net the same epsilons."""
    n, k, rng = 8, 4, np.random.default_rng(0)
    eps = actor_epsilons(n, k, 0.4, 7.0, layout)
    board, weights = ScoreBoard(k, window=10), []
    for _merge in range(400):
        for i in rng.permutation(n):
            board.add_return(actor_net(i, k), 500 * (1 - eps[i]) + rng.normal(0, 20))
        weights.append(softmax_weights(board.scores("return"), tau=1.0))
    mean_K = np.mean(weights, 0)
    if biased:
        assert mean_K[0] < 0.5 / k                     # net 0 owns the epsilon-0.4 actor
    else:
        assert np.abs(mean_K - 1 / k).max() < 0.03


# --- greedy per-net scores ---------------------------------------------------------------------------------

class CountOnes(gym.Env):
    """Obs [1, t]: reward 1 for action 1, 0 for action 0; 5 steps an episode."""

    observation_space = gym.spaces.Box(-10, 10, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.start = seed
        return np.array([1.0, 0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([1.0, self.t], np.float32), float(action), self.t >= 5, False, {}


def _net_preferring(learner: Learner, actions_K: list[int]) -> torch.nn.Module:
    """Set each net's output layer so it always picks actions_K[k] (zero weights, a bias of 1 on it)."""
    with torch.no_grad():
        *_, w_out, b_out = learner.online.parameters()
        w_out.zero_()
        b_out.zero_()
        for k, a in enumerate(actions_K):
            b_out[k, ..., a] = 1.0
    return learner.online


def test_member_returns_score_each_net_by_its_own_greedy_episodes_from_the_same_starts():
    learner = Learner(LearnerConfig(num_nets=3, hidden=(4,)), MergeConfig(), 2, 2, seed=0)
    net = _net_preferring(learner, [1, 0, 1])
    envs = [CountOnes() for _ in range(3 * 2)]
    assert member_returns(envs, net, episodes=2, seed=7).tolist() == [5.0, 0.0, 5.0]
    assert [e.start for e in envs] == [7, 8] * 3           # episode j of every net starts from seed + j
    scorer = MemberScorer(CountOnes, 3, 2)
    assert scorer(net, seed=3).tolist() == [5.0, 0.0, 5.0]
    assert [e.start for e in scorer.envs] == [3, 4] * 3
    with pytest.raises(ValueError):
        member_returns(envs[:5], net, episodes=2, seed=0)


def test_a_net_made_bad_loses_its_weight_at_the_next_merge_under_the_greedy_score():
    learner = Learner(LearnerConfig(num_nets=4, hidden=(4,)), MergeConfig(every=1, score="greedy"), 2, 2, seed=0)
    net = _net_preferring(learner, [1, 1, 1, 1])
    scorer = MemberScorer(CountOnes, 4, 1)
    assert learner.merge(scorer(net, 0)).weights_K.tolist() == [0.25] * 4
    learner.online.reset_parameters(123)                    # every net re-initialised ...
    _net_preferring(learner, [1, 1, 0, 1])                  # ... and net 2 made to pick the worthless action
    w = learner.merge(scorer(learner.online, 1)).weights_K
    assert w[2] < 0.05 and w.argmin() == 2


# --- held-out TD scores -------------------------------------------------------------------------------

def _rows_batch(obs_BO: np.ndarray, act_B: np.ndarray, ret_B: np.ndarray) -> Batch:
    b = len(act_B)
    return Batch(obs_BO[None].astype(np.float32), act_B[None].astype(np.int64), ret_B[None].astype(np.float32),
                 np.zeros((1, b), np.float32), obs_BO[None].astype(np.float32), np.ones((1, b), np.float32),
                 np.zeros((1, b), np.int64), np.zeros((1, b), np.int64))


def test_heldout_scores_are_minus_each_nets_huber_error_on_the_same_rows():
    learner = Learner(LearnerConfig(num_nets=2, hidden=(4,)), MergeConfig(score="heldout_td"), 2, 2, seed=0)
    with torch.no_grad():                                   # net k's Q is k + 1 for every state and action
        *_, w_out, b_out = learner.online.parameters()
        w_out.zero_()
        b_out.copy_(torch.tensor([1.0, 2.0]).reshape(2, *([1] * (b_out.dim() - 1))).expand_as(b_out))
    # terminal rows (disc 0): y = ret = 1. Net 0 is exact; net 1 is off by 1 (Huber 0.5 at delta 1)
    batch = _rows_batch(np.ones((3, 2)), np.array([0, 1, 0]), np.ones(3))
    assert learner.heldout_scores(batch).tolist() == pytest.approx([0.0, -0.5])
    batch = _rows_batch(np.ones((3, 2)), np.array([0, 1, 0]), np.full(3, 4.0))   # errors 3 and 2: 2.5, 1.5
    assert learner.heldout_scores(batch).tolist() == pytest.approx([-2.5, -1.5])
    with torch.no_grad():                                   # the target values action 0 at 0 and action 1 at 2
        *_, tw, tb = learner.target.parameters()
        tw.zero_()
        tb.copy_(torch.tensor([0.0, 2.0]).expand_as(tb))
    bootstrapped = batch._replace(ret_KB=np.zeros((1, 3), np.float32), disc_KB=np.full((1, 3), 0.5, np.float32))
    # y = 0 + 0.5 * max(0, 2) = 1 for every row: net 0 exact, net 1 off by 1
    assert learner.heldout_scores(bootstrapped).tolist() == pytest.approx([0.0, -0.5])


def test_a_reinitialised_net_loses_its_weight_under_the_heldout_score():
    """Four nets fit a regression (terminal rows: y = ret = obs[0] - obs[1] for action 0); net 2 is then
    re-initialised. Its held-out error, on rows none of them trained on, gives it the smallest weight."""
    rng = np.random.default_rng(0)
    learner = Learner(LearnerConfig(num_nets=4, hidden=(32,), lr=3e-3), MergeConfig(every=10_000, score="heldout_td"),
                      2, 2, seed=0)

    def rows(b):
        obs = rng.normal(size=(b, 2))
        return obs, np.zeros(b, np.int64), obs[:, 0] - obs[:, 1]

    for _ in range(300):
        obs, act, ret = rows(64)
        one = _rows_batch(obs, act, ret)
        learner.update(Batch(*(np.repeat(x, 4, 0) for x in one)))
    held = _rows_batch(*rows(256))
    before = learner.heldout_scores(held)
    fresh = Learner(LearnerConfig(num_nets=4, hidden=(32,)), MergeConfig(), 2, 2, seed=9)
    with torch.no_grad():
        for p, q in zip(learner.online.parameters(), fresh.online.parameters()):
            p[2].copy_(q[2])
    after = learner.heldout_scores(held)
    assert after[2] < before[2] and after.argmin() == 2
    assert learner.merge(after).weights_K[2] < 0.1


class _Sink:
    def __init__(self):
        self.chunks = []

    def add(self, chunk):
        self.chunks.append(chunk)

    def state_dict(self, with_rows=True):
        return {"n": len(self.chunks)}

    def load_state_dict(self, state):
        self.loaded = state


def test_heldout_split_keeps_one_chunk_in_every_out_of_replay():
    replay, held = _Sink(), _Sink()
    split = HeldOutSplit(replay, held, every=3)
    for c in range(7):
        split.add(c)
    assert held.chunks == [2, 5] and replay.chunks == [0, 1, 3, 4, 6]
    again = HeldOutSplit(_Sink(), _Sink(), every=3)
    again.load_state_dict(split.state_dict())
    assert again.chunks == 7 and again.held.loaded == {"n": 2}


# --- the literature's baselines ------------------------------------------------------------------------

def test_tau_zero_copies_the_best_net_and_shares_a_tie():
    assert softmax_weights(np.array([1.0, 3.0, 2.0]), tau=0.0).tolist() == [0.0, 1.0, 0.0]
    assert softmax_weights(np.array([3.0, 3.0, 2.0]), tau=0.0).tolist() == [0.5, 0.5, 0.0]
    assert softmax_weights(np.array([np.nan, np.nan]), tau=0.0).tolist() == [0.5, 0.5]   # no scores yet


def test_averaged_target_is_the_mean_q_of_the_last_snapshots_merges():
    learner = Learner(LearnerConfig(num_nets=1, hidden=(3,)), MergeConfig(every=1, space="averaged", snapshots=2),
                      2, 2, seed=0)
    x = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    params = list(learner.online.parameters())

    def q_now():
        with torch.no_grad():
            return learner.online.forward_all(x)[0]

    q0 = q_now()                                             # both slots start as the initial net
    assert torch.allclose(learner.target_q(x[None])[0], q0)
    for shift in (1.0, 2.0):
        with torch.no_grad():
            params[-1].add_(shift)                           # the net moves: its output bias grows
        learner.merge(np.array([0.0]))
    q2 = q_now()                                             # after +1 then +2: the last two merges are q0+1, q0+3
    assert torch.allclose(learner.target_q(x[None])[0], q2 - 1.0, atol=1e-6)
    with torch.no_grad():
        params[-1].add_(1.0)
    learner.merge(np.array([0.0]))                           # the oldest (q0 + 1) drops out: mean of q0+3, q0+4
    assert torch.allclose(learner.target_q(x[None])[0], q2 + 0.5, atol=1e-6)


# --- population mode -------------------------------------------------------------------------------------

def test_population_lrs_are_given_values_or_seeded_log_uniform_draws():
    assert population_lrs((), 1e-3, 3, np.random.default_rng(0)).tolist() == [1e-3] * 3
    assert population_lrs((1e-4, 1e-3, 3e-3), 1e-3, 3, np.random.default_rng(0)).tolist() == [1e-4, 1e-3, 3e-3]
    drawn = population_lrs((1e-2, 1e-4), 1e-3, 64, np.random.default_rng(0))
    assert drawn.min() >= 1e-4 and drawn.max() <= 1e-2 and np.median(drawn) == pytest.approx(1e-3, rel=0.3)


def _lone_copies(ensemble: Learner, lrs) -> list[Learner]:
    """One K = 1 learner per net of `ensemble` (seed 0, hidden (8,), learning rate lrs[k]), starting from that
    net's parameters: what each net would be trained alone."""
    singles = []
    for k, lr in enumerate(lrs):
        one = Learner(LearnerConfig(num_nets=1, hidden=(8,), lr=lr), MergeConfig(every=10_000), 3, 2, seed=0)
        with torch.no_grad():
            for p, q in zip(one.online.parameters(), ensemble.online.parameters()):
                p.copy_(q[k:k + 1])
        singles.append(one)
    return singles


def test_per_net_learning_rates_match_a_separate_adam_per_net():
    lrs = (1e-4, 3e-3)
    cfg = LearnerConfig(num_nets=2, hidden=(8,))
    pop = Learner(cfg, MergeConfig(every=10_000), 3, 2, seed=0, population=PopulationConfig(lrs=lrs))
    singles = _lone_copies(pop, lrs)
    rng = np.random.default_rng(1)
    for _ in range(5):
        obs, nxt = rng.normal(size=(2, 2, 4, 3)).astype(np.float32)
        ret = rng.normal(size=(2, 4)).astype(np.float32)
        batch = Batch(obs, np.zeros((2, 4), np.int64), ret, np.full((2, 4), 0.9, np.float32), nxt,
                      np.ones((2, 4), np.float32), np.zeros((2, 4), np.int64), np.zeros((2, 4), np.int64))
        pop.update(batch)
        for k, one in enumerate(singles):
            one.update(Batch(*(x[k:k + 1] for x in batch)))
    for k, one in enumerate(singles):
        for p, q in zip(one.online.parameters(), pop.online.parameters()):
            assert torch.allclose(p[0], q[k], atol=1e-6)


def test_scale_step_rescales_each_nets_step():
    before = [torch.zeros(2, 3)]
    after = [torch.ones(2, 3)]                               # an lr = 1 step of +1 everywhere
    scale_step_(after, before, torch.tensor([0.5, 0.25]))
    assert after[0].tolist() == [[0.5] * 3, [0.25] * 3]


def test_explore_gives_the_lowest_weight_net_the_top_nets_rate_perturbed():
    learner = Learner(LearnerConfig(num_nets=3, hidden=(4,)), MergeConfig(every=1), 2, 2, seed=0,
                      population=PopulationConfig(lrs=(1e-4, 1e-3, 3e-3), explore=True))
    event = learner.merge(np.array([2.0, 1.0, 0.0]))          # net 0 on top, net 2 lowest
    assert event.lrs_K[:2].tolist() == [1e-4, 1e-3]
    assert event.lrs_K[2] == pytest.approx(1e-4 * 0.8) or event.lrs_K[2] == pytest.approx(1e-4 * 1.25)
    factors = Counter()
    for _ in range(40):
        learner.lrs_K[:] = (1.0, 1.0, 1.0)
        factors[round(learner.merge(np.array([2.0, 1.0, 0.0])).lrs_K[2], 2)] += 1
    assert set(factors) == {0.8, 1.25}


def test_bootstrap_masks_are_fixed_per_row_and_net_and_keep_about_p_of_the_rows():
    from asyncdqn.learner import bootstrap_mask

    rng = np.random.default_rng(0)
    stamp = rng.integers(0, 10**6, (4, 5000))
    idx = rng.integers(0, 10**5, (4, 5000))
    m = bootstrap_mask(stamp, idx, 3, 0.5)
    assert m.dtype == np.float32 and set(np.unique(m)) == {0.0, 1.0}
    assert abs(m.mean() - 0.5) < 0.02 and np.all(np.abs(m.mean(1) - 0.5) < 0.03)
    assert abs(np.mean(m[0] * m[1]) - 0.25) < 0.03                  # the nets' coins are independent
    assert abs(bootstrap_mask(stamp, idx, 3, 0.2).mean() - 0.2) < 0.02
    # the same row keeps its coin wherever it lands in a batch; a new write to the slot or a new seed redraws
    assert np.array_equal(bootstrap_mask(stamp[:, ::-1], idx[:, ::-1], 3, 0.5), m[:, ::-1])
    assert np.mean(bootstrap_mask(stamp + 1, idx, 3, 0.5) != m) > 0.4
    assert np.mean(bootstrap_mask(stamp, idx, 4, 0.5) != m) > 0.4
    same_row = bootstrap_mask(np.full((2, 3), 7), np.full((2, 3), 9), 0, 0.5)
    assert (same_row == same_row[:, :1]).all()                    # one coin per (row, net)


def test_a_masked_net_learns_exactly_as_a_lone_net_on_the_rows_its_mask_keeps():
    from asyncdqn.learner import bootstrap_mask

    cfg = LearnerConfig(num_nets=2, hidden=(8,), bootstrap_p=0.5)
    boot = Learner(cfg, MergeConfig(every=10_000), 3, 2, seed=0)  # the singles' seed: the same initial target
    singles = _lone_copies(boot, (1e-3, 1e-3))
    rng = np.random.default_rng(1)
    for step in range(5):
        obs, nxt = rng.normal(size=(2, 2, 8, 3)).astype(np.float32)
        ret = rng.normal(size=(2, 8)).astype(np.float32)
        stamp, idx = np.full((2, 8), step), np.arange(16).reshape(2, 8)
        batch = Batch(obs, np.zeros((2, 8), np.int64), ret, np.full((2, 8), 0.9, np.float32), nxt,
                      np.ones((2, 8), np.float32), idx, stamp)
        mask = bootstrap_mask(stamp, idx, 0, 0.5).astype(bool)
        assert 0 < mask.sum() < 16
        boot.update(batch)
        for k, one in enumerate(singles):
            if mask[k].any():
                one.update(Batch(*(x[k:k + 1][:, mask[k]] for x in batch)))
    for k, one in enumerate(singles):
        for p, q in zip(one.online.parameters(), boot.online.parameters()):
            assert torch.allclose(p[0], q[k], atol=1e-6)
