"""The frame replay: stacks rebuilt from once-stored frames must equal what gymnasium's
FrameStackObservation (default arguments) emitted, across episode ends, interleaved actors and the ring
wrapping; and the storage must stay within 1.1x of the raw payload.

The image env's frames encode (actor, episode, step), so every frame of a run is distinct and a rebuilt
stack can only match the original if the right frames were linked.
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import FrameStackObservation, TimeLimit

from asyncdqn.replay import FramePool, frame_pool_nbytes, raw_payload_bytes, storage_report
from asyncdqn.transitions import Chunk, ChunkBuilder

U8 = np.dtype(np.uint8)


class CounterFrames(gym.Env):
    """uint8 frames of `shape` whose first pixels hold actor, episode (2 bytes), step (2 bytes).
    Episode lengths are drawn from the reset seed's generator, in [min_len, max_len]."""

    def __init__(self, actor: int, shape=(2, 3), min_len: int = 1, max_len: int = 9):
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        self.action_space = gym.spaces.Discrete(3)
        self.actor, self.shape, self.min_len, self.max_len = actor, shape, min_len, max_len
        self.episode, self.t, self.length = -1, 0, 0

    def _frame(self) -> np.ndarray:
        f = np.zeros(self.shape, np.uint8)
        f.flat[:5] = self.actor, self.episode % 256, self.episode // 256, self.t % 256, self.t // 256
        return f

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        self.length = int(self.np_random.integers(self.min_len, self.max_len + 1))
        return self._frame(), {}

    def step(self, action):
        self.t += 1
        return self._frame(), float(action) + 0.5, self.t >= self.length, False, {}


class Stream(NamedTuple):
    chunks: list[Chunk]
    lengths: list[int]     # finished episodes' lengths
    truncated: int         # finished episodes cut by the time limit
    frames: set            # every distinct frame in the chunks (bytes)


def run_stream(actor: int, steps: int, chunk_rows: int = 8, n: int = 3, seed: int = 0, shape=(2, 3),
               min_len: int = 1, max_len: int = 9, time_limit: int = 6) -> Stream:
    """One actor's chunks, made as `actors.run_actor` makes them, from the stacked image env."""
    env = FrameStackObservation(TimeLimit(CounterFrames(actor, shape, min_len, max_len), time_limit), 4)
    builder = ChunkBuilder(chunk_rows, (4, *shape), U8, 0.9, n, net=actor % 2)
    rng = np.random.default_rng(seed + 100)
    chunks, lengths, truncated = [], [], 0
    obs, _ = env.reset(seed=seed)
    builder.observe(obs)
    ep_len = 0
    for _ in range(steps):
        action = int(rng.integers(3))
        obs, reward, term, trunc, _ = env.step(action)
        builder.acted(action, reward)
        ep_len += 1
        if term or trunc:
            builder.final(obs, term)
            lengths.append(ep_len)
            truncated += bool(trunc and not term)
            ep_len = 0
            obs, _ = env.reset()
        builder.observe(obs)
        if builder.full:
            chunks.append(builder.flush())
    frames = {c.obs_RO[r, k].tobytes() for c in chunks for r in range(len(c.act_R)) for k in range(4)}
    return Stream(chunks, lengths, truncated, frames)


class Mirror:
    """What a naive pool would hold at each ring row: the row's stack and its bootstrap row's stack."""

    def __init__(self, pool: FramePool):
        self.pool = pool
        self.obs_CO = np.zeros((pool.row_capacity, *pool.obs_shape), U8)
        self.next_CO = np.zeros_like(self.obs_CO)
        self.act_C = np.zeros(pool.row_capacity, np.int64)

    def add(self, chunk: Chunk) -> int:
        start = self.pool.add(chunk)
        rows = len(chunk.act_R)
        sl = slice(start, start + rows)
        self.obs_CO[sl] = chunk.obs_RO
        self.next_CO[sl] = chunk.obs_RO[np.arange(rows) + chunk.hor_R]
        self.act_C[sl] = chunk.act_R
        return start

    def check_all_rows(self) -> int:
        """Every row whose own frames are alive rebuilds to its stack; every sampleable row's bootstrap
        too. Returns the number of sampleable rows."""
        p = self.pool
        rows = np.arange(p.ring.filled)
        own_alive = p.fid_CS[rows, 0] >= p.frames_written - p.capacity
        np.testing.assert_array_equal(p.stacks(rows[own_alive]), self.obs_CO[rows[own_alive]])
        live = rows[p.sampleable(rows)]
        np.testing.assert_array_equal(p.stacks(live + p.ring.hor_C[live]), self.next_CO[live])
        return len(live)

    def check_batch(self, batch) -> None:
        idx = batch.idx_KB.reshape(-1)
        assert self.pool.sampleable(idx).all()
        np.testing.assert_array_equal(batch.obs_KBO.reshape(-1, *self.pool.obs_shape), self.obs_CO[idx])
        np.testing.assert_array_equal(batch.next_obs_KBO.reshape(-1, *self.pool.obs_shape), self.next_CO[idx])
        np.testing.assert_array_equal(batch.act_KB.reshape(-1), self.act_C[idx])


def interleave(streams: list[Stream], seed: int) -> list[Chunk]:
    """All chunks, each actor's in order, actors picked at random (as the queue would deliver them)."""
    rng = np.random.default_rng(seed)
    pos = [0] * len(streams)
    out = []
    while any(p < len(s.chunks) for p, s in zip(pos, streams)):
        a = int(rng.choice([i for i, s in enumerate(streams) if pos[i] < len(s.chunks)]))
        out.append(streams[a].chunks[pos[a]])
        pos[a] += 1
    return out


def pool(capacity: int, shape=(2, 3), seed: int = 0, **kw) -> FramePool:
    return FramePool(capacity, (4, *shape), U8, np.random.default_rng(seed), **kw)


# ---------------------------------------------------------------------------------------------- stacks


def test_stacks_rebuilt_across_episode_boundaries_equal_framestack():
    s = run_stream(0, 2000)
    assert min(s.lengths) < 4 and s.truncated > 0  # short episodes and time-limit finals are in the data
    p = pool(10_000)
    m = Mirror(p)
    for c in s.chunks:
        m.add(c)
    assert p.frames_written < p.capacity  # no wrap: every row must be sampleable
    assert m.check_all_rows() == p.ring.num_valid
    # Each distinct frame stored once: no next_obs copy, no stack copy, carried rows not re-stored.
    assert p.frames_written == len(s.frames)
    assert p.ring.filled > p.frames_written
    for _ in range(5):
        m.check_batch(p.sample(2, 64))


def test_truncated_final_row_is_the_bootstrap_of_the_last_step():
    """The step into a time-limit end bootstraps (disc > 0) from the true final stack, not the reset one."""
    s = run_stream(0, 300, time_limit=2, min_len=5)  # every episode is truncated after 2 steps
    assert s.truncated == len(s.lengths)
    p = pool(4000)
    m = Mirror(p)
    for c in s.chunks:
        m.add(c)
    m.check_all_rows()
    rows = np.flatnonzero(p.ring.valid_C[: p.ring.filled] & (p.ring.disc_C[: p.ring.filled] > 0))
    nxt = p.stacks(rows + p.ring.hor_C[rows])
    t_next = nxt[:, -1].reshape(len(rows), -1)[:, 3]  # step counter held by the newest frame
    assert (t_next == 2).any()   # some bootstraps are final rows of truncated episodes ...
    assert (t_next <= 2).all()   # ... and none runs past an episode's end


def test_interleaved_chunks_from_three_actors():
    streams = [run_stream(a, 700, chunk_rows=rows, seed=a) for a, rows in enumerate((8, 11, 16))]
    p = pool(10_000)
    m = Mirror(p)
    for c in interleave(streams, seed=1):
        m.add(c)
    assert m.check_all_rows() == p.ring.num_valid
    assert p.frames_written == sum(len(s.frames) for s in streams)
    m.check_batch(p.sample(3, 100))
    share = p.share_by_net()
    assert share.sum() == pytest.approx(1.0) and (share > 0).all()


# ---------------------------------------------------------------------------------------------- wraparound


def value_chunk(ts: list[int], n: int = 1, start: int = 1) -> Chunk:
    """Rows of one episode that started at t=start, frame value t (1x1 frames): stack of t is
    [max(start, t-3) .. t] (reset padding). The last n rows are carried (not valid)."""
    obs = np.array([[[[max(start, t - k)]] for k in (3, 2, 1, 0)] for t in ts], dtype=np.uint8)
    rows = len(ts)
    valid = np.arange(rows) < rows - n
    hor = np.where(valid, n, 0).astype(np.int16)
    return Chunk(obs, np.zeros(rows, np.int64), np.ones(rows, np.float32), np.full(rows, 0.9, np.float32),
                 hor, valid, 0, int(valid.sum()))


def test_wraparound_invalidates_rows_whose_frames_were_overwritten_hand_case():
    p = pool(8, shape=(1, 1), row_capacity=64)
    m = Mirror(p)
    m.add(value_chunk([1, 2, 3, 4, 5, 6]))          # frames 1..6 -> ids 0..5 (row t=1: one frame, 4 ids)
    assert p.frames_written == 6 and len(p) == 5
    m.add(value_chunk([6, 7, 8, 9]))                # t=6 matched from the tail; ids 6..8 for frames 7..9
    assert p.frames_written == 9                    # id 0 (frame 1) overwritten by frame 9
    # Rows t=1..4 need frame 1; t=5 = [2,3,4,5] and B's t=6..8 survive; carried rows are not valid.
    np.testing.assert_array_equal(p.sampleable(np.arange(10)), [0, 0, 0, 0, 1, 0, 1, 1, 1, 0])
    m.add(value_chunk([9, 10, 11, 12]))             # ids 9..11; ids 0..3 (frames 1..4) gone
    # t=5 [2..5], t=6 [3..6], t=7 [4..7] lose frames; t=8 [5..8] and its bootstrap t=9 [6..9] survive.
    np.testing.assert_array_equal(p.sampleable(np.arange(14)), [0] * 8 + [1, 0] + [1, 1, 1, 0])
    assert len(p) == 4
    m.check_all_rows()
    batch = p.sample(1, 50)
    m.check_batch(batch)
    assert set(batch.idx_KB.reshape(-1).tolist()) == {8, 10, 11, 12}


def test_a_remembered_tail_is_reused_only_if_its_frames_match():
    """B's reset stack [5,5,5,5] has the same newest frame as A's tail row [2,3,4,5]: the lookup finds
    A's row, the byte check refuses it, and B's stacks are still rebuilt exactly."""
    p = pool(64, shape=(1, 1))
    m = Mirror(p)
    m.add(value_chunk([1, 2, 3, 4, 5, 6]))
    m.add(value_chunk([5, 6, 7], start=5))
    assert p.frames_written == 6 + 3
    m.check_all_rows()
    np.testing.assert_array_equal(p.stacks(np.array([6]))[0].reshape(-1), [5, 5, 5, 5])


@pytest.mark.parametrize("prioritized", [False, True])
@pytest.mark.parametrize("row_capacity", [None, 400])  # rows or frames wrap first
def test_wraparound_never_returns_stale_stacks(prioritized, row_capacity):
    streams = [run_stream(a, 600, chunk_rows=rows, seed=a + 7) for a, rows in enumerate((8, 9, 12))]
    p = pool(120, seed=3, prioritized=prioritized, row_capacity=row_capacity)
    m = Mirror(p)
    rng = np.random.default_rng(0)
    lost = 0
    for c in interleave(streams, seed=2):
        m.add(c)
        live = m.check_all_rows()
        lost = max(lost, p.ring.num_valid - live)  # valid rows that lost frames to the frame ring
        batch = p.sample(2, 16)
        m.check_batch(batch)
        p.update_priorities(batch.idx_KB, rng.random(batch.idx_KB.shape), batch.stamp_KB)
    assert p.frames_written > 5 * p.capacity
    assert lost > 0


@pytest.mark.timeout(10)  # a uniform draw without its fallback would reject forever here
@pytest.mark.parametrize("prioritized", [False, True])
def test_sampling_when_every_valid_row_lost_its_frames_raises(prioritized):
    p = pool(8, shape=(1, 1), row_capacity=64, prioritized=prioritized)
    p.add(value_chunk([1, 2, 3, 4, 5, 6]))                  # ids 0..5; rows t=1..5 valid
    p.add(value_chunk([20, 21, 22, 23], n=4, start=20))     # no valid row; ids 6..9 overwrite ids 0, 1
    assert p.ring.num_valid == 5 and len(p) == 0            # every valid row needs id 0 or 1
    with pytest.raises(ValueError, match="no sampleable rows"):
        p.sample(1, 4)


def test_prioritized_importance_weights_follow_beta_hand_case():
    # Rows 0..4 valid (row 5 carried); alpha = 1, eps = 0: priorities 1 1 2 4 8 (sum 16). 32 stratified
    # draws of mass 0.5 each reach every row, so with beta = 1 each weight is (N P_i)^-1 / (N P_min)^-1
    # = 1 / td_i, and with beta = 0 it is 1.
    p = pool(64, shape=(1, 1), prioritized=True, alpha=1.0)
    p.add(value_chunk([1, 2, 3, 4, 5, 6]))
    rows = np.arange(5)
    td = np.array([1.0, 1, 2, 4, 8])
    p.update_priorities(rows, td, p.ring.stamp_C[rows], eps=0.0)
    b = p.sample(2, 16, beta=1.0)
    assert set(b.idx_KB.reshape(-1).tolist()) == set(rows.tolist())
    np.testing.assert_array_equal(b.weight_KB, 1 / td[b.idx_KB])
    assert (p.sample(2, 16, beta=0.0).weight_KB == 1).all()


def test_sampling_is_deterministic_for_a_seed():
    s = run_stream(0, 500)
    idx = []
    for _ in range(2):
        p = pool(5000, seed=11)
        for c in s.chunks:
            p.add(c)
        idx.append(p.sample(2, 32).idx_KB)
    np.testing.assert_array_equal(idx[0], idx[1])


def test_rejects_mismatched_or_oversized_chunks():
    p = pool(16, row_capacity=8)
    with pytest.raises(ValueError, match="do not match"):
        p.add(value_chunk([1, 2, 3]))
    p = pool(4, shape=(1, 1), row_capacity=8)
    with pytest.raises(ValueError, match="does not fit"):
        p.add(value_chunk(list(range(1, 10))))  # 9 rows
    with pytest.raises(ValueError, match="new frames"):
        p.add(value_chunk([5, 6]))             # a fresh stack [2, 3, 4, 5] and frame 6: 5 frames > 4
    assert p.frames_written == 0 and p.ring.filled == 0
    with pytest.raises(ValueError, match="empty"):
        p.sample(1, 4)


# ---------------------------------------------------------------------------------------------- bytes


def test_atari_storage_within_1_1x_of_raw_payload():
    shape = (84, 84)
    streams = [run_stream(a, 2500, chunk_rows=32, n=3, seed=a, shape=shape, min_len=100, max_len=400,
                          time_limit=1000) for a in range(2)]
    p = pool(2000, shape=shape)
    for c in interleave(streams, seed=0):
        p.add(c)
    assert p.frames_written > 2 * p.capacity     # steady state: the frame ring has wrapped
    raw = raw_payload_bytes(shape)
    assert raw == 84 * 84 + 6
    report = storage_report(p)
    assert report.ratio <= 1.1, report
    assert p.nbytes_per_row() <= 1.1 * raw
    # The layout formula matches the allocation, so the 1M figure below is what a pool would take.
    assert frame_pool_nbytes(2000, (4, *shape)) == p.nbytes()
    # 1M frames of 7056 B + 1.25M rows of 69 B (4 frame ids, oldest id, action: 8 B each; return, discount:
    # 4 B; horizon, net: 2 B; valid: 1 B; stamp: 8 B).
    assert frame_pool_nbytes(1_000_000, (4, *shape)) == 7_056_000_000 + 1_250_000 * 69


def test_state_dict_round_trip_continues_like_the_original():
    # Two pools fed the same chunks, one saved and restored halfway: the same frames, rows, ids and draws.
    # One actor's stream: row t stacks frames t..t+3; each chunk re-emits the last 3 rows of the one before
    # (as ChunkBuilder does), so the restored pool must recognise them from its saved tail memory.
    frames = np.random.default_rng(0).integers(0, 256, size=(80, 2, 2)).astype(np.uint8)
    chunks = []
    for i in range(6):
        obs = np.stack([frames[t:t + 4] for t in range(9 * i, 9 * i + 12)])
        hor, valid = np.ones(12, np.int64), np.ones(12, bool)
        hor[-1], valid[-1] = 0, False  # the last row has no next row in its chunk
        chunks.append(Chunk(obs, np.zeros(12, np.int64), np.ones(12, np.float32), np.ones(12, np.float32),
                            hor, valid, 0, 11))
    a = FramePool(200, (4, 2, 2), np.uint8, np.random.default_rng(1))
    for c in chunks[:3]:
        a.add(c)
    b = FramePool(200, (4, 2, 2), np.uint8, np.random.default_rng(99))
    b.load_state_dict(a.state_dict())
    for c in chunks[3:]:
        a.add(c)
        b.add(c)
    assert a.frames_written == b.frames_written == 4 + 6 * 9 + 2 and a.ring.head == b.ring.head  # each frame once
    assert np.array_equal(a.fid_CS, b.fid_CS) and np.array_equal(a.frame_FX, b.frame_FX)
    x, y = a.sample(2, 8), b.sample(2, 8)
    assert np.array_equal(x.idx_KB, y.idx_KB) and np.array_equal(x.obs_KBO, y.obs_KBO)
