"""Game envs (asyncdqn.envs.games): MinAtar and Atari shapes, dtypes and channel order, the training-only Atari
wrappers (absent in evaluation), the game scenarios (LunarLander's trains a few hundred steps), and the one-line
error when the games extra is missing.

Tests that need the extra (`pip install -e '.[games]'`) skip without it, so the default suite passes.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from asyncdqn import checkpoint, config
from asyncdqn.cli import main
from asyncdqn.config import EnvConfig
from asyncdqn.envs.make import env_kwargs, make_env, spec_of
from asyncdqn.nets import EnsembleConvQNet, input_scale_for, make_qnet
from asyncdqn.errors import UserError
from asyncdqn.envs import games
from asyncdqn.envs.games import LifeLossTerminal

if importlib.util.find_spec("minatar") is not None:
    # minatar imports matplotlib, seaborn and scipy (~2 s): pay that at collection, not inside one test.
    importlib.import_module("minatar.gym")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small forwards on a busy machine run far slower with a pool of threads than with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def minatar_extra():
    return pytest.importorskip("minatar")


@pytest.fixture
def box2d_extra():
    return pytest.importorskip("Box2D")


@pytest.fixture
def atari_extra():
    pytest.importorskip("cv2")
    return pytest.importorskip("ale_py")


def chain(env: gym.Env) -> list[gym.Env]:
    """The env and every wrapper under it, outermost first."""
    out = [env]
    while isinstance(out[-1], gym.Wrapper):
        out.append(out[-1].env)
    return out


def find(env: gym.Env, cls: type) -> gym.Env | None:
    return next((e for e in chain(env) if isinstance(e, cls)), None)


# ------------------------------------------------------------------------------- without the games extra


@pytest.mark.parametrize(("factory", "kwargs", "module"), [
    ("asyncdqn.envs.games:minatar", {"game": "breakout"}, "minatar.gym"),
    ("asyncdqn.envs.games:atari", {"game": "pong"}, "ale_py"),
    ("asyncdqn.envs.games:atari", {"game": "pong"}, "cv2"),
    ("asyncdqn.envs.games:lunar_lander", {}, "Box2D"),
])
def test_missing_games_extra_is_a_one_line_user_error(monkeypatch, factory, kwargs, module):
    if module == "cv2":
        pytest.importorskip("ale_py")  # otherwise the missing ale_py is reported first
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails, installed or not
    with pytest.raises(UserError) as info:
        make_env(EnvConfig(factory=factory), kwargs)
    message = str(info.value)
    assert "\n" not in message and module in message and "pip install 'asyncdqn[games]'" in message


def test_unknown_minatar_game():
    with pytest.raises(UserError, match="unknown MinAtar game 'pong'; known: asterix, breakout"):
        games.minatar("pong")


def test_train_lunarlander_without_box2d_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "Box2D", None)
    rc = main(["train", "lunarlander", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("asyncdqn: error: the LunarLander env needs the games extra (Box2D is not installed")
    assert "pip install 'asyncdqn[games]'" in err and "swig" not in err


@pytest.mark.parametrize("name", ["acrobot", "lunarlander", "minatar-breakout", "minatar-space-invaders",
                                  "atari-pong"])
def test_game_scenarios_load_and_validate(name):
    cfg = config.load(name)
    assert cfg.scenario == name
    assert config.scenario_summary(name)                      # a first comment line for `asyncdqn scenarios`
    if name == "acrobot":
        assert cfg.env.id == "Acrobot-v1" and not cfg.env.factory
    elif name == "lunarlander":
        assert cfg.env.factory == "asyncdqn.envs.games:lunar_lander" and not cfg.env.kwargs
        assert not cfg.env.eval_kwargs and cfg.eval.stop_at == 200.0
    else:
        assert cfg.env.factory.startswith("asyncdqn.envs.games:")
        assert env_kwargs(cfg, evaluation=True)["evaluation"] is True
        assert "evaluation" not in env_kwargs(cfg, evaluation=False)


def test_acrobot_scenario_builds_an_mlp():
    cfg = config.load("acrobot")
    env = make_env(cfg.env, env_kwargs(cfg, evaluation=False))
    spec = spec_of(env)
    net = make_qnet(cfg.learner.num_nets, spec.obs_shape, spec.n_actions, cfg.learner.hidden)
    assert spec.obs_shape == (6,) and spec.n_actions == 3 and not isinstance(net, EnsembleConvQNet)
    env.close()


# ------------------------------------------------------------------------------------------ LunarLander


def test_lunar_lander_is_gymnasiums_discrete_env(box2d_extra):
    env = games.lunar_lander()
    assert env.spec.id == "LunarLander-v3" and env.spec.max_episode_steps == 1000
    spec = spec_of(env)
    assert spec.obs_shape == (8,) and spec.obs_dtype == np.float32 and spec.n_actions == 4
    assert games.lunar_lander(enable_wind=True).unwrapped.enable_wind      # kwargs reach gymnasium.make
    with pytest.raises(UserError, match="DQN needs a Discrete action space"):
        spec_of(make_env(EnvConfig(factory="asyncdqn.envs.games:lunar_lander"), {"continuous": True}))


def test_lunarlander_scenario_trains_a_few_hundred_steps(box2d_extra, capsys, tmp_path):
    # The scenario as shipped (4 nets of [256, 256], 8 actors, batch 128) but for the budget: learning from
    # step 200 so that 600 steps make 100 updates, and one final episode instead of periodic evaluations.
    out = tmp_path / "run"
    sets = ["total_steps=600", "learner.learning_starts=200", "eval.every=0", "eval.final_episodes=1"]
    rc = main(["train", "lunarlander", "--seed", "0", "--out", str(out), "--quiet",
               *[a for kv in sets for a in ("--set", kv)]])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["scenario"], summary["env_steps"], summary["updates"]) == ("lunarlander", 600, 100)
    ckpt = checkpoint.load(out)
    assert ckpt["env"]["obs_shape"] == [8] and ckpt["env"]["n_actions"] == 4


# ---------------------------------------------------------------------------------------------- MinAtar


@pytest.mark.parametrize(("game", "channels"), [("breakout", 4), ("space_invaders", 6), ("space-invaders", 6)])
def test_minatar_observations_are_channel_first_uint8(minatar_extra, game, channels):
    env = games.minatar(game)
    space = env.observation_space
    assert space.shape == (channels, 10, 10) and space.dtype == np.uint8 and int(space.high.max()) == 1
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(20):
        assert obs.dtype == np.uint8 and obs in space and set(np.unique(obs)) <= {0, 1}
        # channel c of the observation is channel c of MinAtar's own (10, 10, C) state
        np.testing.assert_array_equal(obs, env.unwrapped.game.state().transpose(2, 0, 1))
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert float(reward) >= 0
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()


def test_minatar_feeds_the_minatar_conv_torso_unscaled(minatar_extra):
    env = games.minatar("breakout")
    spec = spec_of(env)
    assert spec.obs_shape == (4, 10, 10) and spec.obs_dtype == np.uint8 and spec.n_actions == 3
    scale = input_scale_for(env.observation_space.dtype, env.observation_space.high)
    assert scale == 1.0                                       # 0/1 grids are not divided by 255
    net = make_qnet(2, spec.obs_shape, spec.n_actions, input_scale=scale).reset_parameters(0)
    assert isinstance(net, EnsembleConvQNet) and net.torso_name == "minatar"
    obs, _ = env.reset(seed=0)
    with torch.no_grad():
        assert net.forward_all(torch.as_tensor(obs[None])).shape == (2, 1, 3)


def test_minatar_is_deterministic_given_the_seed(minatar_extra):
    def trajectory(seed: int) -> list:
        env = games.minatar("space_invaders")
        obs, _ = env.reset(seed=seed)
        actions = np.random.default_rng(0).integers(0, env.action_space.n, 30)
        out = [obs]
        for a in actions:
            obs, reward, terminated, truncated, _ = env.step(int(a))
            out += [obs, reward, terminated]
        return out

    a, b, c = trajectory(3), trajectory(3), trajectory(4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_minatar_options(minatar_extra):
    assert games.minatar("breakout", minimal_actions=False).action_space.n == 6
    env = games.minatar("breakout", max_episode_steps=5)
    env.reset(seed=0)
    ends = [env.step(0)[3] for _ in range(5)]
    assert ends == [False] * 4 + [True]
    # no training-only wrappers in MinAtar: evaluation builds the same chain
    assert [type(e) for e in chain(games.minatar("breakout", evaluation=True))] == \
        [type(e) for e in chain(games.minatar("breakout"))]


# ------------------------------------------------------------------------------------------------ Atari


@pytest.mark.parametrize("evaluation", [False, True])
def test_atari_observations_are_stacked_channel_first_uint8(atari_extra, evaluation):
    env = games.atari("pong", evaluation=evaluation)
    space = env.observation_space
    assert space.shape == (4, 84, 84) and space.dtype == np.uint8 and int(space.high.max()) == 255
    assert input_scale_for(space.dtype, space.high) == 1 / 255
    obs, _ = env.reset(seed=0)
    for t in range(8):
        assert obs.dtype == np.uint8 and obs.shape == (4, 84, 84)
        new, reward, terminated, truncated, _ = env.step(t % env.action_space.n)
        np.testing.assert_array_equal(new[:-1], obs[1:])     # frames stack on axis 0, newest last
        assert reward in (-1.0, 0.0, 1.0)
        obs = new
    env.close()


def test_training_only_wrappers_are_absent_in_evaluation(atari_extra):
    train, test = games.atari("breakout"), games.atari("breakout", evaluation=True)
    for env in (train, test):
        pre = find(env, gym.wrappers.AtariPreprocessing)
        assert (pre.noop_max, pre.frame_skip, pre.screen_size) == (30, 4, (84, 84))
        assert not pre.terminal_on_life_loss                  # LifeLossTerminal does it, for training only
        assert env.unwrapped._frameskip == 1                  # skipping is AtariPreprocessing's alone
        assert isinstance(env, gym.wrappers.FrameStackObservation)
    clip = find(train, gym.wrappers.ClipReward)
    assert find(train, LifeLossTerminal) is not None and clip is not None
    assert (clip.reward(7.0), clip.reward(-3.0), clip.reward(0.0)) == (1.0, -1.0, 0.0)
    assert find(test, LifeLossTerminal) is None and find(test, gym.wrappers.ClipReward) is None


def test_life_loss_ends_a_training_episode_but_not_the_game(atari_extra):
    rng = np.random.default_rng(0)
    train = games.atari("breakout")
    train.reset(seed=0)
    for _ in range(1000):
        _, _, terminated, truncated, info = train.step(int(rng.integers(4)))
        if terminated or truncated:
            break
    ale = train.unwrapped.ale
    assert terminated and info.get("life_lost") and ale.lives() == 4
    frames = ale.getEpisodeFrameNumber()
    train.reset(seed=123)                                     # the actors reseed every episode: still no restart
    assert ale.lives() == 4 and ale.getEpisodeFrameNumber() > frames


def test_evaluation_plays_on_through_a_life_loss(atari_extra):
    rng = np.random.default_rng(0)
    test = games.atari("breakout", evaluation=True)
    test.reset(seed=0)
    ale = test.unwrapped.ale
    for _ in range(1000):
        _, _, terminated, truncated, _ = test.step(int(rng.integers(4)))
        if ale.lives() < 5:
            break
    assert ale.lives() == 4 and not terminated and not truncated


def test_atari_through_the_scenario_config(atari_extra):
    cfg = config.load("atari-pong")
    train = make_env(cfg.env, env_kwargs(cfg, evaluation=False))
    test = make_env(cfg.env, env_kwargs(cfg, evaluation=True))
    assert find(train, gym.wrappers.ClipReward) is not None and find(test, gym.wrappers.ClipReward) is None
    spec = spec_of(train)
    assert spec.obs_shape == (4, 84, 84) and spec.obs_dtype == np.uint8 and spec.n_actions == 6
    net = make_qnet(1, spec.obs_shape, spec.n_actions,
                    input_scale=input_scale_for(train.observation_space.dtype, train.observation_space.high))
    assert net.torso_name == "nature" and net.input_scale == 1 / 255


def test_unknown_atari_game(atari_extra):
    with pytest.raises(UserError, match="unknown Atari game 'minecraft'"):
        games.atari("minecraft")


# ------------------------------------------------------------------------- LifeLossTerminal, no emulator


class _Lives:
    def __init__(self):
        self.n = 3

    def lives(self) -> int:
        return self.n


class ScriptedLives(gym.Env):
    """Loses a life at every step whose action is 1; the game is over at 0 lives."""

    observation_space = gym.spaces.Box(0, 255, (1,), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self.ale = _Lives()
        self.resets = 0
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.resets += 1
        self.ale.n, self.t = 3, 0
        return np.array([self.t], np.uint8), {}

    def step(self, action):
        self.t += 1
        self.ale.n -= int(action)
        return np.array([self.t], np.uint8), 1.0, self.ale.n == 0, False, {}


def test_life_loss_terminal_with_a_scripted_game():
    inner = ScriptedLives()
    env = LifeLossTerminal(inner)
    env.reset(seed=0)
    assert env.step(0)[2:4] == (False, False)
    obs, _, terminated, _, info = env.step(1)                  # 3 -> 2 lives
    assert terminated and info["life_lost"]
    obs, _ = env.reset(seed=5)                                  # the game goes on: one no-op step, no reset
    assert inner.resets == 1 and int(obs[0]) == 3 and inner.ale.n == 2
    env.step(1)
    obs, _, terminated, _, info = env.step(1)                   # last life: the game itself is over
    assert terminated and "life_lost" not in info
    env.reset()
    assert inner.resets == 2 and inner.ale.n == 3
