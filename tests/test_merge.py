"""Softmax weights, the parameter merge on two tiny nets, and K=1 reducing exactly to plain DQN."""

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from asyncdqn.config import LearnerConfig, MergeConfig
from asyncdqn.learner import Learner
from asyncdqn.merge import (ScoreBoard, distance_to, merge_params, resync_, softmax_weights, standardise,
                            weight_entropy)
from asyncdqn.nets import EnsembleQNet
from asyncdqn.runtime import merge_scorer
from asyncdqn.transitions import Batch


def test_softmax_weights_hand_computed():
    # scores 1 and 3: standardised to -1 and +1; tau = 1 -> softmax(-1, 1) = (1, e^2) / (1 + e^2)
    w = softmax_weights(np.array([1.0, 3.0]), tau=1.0)
    e2 = math.exp(2)
    assert w == pytest.approx([1 / (1 + e2), e2 / (1 + e2)])
    # tau = 2 halves the logits
    assert softmax_weights(np.array([1.0, 3.0]), tau=2.0) == pytest.approx([1 / (1 + math.e), math.e / (1 + math.e)])
    # scale-free: the same after multiplying scores by 100
    assert softmax_weights(np.array([100.0, 300.0]), 1.0) == pytest.approx(w)


def test_softmax_weights_edge_cases():
    assert softmax_weights(np.array([5.0, 1.0, 2.0]), math.inf) == pytest.approx([1 / 3] * 3)
    assert softmax_weights(np.array([4.0, 4.0]), 0.1) == pytest.approx([0.5, 0.5])      # no spread
    assert softmax_weights(np.array([np.nan, 2.0]), 1.0) == pytest.approx([0.5, 0.5])   # one known score
    assert standardise(np.array([np.nan, 1.0, 3.0])).tolist() == [0.0, -1.0, 1.0]
    assert softmax_weights(np.array([7.0]), 0.5) == pytest.approx([1.0])
    assert weight_entropy(np.array([0.5, 0.5])) == pytest.approx(math.log(2))


def test_param_merge_of_two_tiny_nets_and_resync():
    w_a, w_b = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 6.0]])
    weight = torch.stack([w_a, w_b])            # [K=2, 1, 2]
    bias = torch.tensor([[[0.0]], [[4.0]]])     # [K=2, 1, 1]
    merged = merge_params([weight, bias], np.array([0.25, 0.75]))
    # 0.25 * [1, 2] + 0.75 * [3, 6] = [2.5, 5]; bias 0.25 * 0 + 0.75 * 4 = 3
    assert merged[0].tolist() == [[[2.5, 5.0]]]
    assert merged[1].tolist() == [[[3.0]]]
    resync_([weight, bias], merged, blend=0.5)   # halfway to the merge
    assert weight.tolist() == [[[1.75, 3.5]], [[2.75, 5.5]]]
    assert bias.tolist() == [[[1.5]], [[3.5]]]


def test_learner_params_merge_resyncs_every_online_net_to_the_target():
    lc, mc = LearnerConfig(num_nets=2, hidden=(3,)), MergeConfig(every=1, tau=1.0)
    learner = Learner(lc, mc, obs_shape=2, n_actions=2, seed=0)
    with torch.no_grad():
        for p in learner.online.parameters():
            p[1].add_(1.0)                       # make net 1 differ from net 0 by +1 everywhere
    event = learner.merge(np.array([0.0, 10.0]))   # net 1 scores higher
    w1 = event.weights_K[1]
    assert w1 == pytest.approx(math.exp(1) / (math.exp(-1) + math.exp(1)))
    for t, p in zip(learner.target.parameters(), learner.online.parameters()):
        # full re-sync: every online net now equals the target
        assert torch.allclose(p, t.expand_as(p))


def test_merge_reports_the_disagreement_of_the_nets_before_the_resync():
    learner = Learner(LearnerConfig(num_nets=2, hidden=(3,)), MergeConfig(every=1), obs_shape=2, n_actions=2, seed=0)
    with torch.no_grad():
        for p in learner.online.parameters():
            p.zero_()
        learner.online.head.bias[1].fill_(2.0)   # net 0: Q = 0 everywhere; net 1: Q = 2 everywhere
    event = learner.merge(np.array([0.0, 0.0]), torch.ones(5, 2))
    # std over K = 2 nets (unbiased): sqrt(((0 - 1)^2 + (2 - 1)^2) / 1) = sqrt(2), for every s and a
    assert event.q_std == pytest.approx(math.sqrt(2))
    assert learner.merge(np.array([0.0, 0.0]), torch.ones(5, 2)).q_std == 0.0   # after the full re-sync


def _batches(rng, n, k, b, obs_size=4):
    for _ in range(n):
        yield Batch(rng.standard_normal((k, b, obs_size)).astype(np.float32), rng.integers(0, 2, (k, b)),
                    rng.standard_normal((k, b)).astype(np.float32),
                    rng.choice([0.0, 0.99], (k, b)).astype(np.float32),
                    rng.standard_normal((k, b, obs_size)).astype(np.float32),
                    np.ones((k, b), np.float32), np.zeros((k, b), np.int64), np.zeros((k, b), np.int64))


def test_k1_reduces_to_plain_dqn_with_hard_target_copy():
    """One net, any tau: the ensemble learner equals a hand-written DQN (Double-DQN target, Huber loss,
    clip_grad_norm_, Adam, target <- online every M updates) on the same batches."""
    lc = LearnerConfig(num_nets=1, hidden=(8, 8), lr=1e-2, grad_clip=0.5)
    mc = MergeConfig(every=3, tau=0.37)
    learner = Learner(lc, mc, obs_shape=4, n_actions=2, seed=1)

    plain = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 2))
    with torch.no_grad():   # same initial weights ([1, in, out] -> Linear's [out, in])
        for lin, ens in zip([plain[0], plain[2], plain[4]], [*learner.online.torso, learner.online.head]):
            lin.weight.copy_(ens.weight[0].T)
            lin.bias.copy_(ens.bias[0, 0])
    target = [p.detach().clone() for p in plain.parameters()]
    tnet = torch.nn.Sequential(*[type(m)(*(() if isinstance(m, torch.nn.ReLU) else (m.in_features, m.out_features)))
                                 for m in plain])
    opt = torch.optim.Adam(plain.parameters(), lr=1e-2)

    for i, batch in enumerate(_batches(np.random.default_rng(0), 10, 1, 16)):
        learner.run([batch], np.array([123.0]))
        with torch.no_grad():
            for tp, v in zip(tnet.parameters(), target):
                tp.copy_(v)
            obs, nxt = torch.as_tensor(batch.obs_KBO[0]), torch.as_tensor(batch.next_obs_KBO[0])
            a_star = plain(nxt).argmax(1, keepdim=True)
            y = torch.as_tensor(batch.ret_KB[0]) + torch.as_tensor(batch.disc_KB[0]) * tnet(nxt).gather(1, a_star)[:, 0]
        q = plain(obs).gather(1, torch.as_tensor(batch.act_KB[0])[:, None])[:, 0]
        loss = torch.nn.functional.huber_loss(q, y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.5)
        opt.step()
        if (i + 1) % 3 == 0:
            target = [p.detach().clone() for p in plain.parameters()]
    assert learner.weights_K.tolist() == [1.0]
    for lin, ens in zip([plain[0], plain[2], plain[4]], [*learner.online.torso, learner.online.head]):
        assert torch.allclose(lin.weight, ens.weight[0].T, atol=1e-6)
        assert torch.allclose(lin.bias, ens.bias[0, 0], atol=1e-6)


def test_ensemble_nets_share_init_and_train_on_their_own_batches():
    net = EnsembleQNet(3, 4, 2, (8,)).reset_parameters(0)
    for p in net.parameters():
        assert torch.equal(p[0], p[1]) and torch.equal(p[1], p[2])
    learner = Learner(LearnerConfig(num_nets=3, hidden=(8,)), MergeConfig(every=1000), 4, 2, seed=0)
    batch = next(_batches(np.random.default_rng(1), 1, 3, 8))
    # give net 2 the same minibatch as net 0: they must stay equal, net 1 must differ
    batch = batch._replace(**{f: np.stack([getattr(batch, f)[0], getattr(batch, f)[1], getattr(batch, f)[0]])
                              for f in ("obs_KBO", "act_KB", "ret_KB", "disc_KB", "next_obs_KBO")})
    learner.run([batch], np.zeros(3))
    w = learner.online.head.weight
    assert torch.equal(w[0], w[2]) and not torch.equal(w[0], w[1])


def _two_different_nets(**merge) -> Learner:
    learner = Learner(LearnerConfig(num_nets=2, hidden=(3,)), MergeConfig(every=1, tau=1.0, **merge), obs_shape=2,
                      n_actions=2, seed=0)
    with torch.no_grad():
        for p in learner.online.parameters():
            p[1].add_(1.0)                       # net 1 differs from net 0 by +1 everywhere
    return learner


def test_params_merge_target_is_the_weighted_average_for_unequal_weights():
    learner = _two_different_nets()
    before = [p.detach().clone() for p in learner.online.parameters()]
    w = learner.merge(np.array([0.0, 10.0])).weights_K
    assert w[1] == pytest.approx(0.8808, abs=1e-4)      # e / (e^-1 + e), far from uniform
    for t, p in zip(learner.target.parameters(), before):
        expected = w[0] * p[0] + w[1] * p[1]             # by hand, not through merge_params
        assert torch.allclose(t[0], expected.float(), atol=1e-6)
        assert not torch.allclose(t[0], p.mean(0), atol=1e-3)  # the uniform mean would be wrong


def test_outputs_space_target_is_the_weighted_sum_of_the_lagged_nets_q_values():
    learner = _two_different_nets(space="outputs")
    x_BO = torch.tensor([[0.5, -1.0], [2.0, 0.25], [0.0, 0.0]])
    with torch.no_grad():
        q_KBA = learner.online.forward_all(x_BO)         # the lagged copies are the online nets at the merge
    w = learner.merge(np.array([10.0, 0.0])).weights_K   # net 0 favoured
    expected_BA = w[0] * q_KBA[0] + w[1] * q_KBA[1]
    got_KBA = learner.target_q(x_BO.expand(2, 3, 2).contiguous())
    for k in range(2):                                    # every net's batch gets the same merged target
        assert torch.allclose(got_KBA[k], expected_BA.float(), atol=1e-5)
    assert not torch.allclose(got_KBA[0], q_KBA.mean(0), atol=1e-3)


def _parts_for_scorer(learner, score: str, since_merge: bool = False) -> SimpleNamespace:
    """What `runtime.merge_scorer` reads of a run's parts."""
    cfg = SimpleNamespace(merge=dataclasses.replace(learner.merge_cfg, score=score, since_merge=since_merge),
                          learner=learner.cfg, replay=SimpleNamespace(batch_size=4))
    board = ScoreBoard(learner.online.k, 10)
    board.add_return(0, 5.0)                             # training returns favour net 0
    return SimpleNamespace(cfg=cfg, learner=learner, returns=board, scorer=None, heldout=None)


def test_td_loss_score_gives_the_net_with_the_lower_loss_the_larger_weight():
    learner = _two_different_nets(score="td_loss")
    for _ in range(3):
        learner.losses.add_losses(np.array([1.0, 0.1]))  # net 1 fits its targets better
    assert learner.losses.scores("td_loss").tolist() == pytest.approx([-1.0, -0.1])
    scores = merge_scorer(_parts_for_scorer(learner, "td_loss"))(learner)   # the return scores are ignored
    w = learner.merge(scores).weights_K
    assert w[1] == pytest.approx(math.exp(1) / (math.exp(-1) + math.exp(1)))
    returns = merge_scorer(_parts_for_scorer(learner, "return"))(learner)
    assert returns[0] == 5.0 and np.isnan(returns[1])


def test_since_merge_scores_count_only_what_came_after_the_last_merge():
    board = ScoreBoard(k=2, window=10)
    board.add_return(0, 100.0, at=50)                    # before the merge at update 100
    board.add_return(0, 10.0, at=100)
    board.add_return(1, 20.0, at=104)
    assert board.scores("return").tolist() == [55.0, 20.0]
    assert board.scores("return", since=100).tolist() == [10.0, 20.0]
    learner = _two_different_nets(score="td_loss")
    learner.updates = 104                                  # every = 1: the last merge was at 104
    learner.losses.add_losses(np.array([1.0, 3.0]), at=103)
    learner.losses.add_losses(np.array([2.0, 1.0]), at=104)
    assert merge_scorer(_parts_for_scorer(learner, "td_loss"))(learner).tolist() == [-1.5, -2.0]
    assert merge_scorer(_parts_for_scorer(learner, "td_loss", since_merge=True))(learner).tolist() == [-2.0, -1.0]


def test_standardise_and_entropy_compute_in_float64_whatever_the_input_dtype():
    # integer scores: mean 3, std sqrt(14/3); an integer result array would truncate them to 0, 0, 1
    assert standardise([1, 2, 6]) == pytest.approx(np.array([-2, -1, 3]) / math.sqrt(14 / 3))
    w32 = np.array([0.3, 0.7], np.float32)
    w64 = w32.astype(np.float64)
    assert weight_entropy(w32) == pytest.approx(float(-(w64 * np.log(w64)).sum()), rel=1e-12)
    assert weight_entropy(np.array([1.0, 0.0])) == 0.0   # a zero weight adds nothing (0 log 0 = 0)


def test_softmax_weights_at_a_tiny_tau_put_all_the_weight_on_the_best_net_without_overflow():
    assert softmax_weights(np.array([1.0, 3.0]), tau=1e-3).tolist() == [0.0, 1.0]   # logits -1000, +1000


def test_merge_params_of_a_single_tensor_and_distance_to_the_merge():
    assert merge_params([torch.tensor([[1.0], [3.0]])], np.array([0.25, 0.75]))[0].tolist() == [[2.5]]
    weight = torch.tensor([[[1.0, 0.0]], [[4.0, 4.0]]])    # [K=2, 1, 2]
    bias = torch.tensor([[[0.0]], [[12.0]]])
    merged = [torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0]]])]
    # net 0 is the merge; net 1 differs by (3, 4) and 12: sqrt(9 + 16 + 144) = 13
    assert distance_to([weight, bias], merged).tolist() == [0.0, 13.0]


def test_score_board_keeps_a_window_per_net_and_survives_a_state_round_trip():
    board = ScoreBoard(k=3, window=2)
    for ret in (1.0, 2.0, 6.0):
        board.add_return(1, ret)                         # the window keeps 2 and 6
    for loss_K in ([9.0, 9.0, 9.0], [0.5, 1.0, 2.0], [1.5, 1.0, 4.0]):
        board.add_losses(np.array(loss_K))           # the first falls out of the window
    assert board.scores("return")[1] == 4.0 and np.isnan(board.scores("return")[[0, 2]]).all()
    assert board.scores("td_loss").tolist() == [-1.0, -1.0, -3.0]
    restored = ScoreBoard(k=3, window=2)
    restored.add_return(0, 99.0)                          # replaced by the saved (empty) deque
    restored.load_state_dict(board.state_dict())
    assert restored.state_dict() == {"returns": [[], [[2.0, 0], [6.0, 0]], []],
                                     "losses": [[[0.5, 0], [1.5, 0]], [[1.0, 0], [1.0, 0]], [[2.0, 0], [4.0, 0]]]}
    old = ScoreBoard(k=3, window=2)                       # a checkpoint from before the stamps: plain values
    old.load_state_dict({"returns": [[], [2.0, 6.0], []], "losses": [[0.5, 1.5], [1.0, 1.0], [2.0, 4.0]]})
    assert old.state_dict() == restored.state_dict()
    restored.add_return(1, 10.0)
    assert restored.scores("return")[1] == 8.0            # the restored deque keeps its window

