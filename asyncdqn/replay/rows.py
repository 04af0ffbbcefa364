"""The shared replay pool: one preallocated numpy ring of whole observations, fed by every actor's chunks.

Place in the flow: queue -> **replay** -> learner. Only the event-loop thread touches the pool: the
queue consumer writes chunks, and the learner coroutine samples batches before it hands them to its
worker thread, so no lock is needed and sampling is deterministic for a given seed.

Storage: row i holds its whole observation; the bootstrap observation is row i + hor[i] of the same
chunk (see `core` for the ring head), so it is never stored twice. Every valid row is sampleable.

Legend: C capacity rows, K nets, B batch per net, O observation shape.
"""

from __future__ import annotations

import numpy as np

from asyncdqn.replay.core import RowRing
from asyncdqn.transitions import Batch, Chunk


class ReplayPool:
    """Uniform or prioritized replay over `capacity` rows of whole observations."""

    def __init__(self, capacity: int, obs_shape: tuple, obs_dtype: np.dtype, rng: np.random.Generator,
                 prioritized: bool = False, alpha: float = 0.6, num_nets: int = 1):
        self.capacity = capacity
        self.obs_CO = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.ring = RowRing(capacity, rng, prioritized, alpha, num_nets, hor_dtype=np.int64)

    def __len__(self) -> int:
        return self.ring.num_valid

    def nbytes_per_row(self) -> float:
        # Without the stamp column, as this figure has been reported in run summaries so far.
        r = self.ring
        arrays = (self.obs_CO, r.act_C, r.ret_C, r.disc_C, r.hor_C, r.valid_C, r.net_C)
        return sum(a.nbytes for a in arrays) / self.capacity

    def sampleable(self, idx: np.ndarray) -> np.ndarray:
        """Which rows may be sampled: the valid ones (whole observations never go stale)."""
        return self.ring.valid_C[idx]

    def observations(self, idx: np.ndarray) -> np.ndarray:
        return self.obs_CO[idx]

    def add(self, chunk: Chunk) -> None:
        sl = self.ring.place(chunk)
        self.obs_CO[sl] = chunk.obs_RO

    def sample(self, num_nets: int, batch_size: int, beta: float = 0.4) -> Batch:
        # Valid rows stay sampleable until overwritten, so rejection sampling always ends (rounds=None).
        idx, weight = self.ring.draw(num_nets * batch_size, beta, self.sampleable, rounds=None)
        return self.ring.batch(idx, weight, self.observations, (num_nets, batch_size))

    def update_priorities(self, idx: np.ndarray, td_abs: np.ndarray, stamp: np.ndarray, eps: float = 1e-6) -> None:
        """Set priorities |td| + eps of sampled rows; see `RowRing.update_priorities`."""
        self.ring.update_priorities(idx, td_abs, stamp, self.sampleable, eps)

    def state_dict(self, with_rows: bool = True) -> dict:
        """Counters, the sampling RNG and (with_rows) the filled rows and priorities, for an exact resume."""
        state = self.ring.counter_state()
        if with_rows:
            state.update(self.ring.row_state({"obs_CO": self.obs_CO[: self.ring.filled].copy()}))
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict`. Without saved rows the pool starts empty (only the RNG is restored)."""
        if self.ring.load_state_dict(state):
            self.obs_CO[: self.ring.filled] = np.asarray(state["rows"]["obs_CO"])

    def share_by_net(self) -> np.ndarray:
        """Fraction of valid rows made by each net's actors (a merge diagnostic)."""
        return self.ring.share_by_net(self.ring.valid_C[: self.ring.filled])
