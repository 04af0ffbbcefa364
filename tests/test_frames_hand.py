"""FramePool on small hand-computed cases: defaults and shape checks, sizes, the storage report, an empty
pool's state, frame linking (continuation, padding, tail reuse at the ring's edge, eviction of remembered
tails) and the frame-count limit. Written against mutmut's survivors (docs/mutation.md)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from asyncdqn.replay import FramePool, frame_pool_nbytes, raw_payload_bytes, storage_report
from asyncdqn.transitions import Chunk

U8 = np.dtype(np.uint8)


def pool(capacity: int, shape=(2, 3), seed: int = 0, **kw) -> FramePool:
    return FramePool(capacity, (4, *shape), U8, np.random.default_rng(seed), **kw)



def stacks_chunk(stacks: list[list[int]]) -> Chunk:
    """One row per stack of 1x1 frames with these values (oldest first); every row but the last valid,
    horizon 1."""
    obs = np.array(stacks, dtype=np.uint8)[:, :, None, None]
    rows = len(stacks)
    valid = np.arange(rows) < rows - 1
    return Chunk(obs, np.zeros(rows, np.int64), np.ones(rows, np.float32), np.full(rows, 0.9, np.float32),
                 valid.astype(np.int16), valid, 0, int(valid.sum()))


def test_frame_pool_defaults_and_its_obs_shape_check():
    p = FramePool(8, (4, 1, 1), U8, np.random.default_rng(0))
    assert p.ring.tree is None and p.ring.num_nets == 1 and (p.tail_rows, p.tail_memory) == (8, 4096)
    assert FramePool(8, (4, 1, 1), U8, np.random.default_rng(0), prioritized=True).ring.alpha == 0.6
    assert FramePool(8, (4, 1, 1), U8, np.random.default_rng(0), num_nets=3).ring.num_nets == 3
    assert FramePool(8, (4, 3), U8, np.random.default_rng(0)).frame_FX.shape == (8, 3)   # 1-D frames
    with pytest.raises(ValueError, match=r"^obs_shape \(4,\) is not a stack of frames \(S, \*frame_shape\)$"):
        FramePool(8, (4,), U8, np.random.default_rng(0))


def test_sizes_with_an_explicit_row_capacity_and_a_wider_dtype():
    # 10 frames of 2x3 float32 (24 bytes) + 5 rows of (4 + 1) ids * 8 bytes and the ring's 29 bytes
    # (act 8, ret 4, disc 4, hor 2, valid 1, net 2, stamp 8)
    assert frame_pool_nbytes(10, (4, 2, 3), np.float32, row_capacity=5) == 240 + 5 * (40 + 29)
    assert FramePool(10, (4, 2, 3), np.float32, np.random.default_rng(0), row_capacity=5).nbytes() == 585
    assert raw_payload_bytes((2, 3), np.float32) == 24 + 6


def test_storage_report_of_an_empty_pool():
    p = pool(8)
    total = p.nbytes()
    assert tuple(storage_report(p)) == (total, 0, total, 6 + 6, total / 12)
    wide = FramePool(8, (4, 2, 3), np.float32, np.random.default_rng(0))
    assert storage_report(wide).raw_bytes_per_transition == 24 + 6


def test_empty_pool_state_round_trip_then_the_same_frames_are_written():
    p = pool(8, shape=(1, 1))
    state = p.state_dict()
    assert state["tails"].shape == (0, 4) and state["tails"].dtype == np.int64
    q = pool(8, shape=(1, 1))
    q.load_state_dict(state)
    for x in (p, q):
        x.add(stacks_chunk([[0, 0, 0, 0], [0, 0, 0, 1]]))   # a reset row of frame 0, then frame 1
    assert p.frames_written == q.frames_written == 2


def test_default_beta_is_0_4():
    pools = []
    for _ in range(2):
        p = pool(64, shape=(1, 1), prioritized=True, alpha=1.0)
        p.add(stacks_chunk([[max(1, t - k) for k in (3, 2, 1, 0)] for t in range(1, 7)]))
        p.update_priorities(np.arange(5), np.array([1.0, 1, 2, 4, 8]), p.ring.stamp_C[:5], eps=0.0)
        pools.append(p)
    np.testing.assert_array_equal(pools[0].sample(2, 16).weight_KB, pools[1].sample(2, 16, beta=0.4).weight_KB)


def test_tail_memory_keeps_the_newest_tails():
    p = pool(64, shape=(1, 1), tail_rows=2, tail_memory=3)
    p.add(stacks_chunk([[1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 6]]))
    p.add(stacks_chunk([[7, 8, 9, 10], [8, 9, 10, 11], [9, 10, 11, 12]]))
    tails = p.state_dict()["tails"]
    # 4 remembered rows (newest frames 5, 6, 11, 12), the oldest evicted; ids of 6 are 2..5
    assert len(tails) == 3 and tails[0].tolist() == [2, 3, 4, 5]


def test_continuation_and_padding_by_hand():
    p = pool(64, shape=(1, 1))
    p.add(stacks_chunk([[1, 2, 1, 2]]))            # one row; no frame equals the one before it
    assert p.frames_written == 4 and p.stacks(np.array([0]))[..., 0, 0].tolist() == [[1, 2, 1, 2]]
    q = FramePool(64, (2, 1, 1), U8, np.random.default_rng(0))
    q.add(stacks_chunk([[5, 6], [6, 7]]))          # S = 2, two rows: the second continues the first
    assert q.frames_written == 3 and q.fid_CS[:2].tolist() == [[0, 1], [1, 2]]


def test_frame_count_limit_by_hand():
    p = pool(4, shape=(1, 1))
    p.add(stacks_chunk([[1, 2, 3, 4]]))            # exactly 4 new frames: fits
    assert p.frames_written == 4
    with pytest.raises(ValueError, match="^chunk has 8 new frames; the pool holds 4$"):
        p.add(stacks_chunk([[11, 12, 13, 14], [21, 22, 23, 24]]))
    with pytest.raises(ValueError, match=re.escape("chunk observations (4, 1, 2) do not match the pool's (4, 1, 1)")):
        p.add(Chunk(np.zeros((1, 4, 1, 2), U8), np.zeros(1, np.int64), np.zeros(1, np.float32),
                    np.zeros(1, np.float32), np.zeros(1, np.int16), np.zeros(1, bool), 0, 0))


def test_a_chunk_added_twice_is_looked_up_only_from_its_first_row():
    # rows t = 0..11 of stacks [t .. t+3]: 4 + 11 frames. Rows 4..11 are remembered, row 0 is not: the
    # second copy misses at row 0, so it is written again as it was the first time
    chunk = stacks_chunk([[t, t + 1, t + 2, t + 3] for t in range(12)])
    p = pool(64, shape=(1, 1))
    p.add(chunk)
    assert p.frames_written == 15
    p.add(chunk)
    assert p.frames_written == 30


def test_a_tail_whose_oldest_frame_is_the_oldest_alive_is_reused():
    p = pool(8, shape=(1, 1))
    p.add(stacks_chunk([[1, 2, 3, 4], [2, 3, 4, 5]]))       # ids 0..4; the tail [2, 3, 4, 5] has ids 1..4
    p.add(stacks_chunk([[11, 12, 13, 14]]))                 # ids 5..8: id 0 overwritten, id 1 the oldest alive
    assert p.frames_written - p.capacity == 1
    p.add(stacks_chunk([[2, 3, 4, 5], [3, 4, 5, 6]]))       # reuses ids 1..4, then continues with one frame
    assert p.frames_written == 10 and p.fid_CS[3:5].tolist() == [[1, 2, 3, 4], [2, 3, 4, 9]]
