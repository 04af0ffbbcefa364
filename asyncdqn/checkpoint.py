"""Checkpoints: written atomically, loaded without executing anything.

Place in the flow: end of the run (and every `checkpoint_every` updates); read by `eval` and `backtest`.

Safety: the file holds only tensors, numbers, strings, lists and dicts, and is read with
`torch.load(weights_only=True)`, which refuses pickled code. Writes go to a temp file in the same folder,
are fsync'ed, then `os.replace`d over the old file, so a crash mid-write leaves the previous checkpoint.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asyncdqn import config
from asyncdqn.errors import UserError, brief, first_line
from asyncdqn.nets import EnsembleQNet, GreedyPolicy, qnet_from_spec

FORMAT = "asyncdqn-checkpoint"
VERSION = 1
FILENAME = "checkpoint.pt"


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call `write(fileobj)` on a temp file beside `path`, fsync it, then rename it over `path`. The file is
    made 0644 before the rename (mkstemp creates 0600; run files, reports and exports are meant to be read by
    others), so no reader ever sees it half-permitted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def storable(obj: Any) -> Any:
    """numpy arrays -> tensors and numpy scalars -> Python numbers, through dicts and lists: the state
    dicts of replay, actors and builders hold numpy, and `weights_only` loading accepts only tensors."""
    if isinstance(obj, dict):
        return {k: storable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [storable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save(path: Path, payload: dict) -> None:
    payload = storable({"format": FORMAT, "version": VERSION, **payload})
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def resolve(path_or_dir: str | Path) -> Path:
    p = Path(path_or_dir)
    if p.is_dir():
        p = p / FILENAME
    if not p.is_file():
        raise UserError(f"checkpoint not found: {path_or_dir}")
    return p


def load(path_or_dir: str | Path) -> dict:
    """Load and check a checkpoint; any problem is a one-line UserError, and nothing is executed."""
    path = resolve(path_or_dir)
    try:
        is_zip = zipfile.is_zipfile(path)
    except zipfile.BadZipFile:  # is_zipfile raises, instead of answering False, for some damaged end records
        is_zip = False
    if not is_zip:  # torch.save writes zip files; anything else is refused unread
        raise UserError(f"{path}: corrupt or truncated checkpoint (not a torch zip file; plain pickles are refused)")
    try:
        with warnings.catch_warnings():
            # torch warns (one more stderr line before ours) on a zip whose pickle uses a non-default protocol
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = first_line(exc) if str(exc).strip() else "unsafe or corrupt pickle"
        raise UserError(f"{path}: refused to load (not a plain-tensor checkpoint: {reason})") from None
    except Exception as exc:  # noqa: BLE001
        # A damaged file fails in arbitrary ways inside torch's weights-only unpickler (KeyError and
        # IndexError from its memo and stack, TypeError from a rebuild call, AttributeError, BadZipFile,
        # EOFError, ...): all of them mean the bytes on disk are not a checkpoint, none is a bug of ours.
        raise UserError(f"{path}: corrupt or truncated checkpoint ({first_line(exc)})") from None
    if not isinstance(ckpt, dict) or not (isinstance(ckpt.get("format"), str) and ckpt["format"] == FORMAT):
        raise UserError(f"{path}: not an asyncdqn checkpoint")
    version = ckpt.get("version")
    if not (type(version) is int and version == VERSION):  # a tensor here would compare element-wise
        raise UserError(f"{path}: checkpoint version {brief(version)}; this asyncdqn reads version {VERSION}")
    return ckpt


def policy_payload(net: EnsembleQNet, weights_K: np.ndarray) -> dict:
    return {"spec": net.spec(), "state": {k: v.detach().clone() for k, v in net.state_dict().items()},
            "weights": torch.as_tensor(np.asarray(weights_K, dtype=np.float32))}


def policy_from(ckpt: dict) -> GreedyPolicy:
    """The greedy policy stored in a loaded checkpoint."""
    try:
        pol = ckpt["policy"]
        if not (isinstance(pol, dict) and isinstance(pol.get("spec"), dict)):  # not a tensor: tensor["spec"] warns
            raise TypeError(f"policy must be a table with a 'spec' table, got {brief(pol)}")
        net = qnet_from_spec(pol["spec"])
        net.load_state_dict(pol["state"])
        weights = pol["weights"]
        if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != (net.k,):
            raise TypeError(f"weights must be a tensor of {net.k} merge weights, got {brief(weights)}")
        return GreedyPolicy(net.eval(), weights.numpy())
    except (KeyError, TypeError, RuntimeError, AttributeError, ValueError) as exc:
        raise UserError(f"checkpoint policy is malformed ({first_line(exc)})") from None


def config_from(ckpt: dict) -> config.RunConfig:
    """The run config stored in a loaded checkpoint (a one-line UserError when it is missing or bad)."""
    values = ckpt.get("config")
    if not isinstance(values, dict):
        raise UserError(f"checkpoint holds no config table (found {brief(values)})")
    return config.from_dict(values)


def check_fits(policy: GreedyPolicy, obs_shape: tuple, n_actions: int, env_name: str) -> None:
    """A stored policy must read the env's observations and choose among its actions."""
    net = policy.net
    reads = tuple(net.obs_shape) if hasattr(net, "obs_shape") else (net.obs_size,)
    fits = reads == tuple(obs_shape) if hasattr(net, "obs_shape") else net.obs_size == int(np.prod(obs_shape))
    if not fits:
        raise UserError(f"the checkpoint's policy reads observations of shape {reads}; {env_name} gives "
                        f"{tuple(obs_shape)}")
    if net.n_actions != n_actions:
        raise UserError(f"the checkpoint's policy chooses among {net.n_actions} actions; {env_name} has {n_actions}")
