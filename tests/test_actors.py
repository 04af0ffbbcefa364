"""The actors' blocked uniform draws: the Generator's own stream, and exact across a save and load."""

from __future__ import annotations

import numpy as np

from asyncdqn.actors import Uniforms


def test_uniforms_are_the_generators_random_stream_across_blocks():
    u = Uniforms(np.random.default_rng(5))
    n = 2 * Uniforms.BLOCK + 17
    assert [u.next() for _ in range(n)] == np.random.default_rng(5).random(3 * Uniforms.BLOCK)[:n].tolist()


def test_uniforms_resume_mid_block_exactly():
    u = Uniforms(np.random.default_rng(7))
    for _ in range(100):
        u.next()
    state = u.state_dict()
    expected = [u.next() for _ in range(Uniforms.BLOCK + 50)]
    resumed = Uniforms(np.random.default_rng(123))
    resumed.load_state_dict(state)
    assert [resumed.next() for _ in range(Uniforms.BLOCK + 50)] == expected


def test_uniforms_load_a_state_without_saved_draws_goes_on_from_the_generator():
    rng = np.random.default_rng(9)
    state = {"rng": Uniforms(rng).state_dict()["rng"]}  # an older checkpoint: the generator state only
    u = Uniforms(np.random.default_rng(0))
    u.load_state_dict(state)
    assert u.next() == np.random.default_rng(9).random(Uniforms.BLOCK)[0]
