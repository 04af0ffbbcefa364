"""ReplayPool on small hand-computed cases: its defaults, the default beta, and a state round trip with
priorities. Written against mutmut's survivors (docs/mutation.md)."""

from __future__ import annotations

import numpy as np

from asyncdqn.replay import ReplayPool
from asyncdqn.transitions import Chunk


def pool(capacity: int, seed: int = 0, **kw) -> ReplayPool:
    return ReplayPool(capacity, (2,), np.dtype(np.float32), np.random.default_rng(seed), **kw)


def hand_chunk(rows: int, net: int = 0) -> Chunk:
    """obs = [t, 1] for t = 0..rows-1; every row but the last valid, horizon 1."""
    obs = np.stack([np.arange(rows), np.ones(rows)], axis=1).astype(np.float32)
    valid = np.arange(rows) < rows - 1
    return Chunk(obs, np.zeros(rows, np.int64), np.arange(rows, dtype=np.float32), np.full(rows, 0.9, np.float32),
                 valid.astype(np.int16), valid, net, int(valid.sum()))



def test_pool_defaults_and_num_nets():
    p = pool(8)
    assert p.ring.tree is None and p.ring.num_nets == 1 and p.ring.hor_C.dtype == np.int64
    assert pool(8, prioritized=True).ring.alpha == 0.6
    p = pool(8, num_nets=3)
    p.add(hand_chunk(3, net=1))
    np.testing.assert_array_equal(p.share_by_net(), [0.0, 1.0, 0.0])


def test_default_beta_is_0_4():
    pools = []
    for _ in range(2):
        p = pool(16, prioritized=True, alpha=1.0)
        p.add(hand_chunk(6))
        p.update_priorities(np.arange(5), np.array([1.0, 1, 2, 4, 8]), p.ring.stamp_C[:5], eps=0.0)
        pools.append(p)
    a, b = pools[0].sample(2, 16), pools[1].sample(2, 16, beta=0.4)
    np.testing.assert_array_equal(a.weight_KB, b.weight_KB)
    assert len(set(a.weight_KB.reshape(-1).tolist())) > 1          # non-uniform: beta matters


def test_state_dict_round_trip_restores_rows_priorities_and_rng():
    p = pool(16, prioritized=True, alpha=1.0)
    p.add(hand_chunk(6))
    p.update_priorities(np.arange(5), np.array([1.0, 1, 2, 4, 8]), p.ring.stamp_C[:5], eps=0.0)
    q = pool(16, seed=5, prioritized=True, alpha=1.0)
    q.load_state_dict(p.state_dict())
    np.testing.assert_array_equal(q.obs_CO, p.obs_CO)
    a, b = p.sample(2, 8), q.sample(2, 8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    empty = pool(16, seed=5)
    empty.load_state_dict(p.state_dict(with_rows=False))               # only the RNG
    assert len(empty) == 0 and not empty.obs_CO.any()
