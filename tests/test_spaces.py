"""Observation spaces beyond Box (issue 15): Discrete reaches replay as integers and is one-hot encoded in the
net; MultiDiscrete, MultiBinary, Dict and Tuple are flattened where the env is made; the rest, and Box actions,
get one line saying what would work. The slow tests train FrozenLake and a Dict toy env to their optimum."""

from __future__ import annotations

import asyncio
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from asyncdqn import checkpoint, config, runtime
from asyncdqn.cli import main
from asyncdqn.config import EnvConfig
from asyncdqn.envs.make import make_env, spec_of
from asyncdqn.errors import UserError
from asyncdqn.nets import EnsembleQNet, numpy_forward, qnet_from_spec
from conftest import tiny_sets
from helpers.space_envs import CUE_STEPS

FROZEN = ["--env", "FrozenLake-v1", "--set", "env.kwargs.is_slippery=false"]
CUE = "env.factory=helpers.space_envs:cue_env"


def _run_capturing(sets: list[str], out, monkeypatch) -> tuple[dict, runtime.Parts]:
    """A run of the cartpole scenario with `sets`, handing back its parts (replay, learner) as well."""
    built: list[runtime.Parts] = []
    build = runtime.build

    def capturing(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(runtime, "build", capturing)
    summary = asyncio.run(runtime.run(config.load("cartpole", sets, seed=0), out))
    return summary, built[0]


def test_frozenlake_observations_reach_replay_as_one_integer_per_row(tmp_path, monkeypatch):
    sets = ["env.id=FrozenLake-v1", "env.kwargs.is_slippery=false", *tiny_sets(600)]
    summary, parts = _run_capturing(sets, tmp_path, monkeypatch)
    assert summary["updates"] > 0
    assert parts.spec.obs_classes == 16 and parts.spec.obs_shape == ()
    rows = parts.replay.obs_CO[:len(parts.replay)]
    assert np.issubdtype(rows.dtype, np.integer) and rows.shape[1:] in ((), (1,))
    assert len(rows) >= 500 and rows.min() >= 0 and rows.max() < 16 and len(np.unique(rows)) > 1
    assert parts.learner.online.spec()["obs_classes"] == 16


def test_a_one_hot_net_equals_the_plain_mlp_on_one_hot_inputs_and_keeps_off_the_numpy_path():
    one_hot = EnsembleQNet(2, 5, 3, (8,), dueling=True, obs_classes=5).reset_parameters(0)
    plain = EnsembleQNet(2, 5, 3, (8,), dueling=True).reset_parameters(0)
    x_KB = torch.tensor([[0, 4, 2], [3, 1, 0]])
    want = plain(torch.nn.functional.one_hot(x_KB, 5).float())
    assert torch.equal(one_hot(x_KB), want) and torch.equal(one_hot(x_KB.unsqueeze(-1).float()), want)
    assert numpy_forward(one_hot) is None and numpy_forward(plain) is not None
    rebuilt = qnet_from_spec(one_hot.spec())
    assert rebuilt.obs_classes == 5 and rebuilt.spec() == one_hot.spec()
    assert "obs_classes" not in plain.spec()  # Box nets' specs (and checkpoints) stay as they were


def test_checkpoint_round_trip_and_eval_on_a_frozenlake_run(tmp_path, capsys):
    out = tmp_path / "fl"
    sets = [a for s in tiny_sets(600) for a in ("--set", s)]
    assert main(["train", "cartpole", *FROZEN, *sets, "--out", str(out), "--quiet"]) == 0
    policy = checkpoint.policy_from(checkpoint.load(out))
    assert policy.net.obs_classes == 16
    assert policy.q_values(np.arange(16)).shape == (16, 4)
    assert main(["eval", str(out), "--episodes", "2"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["env"] == "FrozenLake-v1" and result["episodes"] == 2 and result["return_mean"] in (0.0, 1.0)


def test_a_dict_env_is_flattened_and_trains(tmp_path, monkeypatch):
    summary, parts = _run_capturing([CUE, *tiny_sets(400)], tmp_path, monkeypatch)
    assert summary["updates"] > 0
    rows = parts.replay.obs_CO[:len(parts.replay)]
    assert rows.dtype == np.float32 and rows.shape[1:] == (5,)  # cue one-hot (3) + noise (2)
    assert np.array_equal(rows[:, :3].sum(1), np.ones(len(rows)))


@pytest.mark.parametrize("space, shape", [
    (gym.spaces.MultiDiscrete([3, 2]), (5,)),
    (gym.spaces.MultiBinary(4), (4,)),
    (gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Box(0, 1, (3,)))), (5,)),
    (gym.spaces.Discrete(3, start=1), (3,)),
])
def test_other_spaces_are_flattened_where_the_env_is_made(space, shape):
    env = make_env(EnvConfig(factory="helpers.space_envs:space_env"), {"space": space})
    assert isinstance(env, gym.wrappers.FlattenObservation)
    spec = spec_of(env)
    assert spec.obs_shape == shape and spec.obs_classes == 0 and spec.obs_dtype == np.float32
    assert env.reset(seed=0)[0].shape == shape


def test_box_actions_get_one_line_naming_a_discretising_wrapper():
    env = make_env(EnvConfig(factory="helpers.space_envs:box_action_env"), {})
    with pytest.raises(UserError, match="gymnasium.wrappers.DiscretizeAction") as err:
        spec_of(env)
    assert "\n" not in str(err.value)


def test_an_unsupported_observation_space_gets_one_line_saying_what_works():
    env = make_env(EnvConfig(id="CartPole-v1"), {})
    env.observation_space = gym.spaces.Text(5)
    with pytest.raises(UserError, match="ObservationWrapper that returns a Box") as err:
        spec_of(env)
    assert "\n" not in str(err.value)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_frozenlake_trains_to_its_optimum(tmp_path):
    sets = ["env.id=FrozenLake-v1", "env.kwargs.is_slippery=false", "total_steps=5000",
            "learner.learning_starts=500", "actors.eps_anneal_steps=2000", "eval.every=500", "eval.stop_at=1.0",
            "eval.episodes=1", "eval.confirm_episodes=1", "eval.final_episodes=5"]
    summary = asyncio.run(runtime.run(config.load("cartpole", sets, seed=0), tmp_path))
    assert summary["eval_return_mean"] == 1.0, summary  # the goal in 6 moves, every time (the env is deterministic)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_dict_cue_env_trains_to_its_optimum(tmp_path):
    sets = [CUE, "total_steps=6000", "learner.learning_starts=500", "learner.gamma=0.5",
            "actors.eps_anneal_steps=2000", "eval.every=500", f"eval.stop_at={CUE_STEPS}", "eval.episodes=5",
            "eval.confirm_episodes=5", "eval.final_episodes=20"]
    summary = asyncio.run(runtime.run(config.load("cartpole", sets, seed=0), tmp_path))
    assert summary["eval_return_mean"] == CUE_STEPS, summary  # every cue named: random scores about 8/3
