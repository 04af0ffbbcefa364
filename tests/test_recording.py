"""`asyncdqn eval --record`: greedy episodes as an animated GIF (asyncdqn/recording.py)."""

from __future__ import annotations

import json
import shutil

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

from asyncdqn import checkpoint, config, recording
from asyncdqn.cli import main
from asyncdqn.evaluation import evaluate

# CartPole draws its frames with pygame (gymnasium[classic-control]).
needs_pygame = pytest.mark.skipif(not __import__("importlib").util.find_spec("pygame"),
                                  reason="CartPole renders with pygame: pip install 'gymnasium[classic-control]'")


def gif_frames(path) -> list[np.ndarray]:
    with Image.open(path) as im:
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            out.append(np.asarray(im.convert("RGB")))
        return out


@needs_pygame
def test_eval_record_writes_one_frame_per_step_and_episode_start(trained_run, tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)  # recording sets it, so that SDL prints nothing
    shutil.copy(trained_run.out / checkpoint.FILENAME, tmp_path)
    gif = tmp_path / "cp.gif"
    rc = main(["eval", str(tmp_path), "--episodes", "3", "--record", str(gif), "--record-episodes", "2"])
    assert rc == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["episodes"] == 3  # the statistics are the eval's own, recording or not
    # The recorded episodes are the evaluation's first two (same seeds, greedy policy).
    out, err = capfd.readouterr()
    assert f"returns {[round(r, 2) for r in result['returns'][:2]]}" in out and err == ""
    frames = gif_frames(gif)
    assert len(frames) == sum(result["lengths"][:2]) + 2   # one per step, plus each episode's start
    assert all(not np.array_equal(a, b) for a, b in zip(frames, frames[1:]))
    banner = slice(0, recording.BANNER_PX)
    assert not np.array_equal(frames[0][banner], frames[1][banner])          # the caption is drawn and changes
    assert not np.array_equal(frames[0][recording.BANNER_PX:], frames[-1][recording.BANNER_PX:])  # the cart moved


@needs_pygame
def test_recorded_episodes_are_the_evaluations_first_and_captions_count_them(trained_run):
    from asyncdqn.envs.make import env_kwargs, make_env

    cfg, policy = trained_run.cfg, checkpoint.policy_from(checkpoint.load(trained_run.out))
    env = recording.render_env(cfg)
    try:
        rec = recording.play(env, policy, 2, seed=7)
    finally:
        env.close()
    res = evaluate(lambda: make_env(cfg.env, env_kwargs(cfg, True)), policy, 2, 7)
    assert rec.returns == res.returns.tolist() and rec.lengths == res.lengths.tolist() and not rec.truncated
    captions = [recording.caption(f, 2) for f in rec.frames]
    assert len(set(captions)) == len(captions)
    first = rec.lengths[0]
    assert captions[0] == "episode 1/2  step 0  return 0"
    assert captions[first] == f"episode 1/2  step {first}  return {rec.returns[0]:g}"
    assert captions[first + 1] == "episode 2/2  step 0  return 0"
    assert captions[-1] == f"episode 2/2  step {rec.lengths[1]}  return {rec.returns[1]:g}"


class FloatFrames(gym.Env):
    """MinAtar-like: 10x10 float frames in [0, 1], episodes of 4 steps, reward 0.5 a step."""

    metadata = {"render_modes": ["rgb_array"]}
    observation_space = gym.spaces.Box(0, 1, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.render_mode, self.t = render_mode, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), 0.5, self.t == 4, False, {}

    def render(self):
        return np.full((10, 10, 3), self.t / 4.0)


def test_float_frames_become_bytes_small_ones_are_scaled_up_and_the_frame_limit_stops_play(tmp_path):
    def policy(obs):
        return np.zeros(len(obs), np.int64)

    rec = recording.play(FloatFrames("rgb_array"), policy, 3, seed=0)
    assert len(rec.frames) == 3 * 5 and rec.returns == [2.0] * 3 and not rec.truncated
    assert rec.frames[4].pixels_HW3.dtype == np.uint8 and rec.frames[4].pixels_HW3.max() == 255
    img = recording.annotate(rec.frames[4], 3)
    assert img.width >= recording.MIN_WIDTH and img.height == img.width + recording.BANNER_PX
    cut = recording.play(FloatFrames("rgb_array"), policy, 3, seed=0, max_frames=7)
    assert len(cut.frames) == 7 and cut.truncated and cut.lengths == [4, 1]
    recording.write_gif(tmp_path / "f.gif", (recording.annotate(f, 3) for f in cut.frames), fps=10)
    assert len(gif_frames(tmp_path / "f.gif")) == 7
    assert list(tmp_path.iterdir()) == [tmp_path / "f.gif"]  # no temp file left beside it


def test_an_env_without_rgb_array_rendering_is_one_line():
    cfg = config.load("trading", [])
    with pytest.raises(recording.UserError, match=r"--record: env .* cannot render rgb_array frames") as info:
        recording.render_env(cfg)
    assert "\n" not in str(info.value)


def test_record_options_are_checked():
    cfg = config.load("cartpole", [])
    with pytest.raises(recording.UserError, match="--record-episodes must be >= 1"):
        recording.record(cfg, None, "x.gif", 0, 0)
    with pytest.raises(recording.UserError, match="--fps must be > 0"):
        recording.record(cfg, None, "x.gif", 1, 0, fps=0)
