"""Exporting a run's greedy policy as a TorchScript or ONNX file that loads without asyncdqn (issue 15).

Place in the flow: after a run, beside `eval`; reads a checkpoint, writes one file. `asyncdqn export RUN_DIR
--format torchscript|onnx [--out FILE]` is `add_parser` and `command` here; the rest are plain functions.

What is exported is the policy the run acts with, `checkpoint.policy_from(ckpt)`: the K-net ensemble and its
merge weights w_K, combined as GreedyPolicy combines them, Q(s, a) = sum_k w_k Q_k(s, a). The module maps a
batch of observations [B, *obs_shape] to Q-values [B, A] (any batch size); the greedy action is the argmax
over the last axis. Preprocessing travels with it: observations are cast to float32, as GreedyPolicy does,
and a conv net's input scale (1/255 for Atari frames) is inside the net already. An ONNX file takes float32.

Before a file is written, it is loaded back (torch.jit.load, onnxruntime) and its Q-values are compared with
the run's own policy on observations of greedy rollouts; an export that differs by more than `TOLERANCE` is
refused and nothing is written. torch and numpy are imported inside the functions: `asyncdqn.cli` builds its
parser from `add_parser` and must stay free of them until a command runs (see cli.py).

Legend: B observations, K nets, A actions.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from asyncdqn.errors import UserError, first_line

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
TOLERANCE = 1e-5  # max |ΔQ| between the exported file and the run's policy (issue 15)
PARITY_OBSERVATIONS = 1000
if TYPE_CHECKING:
    import numpy as np

HELP = "export a run's greedy policy as a TorchScript or ONNX file (loads without asyncdqn)"


def combined_q_module(policy):
    """An nn.Module computing sum_k w_k Q_k(obs) of a GreedyPolicy: obs [B, *obs_shape] -> q [B, A]."""
    from torch import nn

    class CombinedQ(nn.Module):
        def __init__(self, net: nn.Module, w_K11):
            super().__init__()
            self.net = net
            self.register_buffer("w_K11", w_K11.detach().clone().reshape(-1, 1, 1))

        def forward(self, obs_B):
            return (self.net.forward_all(obs_B.float()) * self.w_K11).sum(0)

    return CombinedQ(policy.net, policy.w_K).eval()


def _example_batch(policy, batch: int = 2):
    import torch

    net = policy.net
    shape = tuple(net.obs_shape) if hasattr(net, "obs_shape") else (net.obs_size,)
    return torch.zeros((batch, *shape), dtype=torch.float32)


@contextlib.contextmanager
def _torchscript_deprecations_quiet():
    """torch 2.13 marks torch.jit and the TorchScript-based ONNX exporter deprecated; they are still what writes
    files that load in plain torch and onnxruntime (the dynamo exporter would add onnxscript to the extra)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def to_bytes(policy, fmt: str) -> bytes:
    """The exported file's bytes: a traced TorchScript module, or an ONNX graph with a dynamic batch axis."""
    import torch

    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "onnx":
        _onnxruntime()
    module, example = combined_q_module(policy), _example_batch(policy)
    buf = io.BytesIO()
    with torch.no_grad(), _torchscript_deprecations_quiet():
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(module, example), buf)
        else:
            torch.onnx.export(module, (example,), buf, dynamo=False, input_names=["obs"], output_names=["q"],
                              dynamic_axes={"obs": {0: "batch"}, "q": {0: "batch"}})
    return buf.getvalue()


def _onnxruntime():
    """onnxruntime, checking that onnx (which torch's exporter writes with) is there too."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as exc:
        raise UserError(f"ONNX export needs onnx and onnxruntime ({first_line(exc)}): "
                        f"pip install 'asyncdqn[export]'") from None
    return onnxruntime


def exported_q(source: Path | bytes, fmt: str, obs_B: np.ndarray) -> np.ndarray:
    """Q-values [B, A] of an exported file (a path or its bytes), run as a user would run it."""
    import numpy as np
    import torch

    x = np.asarray(obs_B, dtype=np.float32)
    if fmt == "onnx":
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no warnings on stderr
        model = source if isinstance(source, bytes) else str(source)
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        return session.run(["q"], {"obs": x})[0]
    if fmt != "torchscript":
        raise UserError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    with _torchscript_deprecations_quiet():
        module = torch.jit.load(io.BytesIO(source) if isinstance(source, bytes) else str(source), map_location="cpu")
    with torch.no_grad(), _torchscript_deprecations_quiet():
        return module(torch.from_numpy(x)).numpy()


def parity(source: Path | bytes, fmt: str, policy, obs_B: np.ndarray) -> float:
    """max |ΔQ| between the exported file and the run's own policy on these observations."""
    import numpy as np

    got_BA = exported_q(source, fmt, obs_B)
    want_BA = policy.q_values(obs_B)
    if got_BA.shape != want_BA.shape:
        return float("inf")
    return float(np.max(np.abs(got_BA - want_BA)))


def record_observations(make_env, policy, n: int, seed: int) -> np.ndarray:
    """n observations of greedy episodes played by `policy`; episode j resets with seed `seed + j`."""
    import numpy as np

    env = make_env()
    try:
        obs_list, episode = [], 0
        obs, _ = env.reset(seed=seed)
        while len(obs_list) < n:
            obs_list.append(np.asarray(obs))
            obs, _, term, trunc, _ = env.step(int(policy(obs_list[-1][None])[0]))
            if term or trunc:
                episode += 1
                obs, _ = env.reset(seed=seed + episode)
    finally:
        env.close()
    return np.stack(obs_list)


def add_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `export` subcommand's options, on the parser that `cli._command(sub, "export", HELP)` made (it
    adds the examples that end `--help`)."""
    p.add_argument("checkpoint", metavar="RUN_DIR", help="a run folder or its checkpoint.pt")
    p.add_argument("--format", choices=list(FORMATS), required=True,
                   help="torchscript (torch.jit.load) or onnx (onnxruntime and other ONNX runtimes)")
    p.add_argument("--out", type=Path, default=None,
                   help="file to write (default RUN_DIR/policy.pt for torchscript, RUN_DIR/policy.onnx for onnx)")
    p.add_argument("--seed", type=int, default=12345,
                   help="seed of the greedy episodes whose observations the parity check uses (default 12345)")
    return p


def _policy_and_observations(run: str, seed: int):
    """The run's policy, its checkpoint path, and PARITY_OBSERVATIONS observations of its greedy rollouts."""
    from asyncdqn.evaluation import load_policy

    saved = load_policy(run)
    return saved.policy, saved.path, record_observations(saved.make_env, saved.policy, PARITY_OBSERVATIONS, seed)


def command(args: argparse.Namespace) -> int:
    """`asyncdqn export`: export, check parity on recorded observations, then write the file atomically."""
    from asyncdqn.checkpoint import atomic_write_bytes

    if args.format == "onnx":
        _onnxruntime()  # before the rollouts: a missing runtime is the user's first line, not a late one
    policy, path, obs = _policy_and_observations(args.checkpoint, args.seed)
    out = args.out or path.parent / f"policy{FORMATS[args.format]}"
    try:
        data = to_bytes(policy, args.format)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001  # an exporter failure on a valid policy: say which, in one line
        raise UserError(f"{args.format} export failed ({first_line(exc)})") from None
    delta = parity(data, args.format, policy, obs)
    if not delta <= TOLERANCE:
        raise UserError(f"{args.format} export refused: max |ΔQ| = {delta:.3g} over {len(obs)} observations "
                        f"exceeds {TOLERANCE:g}; nothing written")
    atomic_write_bytes(out, lambda f: f.write(data))
    print(f"max |ΔQ| {delta:.2e} over {len(obs)} recorded observations; wrote {out} ({len(data):,} bytes)")
    return 0
