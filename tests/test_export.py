"""`asyncdqn export`: the exported TorchScript / ONNX file computes the run's combined Q (sum_k w_k Q_k) to 1e-5
on 1,000 observations, for an MLP run and a conv ensemble; it loads in a Python that cannot import asyncdqn;
the command writes it atomically, refuses an export that does not match, and bad input is one line."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from asyncdqn import checkpoint, export
from asyncdqn.cli import main
from asyncdqn.envs.make import env_kwargs, make_env
from asyncdqn.errors import UserError
from asyncdqn.nets import EnsembleConvQNet, GreedyPolicy

FORMATS = ["torchscript", "onnx"]


def _spread(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Make the K nets differ (a merged run's nets are equal, so its merge weights would not show). Small
    steps: with |Q| ~ 40, ONNX Runtime's float32 conv alone differs from torch's by ~2e-5."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)  # Q stays ~1, as at init
    return net


@pytest.fixture(scope="module")
def mlp_run(trained_run):
    """The tiny run's policy and 1,000 observations of its greedy rollouts (as the command records them)."""
    policy = checkpoint.policy_from(checkpoint.load(trained_run.out))
    kwargs = env_kwargs(trained_run.cfg, evaluation=True)
    obs = export.record_observations(lambda: make_env(trained_run.cfg.env, kwargs), policy, 1000, seed=7)
    return policy, obs


@pytest.fixture(scope="module")
def conv_policy():
    """K=2 MinAtar-torso nets on (4, 10, 10) uint8 frames scaled by 1/255, nets apart, uneven merge weights."""
    net = _spread(EnsembleConvQNet(2, (4, 10, 10), 3, "minatar", input_scale=1 / 255).reset_parameters(0), 1)
    obs = np.random.default_rng(0).integers(0, 256, size=(1000, 4, 10, 10), dtype=np.uint8)
    return GreedyPolicy(net.eval(), np.array([0.2, 0.8], dtype=np.float32)), obs


def test_recorded_observations_are_seeded_greedy_rollouts_of_the_run(mlp_run, trained_run):
    policy, obs = mlp_run
    assert obs.shape == (1000, 4) and len(np.unique(obs, axis=0)) == 1000
    env = make_env(trained_run.cfg.env, env_kwargs(trained_run.cfg, evaluation=True))
    first, _ = env.reset(seed=7)
    second, *_ = env.step(int(policy(obs[:1])[0]))
    later_start, _ = env.reset(seed=8)  # episode 1 of the recording starts from seed + 1
    env.close()
    np.testing.assert_array_equal(obs[:2], np.stack([first, second]))
    assert (obs == later_start).all(axis=1).any()


@pytest.mark.parametrize("fmt", FORMATS)
def test_mlp_run_export_matches_its_policy(mlp_run, fmt):
    policy, obs = mlp_run
    assert export.parity(export.to_bytes(policy, fmt), fmt, policy, obs) <= export.TOLERANCE


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_combines_the_nets_with_the_merge_weights(mlp_run, conv_policy, fmt):
    run_policy, run_obs = mlp_run
    mlp = GreedyPolicy(_spread(copy.deepcopy(run_policy.net), 2), np.array([0.3, 0.7], dtype=np.float32))
    for policy, obs in [(mlp, run_obs), conv_policy]:
        q_BA = policy.q_values(obs)
        assert np.abs(q_BA - GreedyPolicy(policy.net, np.full(2, 0.5)).q_values(obs)).max() > 1e-2  # weights show
        assert export.parity(export.to_bytes(policy, fmt), fmt, policy, obs) <= export.TOLERANCE


@pytest.mark.parametrize("fmt", FORMATS)
def test_parity_sees_a_wrong_export(conv_policy, fmt):
    policy, obs = conv_policy
    other = GreedyPolicy(policy.net, np.array([0.8, 0.2], dtype=np.float32))
    assert export.parity(export.to_bytes(other, fmt), fmt, policy, obs) > 1e-2


LOADER = {
    "torchscript": "import torch; m = torch.jit.load(path); q = m(torch.from_numpy(obs)).detach().numpy()",
    "onnx": "import onnxruntime as ort; s = ort.InferenceSession(path, providers=['CPUExecutionProvider']); "
            "q = s.run(None, {'obs': obs})[0]",
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_exported_file_loads_without_asyncdqn(tmp_path, conv_policy, fmt):
    policy, obs = conv_policy
    path = tmp_path / f"policy{export.FORMATS[fmt]}"
    path.write_bytes(export.to_bytes(policy, fmt))
    x = obs[:5].astype(np.float32)  # a batch size the export was not traced with
    np.save(tmp_path / "obs.npy", x)
    code = ("import sys; sys.modules['asyncdqn'] = None\n"  # any import of asyncdqn now fails
            "import numpy as np; obs = np.load('obs.npy'); path = sys.argv[1]\n"
            f"{LOADER[fmt]}\n"
            "np.save('q.npy', q); print(sorted(m for m, mod in sys.modules.items() if m.startswith('asyncdqn') and mod))")
    out = subprocess.run([sys.executable, "-I", "-W", "ignore", "-c", code, path.name], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    q_BA = np.load(tmp_path / "q.npy")
    assert q_BA.shape == (5, 3) and np.abs(q_BA - policy.q_values(x)).max() <= export.TOLERANCE


@pytest.mark.parametrize("fmt", FORMATS)
def test_command_writes_the_file_and_reports_parity(tmp_path, trained_run, capsys, fmt):
    run = tmp_path / "run"
    shutil.copytree(trained_run.out, run)
    assert main(["export", str(run), "--format", fmt]) == 0
    path = run / f"policy{export.FORMATS[fmt]}"
    line = capsys.readouterr().out.strip()
    assert line.startswith("max |ΔQ| ") and str(path) in line and f"({path.stat().st_size:,} bytes)" in line
    obs = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)
    q_BA = export.exported_q(path, fmt, obs)
    assert np.abs(q_BA - checkpoint.policy_from(checkpoint.load(run)).q_values(obs)).max() <= export.TOLERANCE


def test_command_refuses_an_export_that_does_not_match_and_writes_nothing(tmp_path, trained_run, capsys,
                                                                           monkeypatch):
    true_q = export.exported_q
    monkeypatch.setattr(export, "exported_q", lambda *a: true_q(*a) + 2 * export.TOLERANCE)
    out = tmp_path / "exported" / "p.onnx"
    assert main(["export", str(trained_run.out), "--format", "onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "export refused: max |ΔQ| = 2" in err and "exceeds 1e-05" in err
    assert not out.exists() and not any(tmp_path.rglob("*p.onnx*"))


def test_bad_input_is_one_line(tmp_path, trained_run, capsys, monkeypatch):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    cases = [(["export", str(tmp_path / "nope"), "--format", "onnx"], "checkpoint not found"),
             (["export", str(tmp_path / "junk"), "--format", "torchscript"], "corrupt or truncated checkpoint"),
             (["export", str(trained_run.out), "--format", "tflite"], "invalid choice: 'tflite'"),
             (["export", str(trained_run.out)], "the following arguments are required: --format")]
    for argv, fragment in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and fragment in err, (argv, err)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: said before any rollout
    monkeypatch.setattr(export, "record_observations", lambda *a: pytest.fail("rollouts before the check"))
    assert main(["export", str(trained_run.out), "--format", "onnx", "--out", str(tmp_path / "p.onnx")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "pip install 'asyncdqn[export]'" in err
    with pytest.raises(UserError, match="unknown export format 'tflite'"):
        export.to_bytes(checkpoint.policy_from(checkpoint.load(trained_run.out)), "tflite")
    assert not list(trained_run.out.glob("policy*"))  # nothing written into the shared run
