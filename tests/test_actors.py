"""Actors: blocked uniform draws (the Generator's own stream, exact across a save and load), and the shared
inference tick when one waiting actor is cancelled."""

from __future__ import annotations

import asyncio

import numpy as np
import torch

from asyncdqn.collect.actor import InferenceBatcher, Uniforms
from asyncdqn.nets import EnsembleQNet


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


async def test_cancelling_one_waiting_actor_leaves_the_others_their_answers():
    """The actors of a tick share one future; cancelling one actor cancels it, and the others ask again."""
    net = EnsembleQNet(2, 3, 4, hidden=(8,)).reset_parameters(0)
    batcher = InferenceBatcher(net, 4, (3,), np.float32)
    obs = [np.full(3, i, dtype=np.float32) for i in range(4)]
    waiting = [asyncio.create_task(batcher.act(batcher.slot(i), obs[i])) for i in range(4)]
    await asyncio.sleep(0)  # all four wait in the same tick
    waiting[1].cancel()
    await asyncio.sleep(0)
    server = asyncio.create_task(batcher.serve())
    done = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5.0)
    server.cancel()
    assert isinstance(done[1], asyncio.CancelledError)
    with torch.no_grad():
        q = net(torch.from_numpy(batcher.obs_KMO)).argmax(-1).numpy()
    assert [done[i] for i in (0, 2, 3)] == [int(q[batcher.slot(i)]) for i in (0, 2, 3)]
