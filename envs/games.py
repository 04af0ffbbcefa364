"""Game environments: MinAtar grids and Atari 2600 frames, shaped for the conv Q-nets (asyncdqn.convnets), and
LunarLander (Box2D physics, 8 floats: the MLP ensemble).

Place in the flow: env factories for the config's `env.factory`, called by asyncdqn.envs.make.make_env
for the actors (training copies) and for evaluation; nothing here trains or acts.

    [env]
    factory = "asyncdqn.envs.games:minatar"        # or ":atari", ":lunar_lander"
    kwargs = { game = "breakout" }
    eval_kwargs = { evaluation = true }   # Atari: raw rewards and full games for evaluation

Both factories give channel-first uint8 observations: MinAtar (C, 10, 10) with values 0/1 (a quarter of the
replay memory float32 would take; observation_space.high is 1, so the conv net's input scale is 1), Atari
(4, 84, 84) frames 0..255 (high 255, input scale 1/255): see `asyncdqn.convnets.input_scale_for`.

minatar, ale_py, cv2 and Box2D are imported inside the factories, so the default install (without the `games` extra)
imports this module fine and fails only when a game is asked for, with a one-line UserError. Of the engine it
imports only `asyncdqn.errors`, which imports nothing, so no cycle arises.

Legend: C channels, H, W grid or frame size.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from asyncdqn.errors import UserError, first_line

MINATAR_GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
INSTALL_HINT = "pip install 'asyncdqn[games]' (from a checkout: pip install -e '.[games]')"


def _import_games_module(name: str, what: str) -> ModuleType:
    """Import an optional dependency of the games extra, or raise a one-line UserError saying how to get it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise UserError(f"{what} needs the games extra ({name} is not installed: {first_line(exc)}); "
                        f"run: {INSTALL_HINT}") from None


# --------------------------------------------------------------------------------------------- MinAtar


def minatar(game: str = "breakout", evaluation: bool = False, minimal_actions: bool = True,
            sticky_action_prob: float = 0.1, difficulty_ramping: bool = True,
            max_episode_steps: int | None = 10_000, render_mode: str | None = None) -> gym.Env:
    """A MinAtar game (Young & Tian 2019) with (C, 10, 10) uint8 0/1 observations.

    game: one of MINATAR_GAMES ("space-invaders" is accepted for "space_invaders").
    evaluation: accepted so that both factories take the same kwargs; MinAtar needs no training-only
        wrappers (no lives, no reward clipping: rewards are already 0/1 per event), so it changes nothing.
    minimal_actions: the game's own action subset (as MinAtar's "-v1" ids) instead of all 6 actions (the
        paper's setting, "-v0"); fewer redundant actions make the CPU budget go further.
    sticky_action_prob, difficulty_ramping: MinAtar's defaults, which are the paper's settings.
    max_episode_steps: truncation so that an evaluation always ends (a good Breakout agent can play on
        forever); None for no limit.
    render_mode: MinAtar's own ("rgb_array" for `asyncdqn eval --record`; it draws with seaborn's palette).
    """
    name = game.replace("-", "_")
    if name not in MINATAR_GAMES:
        raise UserError(f"unknown MinAtar game {game!r}; known: {', '.join(MINATAR_GAMES)}")
    minatar_gym = _import_games_module("minatar.gym", "the MinAtar env")
    # MinAtar registers "MinAtar/<Game>-v0/-v1" only when asked (a gymnasium plugin entry point that
    # gymnasium 1.x no longer loads); registering twice would warn, so check the registry first. v0 and v1
    # differ only in the action set; making v0 would warn that it is outdated, so v1 is used with the flag.
    env_id = f"MinAtar/{name.title().replace('_', '')}-v1"
    if env_id not in gym.registry:
        minatar_gym.register_envs()
    env = gym.make(env_id, max_episode_steps=max_episode_steps, use_minimal_action_set=minimal_actions,
                   sticky_action_prob=sticky_action_prob, difficulty_ramping=difficulty_ramping,
                   render_mode=render_mode)
    c = env.observation_space.shape[2]
    # MinAtar's state is a bool (10, 10, C) grid: channel-first for the conv net, uint8 for torch and replay.
    space = gym.spaces.Box(0, 1, (c, 10, 10), np.uint8)
    return gym.wrappers.TransformObservation(
        env, lambda obs_HWC: np.ascontiguousarray(obs_HWC.transpose(2, 0, 1), dtype=np.uint8), space)


# ----------------------------------------------------------------------------------------------- Atari


class LifeLossTerminal(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Training only: a lost life ends the episode for learning, but the game goes on (Mnih et al. 2015).

    Mnih et al. 2015 (Methods) use the emulator's life counter "to mark the end of an episode during
    training". gymnasium's `AtariPreprocessing(terminal_on_life_loss=True)` does the first half, but its
    `reset` then restarts the whole game, so an agent would never play past its first life (nor see the
    later, harder screens). Here `reset` after a life loss takes one no-op step and carries on; only a
    real game over resets the emulator. The seed passed to such a `reset` is ignored: the actors reseed
    every episode (asyncdqn.actors), and a life is an episode here, so a seed must not restart the game;
    the run stays deterministic since the game's randomness was seeded at its real reset.
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self.lives = 0
        self.game_over = True

    def _lives(self) -> int:
        return int(self.env.unwrapped.ale.lives())

    def step(self, action) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self._lives()
        if 0 < lives < self.lives:
            terminated = True
            info = {**info, "life_lost": True}
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        if self.game_over:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)    # action 0 is NOOP in every ALE game
            if terminated or truncated:
                obs, info = self.env.reset(seed=seed, options=options)
        self.game_over = False
        self.lives = self._lives()
        return obs, info


def _ale_id(game: str) -> str:
    """The v5 id of an ALE game by its ROM name ("pong", "space_invaders"), found through the registry."""
    name = game.replace("-", "_").lower()
    for env_id, spec in gym.registry.items():
        if env_id.startswith("ALE/") and env_id.endswith("-v5") and spec.kwargs.get("game") == name:
            return env_id
    raise UserError(f"unknown Atari game {game!r}; use an ALE ROM name such as pong, breakout, space_invaders")


def atari(game: str = "pong", evaluation: bool = False, noop_max: int = 30, frame_skip: int = 4,
          frame_stack: int = 4, screen_size: int = 84, repeat_action_probability: float = 0.25,
          full_action_space: bool = False, max_num_frames_per_episode: int = 108_000,
          render_mode: str | None = None) -> gym.Env:
    """An Atari 2600 game with the standard DQN preprocessing; (frame_stack, 84, 84) uint8 observations.

    Training (evaluation=False): up to `noop_max` no-ops at reset, `frame_skip` with a max over the last two
    frames, 84x84 grayscale, a lost life ends the episode (LifeLossTerminal), rewards clipped to [-1, 1],
    `frame_stack` frames stacked (Mnih et al. 2015, Methods). Evaluation: the same minus the life-loss
    terminal and the clipping, so returns are raw game scores of full games.

    repeat_action_probability: sticky actions, 0.25 as recommended by Machado et al. 2018 (ALE v5 default);
        0 gives the deterministic emulator of Mnih et al. 2015.
    max_num_frames_per_episode: 108,000 frames = 30 minutes of play (Machado et al. 2018).
    render_mode: the emulator's ("rgb_array" for `asyncdqn eval --record`: the colour screen, not the
        observation).
    """
    ale_py = _import_games_module("ale_py", "the Atari env")
    _import_games_module("cv2", "the Atari env (frame resizing)")
    gym.register_envs(ale_py)  # idempotent: ale_py registers its ids on import
    # The emulator prints a banner to stderr at its first game; keep stderr for errors (the CLI's contract is
    # one line there on failure). Errors are still logged.
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    # frameskip=1 in the emulator: AtariPreprocessing does the skipping itself (and refuses a second one),
    # since it must see the last two frames to max-pool over them (flicker; Mnih et al. 2015).
    # obs_type="grayscale": the emulator's own observation is never used (AtariPreprocessing reads the
    # screen itself), and the grayscale one is the cheapest to render.
    env = gym.make(_ale_id(game), frameskip=1, obs_type="grayscale",
                   repeat_action_probability=repeat_action_probability, full_action_space=full_action_space,
                   max_num_frames_per_episode=max_num_frames_per_episode, render_mode=render_mode)
    # gymnasium's own wrappers where they do the job: they are maintained against ale_py, and follow
    # Machado et al. 2018 (noop reset, skip, max-pool, resize, grayscale).
    env = gym.wrappers.AtariPreprocessing(env, noop_max=noop_max, frame_skip=frame_skip, screen_size=screen_size,
                                          terminal_on_life_loss=False, grayscale_obs=True)
    if not evaluation:
        env = LifeLossTerminal(env)
        # Mnih et al. 2015: "clipped all positive rewards at 1 and all negative rewards at -1", so one learning
        # rate suits every game; evaluation keeps the raw score.
        env = gym.wrappers.ClipReward(env, -1.0, 1.0)
    # Stacked on a new first axis: channel-first (frame_stack, 84, 84), as the conv net wants.
    return gym.wrappers.FrameStackObservation(env, frame_stack)


# ------------------------------------------------------------------------------------------- LunarLander


def lunar_lander(**kwargs: Any) -> gym.Env:
    """gymnasium's LunarLander-v3 with its discrete actions (4: none, left, main, right engine); 8-float
    observations, episodes truncated at 1000 steps, shaped rewards (+-100 for landing or crashing, -0.3 per
    frame of main engine), 200 counts as solved (its spec's reward_threshold).

    kwargs go to `gymnasium.make` as they are (gravity, enable_wind, wind_power, turbulence_power,
    render_mode, ...). This factory exists only so that a missing Box2D is the games extra's one-line error:
    `gymnasium.make("LunarLander-v3")` without it says to build box2d-py with swig, which the extra's wheel
    does not need.
    """
    _import_games_module("Box2D", "the LunarLander env")
    return gym.make("LunarLander-v3", **kwargs)
