"""Actors: blocked uniform draws (the Generator's own stream, exact across a save and load), the shared
inference tick when one waiting actor is cancelled, and the real actor loop (`Actor.run`, run by a
`LocalCollection` on a tiny env): each actor's own annealed epsilon, and episode ends stored as terminated
or truncated."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from asyncdqn.collect.actor import InferenceBatcher, Uniforms
from asyncdqn.nets import EnsembleQNet
from helpers.real_actors import collect


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



# ------------------------------------------------------------------------------- the real actor loop

CLOCK = "helpers.collect_envs:clock_env"
N_ACTIONS = 100  # clock_env's default: a random action is the greedy one (0) in 1 of 100 draws


def random_share(actions: list[int]) -> float:
    """Share of random actions among `actions`, as an estimate of epsilon: a random action is uniform over
    the actions, so it is the greedy one (0) in 1 of N_ACTIONS draws."""
    return float(np.mean(np.asarray(actions) != 0)) / (1 - 1 / N_ACTIONS)


@pytest.mark.timeout(60)
async def test_each_actor_explores_with_its_own_ladder_epsilon():
    # 3 actors, ladder 0.5 ** (1 + 2 i / 2) = 0.5, 0.25, 0.125; no annealing: the ladder value from step 0
    collection, _, _ = await collect(3 * 2000, env={"factory": CLOCK, "kwargs": {"length": 50}},
                                     actors={"num_actors": 3, "eps_base": 0.5, "eps_alpha": 2.0,
                                             "eps_anneal_steps": 0})
    actions = [actor.env.unwrapped.actions for actor in collection.actors]
    assert all(len(a) >= 1900 for a in actions)  # the batcher's ticks keep the actors in step
    shares = [random_share(a) for a in actions]
    np.testing.assert_allclose(shares, [0.5, 0.25, 0.125], atol=0.04)


@pytest.mark.timeout(60)
async def test_epsilon_anneals_from_one_to_the_ladder_value():
    # eps = 1 - 0.9 * steps / 3000 until 3000 env steps, then 0.1. The 3 actors step in turn, so an actor's
    # t-th action is the run's step ~3t.
    collection, _, _ = await collect(3 * 3000, env={"factory": CLOCK, "kwargs": {"length": 50}},
                                     actors={"num_actors": 3, "eps_base": 0.1, "eps_alpha": 0.0,
                                             "eps_anneal_steps": 3000})
    actions = [actor.env.unwrapped.actions for actor in collection.actors]
    early = random_share([x for a in actions for x in a[:100]])         # steps < ~300: eps > 0.91
    middle = random_share([x for a in actions for x in a[450:550]])     # steps ~1350..1650: eps ~0.55
    late = random_share([x for a in actions for x in a[1500:]])         # steps > ~4500: eps = 0.1
    assert early > 0.85
    assert 0.45 < middle < 0.65
    assert late == pytest.approx(0.1, abs=0.03)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("env_workers", [0, 1])
@pytest.mark.parametrize("terminates", [True, False])
async def test_episode_ends_are_stored_as_terminated_or_truncated(terminates, env_workers):
    """Episodes of 5 steps that terminate, or that gymnasium's TimeLimit truncates: with 1-step returns,
    the step at t = 4 gets discount 0 when the episode terminated, and gamma (bootstrap from the true final
    observation) when it was truncated; every other step gets gamma."""
    clock = {"factory": CLOCK, "kwargs": {"length": 5, "terminates": terminates}}
    _, sink, episodes = await collect(400, env=clock, actors={"num_actors": 2, "n_step": 1, "env_workers": env_workers})
    assert len(episodes) >= 70 and all(length == 5 for *_, length in episodes)
    t_R = np.concatenate([c.obs_RO[c.valid_R, 0] for c in sink.chunks])
    disc_R = np.concatenate([c.disc_R[c.valid_R] for c in sink.chunks])
    assert (t_R == 4).sum() >= 50
    gamma = np.float32(0.99)
    np.testing.assert_array_equal(disc_R, np.where((t_R == 4) & terminates, np.float32(0), gamma))
