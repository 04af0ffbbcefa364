"""Pictures of what the agent does: greedy episodes recorded as an animated GIF (`asyncdqn eval --record`).

Place in the flow: beside evaluation, after training; it reads a checkpoint's greedy policy and the run's
eval env (built with render_mode="rgb_array") and writes one GIF. Nothing in training imports it.

Episode j starts from reset(seed=seed + j), as in `evaluation.evaluate`, so with the eval's seed the
recorded episodes are the evaluation's first episodes (a greedy policy on the same starts plays the same
game). Each step gives one frame, plus one for the start of each episode; a banner above the picture shows
the episode counter, the step and the running return, so no two frames of a recording are the same.

Blocking: everything here steps envs and runs forwards in the calling thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import gymnasium as gym
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from asyncdqn.checkpoint import atomic_write_bytes
from asyncdqn.config import RunConfig
from asyncdqn.envs.make import env_kwargs, make_env
from asyncdqn.errors import UserError, first_line

MAX_FRAMES = 3_000      # 100 s at 30 fps; a good Atari agent's full game (27,000 steps) would not fit in memory
BANNER_PX = 16          # height of the text strip above the picture
MIN_WIDTH, MAX_WIDTH = 240, 400  # MinAtar renders 10x10 pixels, CartPole 600x400: scale into this range


class Frame(NamedTuple):
    """One rendered picture (H, W, 3 uint8) and what the banner says about it."""

    pixels_HW3: np.ndarray
    episode: int        # 0-based
    step: int           # steps taken in this episode when the picture was rendered
    ret: float          # the episode's return so far


class Recording(NamedTuple):
    frames: list[Frame]
    returns: list[float]   # of the episodes played (the last one partial when `truncated`)
    lengths: list[int]
    truncated: bool        # stopped at max_frames


def render_env(cfg: RunConfig) -> gym.Env:
    """The run's eval env, built to render rgb_array frames; a UserError (one line) when it cannot."""
    name = cfg.env.factory or cfg.env.id
    kwargs = {**env_kwargs(cfg, evaluation=True), "render_mode": "rgb_array"}
    # Classic control draws off-screen with pygame; without a display SDL still probes one and prints
    # "XDG_RUNTIME_DIR is invalid" on stderr. rgb_array needs no window, so SDL's dummy driver (unless set).
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        env = make_env(cfg.env, kwargs)
    except UserError as exc:
        raise UserError(f"--record: env {name!r} cannot render rgb_array frames ({exc})") from None
    if env.render_mode != "rgb_array":
        env.close()
        raise UserError(f"--record: env {name!r} ignored render_mode='rgb_array' (it renders {env.render_mode!r})")
    return env


def _pixels(env: gym.Env) -> np.ndarray:
    """env.render() as (H, W, 3) uint8, at most MAX_WIDTH wide (kept small: a recording holds every frame);
    MinAtar renders floats in [0, 1]."""
    try:
        frame = env.render()
    except gym.error.DependencyNotInstalled as exc:  # classic control draws with pygame
        raise UserError(f"--record: {first_line(exc)}") from None
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise UserError(f"--record: the env rendered {arr.shape} arrays, not (height, width, 3) pictures")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float64), 0.0, 1.0) * 255).round().astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(arr[:, :, :3]))
    if img.width > MAX_WIDTH:
        img = img.resize((MAX_WIDTH, max(1, round(img.height * MAX_WIDTH / img.width))), Image.Resampling.BILINEAR)
    return np.asarray(img)


def play(env: gym.Env, policy: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int,
         max_frames: int = MAX_FRAMES) -> Recording:
    """Play `episodes` greedy episodes on a rendering env and keep every frame (at most `max_frames`)."""
    frames: list[Frame] = []
    returns: list[float] = []
    lengths: list[int] = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        ret, step, done = 0.0, 0, False
        frames.append(Frame(_pixels(env), ep, step, ret))
        while not done and len(frames) < max_frames:
            action = int(policy(np.asarray(obs)[None])[0])
            obs, r, term, trunc, _ = env.step(action)
            ret, step, done = ret + float(r), step + 1, bool(term or trunc)
            frames.append(Frame(_pixels(env), ep, step, ret))
        returns.append(ret)
        lengths.append(step)
        if not done:
            return Recording(frames, returns, lengths, truncated=True)
    return Recording(frames, returns, lengths, truncated=False)


def caption(frame: Frame, episodes: int) -> str:
    return f"episode {frame.episode + 1}/{episodes}  step {frame.step}  return {frame.ret:g}"


def annotate(frame: Frame, episodes: int) -> Image.Image:
    """The picture (upscaled to at least MIN_WIDTH) under a banner with the caption."""
    img = Image.fromarray(frame.pixels_HW3)
    w, h = img.size
    if w < MIN_WIDTH:  # integer nearest-neighbour upscaling keeps MinAtar's cells sharp
        k = -(-MIN_WIDTH // w)
        img = img.resize((w * k, h * k), Image.Resampling.NEAREST)
    out = Image.new("RGB", (img.width, img.height + BANNER_PX), (0, 0, 0))
    out.paste(img, (0, BANNER_PX))
    ImageDraw.Draw(out).text((4, 2), caption(frame, episodes), fill=(255, 255, 255),
                             font=ImageFont.load_default())
    return out


def write_gif(path: Path, images: Iterator[Image.Image], fps: float) -> None:
    """An endlessly looping GIF, written to a temp file and renamed (a crash leaves no half GIF). `images` is
    consumed lazily: Pillow keeps each frame as 1-byte palette pixels, not as the RGB picture."""
    duration_ms = max(20, round(1000 / fps))  # browsers slow down GIF frames shorter than 20 ms

    def write(f) -> None:
        first = next(images)
        first.save(f, format="GIF", save_all=True, append_images=images, duration=duration_ms, loop=0)

    atomic_write_bytes(Path(path), write)


def record(cfg: RunConfig, policy: Callable[[np.ndarray], np.ndarray], path: Path, episodes: int, seed: int,
           fps: float = 30.0, max_frames: int = MAX_FRAMES) -> Recording:
    """Record `episodes` greedy episodes of the run's eval env to the GIF at `path`."""
    if episodes < 1:
        raise UserError("--record-episodes must be >= 1")
    if not fps > 0:
        raise UserError("--fps must be > 0")
    env = render_env(cfg)
    try:
        rec = play(env, policy, episodes, seed, max_frames)
    finally:
        env.close()
    write_gif(path, (annotate(f, episodes) for f in rec.frames), fps)
    return rec
