"""The replay pool: ring wraparound, valid-row sampling, the sum tree and prioritized replay, and real
CartPole transitions whose derived next observation must obey the cart-pole's Euler step."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from asyncdqn.replay import ReplayPool, SumTree
from asyncdqn.transitions import Chunk, ChunkBuilder
from helpers.real_actors import collect

F32 = np.dtype(np.float32)


def hand_chunk(start: int, rows: int, chunk_id: int, n: int = 1, net: int = 0) -> Chunk:
    """Rows at stream positions start..start+rows-1; obs = [position, chunk_id].

    Rows 0..rows-n-1 are valid with horizon n (their bootstrap row lies n rows on, in this chunk); the last
    n rows are bootstrap-only (carried to the next chunk by a real ChunkBuilder). So for every valid row
    next_obs[0] - obs[0] == hor and next_obs[1] == obs[1].
    """
    pos = np.arange(start, start + rows)
    obs = np.stack([pos, np.full(rows, chunk_id)], axis=1).astype(np.float32)
    valid = np.arange(rows) < rows - n
    hor = np.where(valid, n, 0).astype(np.int16)
    ret = np.where(valid, 100.0 * chunk_id + np.arange(rows), 0.0).astype(np.float32)
    disc = np.where(valid, 0.5**n, 0.0).astype(np.float32)
    act = np.where(valid, pos % 3, 0).astype(np.int64)
    return Chunk(obs, act, ret, disc, hor, valid, net, int(valid.sum()))


def pool(capacity: int, seed: int = 0, obs_shape=(2,), **kw) -> ReplayPool:
    return ReplayPool(capacity, obs_shape, F32, np.random.default_rng(seed), **kw)


def check_consistent(p: ReplayPool, batch) -> None:
    """Every sampled row is valid, its next obs is the row `hor` further on in the same chunk, and the
    stored fields come back with it."""
    idx = batch.idx_KB.reshape(-1)
    assert p.ring.valid_C[idx].all()
    obs = batch.obs_KBO.reshape(-1, 2)
    nxt = batch.next_obs_KBO.reshape(-1, 2)
    np.testing.assert_array_equal(nxt[:, 0] - obs[:, 0], p.ring.hor_C[idx])
    np.testing.assert_array_equal(nxt[:, 1], obs[:, 1])            # never crosses into another chunk
    np.testing.assert_array_equal(obs, p.obs_CO[idx])
    np.testing.assert_array_equal(batch.act_KB.reshape(-1), obs[:, 0].astype(np.int64) % 3)
    np.testing.assert_array_equal(batch.disc_KB.reshape(-1), 0.5 ** p.ring.hor_C[idx])


# ---------------------------------------------------------------------------------------------- ring


def test_ring_wraparound_overwrites_in_order_and_keeps_tail_rows():
    p = pool(20)
    # Lap 1: A [0,5) n=1, B [5,10) n=1, C [10,16) n=2, D [16,20) n=1 -> 4 + 4 + 4 + 3 = 15 valid rows.
    laps = [(hand_chunk(0, 5, 1), 5, 4), (hand_chunk(4, 5, 2), 10, 8), (hand_chunk(8, 6, 3, n=2), 16, 12),
            (hand_chunk(12, 4, 4), 20, 15)]
    for chunk, head, num_valid in laps:
        p.add(chunk)
        assert (p.ring.head, p.ring.num_valid, p.ring.filled) == (head, num_valid, head)
    lap1 = p.obs_CO.copy()

    # E: 7 rows, n=3 (4 valid) does not fit after row 20 -> written at [0,7). It overwrites A's 4 valid rows
    # and B's valid rows 5, 6: 15 - 6 + 4 = 13.
    p.add(hand_chunk(30, 7, 5, n=3))
    assert (p.ring.head, p.ring.num_valid, p.ring.filled) == (7, 13, 20)
    # F: 8 rows, n=1 (7 valid) at [7,15): overwrites B's rows 7, 8 and C's rows 10..13: 13 - 6 + 7 = 14.
    p.add(hand_chunk(40, 8, 6))
    assert (p.ring.head, p.ring.num_valid) == (15, 14)
    # G: 6 rows (5 valid): 15 + 6 > 20 -> jumps to 0 again, overwriting E's 4 valid rows: 14 - 4 + 5 = 15.
    p.add(hand_chunk(50, 6, 7))
    assert (p.ring.head, p.ring.num_valid, p.ring.filled) == (6, 15, 20)

    # Rows in write order: G [0,6), E's last row 6, F [7,15), then lap-1 tail rows 15..19 (C's last row, D).
    chunk_id = p.obs_CO[:, 1].astype(int).tolist()
    assert chunk_id == [7] * 6 + [5] + [6] * 8 + [3] + [4] * 4
    np.testing.assert_array_equal(p.obs_CO[:6, 0], np.arange(50, 56))
    np.testing.assert_array_equal(p.obs_CO[7:15, 0], np.arange(40, 48))
    np.testing.assert_array_equal(p.obs_CO[15:], lap1[15:])      # the tail keeps its old, intact data
    assert np.flatnonzero(p.ring.valid_C).tolist() == [0, 1, 2, 3, 4] + list(range(7, 14)) + [16, 17, 18]
    assert p.ring.num_valid == len(p) == int(p.ring.valid_C.sum()) == 15

    batch = p.sample(num_nets=4, batch_size=100)
    check_consistent(p, batch)
    # 400 draws over 15 valid rows: every one of them turns up (P(miss any) < 15 * (14/15)**400 ~ 1e-11).
    assert set(batch.idx_KB.reshape(-1).tolist()) == set(np.flatnonzero(p.ring.valid_C).tolist())


def test_chunk_larger_than_capacity_is_refused():
    p = pool(8)
    with pytest.raises(ValueError, match="does not fit"):
        p.add(hand_chunk(0, 9, 1))
    assert (p.ring.head, p.ring.num_valid) == (0, 0)


def test_sampling_empty_pool_raises():
    with pytest.raises(ValueError, match="empty"):
        pool(16).sample(1, 4)


def test_bytes_per_row_for_cartpole_observations():
    # 4 float32 obs (16) + int64 action (8) + float32 return (4) + float32 discount (4) + int64 horizon (8)
    # + bool valid (1) + int16 net (2) = 43 bytes
    p = ReplayPool(128, (4,), F32, np.random.default_rng(0))
    assert p.nbytes_per_row() == 43


# ---------------------------------------------------------------------------------- uniform sampling


def builder_stream(episodes: list[tuple[int, bool]], rows: int, n: int, gamma: float):
    """Chunks from a synthetic stream: obs = [position, is_final, terminated]; reward 1 per step.

    Returns (chunks, step positions, builder)."""
    b = ChunkBuilder(rows, (3,), F32, gamma, n, net=1)
    chunks, steps, pos = [], [], 0

    def obs(final=False, term=False):
        return np.array([pos, final, term], dtype=np.float32)

    b.observe(obs())
    for length, terminated in episodes:          # the actor loop of actors.run_actor, on a scripted stream
        for t in range(length):
            steps.append(pos)
            b.acted(pos % 2, 1.0)
            pos += 1
            if t == length - 1:
                b.final(obs(True, terminated), terminated)
                pos += 1
            b.observe(obs())                     # the next observation, or the reset one
            if b.full:
                chunks.append(b.flush())
    return chunks, steps, b


def test_sampling_returns_only_complete_transitions_each_stored_once():
    gamma, n = 0.9, 2
    episodes = [(3, True), (1, True), (5, False), (2, True), (7, True), (1, False), (4, True), (6, False), (3, True)]
    chunks, steps, b = builder_stream(episodes, rows=8, n=n, gamma=gamma)
    p = ReplayPool(256, (3,), F32, np.random.default_rng(0), num_nets=2)
    for c in chunks:
        p.add(c)

    # Each step row appears as a valid row exactly once, except the ones still held by the builder.
    held = {int(b.obs_RO[r, 0]) for r in range(b.size) if b.acted_R[r]}
    stored = sorted(p.obs_CO[p.ring.valid_C, 0].astype(int).tolist())
    assert held and stored == sorted(set(steps) - held)
    assert p.ring.added_steps == sum(c.steps for c in chunks)

    batch = p.sample(num_nets=3, batch_size=200)
    assert batch.obs_KBO.shape == (3, 200, 3) and batch.next_obs_KBO.shape == (3, 200, 3)
    for arr in (batch.act_KB, batch.ret_KB, batch.disc_KB, batch.weight_KB, batch.idx_KB):
        assert arr.shape == (3, 200)
    obs, nxt = batch.obs_KBO.reshape(-1, 3), batch.next_obs_KBO.reshape(-1, 3)
    idx = batch.idx_KB.reshape(-1)
    hor = p.ring.hor_C[idx]
    assert (obs[:, 1] == 0).all()                                     # a final row is never sampled
    assert set(obs[:, 0].astype(int).tolist()) <= set(steps) - held   # nor a carried, incomplete row
    np.testing.assert_array_equal(nxt[:, 0] - obs[:, 0], hor)         # bootstrap row is hor rows on
    assert ((hor == n) | (nxt[:, 1] == 1)).all()                      # shorter only at an episode end
    # reward 1 per step: G = sum_{j<h} gamma^j; disc = 0 iff the bootstrap row ended by termination
    np.testing.assert_allclose(batch.ret_KB.reshape(-1), (1 - gamma**hor) / (1 - gamma), rtol=1e-6)
    terminal = (nxt[:, 1] == 1) & (nxt[:, 2] == 1)
    np.testing.assert_allclose(batch.disc_KB.reshape(-1), np.where(terminal, 0.0, gamma**hor), rtol=1e-6)
    assert terminal.any() and (~terminal).any()
    assert (batch.weight_KB == 1).all()
    np.testing.assert_array_equal(p.share_by_net(), [0.0, 1.0])


def test_sampling_is_reproducible_with_the_same_generator_seed():
    def filled(seed: int) -> ReplayPool:
        p = pool(64, seed)
        for i in range(5):
            p.add(hand_chunk(10 * i, 9, i))
        return p

    a, b, c = filled(7).sample(2, 32), filled(7).sample(2, 32), filled(8).sample(2, 32)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.idx_KB, c.idx_KB)


def test_uniform_sampling_frequencies_are_flat_over_valid_rows():
    p = pool(64, seed=3)
    p.add(hand_chunk(0, 11, 1))           # 10 valid rows, 1 invalid
    p.add(hand_chunk(20, 7, 2, n=2))      # 5 valid rows, 2 invalid
    draws = p.sample(1, 30_000).idx_KB.reshape(-1)
    counts = np.bincount(draws, minlength=64)
    valid = np.flatnonzero(p.ring.valid_C)
    assert counts[~p.ring.valid_C].sum() == 0
    expected = 30_000 / len(valid)                      # 2000 each; sd = sqrt(2000 * 14/15) ~ 43
    assert np.abs(counts[valid] - expected).max() < 5 * 43


# ------------------------------------------------------------------------------------------ sum tree


def test_sum_tree_hand_example():
    t = SumTree(4)
    t.set(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))
    assert t.total == 10.0
    np.testing.assert_array_equal(t.get(np.arange(4)), [1, 2, 3, 4])
    # prefix sums 0 | 1 | 3 | 6 | 10: leaf i owns masses [prefix(i), prefix(i + 1))
    masses = np.array([0.0, 0.99, 1.0, 2.99, 3.0, 5.99, 6.0, 9.99])
    assert t.find(masses).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    t.set(np.array([2]), np.array([0.0]))                 # priorities 1 2 0 4: prefix 0 1 3 3 7
    assert t.total == 7.0
    assert t.find(np.array([2.99, 3.0, 6.99])).tolist() == [1, 3, 3]
    t.set(np.array([0, 3]), np.array([5.0, 0.5]))         # 5 2 0 0.5
    assert t.total == 7.5
    assert t.find(np.array([4.99, 5.0, 7.0])).tolist() == [0, 1, 3]


def test_sum_tree_with_capacity_not_a_power_of_two():
    t = SumTree(5)
    assert t.leaves == 8
    t.set(np.arange(5), np.array([1.0, 1.0, 1.0, 1.0, 6.0]))
    assert t.total == 10.0
    assert t.find(np.array([3.5, 4.0, 9.999])).tolist() == [3, 4, 4]


def test_sum_tree_never_descends_into_a_zero_priority_leaf():
    # Priorities 1.2, 0.2, 6.0, 0 (a never-written row): total 7.4. The largest mass below the total must
    # land on leaf 2, the last one with priority. In floating point 7.3999999999999995 - 1.4 rounds to 6.0,
    # so a search that goes right whenever mass >= left sum ends in leaf 3, whose priority is 0; the pool
    # would then sample an invalid row with probability 0 and an infinite (NaN after normalising) weight.
    t = SumTree(4)
    t.set(np.arange(4), np.array([1.2, 0.2, 6.0, 0.0]))
    assert t.total == pytest.approx(7.4)
    leaf = t.find(np.array([np.nextafter(t.total, 0)]))[0]
    assert t.get(np.array([leaf]))[0] > 0, f"find returned leaf {leaf}, whose priority is 0"


# ------------------------------------------------------------------------------- prioritized replay


def per_pool(alpha: float, seed: int = 0) -> ReplayPool:
    p = pool(64, seed, prioritized=True, alpha=alpha)
    p.add(hand_chunk(0, 6, 1))        # rows 0..4 valid, 5 invalid
    p.add(hand_chunk(10, 6, 2))       # rows 6..10 valid, 11 invalid
    return p


def test_new_rows_get_max_priority_and_invalid_rows_none():
    p = per_pool(alpha=0.6)
    prio = p.ring.tree.get(np.arange(12))
    np.testing.assert_array_equal(prio, np.where(p.ring.valid_C[:12], 1.0, 0.0))
    assert p.ring.tree.total == 10.0
    for _ in range(3):
        check_consistent(p, p.sample(2, 64))


def test_prioritized_frequencies_follow_priority_to_the_alpha():
    alpha = 0.7
    p = per_pool(alpha)
    valid = np.flatnonzero(p.ring.valid_C)
    td = np.arange(1, len(valid) + 1, dtype=np.float64)          # |TD| 1..10
    p.update_priorities(valid, td, p.ring.stamp_C[valid])
    expected = (td + 1e-6) ** alpha / ((td + 1e-6) ** alpha).sum()
    counts = np.zeros(64)
    for _ in range(5):
        counts += np.bincount(p.sample(1, 4000).idx_KB.reshape(-1), minlength=64)
    freq = counts / counts.sum()
    assert freq[~p.ring.valid_C].sum() == 0
    # stratified sampling: the error is at most ~1/4000 per batch, far below this bound
    np.testing.assert_allclose(freq[valid], expected, atol=0.005)
    assert p.ring.max_priority == pytest.approx(10 + 1e-6)


def test_importance_weights_formula_and_max_one():
    alpha, beta = 0.5, 0.4
    p = per_pool(alpha)
    valid = np.flatnonzero(p.ring.valid_C)
    td = np.array([0.1, 0.5, 1, 2, 4, 8, 0.2, 0.3, 3, 16])
    p.update_priorities(valid, td, p.ring.stamp_C[valid])
    b = p.sample(2, 16, beta=beta)
    idx = b.idx_KB.reshape(-1)
    prio = np.zeros(64)
    prio[valid] = (td + 1e-6) ** alpha
    prob = prio[idx] / prio.sum()
    w = (p.ring.num_valid * prob) ** -beta                   # N = 10 valid rows
    np.testing.assert_allclose(b.weight_KB.reshape(-1), w / w.max(), rtol=1e-6)
    assert b.weight_KB.max() == 1.0 and (b.weight_KB > 0).all()
    assert b.weight_KB.dtype == np.float32
    # beta = 0: no correction
    assert (p.sample(2, 16, beta=0.0).weight_KB == 1).all()


def test_importance_weights_follow_beta_hand_case():
    # alpha = 1, eps = 0: priorities are |td|, 1 1 2 4 8 | 1 2 4 8 1 (sum 32). 64 stratified draws of mass
    # 0.5 each reach every row, so the batch's largest weight is that of a priority-1 row, and with
    # beta = 1 each weight is (N P_i)^-1 / (N P_min)^-1 = 1 / td_i; with beta = 0 it is 1.
    p = per_pool(alpha=1.0)
    valid = np.flatnonzero(p.ring.valid_C)
    td = np.array([1.0, 1, 2, 4, 8, 1, 2, 4, 8, 1])
    p.update_priorities(valid, td, p.ring.stamp_C[valid], eps=0.0)
    prio = dict(zip(valid.tolist(), td.tolist()))
    b = p.sample(4, 16, beta=1.0)
    assert set(b.idx_KB.reshape(-1).tolist()) == set(valid.tolist())
    np.testing.assert_array_equal(b.weight_KB, 1 / np.vectorize(prio.get)(b.idx_KB))
    assert (p.sample(4, 16, beta=0.0).weight_KB == 1).all()


def test_update_priorities_changes_the_sampling_distribution():
    p = per_pool(alpha=1.0, seed=5)
    before = np.bincount(p.sample(1, 2000).idx_KB.reshape(-1), minlength=64)
    assert before.max() < 2000 * 0.2                     # ~uniform over 10 rows
    valid = np.flatnonzero(p.ring.valid_C)
    td = np.full(len(valid), 0.01)
    td[valid == 7] = 100.0                               # row 7: 100 / (100 + 9 * 0.01) > 99.9 %
    p.update_priorities(valid, td, p.ring.stamp_C[valid])
    after = np.bincount(p.sample(1, 2000).idx_KB.reshape(-1), minlength=64)
    assert after[7] >= 0.998 * 2000
    # an invalid row cannot be given priority
    p.update_priorities(np.array([5]), np.array([1e6]), p.ring.stamp_C[[5]])
    assert p.ring.tree.get(np.array([5]))[0] == 0.0


def test_priority_update_for_an_overwritten_row_keeps_the_new_rows_fresh_priority():
    # replay.update_priorities promises: "A row may have been overwritten since it was sampled; then it keeps
    # its fresh priority." In the runtime this happens when chunks are added while the learner thread runs.
    p = pool(16, prioritized=True, alpha=1.0)
    p.add(hand_chunk(0, 8, 1))          # [0, 8)
    p.add(hand_chunk(10, 8, 2))         # [8, 16)
    b = p.sample(1, 64)
    sampled = np.unique(b.idx_KB)
    assert (sampled < 8).any() and (sampled >= 8).any()
    p.add(hand_chunk(20, 8, 3))         # wraps: a new chunk at [0, 8)
    fresh = p.ring.max_priority ** p.ring.alpha
    p.update_priorities(b.idx_KB, np.full(b.idx_KB.shape, 1e-3), b.stamp_KB)
    new_rows = sampled[sampled < 7]     # the new chunk's valid rows among the sampled ones
    old_rows = sampled[(sampled >= 8) & p.ring.valid_C[sampled]]
    np.testing.assert_allclose(p.ring.tree.get(old_rows), 1e-3 + 1e-6)
    np.testing.assert_array_equal(p.ring.tree.get(new_rows), fresh)


# -------------------------------------------------------------------------------- real CartPole data


def cartpole_pool(n: int, capacity: int, steps: int, seed: int = 0) -> tuple[ReplayPool, int]:
    """A pool of what the real actor loop made on CartPole in `steps` env steps: one actor acting at random
    (epsilon 1), n-step returns, chunks of 32 rows; (the pool, the episodes finished)."""
    actors = {"num_actors": 1, "n_step": n, "chunk_rows": 32, "eps_base": 1.0, "eps_anneal_steps": 0}
    _, sink, episodes = asyncio.run(collect(steps, {"id": "CartPole-v1"}, actors, seed))
    p = ReplayPool(capacity, (4,), F32, np.random.default_rng(seed + 1))
    for chunk in sink.chunks:
        p.add(chunk)
    return p, len(episodes)


def test_cartpole_next_observation_is_the_true_next_state():
    # The cart-pole's Euler step: x' = x + tau * x_dot and theta' = theta + tau * theta_dot (tau = 0.02).
    # Capacity 300 < the ~800 rows written, so the pool has wrapped and this also checks wraparound.
    p, episodes = cartpole_pool(n=1, capacity=300, steps=700)
    assert episodes > 10 and p.ring.added_steps > 2 * p.capacity
    b = p.sample(4, 256)
    s, s2 = b.obs_KBO.reshape(-1, 4), b.next_obs_KBO.reshape(-1, 4)
    np.testing.assert_allclose(s2[:, 0], s[:, 0] + 0.02 * s[:, 1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(s2[:, 2], s[:, 2] + 0.02 * s[:, 3], atol=1e-5, rtol=0)
    np.testing.assert_allclose(b.ret_KB, 1.0)
    # disc 0 exactly when s' is past CartPole's termination thresholds
    fell = (np.abs(s2[:, 0]) > 2.4) | (np.abs(s2[:, 2]) > 12 * 2 * np.pi / 360)
    np.testing.assert_allclose(b.disc_KB.reshape(-1), np.where(fell, 0.0, 0.99), rtol=1e-6)
    assert fell.any()


def test_cartpole_n_step_returns_and_terminal_discounts():
    gamma, n = 0.99, 3
    p, _ = cartpole_pool(n=n, capacity=4096, steps=600, seed=4)
    b = p.sample(2, 512)
    hor = p.ring.hor_C[b.idx_KB.reshape(-1)]
    s2 = b.next_obs_KBO.reshape(-1, 4)
    fell = (np.abs(s2[:, 0]) > 2.4) | (np.abs(s2[:, 2]) > 12 * 2 * np.pi / 360)
    assert ((hor == n) | fell).all()        # random play never reaches the 500-step truncation
    np.testing.assert_allclose(b.ret_KB.reshape(-1), (1 - gamma**hor) / (1 - gamma), rtol=1e-6)
    np.testing.assert_allclose(b.disc_KB.reshape(-1), np.where(fell, 0.0, gamma**hor), rtol=1e-6)
    assert set(hor.tolist()) == {1, 2, 3}
