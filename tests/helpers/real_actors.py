"""Chunks made by the real actor loop, for tests: a `LocalCollection` (so `Actor.run`, the batcher, the epsilon
schedule and the chunk builder as a run uses them) on any env, with nets whose every Q-value is 0."""

from __future__ import annotations

import asyncio

import numpy as np
import torch

from asyncdqn.collect.local import LocalCollection
from asyncdqn.envs.make import env_kwargs, make_env, spec_of
from asyncdqn.nets import EnsembleQNet
from asyncdqn.schedule import StepGate, epsilon_ladder
from asyncdqn.transitions import Chunk
from conftest import tiny_config


class Sink:
    """The replay pool as the collection sees it: keeps every chunk."""

    def __init__(self):
        self.chunks: list[Chunk] = []

    def add(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)


async def collect(steps: int, env: dict, actors: dict, seed: int = 0, learner: dict | None = None,
                  random_nets: bool = False, states: list[dict] | None = None,
                  start_at: int = 0, faults: dict | None = None) -> tuple[LocalCollection, Sink, list]:
    """Run a LocalCollection of the tiny config with these `env`, `actors` (and `learner`) sections until its
    actors took `steps` env steps; (the collection, every chunk it made, every finished episode's (actor, net,
    return, length)). Its nets are all zeros, so every Q-value ties and the greedy action is always 0 (argmax
    takes the first): any other action was a random one. With `random_nets`, each net's weights are random
    and different, and its biases 0 (greedy actions vary with the observation and the net). `states`: actor states to resume
    from, taken after `start_at` env steps (see `collect_and_snapshot`)."""
    return await _collect(steps, env, actors, seed, learner, random_nets, states, start_at, None, faults)


async def collect_and_snapshot(snapshot_at: int, steps: int, env: dict, actors: dict, seed: int = 0,
                               learner: dict | None = None, random_nets: bool = False):
    """As `collect`, pausing once every actor is parked after `snapshot_at` steps to take their states:
    (collection, sink, episodes, states, chunks made by then, episodes by then)."""
    return await _collect(steps, env, actors, seed, learner, random_nets, None, 0, snapshot_at, None)


async def _collect(steps, env, actors, seed, learner, random_nets, states, start_at, snapshot_at, faults):
    cfg = tiny_config(seed=seed, env=env, actors=actors, learner=learner or {}, faults=faults or {}, total_steps=steps)
    kwargs = env_kwargs(cfg, evaluation=False)
    first = make_env(cfg.env, kwargs)
    spec = spec_of(first)
    acting = EnsembleQNet(cfg.learner.num_nets, spec.obs_size, spec.n_actions, cfg.learner.hidden)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in acting.parameters():
            # random weights and zero biases: the greedy action varies with the observation
            p.copy_(torch.randn(p.shape, generator=gen)) if random_nets and p.shape[-2] > 1 else p.zero_()
    acting.requires_grad_(False)
    a = cfg.actors
    sink, episodes = Sink(), []
    gate = StepGate(snapshot_at if snapshot_at is not None else steps)
    gate.steps = start_at
    collection = LocalCollection(cfg, np.random.SeedSequence(seed).spawn(a.num_actors), kwargs, spec, first,
                                 acting, gate, sink, epsilon_ladder(a.num_actors, a.eps_base, a.eps_alpha),
                                 lambda rec: None)
    if states is not None:
        collection.load_actor_states(states)
    snapshot = None
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = await collection.start(tg, lambda *episode: episodes.append(episode))
            await asyncio.wait_for(collection.settle(), 60)
            if snapshot_at is not None:
                snapshot = (collection.actor_states(), len(sink.chunks), len(episodes))
                gate.set_limit(steps)
                await asyncio.wait_for(gate.wait_steps(steps), 60)
                await asyncio.wait_for(collection.settle(), 60)
            for t in tasks:
                t.cancel()
    finally:
        await collection.aclose()
    if snapshot_at is not None:
        return (collection, sink, episodes, *snapshot)
    return collection, sink, episodes
