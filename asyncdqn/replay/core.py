"""The row ring and prioritized sampler that both replay storages are built on.

Place in the flow: queue -> **replay** -> learner. `rows.ReplayPool` (whole observations per row) and
`frames.FramePool` (a frame ring, stacks rebuilt on sampling) each own a `RowRing` and differ only in how
they keep observations and which rows they may sample (`live`). Only the event-loop thread touches a
pool, so nothing here takes a lock; no call blocks on I/O.

Ring head: each chunk is written contiguously, jumping to row 0 when it does not fit before the end, so
the bootstrap row of row i is row i + hor[i] in the same chunk. When the ring wraps, a partly overwritten
chunk loses only its head; its remaining rows bootstrap from rows further on in the same chunk, which
are older than the write head and so still intact. Every row carries the number of the write that filled
it (its stamp), so a priority update that arrives after the row was overwritten is dropped.

Sampling: uniform over live rows with an explicit `np.random.Generator`, or proportional prioritized
replay (Schaul et al. 2016) with a sum tree, stratified over the total priority mass; rows that are not
live have priority 0. Importance weights w = (N * P)^-beta / max (`importance_weights`).

Legend: C row capacity, R rows in a chunk, K nets, B batch per net, N rows counted for the weights.
"""

from __future__ import annotations

import json
from typing import Callable

import numpy as np

from asyncdqn.transitions import Batch, Chunk

Live = Callable[[np.ndarray], np.ndarray]  # ring rows -> bool: may they be sampled now


class SumTree:
    """Binary sum tree over `capacity` leaves with vectorised update and prefix-sum search."""

    def __init__(self, capacity: int):
        self.leaves = 1 << max(1, (capacity - 1).bit_length())
        self.tree = np.zeros(2 * self.leaves, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def set(self, idx: np.ndarray, value: np.ndarray | float) -> None:
        pos = np.asarray(idx, dtype=np.int64) + self.leaves
        self.tree[pos] = value
        pos = np.unique(pos // 2)
        while pos[0] >= 1:
            self.tree[pos] = self.tree[2 * pos] + self.tree[2 * pos + 1]
            if pos[0] == 1:
                break
            pos = np.unique(pos // 2)

    def get(self, idx: np.ndarray) -> np.ndarray:
        return self.tree[np.asarray(idx, dtype=np.int64) + self.leaves]

    def find(self, mass: np.ndarray) -> np.ndarray:
        """Leaf index i for each mass m with prefix(i) <= m < prefix(i + 1)."""
        pos = np.ones(len(mass), dtype=np.int64)
        mass = np.array(mass, dtype=np.float64)
        while pos[0] < self.leaves:
            left = 2 * pos
            go_right = (mass >= self.tree[left]) & (self.tree[left + 1] > 0)
            mass = np.where(go_right, mass - self.tree[left], mass)
            pos = np.where(go_right, left + 1, left)
        return pos - self.leaves


def importance_weights(prob: np.ndarray, num_rows: int, beta: float) -> np.ndarray:
    """Prioritized replay's correction w_i = (N * P(i))^-beta, divided by its largest value (float32).

    N only scales every weight alike, so it cancels in the normalisation; it is kept for the paper's form
    (Schaul et al. 2016, eq. 1 and the max-normalisation after it)."""
    weight = (num_rows * prob) ** (-beta)
    return (weight / weight.max()).astype(np.float32)


def uniform_rows(rng: np.random.Generator, filled: int, n: int, live: Live, rounds: int | None) -> np.ndarray:
    """n rows of [0, filled) drawn uniformly (with replacement) among live ones, by rejection. After
    `rounds` rounds (None: never) the rest come from an explicit list of the live rows (an O(C) scan),
    for a storage whose live rows can be scarce."""
    out = np.empty(0, dtype=np.int64)
    done = 0
    while rounds is None or done < rounds:
        draw = rng.integers(0, filled, size=2 * (n - len(out)) + 8)
        out = np.concatenate([out, draw[live(draw)]])
        if len(out) >= n:
            return out[:n]
        done += 1
    rows = np.flatnonzero(live(np.arange(filled)))
    if len(rows) == 0:
        raise ValueError("no sampleable rows: every valid row lost frames to the ring wrapping")
    return np.concatenate([out, rng.choice(rows, size=n - len(out))])


def stratified_rows(tree: SumTree, rng: np.random.Generator, n: int, rows: int, live: Live) -> np.ndarray:
    """n proportional draws, one per equal slice of the total priority mass. A drawn row that is not
    live gets priority 0 and is drawn again (each pass zeroes at least one leaf, so this ends)."""
    total = tree.total
    mass = (np.arange(n) + rng.random(n)) * (total / n)
    idx = tree.find(np.minimum(mass, np.nextafter(total, 0)))
    while True:
        idx = np.minimum(idx, rows - 1)
        dead = ~live(idx)
        if not dead.any():
            return idx
        tree.set(np.unique(idx[dead]), 0.0)
        total = tree.total
        if total <= 0:
            raise ValueError("no sampleable rows: every valid row lost frames to the ring wrapping")
        idx[dead] = tree.find(np.minimum(rng.random(int(dead.sum())) * total, np.nextafter(total, 0)))


class RowRing:
    """Everything about a row but its observation, the ring head, the priorities and the sampling RNG."""

    FIELDS = ("act_C", "ret_C", "disc_C", "hor_C", "valid_C", "net_C", "stamp_C")
    COUNTERS = ("writes", "head", "filled", "num_valid", "added_steps", "max_priority")

    def __init__(self, capacity: int, rng: np.random.Generator, prioritized: bool = False, alpha: float = 0.6,
                 num_nets: int = 1, hor_dtype: type = np.int64):
        self.capacity = capacity
        self.act_C = np.zeros(capacity, dtype=np.int64)
        self.ret_C = np.zeros(capacity, dtype=np.float32)
        self.disc_C = np.zeros(capacity, dtype=np.float32)
        self.hor_C = np.zeros(capacity, dtype=hor_dtype)    # rows to the bootstrap row
        self.valid_C = np.zeros(capacity, dtype=bool)       # the row starts a complete transition
        self.net_C = np.full(capacity, -1, dtype=np.int16)  # net whose actor made the row (-1: never written)
        self.stamp_C = np.zeros(capacity, dtype=np.int64)   # number of the write that filled the row
        self.writes = 0
        self.head = 0        # next row to write
        self.filled = 0      # rows [0, filled) have been written at least once
        self.num_valid = 0   # valid rows, whether or not the storage can still sample them
        self.added_steps = 0
        self.max_priority = 1.0
        self.rng = rng
        self.tree = SumTree(capacity) if prioritized else None
        self.alpha = alpha
        self.num_nets = num_nets

    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in self.FIELDS)

    def check_fits(self, rows: int) -> None:
        if rows > self.capacity:
            raise ValueError(f"chunk of {rows} rows does not fit a replay ring of {self.capacity} rows")

    def place(self, chunk: Chunk) -> slice:
        """Write a chunk's row fields at the head (or at row 0, see the module docstring); new valid rows
        get the largest priority seen so far. Returns the rows it took; the storage fills their
        observations."""
        rows = len(chunk.act_R)
        self.check_fits(rows)
        if self.head + rows > self.capacity:
            self.head = 0  # keep chunks contiguous; the tail rows keep their (older, intact) data
        sl = slice(self.head, self.head + rows)
        self.num_valid += int(chunk.valid_R.sum()) - int(self.valid_C[sl].sum())
        self.writes += 1
        self.act_C[sl] = chunk.act_R
        self.ret_C[sl] = chunk.ret_R
        self.disc_C[sl] = chunk.disc_R
        self.hor_C[sl] = chunk.hor_R
        self.valid_C[sl] = chunk.valid_R
        self.net_C[sl] = chunk.net
        self.stamp_C[sl] = self.writes
        if self.tree is not None:
            self.tree.set(np.arange(sl.start, sl.stop), np.where(chunk.valid_R, self.max_priority**self.alpha, 0.0))
        self.head += rows
        self.filled = max(self.filled, self.head)
        self.added_steps += chunk.steps
        return sl

    def draw(self, n: int, beta: float, live: Live, rounds: int | None) -> tuple[np.ndarray, np.ndarray]:
        """n live rows and their importance weights (ones for uniform replay)."""
        if self.num_valid == 0:
            raise ValueError("cannot sample from an empty replay pool")
        if self.tree is None:
            return uniform_rows(self.rng, self.filled, n, live, rounds), np.ones(n, dtype=np.float32)
        idx = stratified_rows(self.tree, self.rng, n, self.capacity, live)
        return idx, importance_weights(self.tree.get(idx) / self.tree.total, self.num_valid, beta)

    def batch(self, idx: np.ndarray, weight: np.ndarray, obs_of: Callable[[np.ndarray], np.ndarray],
              shape: tuple[int, int]) -> Batch:
        """The K x B minibatch of rows idx; `obs_of(rows)` gives the storage's observations of rows."""
        obs, nxt = obs_of(idx), obs_of(idx + self.hor_C[idx])
        return Batch(obs.reshape(*shape, *obs.shape[1:]), self.act_C[idx].reshape(shape),
                     self.ret_C[idx].reshape(shape), self.disc_C[idx].reshape(shape),
                     nxt.reshape(*shape, *nxt.shape[1:]), weight.reshape(shape), idx.reshape(shape),
                     self.stamp_C[idx].reshape(shape))

    def update_priorities(self, idx: np.ndarray, td_abs: np.ndarray, stamp: np.ndarray, live: Live,
                          eps: float = 1e-6) -> None:
        """Set priorities |td| + eps of sampled rows (0 for rows not live). A row overwritten since it was
        sampled (its stamp changed) keeps the fresh priority of its new data."""
        if self.tree is None:
            return
        idx, stamp = idx.reshape(-1), stamp.reshape(-1)
        prio = np.abs(td_abs.reshape(-1)).astype(np.float64) + eps
        self.max_priority = max(self.max_priority, float(prio.max()))
        keep = self.stamp_C[idx] == stamp
        idx, prio = idx[keep], prio[keep]
        if len(idx):
            self.tree.set(idx, np.where(live(idx), prio**self.alpha, 0.0))

    def share_by_net(self, live_F: np.ndarray) -> np.ndarray:
        """Fraction of the rows with live_F (over rows [0, filled)) made by each net's actors."""
        counts = np.bincount(self.net_C[: self.filled][live_F], minlength=self.num_nets)
        return counts / max(1, counts.sum())

    def counter_state(self) -> dict:
        """The counters and the sampling RNG: the part of a pool's `state_dict` saved even without rows."""
        state: dict = {name: getattr(self, name) for name in self.COUNTERS}
        state["rng"] = json.dumps(self.rng.bit_generator.state)
        return state

    def row_state(self, storage_rows: dict[str, np.ndarray]) -> dict:
        """"rows" (the storage's per-row arrays, then the ring's fields, over [0, filled)) and "tree"."""
        rows = {**storage_rows, **{name: getattr(self, name)[: self.filled].copy() for name in self.FIELDS}}
        state: dict = {"rows": rows}
        if self.tree is not None:
            state["tree"] = self.tree.tree.copy()
        return state

    def load_state_dict(self, state: dict) -> bool:
        """Restore the RNG and, if `state` holds rows, the counters, fields and priorities; says which."""
        self.rng.bit_generator.state = json.loads(state["rng"])
        if "rows" not in state:
            return False
        for name in self.COUNTERS:
            setattr(self, name, type(getattr(self, name))(state[name]))
        for name in self.FIELDS:
            getattr(self, name)[: self.filled] = np.asarray(state["rows"][name])
        if self.tree is not None and "tree" in state:
            self.tree.tree[:] = np.asarray(state["tree"])
        return True
