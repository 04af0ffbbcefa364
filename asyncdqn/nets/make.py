"""Which ensemble a run gets: conv nets for image observations, MLPs otherwise; and rebuilding one from its spec.

Place in the flow: the learner builds its nets here, and a checkpoint's policy is rebuilt here.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from asyncdqn.errors import UserError, first_line
from asyncdqn.nets.conv import TORSOS, EnsembleConvQNet
from asyncdqn.nets.mlp import EnsembleQNet


def is_image_shape(obs_shape: tuple) -> bool:
    """(C, H, W) with H, W >= 7: the smallest grid a conv torso is meant for (MinAtar is 10x10)."""
    return len(obs_shape) == 3 and min(obs_shape[1:]) >= 7


def auto_torso(obs_shape: tuple) -> str:
    """The Nature torso where it fits (H, W >= 36; Atari's 84x84), the MinAtar torso for small grids."""
    return "nature" if TORSOS["nature"].fits(*obs_shape[1:]) else "minatar"


def make_qnet(k: int, obs_shape: tuple, n_actions: int, hidden: tuple = (128, 128), dueling: bool = False,
              kind: str = "auto", torso: str = "auto", input_scale: float = 1.0, obs_classes: int = 0) -> nn.Module:
    """The K-net ensemble for these observations (parameters not yet initialised: call reset_parameters).

    kind: "conv", "mlp", or "auto" (conv for image-like (C, H, W) observations, see `is_image_shape`).
    hidden: the MLP's widths; a conv net's fc width comes with its torso (512 Nature, 128 MinAtar).
    input_scale: conv nets only (see the module docstring); the MLP sees the raw values, as it always has.
    obs_classes: N > 0 for Discrete(N) observations (one integer each): an MLP that one-hot encodes them.
    """
    if obs_classes:
        if kind == "conv":
            raise UserError("learner.net = 'conv' needs image observations; this env's are Discrete (integers)")
        return EnsembleQNet(k, obs_classes, n_actions, tuple(hidden), dueling, obs_classes)
    if kind == "auto":
        kind = "conv" if is_image_shape(tuple(obs_shape)) else "mlp"
    if kind == "mlp":
        return EnsembleQNet(k, int(np.prod(obs_shape)), n_actions, tuple(hidden), dueling)
    if kind != "conv":
        raise ValueError(f"unknown Q-net kind {kind!r}; known: auto, conv, mlp")
    if torso == "auto":
        torso = auto_torso(tuple(obs_shape))
    return EnsembleConvQNet(k, tuple(obs_shape), n_actions, torso, dueling, input_scale)


def qnet_from_spec(spec: dict) -> nn.Module:
    """Rebuild a net from `net.spec()` (a checkpoint's); MLP specs predate the "kind" field, so none means MLP."""
    kind = spec.get("kind", "mlp") if isinstance(spec, dict) else None
    try:
        if kind == "mlp":
            return EnsembleQNet.from_spec(spec)
        if kind == "conv":
            return EnsembleConvQNet.from_spec(spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"malformed {kind} Q-net spec ({first_line(exc)})") from None
    raise UserError(f"unknown Q-net kind {kind!r} in spec; known: conv, mlp")
