"""The shared replay pool: one preallocated numpy ring buffer fed by every actor's chunks.

Place in the flow: queue -> **replay** -> learner. Only the event-loop thread touches the pool: the
queue consumer writes chunks, and the learner coroutine samples batches before it hands them to its
worker thread, so no lock is needed and sampling is deterministic for a given seed.

Storage: each chunk is written contiguously (jumping to row 0 when it does not fit before the end), so
the bootstrap observation of row i is row i + hor[i] and is never stored twice. When the ring wraps,
a partly overwritten chunk loses only its head; its remaining rows bootstrap from rows further on in the
same chunk, which are older than the write head and so still intact.

Sampling: uniform over valid rows with an explicit `np.random.Generator`, or proportional prioritized
replay (Schaul et al. 2016) with a sum tree; invalid rows have priority 0.

Legend: C capacity rows, K nets, B batch per net, O observation shape.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np

from asyncdqn.transitions import Chunk


class Batch(NamedTuple):
    """K independent minibatches, one per Q-net."""

    obs_KBO: np.ndarray
    act_KB: np.ndarray
    ret_KB: np.ndarray
    disc_KB: np.ndarray
    next_obs_KBO: np.ndarray
    weight_KB: np.ndarray  # importance-sampling weights (ones for uniform replay)
    idx_KB: np.ndarray     # rows, for priority updates
    stamp_KB: np.ndarray   # which write filled each row, so a late priority update skips overwritten rows


class SumTree:
    """Binary sum tree over `capacity` leaves with vectorised update and prefix-sum search."""

    def __init__(self, capacity: int):
        self.leaves = 1 << max(1, (capacity - 1).bit_length())
        self.tree = np.zeros(2 * self.leaves, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def set(self, idx: np.ndarray, value: np.ndarray) -> None:
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


class ReplayPool:
    def __init__(self, capacity: int, obs_shape: tuple, obs_dtype: np.dtype, rng: np.random.Generator,
                 prioritized: bool = False, alpha: float = 0.6, num_nets: int = 1):
        self.capacity = capacity
        self.obs_CO = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.act_C = np.zeros(capacity, dtype=np.int64)
        self.ret_C = np.zeros(capacity, dtype=np.float32)
        self.disc_C = np.zeros(capacity, dtype=np.float32)
        self.hor_C = np.zeros(capacity, dtype=np.int64)
        self.valid_C = np.zeros(capacity, dtype=bool)
        self.net_C = np.full(capacity, -1, dtype=np.int16)
        self.stamp_C = np.zeros(capacity, dtype=np.int64)  # number of the add() that wrote the row
        self.writes = 0
        self.rng = rng
        self.head = 0        # next row to write
        self.filled = 0      # rows [0, filled) have been written at least once
        self.num_valid = 0
        self.added_steps = 0
        self.tree = SumTree(capacity) if prioritized else None
        self.alpha = alpha
        self.max_priority = 1.0
        self.num_nets = num_nets

    def __len__(self) -> int:
        return self.num_valid

    def nbytes_per_row(self) -> float:
        arrays = (self.obs_CO, self.act_C, self.ret_C, self.disc_C, self.hor_C, self.valid_C, self.net_C)
        return sum(a.nbytes for a in arrays) / self.capacity

    def add(self, chunk: Chunk) -> None:
        rows = len(chunk.act_R)
        if rows > self.capacity:
            raise ValueError(f"chunk of {rows} rows exceeds replay capacity {self.capacity}")
        if self.head + rows > self.capacity:
            self.head = 0  # keep chunks contiguous; the tail rows keep their (older, intact) data
        sl = slice(self.head, self.head + rows)
        self.num_valid += int(chunk.valid_R.sum()) - int(self.valid_C[sl].sum())
        self.obs_CO[sl] = chunk.obs_RO
        self.act_C[sl] = chunk.act_R
        self.ret_C[sl] = chunk.ret_R
        self.disc_C[sl] = chunk.disc_R
        self.hor_C[sl] = chunk.hor_R
        self.valid_C[sl] = chunk.valid_R
        self.net_C[sl] = chunk.net
        self.writes += 1
        self.stamp_C[sl] = self.writes
        if self.tree is not None:
            idx = np.arange(sl.start, sl.stop)
            self.tree.set(idx, np.where(chunk.valid_R, self.max_priority**self.alpha, 0.0))
        self.head += rows
        self.filled = max(self.filled, self.head)
        self.added_steps += chunk.steps

    def _uniform_rows(self, n: int) -> np.ndarray:
        """n rows drawn uniformly (with replacement) among valid rows, by rejection."""
        out = np.empty(0, dtype=np.int64)
        while len(out) < n:
            draw = self.rng.integers(0, self.filled, size=2 * (n - len(out)) + 8)
            out = np.concatenate([out, draw[self.valid_C[draw]]])
        return out[:n]

    def sample(self, num_nets: int, batch_size: int, beta: float = 0.4) -> Batch:
        if self.num_valid == 0:
            raise ValueError("cannot sample from an empty replay pool")
        n = num_nets * batch_size
        if self.tree is None:
            idx = self._uniform_rows(n)
            weight = np.ones(n, dtype=np.float32)
        else:
            # Stratified: one draw per equal slice of the total priority mass.
            total = self.tree.total
            mass = (np.arange(n) + self.rng.random(n)) * (total / n)
            idx = np.minimum(self.tree.find(np.minimum(mass, np.nextafter(total, 0))), self.capacity - 1)
            prob = self.tree.get(idx) / total
            weight = (self.num_valid * prob) ** (-beta)
            weight = (weight / weight.max()).astype(np.float32)
        nxt = idx + self.hor_C[idx]
        shape = (num_nets, batch_size)
        return Batch(
            self.obs_CO[idx].reshape(*shape, *self.obs_CO.shape[1:]),
            self.act_C[idx].reshape(shape),
            self.ret_C[idx].reshape(shape),
            self.disc_C[idx].reshape(shape),
            self.obs_CO[nxt].reshape(*shape, *self.obs_CO.shape[1:]),
            weight.reshape(shape),
            idx.reshape(shape),
            self.stamp_C[idx].reshape(shape),
        )

    def update_priorities(self, idx: np.ndarray, td_abs: np.ndarray, stamp: np.ndarray, eps: float = 1e-6) -> None:
        """Set priorities |td| + eps of sampled rows. A row overwritten since it was sampled (its stamp
        changed) keeps the fresh priority of its new data."""
        if self.tree is None:
            return
        idx, stamp = idx.reshape(-1), stamp.reshape(-1)
        prio = np.abs(td_abs.reshape(-1)).astype(np.float64) + eps
        self.max_priority = max(self.max_priority, float(prio.max()))
        keep = self.stamp_C[idx] == stamp
        idx, prio = idx[keep], prio[keep]
        if len(idx):
            self.tree.set(idx, np.where(self.valid_C[idx], prio**self.alpha, 0.0))

    _ARRAYS = ("obs_CO", "act_C", "ret_C", "disc_C", "hor_C", "valid_C", "net_C", "stamp_C")
    _COUNTERS = ("writes", "head", "filled", "num_valid", "added_steps", "max_priority")

    def state_dict(self, with_rows: bool = True) -> dict:
        """Counters, the sampling RNG and (with_rows) the filled rows and priorities, for an exact resume."""
        state: dict = {name: getattr(self, name) for name in self._COUNTERS}
        state["rng"] = json.dumps(self.rng.bit_generator.state)
        if with_rows:
            state["rows"] = {name: getattr(self, name)[: self.filled].copy() for name in self._ARRAYS}
            if self.tree is not None:
                state["tree"] = self.tree.tree.copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict`. Without saved rows the pool starts empty (only the RNG is restored)."""
        self.rng.bit_generator.state = json.loads(state["rng"])
        if "rows" not in state:
            return
        for name in self._COUNTERS:
            setattr(self, name, type(getattr(self, name))(state[name]))
        for name in self._ARRAYS:
            getattr(self, name)[: self.filled] = np.asarray(state["rows"][name])
        if self.tree is not None and "tree" in state:
            self.tree.tree[:] = np.asarray(state["tree"])

    def share_by_net(self) -> np.ndarray:
        """Fraction of valid rows made by each net's actors (a merge diagnostic)."""
        counts = np.bincount(self.net_C[: self.filled][self.valid_C[: self.filled]], minlength=self.num_nets)
        return counts / max(1, counts.sum())
