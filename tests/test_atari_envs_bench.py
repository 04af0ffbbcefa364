"""benchmarks/atari_envs.py: envpool gets the atari factory's own preprocessing, and its task ids."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from asyncdqn.envs.games import atari
from helpers.bench_scripts import load_benchmark

bench = load_benchmark("atari_envs")


def test_envpool_task_ids_from_ale_rom_names():
    assert bench.envpool_id("pong") == "Pong-v5"
    assert bench.envpool_id("space_invaders") == "SpaceInvaders-v5"


def test_envpool_gets_the_preprocessing_of_asyncdqns_atari_env():
    d = {k: v.default for k, v in inspect.signature(atari).parameters.items()}
    s = bench.ENVPOOL_SETTINGS
    assert (s["noop_max"], s["frame_skip"], s["stack_num"]) == (d["noop_max"], d["frame_skip"], d["frame_stack"])
    assert s["img_height"] == s["img_width"] == d["screen_size"]
    assert s["repeat_action_probability"] == d["repeat_action_probability"]
    assert s["full_action_space"] == d["full_action_space"]
    assert s["max_episode_steps"] * s["frame_skip"] == d["max_num_frames_per_episode"]
    assert s["episodic_life"] and s["reward_clip"] and s["gray_scale"]  # atari()'s training envs


def test_both_arms_step_the_same_observations_shape():
    pytest.importorskip("envpool")
    pytest.importorskip("ale_py")
    ale, pool = bench.AleArm("pong", 2, 0), bench.EnvpoolArm("pong", 2, 1, 0)
    actions = np.zeros((3, 2), dtype=np.int64)
    ale.step(actions)
    pool.step(actions)
    assert ale.envs[0].observation_space.shape == pool.env.observation_space.shape == (4, 84, 84)
    assert bench.time_arm(pool, actions) > 0
