"""Vector actors (issue 16): one coroutine per gymnasium VectorEnv of W sub-envs.

- On the same seeds, a vector actor over a SyncVectorEnv makes exactly the transitions and episodes of W
  single-env actors (n-step returns per sub-env, terminations and TimeLimit truncations, each sub-env's
  own epsilon and net), whatever W divides the actors into.
- Gymnasium's native CartPole vector env: episode ends stored as terminated or truncated, no transition
  across an autoreset.
- Exact resume from the actors' states, a sub-env waiting for its reset included, on both vector envs.
- The column builder's n-step targets equal the one-actor builder's, row for row; a failed vector env is
  rebuilt and the run goes on; configs and checkpoints that cannot work are refused in one line.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asyncdqn import config
from asyncdqn.collect.vector_actor import VectorActor
from asyncdqn.errors import UserError
from asyncdqn.transitions import nstep_targets
from conftest import tiny_values
from helpers.real_actors import collect, collect_and_snapshot

CARTPOLE_12 = {"id": "CartPole-v1", "kwargs": {"max_episode_steps": 12}}  # truncations as well as terminations
GAMMA = np.float32(0.99)


def transitions_per_net(chunks) -> dict[int, list[tuple]]:
    """Every valid transition of each net's chunks, in order: (obs, action, return, discount, bootstrap obs)."""
    out: dict[int, list[tuple]] = {}
    for c in chunks:
        for i in np.flatnonzero(c.valid_R):
            net = int(c.net if np.ndim(c.net) == 0 else c.net[i])  # a vector actor's chunk: each row's net
            out.setdefault(net, []).append((c.obs_RO[i].tobytes(), int(c.act_R[i]), float(c.ret_R[i]),
                                              float(c.disc_R[i]), c.obs_RO[i + c.hor_R[i]].tobytes()))
    return out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("width", [2, 4])
@pytest.mark.parametrize("n_step", [1, 3])
async def test_a_vector_actor_makes_the_transitions_of_single_env_actors(width, n_step):
    # 4 actors, one per net, so a net's chunks are one actor's stream; eps ladder 0.5, 0.25, ..., no annealing
    actors = {"num_actors": 4, "n_step": n_step, "eps_base": 0.5, "eps_alpha": 3.0, "eps_anneal_steps": 0,
              "chunk_rows": 16}
    learner = {"num_nets": 4}
    _, single, single_eps = await collect(4 * 800, CARTPOLE_12, actors, seed=5, learner=learner, random_nets=True)
    vector, vec, vec_eps = await collect(4 * 800, CARTPOLE_12, {**actors, "envs_per_actor": width, "vector": "sync"},
                                         seed=5, learner=learner, random_nets=True)
    assert all(isinstance(a, VectorActor) for a in vector.actors) and len(vector.actors) == 4 // width
    a, b = transitions_per_net(single.chunks), transitions_per_net(vec.chunks)
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    for net in a:
        n = min(len(a[net]), len(b[net]))
        assert n > 600
        assert a[net][:n] == b[net][:n], net
    # both kinds of episode end occur, and each actor's episodes agree too
    discounts = {d for t in a[0] for d in (t[3],)}
    assert 0.0 in discounts and any(d > 0 for d in discounts)
    for actor in range(4):
        mine = [e for e in single_eps if e[0] == actor]
        theirs = [e for e in vec_eps if e[0] == actor]
        n = min(len(mine), len(theirs))
        assert n > 20 and mine[:n] == theirs[:n]
        assert any(length == 12 for *_, length in mine)  # truncated by the TimeLimit
    # the greedy answers really differ by net and observation (not all ties, so slots matter)
    actions = {t[1] for net in b for t in b[net]}
    assert actions == {0, 1}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("width", [4, 8])
async def test_each_sub_env_acts_greedily_with_its_own_net(width):
    # epsilon 0: every action is the greedy one of the sub-env's own net (actor i: net i mod 2, row i // 2)
    actors = {"num_actors": 8, "envs_per_actor": width, "vector": "native", "eps_base": 0.0,
              "eps_anneal_steps": 0, "n_step": 1, "chunk_rows": 16}
    collection, sink, _ = await collect(8 * 200, CARTPOLE_12, actors, seed=3, learner={"num_nets": 2},
                                        random_nets=True)
    net = collection.batcher.net
    for c in sink.chunks:
        v = np.flatnonzero(c.valid_R)
        x = torch.from_numpy(c.obs_RO[v]).unsqueeze(0).expand(net.k, -1, -1)
        nets = np.broadcast_to(c.net, c.valid_R.shape)[v]  # one net per row (a merged vector chunk)
        with torch.no_grad():
            greedy = net(x)[torch.from_numpy(nets), torch.arange(len(v))].argmax(-1).numpy()
        np.testing.assert_array_equal(c.act_R[v], greedy)
    assert {int(a) for c in sink.chunks for a in c.act_R[c.valid_R]} == {0, 1}


@pytest.mark.timeout(60)
async def test_native_cartpole_vector_env_stores_episode_ends_and_never_crosses_a_reset():
    actors = {"num_actors": 8, "envs_per_actor": 8, "vector": "native", "n_step": 1, "chunk_rows": 16}
    collection, sink, episodes = await collect(8 * 500, CARTPOLE_12, actors, seed=2)
    vec = collection.actors[0].vec
    assert not hasattr(vec, "envs")  # gymnasium's CartPoleVectorEnv, not a SyncVectorEnv
    assert len(episodes) > 100 and all(1 <= length <= 12 for *_, length in episodes)
    obs, nxt, disc = [], [], []
    for c in sink.chunks:
        v = np.flatnonzero(c.valid_R)
        obs.append(c.obs_RO[v])
        nxt.append(c.obs_RO[v + c.hor_R[v]])
        disc.append(c.disc_R[v])
    obs, nxt, disc = np.concatenate(obs), np.concatenate(nxt), np.concatenate(disc)
    # a step moves the pole by tau * theta_dot (< 0.1 rad); a reset would jump from a fallen pole to near 0
    assert np.abs(nxt[:, 2] - obs[:, 2]).max() < 0.1
    fallen = (np.abs(nxt[:, 0]) > 2.4) | (np.abs(nxt[:, 2]) > 0.2095)
    np.testing.assert_array_equal(disc == 0, fallen)  # discount 0 exactly where the pole fell
    assert set(disc[~fallen].tolist()) == {float(GAMMA)}  # truncated ends bootstrap, with gamma
    terminated = sum(1 for *_, length in episodes if length < 12)
    assert (disc == 0).sum() >= terminated - 8  # each terminated episode's last step (but the unflushed)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("vector", ["sync", "native"])
async def test_vector_actors_resume_exactly_from_their_states(vector):
    actors = {"num_actors": 8, "envs_per_actor": 4, "vector": vector, "n_step": 3, "eps_anneal_steps": 0,
              "chunk_rows": 16}
    run = dict(env=CARTPOLE_12, actors=actors, seed=4, learner={"num_nets": 2}, random_nets=True)
    _, sink, episodes, states, chunks_then, episodes_then = await collect_and_snapshot(8 * 305, 8 * 700, **run)
    assert any(s["pending"] for s in states)  # some sub-env waits for its reset at the snapshot
    assert any(len(s["actions"]) > 3 for s in states) == (vector == "sync")
    _, resumed, resumed_eps = await collect(8 * 700, states=states, start_at=8 * 305, **run)
    after = sink.chunks[chunks_then:]
    assert len(after) > 50 and len(resumed.chunks) == len(after)
    for x, y in zip(after, resumed.chunks):
        assert np.array_equal(x.net, y.net) and x.steps == y.steps
        for field in ("obs_RO", "act_R", "ret_R", "disc_R", "hor_R", "valid_R"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field), err_msg=field)
    assert resumed_eps == episodes[episodes_then:]


@pytest.mark.timeout(60)
async def test_a_failing_vector_env_is_rebuilt_and_collection_goes_on():
    clock = {"factory": "helpers.collect_envs:clock_env", "kwargs": {"length": 6}}
    actors = {"num_actors": 4, "envs_per_actor": 4, "vector": "sync", "n_step": 3, "chunk_rows": 16}
    _, _, episodes = await collect(4 * 600, clock, actors, seed=1)
    faulty, sink, faulted_eps = await collect(4 * 600, clock, actors, seed=1,
                                              faults={"env_error_rate": 0.01, "restart_backoff_s": 0.0})
    assert faulty.faults.total >= 2
    # every stored transition spans h clock ticks (t -> t + h): a rebuilt env never joins two episodes
    for c in sink.chunks:
        v = np.flatnonzero(c.valid_R)
        np.testing.assert_array_equal(c.obs_RO[v + c.hor_R[v], 0], c.obs_RO[v, 0] + c.hor_R[v])
    assert all(length == 6 for *_, length in faulted_eps) and len(faulted_eps) > 100
    assert len(episodes) > len(faulted_eps)  # the faulted episodes are not recorded


def test_column_nstep_targets_equal_one_row_at_a_time():
    rng = np.random.default_rng(0)
    rows, width = 20, 5
    final = rng.random((width, rows)) < 0.15
    acted = ~final & (rng.random((width, rows)) < 0.9)
    term = final & (rng.random((width, rows)) < 0.5)
    rew = rng.standard_normal((width, rows))
    both = nstep_targets(rew, acted, final, term, 0.9, 3)
    for w in range(width):
        one = nstep_targets(rew[w], acted[w], final[w], term[w], 0.9, 3)
        for got, want in zip(both, one):
            np.testing.assert_array_equal(got[w], want)
    # a hand case: rows s s F(terminated) r s with n = 2 -> returns r0 + .9 r1, r1, -, -, (past the end)
    ns = nstep_targets(np.array([[1.0, 2.0, 0.0, 0.0, 5.0]]), np.array([[1, 1, 0, 0, 1]], bool),
                       np.array([[0, 0, 1, 0, 0]], bool), np.array([[0, 0, 1, 0, 0]], bool), 0.9, 2)
    np.testing.assert_allclose(ns.ret_R[0], [1 + 0.9 * 2, 2, 0, 0, 0])
    np.testing.assert_array_equal(ns.valid_R[0], [True, True, False, False, False])
    np.testing.assert_allclose(ns.disc_R[0], [0, 0, 0, 0, 0])


@pytest.mark.parametrize("actors, extra, message", [
    ({"num_actors": 6, "envs_per_actor": 4}, {}, "actors.envs_per_actor must divide actors.num_actors = 6"),
    ({"num_actors": 4, "envs_per_actor": 4, "env_workers": 2}, {}, "actors.env_workers must be 0"),
    ({"num_actors": 4, "envs_per_actor": 4, "vector": "fast"}, {}, "actors.vector must be"),
    ({"num_actors": 4, "envs_per_actor": 4}, {"total_steps": 1002}, "total_steps must be a multiple of"),
    ({"num_actors": 4, "envs_per_actor": 2}, {"backend": {"kind": "ray"}}, "actors.envs_per_actor must be 1"),
    ({"num_actors": 64, "envs_per_actor": 64, "chunk_rows": 100}, {"replay": {"capacity": 5000}},
     "actors.chunk_rows x actors.envs_per_actor = 6400 rows a chunk must be <= replay.capacity"),
    ({"num_actors": 8, "envs_per_actor": 8, "chunk_rows": 100}, {"merge": {"score": "heldout_td"}},
     "rows a chunk must be <= the held-out pool's 250 rows"),
])
def test_configs_vector_actors_cannot_run_are_refused(actors, extra, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        config.from_dict(tiny_values(actors=actors, **extra))


async def test_native_needs_an_id_with_a_vector_env_and_checkpoints_keep_their_actor_kind():
    clock = {"factory": "helpers.collect_envs:clock_env", "kwargs": {"length": 6}}
    with pytest.raises(UserError, match="actors.vector = 'native' needs a gymnasium id with a vector entry"):
        await collect(8, clock, {"num_actors": 2, "envs_per_actor": 2, "vector": "native"})
    single, *_ = await collect(40, CARTPOLE_12, {"num_actors": 2})
    states = single.actor_states()
    with pytest.raises(UserError, match="written by single-env actors"):
        await collect(80, CARTPOLE_12, {"num_actors": 2, "envs_per_actor": 2}, states=states, start_at=40)
    vector, *_ = await collect(40, CARTPOLE_12, {"num_actors": 2, "envs_per_actor": 2})
    with pytest.raises(UserError, match="written by vector actors"):
        await collect(80, CARTPOLE_12, {"num_actors": 2}, states=vector.actor_states(), start_at=40)
