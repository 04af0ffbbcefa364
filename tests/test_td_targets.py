"""Hand-computed TD targets, n-step returns at episode ends, and per-net gradient clipping."""

import numpy as np
import pytest
import torch

from asyncdqn.learner import clip_grad_norm_per_net_, td_targets
from asyncdqn.transitions import ChunkBuilder, nstep_targets

GAMMA = 0.9


def test_td_targets_three_transitions_double_dqn():
    # Three transitions of one net (K=1, B=3), two actions.
    ret = torch.tensor([[1.0, 0.5, -1.0]])
    # row 0: continuing (disc = gamma); row 1: terminated (disc = 0); row 2: truncated (disc = gamma).
    disc = torch.tensor([[GAMMA, 0.0, GAMMA]])
    q_online = torch.tensor([[[1.0, 3.0], [5.0, 0.0], [2.0, 1.0]]])   # online picks a* = 1, 0, 0
    q_target = torch.tensor([[[10.0, 20.0], [7.0, 8.0], [4.0, 6.0]]])
    y = td_targets(ret, disc, q_online, q_target)
    # row 0: 1 + 0.9 * Q_target[a*=1] = 1 + 18 = 19; row 1: 0.5 (terminal, no bootstrap);
    # row 2: -1 + 0.9 * Q_target[a*=0] = -1 + 3.6 = 2.6 (truncated: bootstrap from the true final obs).
    assert y.tolist()[0] == pytest.approx([19.0, 0.5, 2.6])


def test_td_targets_without_double_uses_target_max():
    ret = torch.tensor([[0.0]])
    disc = torch.tensor([[1.0]])
    q_target = torch.tensor([[[3.0, 2.0]]])
    assert td_targets(ret, disc, None, q_target).item() == 3.0


def test_nstep_one_step_with_terminal_and_truncated_ends():
    # rows: s0 s1 F(term) s3 s4 F(trunc) s6(current, not acted)
    acted = np.array([1, 1, 0, 1, 1, 0, 0], bool)
    final = np.array([0, 0, 1, 0, 0, 1, 0], bool)
    term = np.array([0, 0, 1, 0, 0, 0, 0], bool)
    rew = np.array([1, 2, 0, 3, 4, 0, 0], float)
    ns = nstep_targets(rew, acted, final, term, GAMMA, 1)
    assert ns.valid_R.tolist() == [1, 1, 0, 1, 1, 0, 0]
    assert ns.hor_R[[0, 1, 3, 4]].tolist() == [1, 1, 1, 1]
    assert ns.ret_R[[0, 1, 3, 4]].tolist() == [1, 2, 3, 4]
    # s1 -> terminal: no bootstrap; s4 -> truncated: bootstrap with gamma.
    assert ns.disc_R[[0, 1, 3, 4]] == pytest.approx([GAMMA, 0.0, GAMMA, GAMMA])


def test_nstep_three_step_stops_at_episode_end_and_carries_incomplete():
    # rows: a0 a1 a2 F(term) a4 a5 a6 a7(current)
    acted = np.array([1, 1, 1, 0, 1, 1, 1, 0], bool)
    final = np.array([0, 0, 0, 1, 0, 0, 0, 0], bool)
    term = np.array([0, 0, 0, 1, 0, 0, 0, 0], bool)
    rew = np.array([1, 2, 4, 0, 1, 1, 1, 0], float)
    ns = nstep_targets(rew, acted, final, term, GAMMA, 3)
    # a0: 1 + .9*2 + .81*4 = 6.04, ends at the terminal row 3 exactly at h=3 -> disc 0.
    # a1: 2 + .9*4 = 5.6, h=2, terminal -> disc 0. a2: 4, h=1, disc 0.
    # a4: 1 + .9 + .81 = 2.71, h=3, bootstrap row 7 with gamma^3. a5, a6: horizon runs past the chunk.
    assert ns.valid_R.tolist() == [1, 1, 1, 0, 1, 0, 0, 0]
    assert ns.ret_R[[0, 1, 2, 4]] == pytest.approx([6.04, 5.6, 4.0, 2.71])
    assert ns.hor_R[[0, 1, 2, 4]].tolist() == [3, 2, 1, 3]
    assert ns.disc_R[[0, 1, 2, 4]] == pytest.approx([0, 0, 0, GAMMA**3])


def test_chunk_builder_emits_each_transition_once_across_chunks():
    n = 3
    b = ChunkBuilder(rows=8, obs_shape=(1,), obs_dtype=np.float32, gamma=GAMMA, n=n, net=0)
    starts = []   # first observation value of each emitted valid transition
    t = 0.0
    b.observe(np.array([t]))
    for step in range(40):
        b.acted(0, 1.0)
        t += 1
        if step % 11 == 10:       # an episode end every 11 steps
            b.final(np.array([t]), terminated=True)
            t += 100              # reset observation far away
        b.observe(np.array([t]))
        if b.full:
            c = b.flush()
            starts += c.obs_RO[c.valid_R, 0].tolist()
            nxt = c.obs_RO[np.flatnonzero(c.valid_R) + c.hor_R[c.valid_R], 0]
            # the bootstrap row is h observations later in the stream (or the episode's final obs)
            h = c.hor_R[c.valid_R]
            assert np.all((nxt - c.obs_RO[c.valid_R, 0] == h) | (c.disc_R[c.valid_R] == 0))
    assert len(starts) == len(set(starts)), "a transition was emitted twice"
    assert len(starts) >= 40 - 8


def test_per_net_clip_scales_each_net_separately():
    p = torch.nn.Parameter(torch.zeros(2, 2))
    p.grad = torch.tensor([[3.0, 4.0], [0.3, 0.4]])   # norms 5 and 0.5
    norms = clip_grad_norm_per_net_([p], max_norm=1.0)
    assert norms.tolist() == pytest.approx([5.0, 0.5])
    assert p.grad[0].tolist() == pytest.approx([0.6, 0.8], rel=1e-5)   # clipped to norm 1
    assert p.grad[1].tolist() == pytest.approx([0.3, 0.4])             # left alone


def naive_nstep(rew, acted, final, term, gamma, n):
    """The definition in nstep_targets' docstring, one row at a time (the oracle for the vectorised code)."""
    rows = len(rew)
    valid, ret = np.zeros(rows, bool), np.zeros(rows, np.float32)
    disc, hor = np.zeros(rows, np.float32), np.zeros(rows, np.int16)
    for i in np.flatnonzero(acted):
        g = 0.0
        for j in range(n):
            g += gamma**j * float(rew[i + j])
            nxt = i + j + 1
            if nxt >= rows:
                break
            if final[nxt] or j + 1 == n:
                valid[i], ret[i], hor[i] = True, g, j + 1
                disc[i] = 0.0 if (final[nxt] and term[nxt]) else gamma ** (j + 1)
                break
    return valid, ret, disc, hor


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_nstep_targets_match_the_row_by_row_definition_on_random_streams(n):
    rng = np.random.default_rng(n)
    for _ in range(50):
        rows = int(rng.integers(2, 40))
        final = rng.random(rows) < 0.2
        acted = ~final
        acted[-1] = acted[-1] & (rng.random() < 0.5)          # the last row may still wait for its action
        term = final & (rng.random(rows) < 0.5)
        rew = np.where(acted, rng.normal(size=rows), 0.0)
        got = nstep_targets(rew, acted, final, term, 0.97, n)
        want = naive_nstep(rew, acted, final, term, 0.97, n)
        np.testing.assert_array_equal(got.valid_R, want[0])
        np.testing.assert_allclose(got.ret_R, want[1], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got.disc_R, want[2])
        np.testing.assert_array_equal(got.hor_R, want[3])


def test_per_net_clip_matches_torch_clip_grad_norm_including_the_tiny_norm_guard():
    g = torch.tensor([[6e-6, 8e-6], [3.0, 4.0]])          # norms 1e-5 and 5
    p = torch.nn.Parameter(torch.zeros(2, 2))
    p.grad = g.clone()
    clip_grad_norm_per_net_([p], max_norm=1e-6)
    # net 0: scale 1e-6 / (1e-5 + 1e-6) = 1/11 (the guard matters at this size); net 1: 1e-6 / (5 + 1e-6)
    assert p.grad[0].tolist() == pytest.approx([6e-6 / 11, 8e-6 / 11], rel=1e-6)
    for k in range(2):
        q = torch.nn.Parameter(torch.zeros(2))
        q.grad = g[k].clone()
        torch.nn.utils.clip_grad_norm_([q], max_norm=1e-6)
        assert p.grad[k].tolist() == pytest.approx(q.grad.tolist(), rel=1e-6)
