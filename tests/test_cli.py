"""The `asyncdqn` command: every user mistake is one line on stderr and exit status 2; train, eval and
scenarios work end to end; checkpoints are loaded without running anything they contain."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

import asyncdqn
from asyncdqn import checkpoint, config
from asyncdqn.cli import main
from asyncdqn.metrics import read_records
from conftest import tiny_sets


def with_sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, *fragments: str) -> str:
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, f"stderr should be one line, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("asyncdqn: error: ") and "Traceback" not in err
    assert "asyncdqn:" not in line[len("asyncdqn: error: "):], f"the program is named twice: {line}"
    for fragment in fragments:
        assert fragment in line, line
    return line


# ------------------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(("argv", "fragment"), [
    (["train", "no-such-scenario"], "unknown scenario 'no-such-scenario'; built-in: "),
    (["train", "cartpole", "--set", "foo.bar=1"], "unknown key 'foo.bar'"),
    (["train", "cartpole", "--set", "nosuchkey=3"], "unknown key 'nosuchkey'"),
    (["train", "cartpole", "--set", "learner.lr=abc"], "learner.lr expects float, got str 'abc'"),
    (["train", "cartpole", "--set", "total_steps=1.5"], "total_steps expects int"),
    (["train", "cartpole", "--set", "learner.hidden=5"], "learner.hidden expects tuple"),
    (["train", "cartpole", "--set", "replay.prioritized=1"], "replay.prioritized expects bool"),
    (["train", "cartpole", "--set", "learner.gamma=2"], "learner.gamma must be in [0, 1]"),
    (["train", "cartpole", "--set", "actors.num_actors=0"], "actors.num_actors must be >= 1"),
    (["train", "cartpole", "--set", "merge.space=weights"], "merge.space must be 'params', 'outputs' or 'averaged'"),
    (["train", "cartpole", "--set", "env.id.x=1"], "env.id.x is not a table"),
    (["train", "cartpole", "--set", "learning_starts"], "--set expects key=value"),
    (["train", "cartpole", "--env-factory", "no_colon_here"], "must look like 'pkg.module:callable'"),
    (["eval", "somewhere", "--episodes", "0"], "--episodes must be >= 1"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_bad_arguments_are_one_line_errors(capsys, argv, fragment):
    rc, out, err = run_cli(capsys, argv)
    assert_one_line_error(rc, err, fragment)
    assert out == ""


def test_negative_seed_is_a_config_error(capsys, tmp_path):
    # numpy's SeedSequence refuses negative seeds; the config must say so instead of a ValueError traceback
    rc, out, err = run_cli(capsys, ["train", "cartpole", "--seed", "-1", "--out", tmp_path / "run", "--quiet",
                                    *with_sets(tiny_sets(300))])
    assert_one_line_error(rc, err, "seed")


def test_chunk_rows_larger_than_replay_capacity_is_a_config_error(capsys, tmp_path):
    # replay.add raises ValueError for a chunk longer than the ring; the config should refuse the pair first
    sets = tiny_sets(300) + ["replay.capacity=64", "actors.chunk_rows=100", "actors.num_actors=1",
                             "learner.learning_starts=250"]
    rc, out, err = run_cli(capsys, ["train", "cartpole", "--out", tmp_path / "run", "--quiet", *with_sets(sets)])
    assert_one_line_error(rc, err, "chunk_rows")


@pytest.mark.parametrize(("text", "fragment"), [
    ("[learner]\nlrr = 1\n", "unknown key 'learner.lrr'"),
    ("total_steps = = 3\n", "not valid TOML"),
    ("learner = 3\n", "learner must be a table"),
    ("[learner]\ngamma = -0.5\n", "learner.gamma must be in [0, 1]"),
])
def test_bad_scenario_files(capsys, tmp_path, text, fragment):
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    rc, out, err = run_cli(capsys, ["train", path, "--out", tmp_path / "run"])
    assert_one_line_error(rc, err, fragment)
    assert not (tmp_path / "run").exists()


def test_missing_scenario_file(capsys, tmp_path):
    rc, out, err = run_cli(capsys, ["train", tmp_path / "missing.toml"])
    assert_one_line_error(rc, err, "scenario file not found", "missing.toml")


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--env", "NoSuchEnv-v9"], "unknown or unusable env 'NoSuchEnv-v9'"),
    (["--env", "Pendulum-v1"], "DQN needs a Discrete action space"),
    (["--env-factory", "no_such_module_xyz:make"], "cannot import 'no_such_module_xyz'"),
    (["--env-factory", "json:no_such_callable"], "has no callable 'no_such_callable'"),
    (["--set", "env.kwargs.no_such_kwarg=1"], "could not be built"),
])
def test_unusable_envs(capsys, tmp_path, argv, fragment):
    rc, out, err = run_cli(capsys, ["train", "cartpole", "--out", tmp_path / "run", "--quiet", *argv,
                                    *with_sets(tiny_sets(300))])
    assert_one_line_error(rc, err, fragment)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# -------------------------------------------------------------------------------------- checkpoints


def test_eval_of_a_missing_checkpoint(capsys, tmp_path):
    rc, out, err = run_cli(capsys, ["eval", tmp_path / "nowhere"])
    assert_one_line_error(rc, err, "checkpoint not found")
    (tmp_path / "empty").mkdir()
    rc, out, err = run_cli(capsys, ["eval", tmp_path / "empty"])
    assert_one_line_error(rc, err, "checkpoint not found")


def test_eval_of_random_bytes(capsys, tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(bytes(range(256)) * 40)
    rc, out, err = run_cli(capsys, ["eval", path])
    assert_one_line_error(rc, err, str(path))
    assert not (tmp_path / "eval.json").exists()


def test_eval_of_a_truncated_checkpoint(capsys, tmp_path, trained_run):
    data = (trained_run.out / checkpoint.FILENAME).read_bytes()
    (tmp_path / checkpoint.FILENAME).write_bytes(data[: len(data) // 2])
    rc, out, err = run_cli(capsys, ["eval", tmp_path])
    assert_one_line_error(rc, err, "corrupt or truncated checkpoint")


class WritesMarker:
    """Unpickling this calls open(marker, "w"), which creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_eval_refuses_a_checkpoint_carrying_pickled_code(capsys, tmp_path):
    # The payload is live: an unsafe load really runs it (checked on a probe file) ...
    probe = tmp_path / "probe-marker"
    torch.save({"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "x": WritesMarker(probe)},
               tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)["x"].close()
    assert probe.exists()
    # ... but `asyncdqn eval` must not run it.
    marker = tmp_path / "MARKER"
    path = tmp_path / "run" / checkpoint.FILENAME
    path.parent.mkdir()
    torch.save({"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "x": WritesMarker(marker)}, path)
    rc, out, err = run_cli(capsys, ["eval", path.parent])
    assert_one_line_error(rc, err, "refused to load")
    assert not marker.exists()


def resaved(trained_run, tmp_path: Path, change) -> Path:
    ckpt = torch.load(trained_run.out / checkpoint.FILENAME, weights_only=True)
    ckpt = change(ckpt)
    path = tmp_path / checkpoint.FILENAME
    torch.save(ckpt, path)
    return path


def test_eval_of_a_checkpoint_with_another_version(capsys, tmp_path, trained_run):
    path = resaved(trained_run, tmp_path, lambda c: {**c, "version": checkpoint.VERSION + 1})
    rc, out, err = run_cli(capsys, ["eval", path])
    assert_one_line_error(rc, err, f"checkpoint version {checkpoint.VERSION + 1}")


def test_eval_of_files_that_are_not_asyncdqn_checkpoints(capsys, tmp_path, trained_run):
    path = resaved(trained_run, tmp_path, lambda c: [1, 2, 3])
    rc, out, err = run_cli(capsys, ["eval", path])
    assert_one_line_error(rc, err, "not an asyncdqn checkpoint")
    path = resaved(trained_run, tmp_path, lambda c: {**c, "policy": {"spec": c["policy"]["spec"]}})
    rc, out, err = run_cli(capsys, ["eval", path])
    assert_one_line_error(rc, err, "checkpoint policy is malformed")


# --------------------------------------------------------------------------- real processes (exit code)


def run_process(args: list, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m asyncdqn.cli ARGS` on the same asyncdqn source the in-process tests import."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(asyncdqn.__file__).resolve().parents[1]),
                                         *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "asyncdqn.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=90)


@pytest.mark.timeout(100)
def test_process_exit_status_and_single_stderr_line(tmp_path):
    proc = run_process(["train", "no-such-scenario"], tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    builtin = ", ".join(sorted(p.stem for p in (Path(__file__).parents[1] / "asyncdqn" / "scenarios").glob("*.toml")))
    assert "cartpole" in builtin and "trading" in builtin
    assert proc.stderr == f"asyncdqn: error: unknown scenario 'no-such-scenario'; built-in: {builtin}\n"


@pytest.mark.timeout(100)
def test_process_refuses_a_plain_pickle_file_with_one_line(tmp_path):
    # A `.pt` that is a plain pickle (not torch's zip format), made with the default pickle protocol. Nothing
    # may run, and stderr must still be the one error line (no library warning in front of it).
    marker = tmp_path / "MARKER"
    path = tmp_path / checkpoint.FILENAME
    with open(path, "wb") as f:
        pickle.dump({"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "x": WritesMarker(marker)}, f)
    proc = run_process(["eval", path], tmp_path)
    assert not marker.exists()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, f"stderr should be one line:\n{proc.stderr}"
    assert proc.stderr.startswith("asyncdqn: error: ")


# ---------------------------------------------------------------------------------------- scenarios


def test_scenarios_lists_cartpole(capsys):
    rc, out, err = run_cli(capsys, ["scenarios"])
    assert rc == 0 and err == ""
    names = [line.split()[0] for line in out.splitlines()]
    assert names == sorted(names)
    assert {"cartpole", "trading", "acrobot", "lunarlander", "minatar-breakout", "atari-pong"} <= set(names)
    assert "CartPole-v1" in out and "  learner.lr" not in out


def test_scenarios_fields_lists_every_documented_field(capsys):
    rc, out, err = run_cli(capsys, ["scenarios", "--fields"])
    assert rc == 0
    assert any(line.split()[:3] == ["learner.lr", "Adam", "learning"] for line in out.splitlines())
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    expected = {f"{s}.{f.name}" for s, cls in config.SECTION_TYPES.items() for f in dataclasses.fields(cls)}
    expected |= {f.name for f in dataclasses.fields(config.RunConfig) if f.name not in config.SECTION_TYPES}
    assert listed == expected


# ------------------------------------------------------------------------------ training end to end


def test_train_eval_and_refuse_to_overwrite(capsys, tmp_path):
    out = tmp_path / "run"
    rc, stdout, err = run_cli(capsys, ["train", "cartpole", "--out", out, "--seed", "3", "--quiet",
                                       *with_sets(tiny_sets(600))])
    assert rc == 0, err
    assert "600 steps, 100 updates" in stdout                 # 0.25 * (600 - 200) updates
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["scenario"], summary["seed"], summary["env_steps"]) == ("cartpole", 3, 600)
    cfg = config.from_dict(tomllib.loads((out / "config.toml").read_text()))
    assert (cfg.total_steps, cfg.seed, cfg.learner.hidden, cfg.actors.num_actors) == (600, 3, (16, 16), 2)
    assert cfg.learner.lr == 1e-3 and cfg.eval.stop_at == 490.0  # values the overrides left alone

    rc, stdout, err = run_cli(capsys, ["eval", out, "--episodes", "3", "--seed", "7"])
    assert rc == 0 and err == ""
    assert len(stdout.splitlines()) == 1 and stdout.startswith("CartPole-v1: greedy return")
    result = json.loads((out / "eval.json").read_text())
    assert (result["episodes"], result["seed"], len(result["returns"])) == (3, 7, 3)
    assert result["return_mean"] == pytest.approx(sum(result["returns"]) / 3)
    assert result["returns"] == result["lengths"]              # CartPole: reward 1 per step
    rc, _, _ = run_cli(capsys, ["eval", out / checkpoint.FILENAME, "--episodes", "3", "--seed", "7"])
    assert rc == 0 and json.loads((out / "eval.json").read_text())["returns"] == result["returns"]

    before = {name: (out / name).read_bytes() for name in ("checkpoint.pt", "config.toml", "summary.json")}
    rc, stdout, err = run_cli(capsys, ["train", "cartpole", "--out", out, "--quiet", *with_sets(tiny_sets(300))])
    assert_one_line_error(rc, err, "already holds a checkpoint", "--force")
    assert stdout == ""
    assert {name: (out / name).read_bytes() for name in before} == before


def test_train_on_another_gymnasium_env(capsys, tmp_path):
    # 400 steps finish no Acrobot episode (they last 500 steps), so this also needs a learning curve
    # without episodes (see test_runtime.test_learning_curve_of_a_run_without_finished_episodes).
    out = tmp_path / "acrobot"
    rc, stdout, err = run_cli(capsys, ["train", "cartpole", "--env", "Acrobot-v1", "--out", out, "--quiet",
                                       *with_sets(tiny_sets(400))])
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env"] == "Acrobot-v1" and summary["env_steps"] == 400
    ckpt = checkpoint.load(out)
    assert ckpt["env"]["obs_shape"] == [6] and ckpt["env"]["n_actions"] == 3
    assert ckpt["policy"]["spec"]["n_actions"] == 3
    cfg = config.from_dict(tomllib.loads((out / "config.toml").read_text()))
    assert (cfg.env.id, cfg.env.factory) == ("Acrobot-v1", "")


def test_train_with_an_env_factory_from_a_user_module(capsys, tmp_path, monkeypatch):
    name = "asyncdqn_test_factory_env"
    (tmp_path / f"{name}.py").write_text(
        "import gymnasium as gym\n"
        "CALLS = []\n"
        "def make(max_steps=500):\n"
        "    CALLS.append(max_steps)\n"
        "    return gym.make('CartPole-v1', max_episode_steps=max_steps)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    out = tmp_path / "run"
    rc, stdout, err = run_cli(capsys, ["train", "cartpole", "--env-factory", f"{name}:make", "--out", out,
                                       "--quiet", *with_sets(tiny_sets(400) + ["env.kwargs.max_steps=15"])])
    assert rc == 0, err
    module = sys.modules.pop(name)
    assert module.CALLS == [15] * 4            # 2 actors + 2 final-eval env copies, all with the kwarg
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env"] == f"{name}:make" and summary["env_steps"] == 400
    assert summary["eval_return_mean"] <= 15
    lengths = [r["length"] for r in read_records(out / "metrics.jsonl") if r["kind"] == "episode"]
    assert lengths and max(lengths) == 15       # the 15-step time limit cut some episodes


def test_run_folder_can_be_copied_and_evaluated_elsewhere(capsys, tmp_path, trained_run):
    copy = tmp_path / "copied"
    shutil.copytree(trained_run.out, copy, ignore=shutil.ignore_patterns("tensorboard", "eval.json"))
    rc, stdout, err = run_cli(capsys, ["eval", copy, "--episodes", "2"])
    assert rc == 0, err
    assert json.loads((copy / "eval.json").read_text())["checkpoint"] == str(copy / checkpoint.FILENAME)


def test_readme_lists_every_config_field_as_the_cli_prints_it(capsys):
    assert main(["scenarios", "--fields"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    readme = (Path(__file__).parents[1] / "README.md").read_text().splitlines()
    assert printed and all(line in readme for line in printed), [x for x in printed if x not in readme]


@pytest.mark.parametrize("argv", [["--help"], ["compare", "--help"], ["sweep", "--help"], ["train", "--help"]])
def test_help_prints_and_exits_zero(capsys, argv):
    """A literal % in a subcommand's help once made `asyncdqn --help` crash in argparse's formatting."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    out, err = capsys.readouterr()
    assert stop.value.code == 0 and "usage: asyncdqn" in out and not err
    if argv == ["--help"]:
        assert "with 95%" in out
