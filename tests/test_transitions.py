"""ChunkBuilder on hand-written streams: every field of a chunk, what is carried, dropping a partial episode,
the state round trip; and nstep_targets' input and output dtypes. Written to kill the mutants that the
other tests let survive (docs/mutation.md); the n-step arithmetic itself is in test_td_targets.py."""

import numpy as np
import pytest

from asyncdqn import transitions
from asyncdqn.transitions import ChunkBuilder, nstep_targets

GAMMA = 0.5   # powers of 1/2 keep every expected return exact in float32


def _builder(n: int = 2, net: int = 3, rows: int = 8, dtype=np.float32) -> ChunkBuilder:
    return ChunkBuilder(rows, (1,), np.dtype(dtype), GAMMA, n, net=net)


def _obs(v: float) -> np.ndarray:
    return np.array([v])


def _first_episode(b: ChunkBuilder) -> None:
    """rows 0-1 act (a 1, 2; r 1, 2), row 2 ends the episode by termination, rows 3-4 act (a 0, 1;
    r 4, 8), row 5 is the current observation."""
    b.observe(_obs(10))
    b.acted(1, 1.0)
    b.observe(_obs(11))
    b.acted(2, 2.0)
    b.final(_obs(12), terminated=True)
    b.observe(_obs(13))
    b.acted(0, 4.0)
    b.observe(_obs(14))
    b.acted(1, 8.0)
    b.observe(_obs(15))


def _fields(c) -> dict:
    return {"obs": c.obs_RO[:, 0].tolist(), "act": c.act_R.tolist(), "ret": c.ret_R.tolist(),
            "disc": c.disc_R.tolist(), "hor": c.hor_R.tolist(), "valid": c.valid_R.tolist(),
            "net": c.net, "steps": c.steps}


def test_two_chunks_by_hand_with_a_terminal_a_truncation_and_carried_rows():
    b = _builder()
    _first_episode(b)
    c = b.flush()
    # n = 2: row 0 reaches the terminal row 2 at h = 2: 1 + .5 * 2 = 2, no bootstrap; row 1: h = 1, 2;
    # row 3: 4 + .5 * 8 = 8, bootstraps from row 5 with .5**2; row 4 would bootstrap from row 6: carried.
    assert _fields(c) == {"obs": [10, 11, 12, 13, 14, 15], "act": [1, 2, 0, 0, 1, 0], "ret": [2, 2, 0, 8, 0, 0],
                          "disc": [0, 0, 0, 0.25, 0, 0], "hor": [2, 1, 0, 2, 0, 0],
                          "valid": [True, True, False, True, False, False], "net": 3, "steps": 4}
    assert (c.obs_RO.dtype, c.act_R.dtype, c.ret_R.dtype, c.disc_R.dtype, c.hor_R.dtype) == (
        np.float32, np.int64, np.float32, np.float32, np.int16)
    assert b.size == 2 and b.carried == 2 and b.new_steps == 0   # rows 14 (incomplete) and 15 (current)
    b.acted(2, 16.0)
    b.observe(_obs(16))
    b.acted(0, 32.0)
    b.final(_obs(17), terminated=False)                           # truncated: bootstrap from row 17
    b.observe(_obs(18))
    c = b.flush()
    # row 0 (obs 14): 8 + .5 * 16 = 16, disc .25; row 1: 16 + .5 * 32 = 32, its bootstrap row is the
    # truncated final row, so disc stays .5**2; row 2: 32, h = 1, disc .5.
    assert _fields(c) == {"obs": [14, 15, 16, 17, 18], "act": [1, 2, 0, 0, 0], "ret": [16, 32, 32, 0, 0],
                          "disc": [0.25, 0.25, 0.5, 0, 0], "hor": [2, 2, 1, 0, 0],
                          "valid": [True, True, True, False, False], "net": 3, "steps": 2}
    # no incomplete step row: only the current observation is carried
    assert b.size == 1 and b.carried == 1 and b.new_steps == 0 and b.obs_RO[0, 0] == 18


def test_one_step_chunks_carry_only_the_current_observation_and_emit_each_step_once():
    b = _builder(n=1, rows=4)
    b.observe(_obs(0))
    starts, steps = [], 0
    for t in range(1, 10):
        b.acted(t % 2, float(t))
        b.observe(_obs(t))
        if b.full:
            c = b.flush()
            starts += c.obs_RO[c.valid_R, 0].tolist()
            steps += c.steps
            assert c.ret_R[c.valid_R].tolist() == (c.obs_RO[c.valid_R, 0] + 1).tolist()   # r = next obs
            assert b.size == 1 and b.carried == 1
    assert starts == list(range(len(starts))) and steps == len(starts) == 9 - (b.size - 1)


def test_full_leaves_room_for_a_final_row_and_the_reset_observation():
    b = _builder(rows=4)
    for t in range(3):
        assert not b.full
        b.observe(_obs(t))
        b.acted(0, 0.0)
    assert b.full   # 3 of 4 rows used


def test_drop_partial_episode_on_a_fresh_builder_forgets_every_row():
    b = _builder()
    b.observe(_obs(0))
    b.acted(0, 1.0)
    b.observe(_obs(1))
    b.acted(1, 1.0)
    b.observe(_obs(2))
    b.drop_partial_episode()
    assert (b.size, b.new_steps, b.carried) == (0, 0, 0)
    b.observe(_obs(5))
    b.acted(1, 1.0)
    b.observe(_obs(6))
    c = b.flush()
    assert _fields(c) == {"obs": [5, 6], "act": [1, 0], "ret": [0, 0], "disc": [0, 0], "hor": [0, 0],
                          "valid": [False, False], "net": 3, "steps": 1}   # n = 2: row 0 is carried


def test_drop_partial_episode_keeps_rows_up_to_the_last_episode_end_after_a_flush():
    b = _builder(rows=16)
    _first_episode(b)
    b.flush()                                     # carries rows 14 (acted) and 15 (current)
    b.acted(1, 64.0)                              # on 15
    b.observe(_obs(19))
    b.acted(0, 128.0)
    b.final(_obs(20), terminated=True)
    b.observe(_obs(21))
    b.acted(0, 1.0)
    b.observe(_obs(22))
    b.acted(1, 1.0)
    b.final(_obs(23), terminated=True)            # a second episode end: the last one counts
    b.observe(_obs(24))
    b.acted(0, 1.0)
    b.observe(_obs(25))                           # the partial episode: rows 7 (acted) and 8
    assert b.new_steps == 5
    b.drop_partial_episode()
    assert b.size == 7 and b.new_steps == 4 and b.carried == 2
    b.observe(_obs(30))
    c = b.flush()
    assert c.obs_RO[:, 0].tolist() == [14, 15, 19, 20, 21, 22, 23, 30] and c.steps == 4
    # 14: 8 + .5 * 64 = 40 (bootstraps from 19); 15: 64 + .5 * 128 = 128, reaches the terminal row 20
    assert c.ret_R[c.valid_R].tolist() == [40, 128, 128, 1.5, 1]
    assert c.disc_R[c.valid_R].tolist() == [0.25, 0, 0, 0, 0]


def test_drop_partial_episode_after_one_episode_end():
    b = _builder()
    b.observe(_obs(0))
    b.acted(1, 1.0)
    b.final(_obs(1), terminated=True)
    b.observe(_obs(2))
    b.acted(0, 1.0)
    b.observe(_obs(3))
    b.drop_partial_episode()
    assert (b.size, b.new_steps, b.obs_RO[:2, 0].tolist()) == (2, 1, [0, 1])


def _restored(state: dict, n: int = 2) -> ChunkBuilder:
    fresh = _builder(n=n)
    _first_episode(fresh)                         # dirty rows beyond the saved size must be cleared
    fresh.acted(0, 99.0)
    fresh.load_state_dict(state)
    return fresh


def test_state_round_trip_continues_the_same_stream():
    b = _builder()
    _first_episode(b)
    b.flush()
    b.acted(2, 16.0)
    b.observe(_obs(16))
    state = b.state_dict()
    assert {k: v.dtype for k, v in state.items() if isinstance(v, np.ndarray)} == {
        "obs_RO": np.float32, "rew_R": np.float64, "act_R": np.int64, "acted_R": bool, "final_R": bool,
        "term_R": bool}
    assert (state["size"], state["new_steps"], state["carried"]) == (3, 1, 2)
    c = _restored(state)
    assert (c.size, c.new_steps, c.carried) == (3, 1, 2)
    for x in (b, c):
        x.acted(0, 32.0)
        x.final(_obs(17), terminated=True)
        x.observe(_obs(18))
    want, got = _fields(b.flush()), _fields(c.flush())
    assert got == want and want["ret"][:3] == [16, 32, 32] and want["disc"][:3] == [0.25, 0, 0]


def test_observations_keep_the_builders_dtype():
    b = _builder(dtype=np.uint8)
    b.observe(np.array([200], np.uint8))
    b.acted(1, 1.0)
    b.observe(np.array([201], np.uint8))
    c = b.flush()
    assert c.obs_RO.dtype == np.uint8 and c.obs_RO[:, 0].tolist() == [200, 201]


def test_nstep_targets_accepts_0_1_flags_of_any_numeric_dtype():
    acted = np.array([1, 1, 0, 1, 1, 0], bool)
    final = np.array([0, 0, 1, 0, 0, 0], bool)
    term = np.array([0, 0, 1, 0, 0, 0], bool)
    rew = np.array([1, 2, 0, 4, 8, 0], np.float32)
    want = nstep_targets(rew, acted, final, term, GAMMA, 2)
    for dtype in (np.int64, np.float64):
        got = nstep_targets(rew, acted.astype(dtype), final.astype(dtype), term.astype(dtype), GAMMA, 2)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    assert want.valid_R.tolist() == [True, True, False, True, False, False] and want.disc_R[0] == 0
    assert (want.ret_R.dtype, want.disc_R.dtype, want.hor_R.dtype) == (np.float32, np.float32, np.int16)


def test_the_cached_lookahead_arrays_are_read_only():
    # they are shared by every chunk of that size: a caller writing into one would corrupt later targets.
    # Cleared first so that this test computes them (mutmut maps a test to the functions it calls).
    transitions._lookahead.cache_clear()
    for a in transitions._lookahead(6, 2, GAMMA):
        with pytest.raises(ValueError):
            a.reshape(-1)[0] = 7
