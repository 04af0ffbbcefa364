"""Replay for stacked-frame observations (Atari): every frame is stored once, stacks are rebuilt on sampling.

Place in the flow: queue -> **replay** -> learner, as a drop-in alternative to `ReplayPool` for
observations that are stacks of S frames, as gymnasium's `FrameStackObservation` (default arguments)
emits them. It takes the same `Chunk`s and returns the same `Batch`, and keeps everything but the
pixels in the same `core.RowRing`. Only the event-loop thread touches it (no lock); no call blocks on
I/O; `add` and `sample` are CPU work that grows with the chunk or batch size.

Why: `ReplayPool` stores each row's whole stack, S times the new data (28 KB per Atari row for 7 KB of
new pixels). Here a row stores S frame ids (absolute frame numbers, oldest first) into a frame ring,
and each frame is written once; the bootstrap observation is still the row `hor` further on in the same
chunk (so no next_obs copy either).

Linking rows to frames, by content, not by actor: chunks from different actors interleave in the ring
and a `Chunk` does not say which actor made it, so the pool never assumes that a chunk continues the
previous one. Instead, for each row of a chunk:
  * head rows (the first `tail_rows`) are looked up among the remembered tail rows of recent chunks,
    keyed by a hash of their newest frame. `ChunkBuilder` re-emits an actor's last rows at the head of
    its next chunk, so this finds them whatever chunks came in between, and reuses their frame ids;
  * a row whose older S-1 frames equal the previous row's newer S-1 frames continues it: it shares
    those S-1 ids and adds one frame;
  * any other row (an episode's reset observation, an actor's first chunk, a forgotten tail) starts
    afresh: its S frames are written, a frame equal to the one before it sharing that frame's id. With
    gymnasium's default padding ("reset": the reset frame repeated), a reset row writes one frame.
Every reuse is checked against the stored bytes, so a rebuilt stack always equals the stack given:
a hash collision or a coincidence across actors can cost a frame, never correctness.

Wraparound: frame f lives in slot f % F and is alive while f >= frames_written - F. A row is sampled
only if it is valid and the oldest frame it needs (its own stack and its bootstrap row's) is alive:
rows whose older frames were overwritten are skipped by uniform sampling and get priority 0 under
prioritized replay when drawn (then the draw is repeated), so no stale stack is ever returned. The row
ring itself is `core.RowRing` (chunks contiguous, a jump to row 0 when a chunk does not fit).

Memory: `capacity` counts frames, about one per transition; the row ring holds `row_capacity` rows
(default 1.25 x capacity, as `ChunkBuilder` re-emits n rows per chunk and each episode adds a final
row) at 69 bytes each. See `frame_pool_nbytes` and `storage_report`.

Legend: F frame capacity, C row capacity, R rows in a chunk, S frames per stack, X frame shape (H, W),
O observation shape (S, *X), K nets, B batch per net.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from asyncdqn.replay.core import RowRing
from asyncdqn.transitions import Batch, Chunk


def default_row_capacity(capacity: int) -> int:
    return capacity + capacity // 4


def _row_nbytes(stack: int) -> int:
    """Bytes per ring row: S frame ids and the oldest id needed (int64), then the ring's own fields."""
    return (stack + 1) * np.dtype(np.int64).itemsize + RowRing(1, np.random.default_rng(0), hor_dtype=np.int16).nbytes()


def frame_pool_nbytes(capacity: int, obs_shape: tuple, obs_dtype: np.dtype = np.uint8,
                      row_capacity: int | None = None) -> int:
    """Bytes a `FramePool` allocates, computed without allocating it (e.g. for a 1M-frame Atari pool)."""
    rows = default_row_capacity(capacity) if row_capacity is None else row_capacity
    frame = math.prod(obs_shape[1:]) * np.dtype(obs_dtype).itemsize
    return capacity * frame + rows * _row_nbytes(obs_shape[0])


def raw_payload_bytes(frame_shape: tuple, frame_dtype: np.dtype = np.uint8) -> int:
    """The least a transition carries: one new frame, a uint8 action, a float32 reward, one flags byte."""
    return math.prod(frame_shape) * np.dtype(frame_dtype).itemsize + 1 + 4 + 1


class StorageReport(NamedTuple):
    bytes_total: int                # what the pool allocates
    live_transitions: int           # transitions it can sample now
    bytes_per_transition: float     # bytes_total / live_transitions
    raw_bytes_per_transition: int   # raw_payload_bytes of one frame
    ratio: float                    # bytes_per_transition / raw_bytes_per_transition


class FramePool:
    """Ring of frames + ring of rows. Same calls as `ReplayPool`; `capacity` counts frames."""

    def __init__(self, capacity: int, obs_shape: tuple, obs_dtype: np.dtype, rng: np.random.Generator,
                 prioritized: bool = False, alpha: float = 0.6, num_nets: int = 1,
                 row_capacity: int | None = None, tail_rows: int = 8, tail_memory: int = 4096):
        if len(obs_shape) < 2:
            raise ValueError(f"obs_shape {obs_shape} is not a stack of frames (S, *frame_shape)")
        self.capacity = capacity
        self.row_capacity = default_row_capacity(capacity) if row_capacity is None else row_capacity
        self.obs_shape = tuple(obs_shape)
        self.stack = obs_shape[0]
        self.frame_FX = np.zeros((capacity, *obs_shape[1:]), dtype=obs_dtype)
        self.fid_CS = np.zeros((self.row_capacity, self.stack), np.int64)  # the row's frame ids, oldest first
        self.oldest_C = np.zeros(self.row_capacity, np.int64)  # oldest id it needs (own and bootstrap stack)
        self.ring = RowRing(self.row_capacity, rng, prioritized, alpha, num_nets, hor_dtype=np.int16)
        self.frames_written = 0   # id of the next frame; frame f sits in slot f % capacity
        # ChunkBuilder re-emits at most n_step rows per chunk; 8 covers n_step <= 8. A larger n only
        # stores those rows' frames twice.
        self.tail_rows = tail_rows
        self.tail_memory = tail_memory
        self._tails: dict[int, np.ndarray] = {}  # hash(newest frame bytes) -> that row's ids, oldest entry first

    # ------------------------------------------------------------------------------------- sizes

    def nbytes(self) -> int:
        return self.frame_FX.nbytes + self.fid_CS.nbytes + self.oldest_C.nbytes + self.ring.nbytes()

    def nbytes_per_row(self) -> float:
        """Allocated bytes per frame slot: per transition once the pool is full, since each transition
        adds one frame (plus one reset frame per episode)."""
        return self.nbytes() / self.capacity

    def sampleable(self, idx: np.ndarray) -> np.ndarray:
        """Which rows may be sampled: valid, and every frame they need still in the frame ring."""
        return self.ring.valid_C[idx] & (self.oldest_C[idx] >= self.frames_written - self.capacity)

    def __len__(self) -> int:
        """Sampleable rows (an O(C) scan)."""
        return int(self.sampleable(np.arange(self.ring.filled)).sum())

    # ------------------------------------------------------------------------------------- write

    def add(self, chunk: Chunk) -> int:
        """Store a chunk; returns the ring row its first row went to."""
        obs_RO = chunk.obs_RO
        if obs_RO.shape[1:] != self.obs_shape:
            raise ValueError(f"chunk observations {obs_RO.shape[1:]} do not match the pool's {self.obs_shape}")
        self.ring.check_fits(len(chunk.act_R))  # before _link writes any frame
        ids_RS = self._link(obs_RO)
        boot_R = np.arange(len(chunk.act_R)) + chunk.hor_R  # invalid rows have hor 0: themselves
        sl = self.ring.place(chunk)
        self.fid_CS[sl] = ids_RS
        self.oldest_C[sl] = np.minimum(ids_RS[:, 0], ids_RS[boot_R, 0])
        return sl.start

    def _link(self, obs_RO: np.ndarray) -> np.ndarray:
        """Frame ids of every row of a chunk; writes the frames not stored yet (nothing before it knows
        they fit). See the module docstring."""
        rows, S = len(obs_RO), self.stack
        cont_R = np.zeros(rows, dtype=bool)   # row r's older frames are row r-1's newer frames
        if rows > 1 and S > 1:
            cont_R[1:] = (obs_RO[1:, :-1] == obs_RO[:-1, 1:]).reshape(rows - 1, -1).all(axis=1)
        ids_RS = np.empty((rows, S), dtype=np.int64)
        src_row, src_k = [], []  # where each new frame comes from, in id order
        nxt = self.frames_written
        matching = True
        for r in range(rows):
            if matching and r < self.tail_rows:
                known = self._known_ids(obs_RO[r])
                if known is not None:
                    ids_RS[r] = known
                    continue
                matching = False  # carried rows are a prefix of the chunk
            first = S - 1 if cont_R[r] else 0
            ids_RS[r, :first] = ids_RS[r - 1, 1:first + 1]
            for k in range(first, S):
                if k > 0 and np.array_equal(obs_RO[r, k], obs_RO[r, k - 1]):
                    ids_RS[r, k] = ids_RS[r, k - 1]   # reset padding: one frame, S ids
                else:
                    ids_RS[r, k] = nxt
                    src_row.append(r)
                    src_k.append(k)
                    nxt += 1
        if nxt - self.frames_written > self.capacity:
            raise ValueError(f"chunk has {nxt - self.frames_written} new frames; the pool holds {self.capacity}")
        if src_row:
            slots = np.arange(self.frames_written, nxt) % self.capacity
            self.frame_FX[slots] = obs_RO[src_row, src_k]
        self.frames_written = nxt
        for r in range(max(0, rows - self.tail_rows), rows):
            key = hash(obs_RO[r, -1].tobytes())
            self._tails.pop(key, None)
            self._tails[key] = ids_RS[r].copy()
        while len(self._tails) > self.tail_memory:
            del self._tails[next(iter(self._tails))]
        return ids_RS

    def _known_ids(self, obs_O: np.ndarray) -> np.ndarray | None:
        """Ids of a remembered tail row holding exactly this stack, with all its frames still alive."""
        ids_S = self._tails.get(hash(obs_O[-1].tobytes()))
        if ids_S is None or ids_S[0] < self.frames_written - self.capacity:
            return None
        if not np.array_equal(self.frame_FX[ids_S % self.capacity], obs_O):
            return None
        return ids_S

    # ------------------------------------------------------------------------------------- read

    def stacks(self, idx: np.ndarray) -> np.ndarray:
        """Rebuilt observations of ring rows idx (any shape): [*idx.shape, S, *X]."""
        return self.frame_FX[self.fid_CS[idx] % self.capacity]


    def sample(self, num_nets: int, batch_size: int, beta: float = 0.4) -> Batch:
        # Live rows can be scarce (most valid rows may have lost frames): after 8 rejection rounds the
        # uniform draw falls back to a scan of the live rows. N in the weights counts valid rows, dead or
        # not; it cancels in the normalisation.
        idx, weight = self.ring.draw(num_nets * batch_size, beta, self.sampleable, rounds=8)
        return self.ring.batch(idx, weight, self.stacks, (num_nets, batch_size))

    def update_priorities(self, idx: np.ndarray, td_abs: np.ndarray, stamp: np.ndarray, eps: float = 1e-6) -> None:
        """As `ReplayPool.update_priorities`; rows whose frames are gone get 0."""
        self.ring.update_priorities(idx, td_abs, stamp, self.sampleable, eps)

    def state_dict(self, with_rows: bool = True) -> dict:
        """As `ReplayPool.state_dict`: counters, the sampling RNG and (with_rows) the frames, rows,
        priorities and the remembered tail rows' ids (their keys are rebuilt from the stored frames:
        Python's bytes hash differs between processes)."""
        state: dict = {"frames_written": self.frames_written, **self.ring.counter_state()}
        if with_rows:
            filled = self.ring.filled
            state["frames"] = self.frame_FX[: min(self.frames_written, self.capacity)].copy()
            state.update(self.ring.row_state({"fid_CS": self.fid_CS[:filled].copy(),
                                              "oldest_C": self.oldest_C[:filled].copy()}))
            tails = list(self._tails.values())
            state["tails"] = np.stack(tails) if tails else np.zeros((0, self.stack), np.int64)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict`; without saved rows the pool starts empty (only the RNG is restored)."""
        if not self.ring.load_state_dict(state):
            return
        self.frames_written = int(state["frames_written"])
        frames = np.asarray(state["frames"])
        self.frame_FX[: len(frames)] = frames
        filled = self.ring.filled
        self.fid_CS[:filled] = np.asarray(state["rows"]["fid_CS"])
        self.oldest_C[:filled] = np.asarray(state["rows"]["oldest_C"])
        self._tails.clear()
        for ids_S in np.asarray(state["tails"], dtype=np.int64):  # oldest first, as _link inserted them
            key = hash(self.frame_FX[ids_S[-1] % self.capacity].tobytes())
            self._tails.pop(key, None)
            self._tails[key] = ids_S.copy()

    def share_by_net(self) -> np.ndarray:
        """Fraction of live rows made by each net's actors (a merge diagnostic)."""
        return self.ring.share_by_net(self.sampleable(np.arange(self.ring.filled)))


def storage_report(pool: FramePool) -> StorageReport:
    """Measured bytes per sampleable transition against the raw payload. Meaningful once the frame ring
    has wrapped (steady state); before that, empty slots count against the figure."""
    live = len(pool)
    total = pool.nbytes()
    per = total / max(1, live)
    raw = raw_payload_bytes(pool.obs_shape[1:], pool.frame_FX.dtype)
    return StorageReport(total, live, per, raw, per / raw)
