"""What travels on the actor -> replay queue (chunks of consecutive rows from one actor), and what replay
hands the learner (`Batch`).

Place in the flow: actors build chunks here; the bounded asyncio queue carries them; replay stores them
and samples `Batch`es from them for the learner.

A chunk is a run of observation *rows* from one actor's stream. A row is either a step row (the actor
acted in it: action, reward follow) or a final row (the true last observation of an episode; no action).
The next observation of a transition is never copied: it is the row `hor` places further on in the same
chunk, so replay can derive it as long as it stores each chunk contiguously.

n-step targets are computed per actor from the chunk rows with `nstep_targets` (a plain function). A step
row whose n-step horizon runs past the end of the chunk is not valid yet; `ChunkBuilder` carries it (and
every row after it) into the next chunk, so each transition is emitted exactly once.

Legend: R rows in a chunk, O observation shape, K nets, B batch per net.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np


class Chunk(NamedTuple):
    """Consecutive rows of one actor. Only rows with `valid_R` are transitions; others are bootstrap rows."""

    obs_RO: np.ndarray   # observations, in stream order
    act_R: np.ndarray    # int64 action taken in the row (0 for final rows)
    ret_R: np.ndarray    # float32 n-step discounted reward from the row
    disc_R: np.ndarray   # float32 gamma**h, or 0 when the episode terminated within the horizon
    hor_R: np.ndarray    # int16 rows to the bootstrap observation (h, 1 <= h <= n)
    valid_R: np.ndarray  # bool: the row starts a complete transition
    net: int | np.ndarray  # index of the Q-net whose actor made the chunk (or each row's: a vector flush)
    steps: int           # env steps this chunk adds (new step rows, not carried ones)


class Batch(NamedTuple):
    """K independent minibatches, one per Q-net, as `replay` samples them."""

    obs_KBO: np.ndarray
    act_KB: np.ndarray
    ret_KB: np.ndarray
    disc_KB: np.ndarray
    next_obs_KBO: np.ndarray
    weight_KB: np.ndarray  # importance-sampling weights (ones for uniform replay)
    idx_KB: np.ndarray     # rows, for priority updates
    stamp_KB: np.ndarray   # which write filled each row, so a late priority update skips overwritten rows


class NStep(NamedTuple):
    valid_R: np.ndarray
    ret_R: np.ndarray
    disc_R: np.ndarray
    hor_R: np.ndarray


def _lookahead_arrays(rows: int, n: int, gamma: float) -> tuple[np.ndarray, ...]:
    """Arrays of `nstep_targets` that depend only on the chunk size (cached as `_lookahead`: a flush runs
    once per ~30 env steps, and each numpy call costs about a microsecond). Read-only: callers never write
    into them."""
    arange_R = np.arange(rows)
    window_RJ = arange_R[:, None] + np.arange(n)[None, :]   # rows i + j, j < n, into the reward padded by n
    powers_J = gamma ** np.arange(n, dtype=np.float64)
    # weights_HJ[h] = gamma**j for j < h, else 0: the n-step return over a horizon h is rew_RJ @ weights_HJ[h]
    weights_HJ = np.where(np.arange(n)[None, :] < np.arange(n + 1)[:, None], powers_J[None, :], 0.0)
    disc_H = gamma ** np.arange(n + 1, dtype=np.float64)
    arrays = (arange_R, window_RJ, weights_HJ, disc_H)
    for a in arrays:
        a.flags.writeable = False
    return arrays


# Wrapped by a call, not a decorator: mutmut 3 skips decorated functions (docs/mutation.md).
_lookahead = functools.lru_cache(maxsize=32)(_lookahead_arrays)


def nstep_targets(rew_R: np.ndarray, acted_R: np.ndarray, final_R: np.ndarray, term_R: np.ndarray,
                  gamma: float, n: int) -> NStep:
    """n-step return, discount and horizon of every step row of a chunk (or of W chunks at once: arrays of
    shape [W, R], one stream per row of the array, as `ColumnChunkBuilder` passes them).

    rew_R: reward received after acting in the row; acted_R: the row is a step row; final_R: the row is
    the final observation of an episode; term_R: for final rows, the episode terminated (no bootstrap)
    rather than being truncated (bootstrap from the final observation, as Pardo et al. 2018 argue).

    For step row i the horizon h is the first j in 1..n with row i+j final, else n; the target is
    G = sum_{j<h} gamma**j * rew[i+j] + disc * Q(row i+h), disc = 0 if row i+h ended by termination,
    else gamma**h. A row whose bootstrap row lies past the chunk is not valid (carried to the next chunk).
    """
    rows = np.shape(rew_R)[-1]
    arange_R, window_RJ, weights_HJ, disc_H = _lookahead(rows, n, gamma)
    final_R = np.asarray(final_R, dtype=bool)
    # The first final row at or after each row (`rows` if none): a step row is never final itself, so for
    # step row i this is the first final row after it, and h = min(that - i, n). A row with no final row
    # within n gets h = n, or fewer when the chunk ends first; either way its bootstrap row is past the end.
    next_final_R = np.flip(np.minimum.accumulate(np.flip(np.where(final_R, arange_R, rows), -1), axis=-1), -1)
    hor = np.minimum(next_final_R - arange_R, n)
    boot = arange_R + hor
    valid = np.asarray(acted_R, dtype=bool) & (boot < rows)
    hor = np.where(valid, hor, 0)  # invalid rows get horizon 0: return 0 (weights_HJ[0]) and discount...
    rew = np.asarray(rew_R, dtype=np.float64)
    rew_RJ = np.concatenate([rew, np.zeros((*rew.shape[:-1], n))], axis=-1)[..., window_RJ]
    ret = np.einsum("...rj,...rj->...r", rew_RJ, weights_HJ[hor]).astype(np.float32)
    # the bootstrap row ended by termination (an invalid row looks at itself: hor 0, and is masked below)
    ends = np.take_along_axis(final_R & np.asarray(term_R, dtype=bool), np.minimum(boot, rows - 1) * valid, axis=-1)
    # ...0, as do rows that bootstrap from a terminal
    disc = np.where(valid & ~ends, disc_H[hor], 0.0).astype(np.float32)
    return NStep(valid, ret, disc, hor.astype(np.int16))


class ChunkBuilder:
    """One actor's rows since its last chunk, in preallocated arrays (no object per transition).

    Call `observe(obs)` for each observation the actor will act in, `acted(a, r)` after stepping it,
    `final(obs, terminated)` at an episode end (before the reset observation), and `flush()` when
    `full` to get a Chunk. Not thread-safe; each actor owns one.
    """

    def __init__(self, rows: int, obs_shape: tuple, obs_dtype: np.dtype, gamma: float, n: int, net: int):
        self.obs_RO = np.zeros((rows, *obs_shape), dtype=obs_dtype)
        self.rew_R = np.zeros(rows, dtype=np.float64)
        self.act_R = np.zeros(rows, dtype=np.int64)
        self.acted_R = np.zeros(rows, dtype=bool)
        self.final_R = np.zeros(rows, dtype=bool)
        self.term_R = np.zeros(rows, dtype=bool)
        self.gamma, self.n, self.net = gamma, n, net
        self.size = 0          # rows filled
        self.new_steps = 0     # step rows added since the last flush
        self.carried = 0       # rows [0, carried) were carried over from the last flush

    @property
    def full(self) -> bool:
        """Flush now: one step can add two rows (a final row and the reset observation)."""
        return self.size >= len(self.rew_R) - 1

    def _row(self, obs: np.ndarray) -> int:
        """A new row; its flags, action and reward are already clear (`_truncate` clears freed rows)."""
        r = self.size
        self.obs_RO[r] = obs
        self.size = r + 1
        return r

    def _truncate(self, size: int) -> None:
        for arr in (self.rew_R, self.act_R, self.acted_R, self.final_R, self.term_R):
            arr[size:] = 0
        self.size = size

    def observe(self, obs: np.ndarray) -> None:
        self._row(obs)

    def acted(self, action: int, reward: float) -> None:
        r = self.size - 1
        self.act_R[r] = action
        self.rew_R[r] = reward
        self.acted_R[r] = True
        self.new_steps += 1

    def final(self, obs: np.ndarray, terminated: bool) -> None:
        r = self._row(obs)
        self.final_R[r] = True
        self.term_R[r] = terminated

    def flush(self) -> Chunk:
        """Emit rows [0, size) and keep the rows from the first incomplete step row on."""
        size = self.size
        ns = nstep_targets(self.rew_R[:size], self.acted_R[:size], self.final_R[:size], self.term_R[:size],
                           self.gamma, self.n)
        chunk = Chunk(self.obs_RO[:size].copy(), self.act_R[:size].copy(), ns.ret_R, ns.disc_R, ns.hor_R,
                      ns.valid_R, self.net, self.new_steps)
        incomplete = np.flatnonzero(self.acted_R[:size] & ~ns.valid_R)
        keep_from = int(incomplete[0]) if len(incomplete) else size - 1
        # The carried rows are re-emitted next time; a step row already emitted as valid never is.
        keep = size - keep_from
        for arr in (self.obs_RO, self.rew_R, self.act_R, self.acted_R, self.final_R, self.term_R):
            arr[:keep] = arr[keep_from:size]
        self._truncate(keep)
        self.carried = keep
        self.new_steps = 0
        return chunk

    def drop_partial_episode(self) -> None:
        """Forget the rows of the episode in progress (after an env fault): keep rows up to the last final
        row. Its step rows already emitted in earlier chunks stay; they were complete transitions."""
        finals = np.flatnonzero(self.final_R[: self.size])
        keep = int(finals[-1]) + 1 if len(finals) else 0
        self.new_steps -= int(self.acted_R[max(keep, self.carried): self.size].sum())
        self.carried = min(self.carried, keep)
        self._truncate(keep)

    _ARRAYS = ("obs_RO", "rew_R", "act_R", "acted_R", "final_R", "term_R")

    def state_dict(self) -> dict:
        state = {name: getattr(self, name)[: self.size].copy() for name in self._ARRAYS}
        return {**state, "size": self.size, "new_steps": self.new_steps, "carried": self.carried}

    def load_state_dict(self, state: dict) -> None:
        self.new_steps, self.carried = int(state["new_steps"]), int(state["carried"])
        size = int(state["size"])
        for name in self._ARRAYS:
            getattr(self, name)[:size] = np.asarray(state[name])
        self._truncate(size)


class ColumnChunkBuilder:
    """The rows of W actors that step in lockstep (the sub-envs of one vector env), as W columns of
    preallocated [R, W] arrays: each vector step adds one row to every column.

    One row per step holds because vector envs reset the gymnasium 1.x way (next-step autoreset): a sub-env
    that ended returns its true final observation, and on the next step its reset observation, ignoring the
    action and giving no reward. So a column's stream is exactly what `ChunkBuilder` makes for one actor:
    step rows, a final row (not acted in), the reset observation.

    Call `observe(obs_WO, final_W, term_W)` for each vector observation, `acted(act_W, rew_W, acted_W)` after
    the step that answered it (acted_W: the column was not resetting), and `flush()` when `full`. A flush
    keeps the last n rows (every incomplete step row lies there) and emits W chunks; a kept row that was
    already emitted as a transition is marked so it is never emitted twice. Not thread-safe.
    """

    _ARRAYS = ("obs_RWO", "rew_RW", "act_RW", "acted_RW", "final_RW", "term_RW", "emitted_RW")

    def __init__(self, rows: int, width: int, obs_shape: tuple, obs_dtype: np.dtype, gamma: float, n: int,
                 nets_W: list[int]):
        self.obs_RWO = np.zeros((rows, width, *obs_shape), dtype=obs_dtype)
        self.rew_RW = np.zeros((rows, width), dtype=np.float64)
        self.act_RW = np.zeros((rows, width), dtype=np.int64)
        self.acted_RW = np.zeros((rows, width), dtype=bool)
        self.final_RW = np.zeros((rows, width), dtype=bool)
        self.term_RW = np.zeros((rows, width), dtype=bool)
        self.emitted_RW = np.zeros((rows, width), dtype=bool)  # kept rows already emitted as transitions
        self.gamma, self.n, self.nets_W = gamma, n, list(nets_W)
        self.size = 0
        self.new_steps_W = np.zeros(width, dtype=np.int64)  # step rows per column since the last flush

    @property
    def full(self) -> bool:
        return self.size >= len(self.rew_RW)

    def observe(self, obs_WO: np.ndarray, final_W: np.ndarray, term_W: np.ndarray) -> None:
        r = self.size
        self.obs_RWO[r] = obs_WO
        self.final_RW[r] = final_W
        self.term_RW[r] = term_W
        self.size = r + 1

    def acted(self, act_W: np.ndarray, rew_W: np.ndarray, acted_W: np.ndarray, all_acted: bool = False) -> None:
        """`all_acted`: no column was resetting (the common case: acted_W is all True, no masking needed)."""
        r = self.size - 1
        if all_acted:
            self.act_RW[r] = act_W
            self.rew_RW[r] = rew_W
            self.acted_RW[r] = True
            self.new_steps_W += 1
            return
        self.act_RW[r] = np.where(acted_W, act_W, 0)
        self.rew_RW[r] = np.where(acted_W, rew_W, 0.0)
        self.acted_RW[r] = acted_W
        self.new_steps_W += acted_W

    def cut(self, cut_W: np.ndarray) -> None:
        """End the episodes of the columns in `cut_W` at their last row, as truncated (their env failed and
        is being rebuilt): the row was a real observation, so its earlier steps bootstrap from it."""
        r = self.size - 1
        if r >= 0:
            self.term_RW[r] &= ~cut_W | self.final_RW[r]
            self.final_RW[r] |= cut_W

    def flush(self, merged: bool = False) -> list[Chunk]:
        """W chunks of rows [0, size), one per column; keeps the last n rows for the next flush. `merged`:
        one chunk instead, the columns one after another, with each row's net: replay stores it in one
        write (a write costs ~20 us, W of them per flush were a large part of a 64-env step). Fine for the
        row pool, whose transitions never reach past their own rows; the frame pool wants one stream a chunk."""
        size = self.size
        ns = nstep_targets(self.rew_RW[:size].T, self.acted_RW[:size].T, self.final_RW[:size].T,
                           self.term_RW[:size].T, self.gamma, self.n)
        valid_WR = ns.valid_R & ~self.emitted_RW[:size].T
        ret_WR, disc_WR = np.where(valid_WR, ns.ret_R, 0.0).astype(np.float32), np.where(valid_WR, ns.disc_R, 0.0)
        hor_WR = np.where(valid_WR, ns.hor_R, 0).astype(np.int16)
        obs_WRO = np.moveaxis(self.obs_RWO[:size], 1, 0).copy()
        act_WR = self.act_RW[:size].T.copy()
        disc_WR = disc_WR.astype(np.float32)
        if merged:
            chunks = [Chunk(obs_WRO.reshape(-1, *obs_WRO.shape[2:]), act_WR.reshape(-1), ret_WR.reshape(-1),
                            disc_WR.reshape(-1), hor_WR.reshape(-1), valid_WR.reshape(-1),
                            np.repeat(np.asarray(self.nets_W, dtype=np.int64), size), int(self.new_steps_W.sum()))]
        else:
            chunks = [Chunk(obs_WRO[w], act_WR[w], ret_WR[w], disc_WR[w], hor_WR[w], valid_WR[w], self.nets_W[w],
                            int(self.new_steps_W[w])) for w in range(len(self.nets_W))]
        self.emitted_RW[:size] |= valid_WR.T
        keep = min(self.n, size)
        for name in self._ARRAYS:
            arr = getattr(self, name)
            arr[:keep] = arr[size - keep: size]
            arr[keep:] = 0
        self.size = keep
        self.new_steps_W[:] = 0
        return chunks

    def column_state(self, w: int) -> dict:
        """Column w's rows, for the checkpoint entry of actor w of the vector actor."""
        state = {name: getattr(self, name)[: self.size, w].copy() for name in self._ARRAYS}
        return {**state, "size": self.size, "new_steps": int(self.new_steps_W[w])}

    def load_column_states(self, states: list[dict]) -> None:
        sizes = {int(s["size"]) for s in states}
        if len(sizes) != 1:
            raise ValueError(f"the columns of a vector actor hold different row counts {sorted(sizes)}")
        size = sizes.pop()
        for name in self._ARRAYS:
            arr = getattr(self, name)
            arr[:] = 0
            for w, s in enumerate(states):
                arr[:size, w] = np.asarray(s[name])
        self.new_steps_W[:] = [int(s["new_steps"]) for s in states]
        self.size = size
