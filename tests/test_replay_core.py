"""The replay core on hand-computed cases: importance weights, the ring head's wraparound and priorities,
and the two row draws (uniform with its fallback, stratified with its redraw of rows that are not live)."""

from __future__ import annotations

import numpy as np
import pytest

from asyncdqn.replay.core import RowRing, SumTree, importance_weights, stratified_rows, uniform_rows
from asyncdqn.transitions import Chunk


def chunk(rows: int, valid: int, tag: int, net: int = 0) -> Chunk:
    """`rows` rows, the first `valid` of them valid (horizon 1); act holds `tag` to tell chunks apart."""
    ok = np.arange(rows) < valid
    return Chunk(np.zeros((rows, 1), np.float32), np.full(rows, tag, np.int64), np.ones(rows, np.float32),
                 np.full(rows, 0.9, np.float32), ok.astype(np.int16), ok, net, valid)


def test_importance_weights_hand_case():
    prob = np.array([0.5, 0.25, 0.125, 0.125])
    # N * P = [2, 1, 0.5, 0.5]; beta = 1: w = [1/2, 1, 2, 2] / 2
    np.testing.assert_array_equal(importance_weights(prob, 4, 1.0), [0.25, 0.5, 1.0, 1.0])
    # beta = 0.5: w = [2^-0.5, 1, 2^0.5, 2^0.5] / 2^0.5
    np.testing.assert_allclose(importance_weights(prob, 4, 0.5), [0.5, 0.5**0.5, 1.0, 1.0], rtol=1e-7)
    np.testing.assert_array_equal(importance_weights(prob, 4, 0.0), [1.0] * 4)   # beta = 0: no correction
    assert importance_weights(prob, 4, 0.5).dtype == np.float32
    # N scales every weight alike: it cancels
    np.testing.assert_array_equal(importance_weights(prob, 1000, 1.0), importance_weights(prob, 4, 1.0))


def test_ring_head_wraparound_hand_case():
    ring = RowRing(10, np.random.default_rng(0), prioritized=True, alpha=0.5)
    assert ring.place(chunk(4, 3, tag=1)) == slice(0, 4)
    assert ring.place(chunk(4, 4, tag=2, net=1)) == slice(4, 8)
    assert (ring.head, ring.filled, ring.num_valid, ring.writes) == (8, 8, 7, 2)
    # 8 + 4 > 10: the third chunk jumps to row 0 and overwrites the first (3 valid rows) with 2 valid rows
    assert ring.place(chunk(4, 2, tag=3)) == slice(0, 4)
    assert (ring.head, ring.filled, ring.num_valid, ring.writes) == (4, 8, 6, 3)
    np.testing.assert_array_equal(ring.act_C, [3, 3, 3, 3, 2, 2, 2, 2, 0, 0])
    np.testing.assert_array_equal(ring.stamp_C, [3, 3, 3, 3, 2, 2, 2, 2, 0, 0])
    np.testing.assert_array_equal(ring.net_C, [0, 0, 0, 0, 1, 1, 1, 1, -1, -1])   # rows 8, 9 never written
    np.testing.assert_array_equal(ring.share_by_net(ring.valid_C[: ring.filled]), [2 / 6, 4 / 6])
    # new valid rows get max_priority ** alpha, the others 0
    np.testing.assert_array_equal(ring.tree.get(np.arange(10)), [1, 1, 0, 0, 1, 1, 1, 1, 0, 0])
    # a 6-row chunk fits after row 4 and fills the ring; the rows of chunk 2 it overwrites lose their valid count
    assert ring.place(chunk(6, 6, tag=4)) == slice(4, 10)
    assert (ring.head, ring.filled, ring.num_valid, ring.added_steps) == (10, 10, 8, 3 + 4 + 2 + 6)
    with pytest.raises(ValueError, match="does not fit"):
        ring.place(chunk(11, 11, tag=5))
    assert ring.writes == 4


def test_priority_update_skips_rows_overwritten_since_the_draw():
    ring = RowRing(8, np.random.default_rng(0), prioritized=True, alpha=1.0)
    ring.place(chunk(4, 4, tag=1))
    ring.place(chunk(4, 4, tag=2))
    idx = np.array([1, 5])
    stamp = ring.stamp_C[idx].copy()
    ring.place(chunk(4, 4, tag=3))        # rewrites rows 0..3: row 1's sample is stale
    ring.update_priorities(idx, np.array([3.0, 5.0]), stamp, live=lambda i: ring.valid_C[i], eps=0.0)
    np.testing.assert_array_equal(ring.tree.get(idx), [1.0, 5.0])
    assert ring.max_priority == 5.0


def test_uniform_rows_falls_back_to_the_live_rows_when_they_are_scarce():
    live = lambda i: np.asarray(i) == 997  # noqa: E731 - one live row among 1000
    rows = uniform_rows(np.random.default_rng(0), 1000, 50, live, rounds=2)
    assert rows.tolist() == [997] * 50
    with pytest.raises(ValueError, match="no sampleable rows"):
        uniform_rows(np.random.default_rng(0), 1000, 5, lambda i: np.zeros(len(i), bool), rounds=1)


def test_stratified_rows_redraws_rows_that_are_not_live_and_zeroes_them():
    tree = SumTree(4)
    tree.set(np.arange(4), np.array([1.0, 1.0, 1.0, 1.0]))
    rows = stratified_rows(tree, np.random.default_rng(0), 40, 4, live=lambda i: np.asarray(i) != 2)
    assert 2 not in rows.tolist() and set(rows.tolist()) == {0, 1, 3}
    np.testing.assert_array_equal(tree.get(np.arange(4)), [1.0, 1.0, 0.0, 1.0])
    # stratified: with every row live, each of 4 equal priorities gets exactly n / 4 of n draws
    tree.set(np.array([2]), 1.0)
    rows = stratified_rows(tree, np.random.default_rng(1), 40, 4, live=lambda i: np.ones(len(i), bool))
    np.testing.assert_array_equal(np.bincount(rows, minlength=4), [10, 10, 10, 10])


def test_sum_tree_leaves_are_the_least_power_of_two_of_at_least_two():
    # the tree array is saved in checkpoints: its size is part of the format
    assert [SumTree(c).leaves for c in (1, 2, 3, 4, 5, 8, 9)] == [2, 2, 4, 4, 8, 8, 16]
    assert len(SumTree(5).tree) == 16


def test_ring_defaults_and_a_chunk_of_exactly_the_capacity():
    ring = RowRing(4, np.random.default_rng(0))
    assert ring.tree is None and ring.num_nets == 1
    assert ring.place(chunk(4, 4, tag=1)) == slice(0, 4)              # rows == capacity fits
    np.testing.assert_array_equal(ring.share_by_net(ring.valid_C[: ring.filled]), [1.0])
    ring = RowRing(4, np.random.default_rng(0), prioritized=True)
    assert ring.alpha == 0.6
    ring.place(chunk(2, 2, tag=1))
    ring.update_priorities(np.array([0, 1]), np.array([3.0, -1.0]), ring.stamp_C[:2].copy(), lambda i: ring.valid_C[i])
    np.testing.assert_allclose(ring.tree.get(np.arange(2)), [(3.0 + 1e-6) ** 0.6, (1.0 + 1e-6) ** 0.6], rtol=1e-12)


def test_share_by_net_keeps_every_net_and_a_single_row():
    ring = RowRing(8, np.random.default_rng(0), num_nets=3)
    ring.place(chunk(2, 1, tag=1, net=1))
    # one live row, of net 1; net 2 made none but keeps its entry
    np.testing.assert_array_equal(ring.share_by_net(ring.valid_C[: ring.filled]), [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(ring.share_by_net(np.zeros(2, bool)), [0.0, 0.0, 0.0])


def test_uniform_rows_rounds_then_the_scan_hand_case():
    sizes = []

    def live(i):   # the first 10 rows of every draw are live; the scan (all 1000 rows) finds only row 997
        sizes.append(len(i))
        return np.arange(len(i)) < 10 if len(i) != 1000 else np.asarray(i) == 997

    rows = uniform_rows(np.random.default_rng(0), 1000, 50, live, rounds=2)
    assert sizes == [108, 88, 1000]             # 2 * 50 + 8, then 2 * (50 - 10) + 8, then the scan
    assert len(rows) == 50 and rows[20:].tolist() == [997] * 30
    sizes.clear()
    assert len(uniform_rows(np.random.default_rng(0), 1000, 10, live, rounds=None)) == 10
    assert sizes == [28]                        # exactly n live rows: no second round


def test_no_sampleable_rows_errors_name_the_cause():
    msg = "^no sampleable rows: every valid row lost frames to the ring wrapping$"
    with pytest.raises(ValueError, match=msg):
        uniform_rows(np.random.default_rng(0), 10, 5, lambda i: np.zeros(len(i), bool), rounds=1)
    tree = SumTree(4)
    tree.set(np.arange(4), 0.25)
    with pytest.raises(ValueError, match=msg):
        stratified_rows(tree, np.random.default_rng(0), 4, 4, live=lambda i: np.zeros(len(i), bool))
    with pytest.raises(ValueError, match="^cannot sample from an empty replay pool$"):
        RowRing(4, np.random.default_rng(0)).draw(1, 0.4, lambda i: np.ones(len(i), bool), None)


def test_stratified_rows_with_a_total_priority_below_one():
    tree = SumTree(4)
    tree.set(np.arange(4), 0.25)
    rows = stratified_rows(tree, np.random.default_rng(0), 40, 4, live=lambda i: np.asarray(i) != 2)
    assert set(rows.tolist()) == {0, 1, 3} and tree.total == 0.75


def test_ring_state_round_trip_restores_priorities_and_an_empty_state_restores_only_the_rng():
    ring = RowRing(8, np.random.default_rng(0), prioritized=True, alpha=1.0)
    ring.place(chunk(4, 3, tag=1))
    ring.update_priorities(np.array([0, 2]), np.array([4.0, 2.0]), ring.stamp_C[[0, 2]].copy(),
                           lambda i: ring.valid_C[i], eps=0.0)
    state = {**ring.counter_state(), **ring.row_state({})}
    back = RowRing(8, np.random.default_rng(1), prioritized=True, alpha=1.0)
    assert back.load_state_dict(state) is True
    np.testing.assert_array_equal(back.tree.tree, ring.tree.tree)
    np.testing.assert_array_equal(back.tree.get(np.arange(4)), [4.0, 1.0, 2.0, 0.0])
    assert back.rng.random() == ring.rng.random()
    uniform = RowRing(8, np.random.default_rng(1))                     # saved priorities are ignored
    assert uniform.load_state_dict(state) is True and uniform.tree is None and uniform.filled == 4
    empty = RowRing(8, np.random.default_rng(1), prioritized=True)
    assert empty.load_state_dict(ring.counter_state()) is False
    assert empty.filled == 0 and empty.tree.total == 0.0
    no_tree = RowRing(8, np.random.default_rng(1), prioritized=True)   # rows saved without a tree
    assert no_tree.load_state_dict({k: v for k, v in state.items() if k != "tree"}) is True
    assert no_tree.tree.total == 0.0 and no_tree.filled == 4
