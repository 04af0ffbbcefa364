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


async def collect(steps: int, env: dict, actors: dict, seed: int = 0) -> tuple[LocalCollection, Sink, list]:
    """Run a LocalCollection of the tiny config with these `env` and `actors` sections until its actors took
    `steps` env steps; (the collection, every chunk it made, every finished episode's (actor, net, return,
    length)). Its nets are all zeros, so every Q-value ties and the greedy action is always 0 (argmax takes
    the first): any other action was a random one."""
    cfg = tiny_config(seed=seed, env=env, actors=actors)
    kwargs = env_kwargs(cfg, evaluation=False)
    first = make_env(cfg.env, kwargs)
    spec = spec_of(first)
    acting = EnsembleQNet(cfg.learner.num_nets, spec.obs_size, spec.n_actions, cfg.learner.hidden)
    with torch.no_grad():
        for p in acting.parameters():
            p.zero_()
    acting.requires_grad_(False)
    a = cfg.actors
    sink, episodes = Sink(), []
    collection = LocalCollection(cfg, np.random.SeedSequence(seed).spawn(a.num_actors), kwargs, spec, first,
                                 acting, StepGate(steps), sink, epsilon_ladder(a.num_actors, a.eps_base, a.eps_alpha),
                                 lambda rec: None)
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = await collection.start(tg, lambda *episode: episodes.append(episode))
            await asyncio.wait_for(collection.settle(), 60)
            for t in tasks:
                t.cancel()
    finally:
        await collection.aclose()
    return collection, sink, episodes
