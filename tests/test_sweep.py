"""`asyncdqn sweep`: reading a grid, the order and folders of its runs, resume, parallelism, the ETA, and one
real end-to-end sweep of two tiny runs followed by `asyncdqn compare`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from asyncdqn import sweep
from asyncdqn.cli import main
from asyncdqn.errors import UserError
from asyncdqn.fields import parse_value

GRID = """
out = "{out}"
parallel = 2
seeds = 2
baseline = "k1"

[set]
total_steps = 1200
"eval.every" = 600
"eval.episodes" = 2
"eval.final_episodes" = 2
"eval.stop_at" = inf
"learner.learning_starts" = 200
"actors.num_actors" = 2
"learner.hidden" = [8, 8]

[scenarios.cartpole]
score_range = [0, 500]
set = {{ "merge.every" = 25 }}

[scenarios.acrobot]
seeds = [5]
score_range = [-500, 0]

[arms.k1]
label = "K=1 (DQN)"
set = {{ "learner.num_nets" = 1, "merge.every" = 50 }}

[arms.k2]
set = {{ "learner.num_nets" = 2 }}
"""


def grid_file(tmp_path: Path, text: str = GRID, **fmt) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text.format(out=tmp_path / "out", **fmt))
    return path


def test_a_grid_becomes_runs_seed_major_with_overrides_in_grid_scenario_arm_order(tmp_path):
    grid = sweep.read_grid(grid_file(tmp_path))
    assert grid.parallel == 2 and grid.out == tmp_path / "out"
    names = [(r.scenario, r.arm, r.seed) for r in grid.runs]
    assert names == [("cartpole", "k1", 0), ("cartpole", "k2", 0), ("acrobot", "k1", 5), ("acrobot", "k2", 5),
                     ("cartpole", "k1", 1), ("cartpole", "k2", 1)]
    first = grid.runs[0]
    assert first.folder == (tmp_path / "out" / "cartpole" / "k1" / "seed0").resolve()
    assert first.overrides[0] == "total_steps=1200" and first.overrides[-2:] == ("learner.num_nets=1",
                                                                                  "merge.every=50")
    assert "merge.every=25" in first.overrides                     # the scenario's, before the arm's
    assert first.meta == {"label": "K=1 (DQN)", "score_range": [0.0, 500.0], "baseline": "k1"}
    assert grid.runs[1].meta["label"] == "k2"                      # no label: the arm's name
    # the scenario is copied once: a resumed sweep trains the text it started with
    copy = tmp_path / "out" / "cartpole" / "scenario.toml"
    assert first.scenario_file == copy.resolve() and copy.read_text().startswith("# CartPole-v1")
    cmd = first.command()
    assert cmd[2:5] == ["asyncdqn.cli", "train", str(copy.resolve())] and cmd[cmd.index("--seed") + 1] == "0"
    assert (tmp_path / "out" / "grid.toml").is_file()


@pytest.mark.parametrize("value", [float("inf"), "heldout_td", [64, 64], True, 1e-3, 7, [1e-4, 3e-3],
                                   [[1, 2], ["a", "b"]], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]])
def test_override_text_reads_back_as_the_same_value(value):
    key, _, text = sweep.override_text("a.b", value).partition("=")
    assert key == "a.b" and parse_value(text) == value and "\n" not in text


@pytest.mark.parametrize(("edit", "fragment"), [
    (('seeds = 2', 'seeds = 0'), "seeds must be a count >= 1"),
    (('seeds = 2', 'seeds = [1, 1]'), "distinct seeds"),
    (('baseline = "k1"', 'baseline = "k7"'), "baseline 'k7' is not an arm"),
    (('parallel = 2', 'parallel = 0'), "parallel must be an integer >= 1"),
    (('parallel = 2', 'paralel = 2'), "unknown key 'paralel'"),
    (('label = "K=1 (DQN)"', 'lable = "x"'), "[arms.k1]: unknown key 'lable'"),
    (('score_range = [0, 500]', 'score_range = [500, 0]'), "score_range must be [low, high]"),
    (('[scenarios.acrobot]', '[scenarios.acrobat]'), "unknown scenario 'acrobat'"),
    (('"learner.num_nets" = 2', '"learner.num_nest" = 2'), "scenario cartpole, arm k2: config: unknown key 'learner.num_nest'"),
    (('total_steps = 1200', 'total_steps = "many"'), "scenario cartpole, arm k1:"),
])
def test_a_bad_grid_is_one_line_naming_what_is_wrong_before_any_run_starts(tmp_path, edit, fragment):
    path = grid_file(tmp_path, GRID.replace(*edit))
    with pytest.raises(UserError) as err:
        sweep.read_grid(path)
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert not list((tmp_path / "out").rglob("sweep_run.json"))


def test_grid_files_and_built_in_grids_are_found_or_refused(tmp_path):
    assert {"smoke", "screen-cartpole"} <= set(sweep.grid_names())
    assert sweep.read_grid(Path("smoke"), out=tmp_path / "s").runs[0].scenario == "cartpole"
    with pytest.raises(UserError, match="unknown grid 'smok'"):
        sweep.read_grid(Path("smok"))
    with pytest.raises(UserError, match="grid file not found"):
        sweep.read_grid(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("seeds = [")
    with pytest.raises(UserError, match="not a readable TOML grid"):
        sweep.read_grid(tmp_path / "bad.toml")


@pytest.mark.parametrize("name", sweep.grid_names())
def test_every_shipped_grid_loads_every_run_config(tmp_path, name):
    grid = sweep.read_grid(Path(name), out=tmp_path / "s")  # a bad key or value in any run fails here
    assert grid.runs and all(run.folder.is_relative_to(tmp_path / "s") for run in grid.runs)


def test_the_eta_is_the_mean_run_time_times_the_runs_left_over_the_runs_at_a_time():
    assert sweep.eta_s([], 5, 2) is None
    assert sweep.eta_s([10.0, 20.0], 4, 2) == 30.0     # 15 s a run, 4 left, 2 at a time
    assert sweep.eta_s([10.0, 20.0], 1, 2) == 15.0     # one left runs alone
    assert sweep.eta_s([10.0], 0, 2) == 0.0
    assert sweep.eta_s([12.0], 3, 1) == 36.0


class FakeTrainer:
    """Stands in for `asyncdqn train`: writes a summary (or fails) and records how many ran at once."""

    def __init__(self, fail=(), rc=0):
        self.calls, self.now, self.most = [], 0, 0
        self.fail, self.rc = set(fail), rc

    async def __call__(self, run: sweep.Run) -> int:
        self.calls.append((run.scenario, run.arm, run.seed))
        self.now += 1
        self.most = max(self.most, self.now)
        await asyncio.sleep(0.02)
        self.now -= 1
        if (run.arm, run.seed) in self.fail:
            (run.folder / "train.log").write_text("line\nasyncdqn: error: boom\n")
            return 1
        if self.rc:
            return self.rc
        (run.folder / "summary.json").write_text(json.dumps({"interrupted": False}))
        return 0


async def test_run_sweep_runs_n_at_a_time_records_failures_and_resumes_only_what_is_not_done(tmp_path):
    grid = sweep.read_grid(grid_file(tmp_path))
    said = []
    fake = FakeTrainer(fail={("k2", 5)})
    counts = await sweep.run_sweep(grid, fake, said.append)
    assert counts == {"runs": 6, "done_before": 0, "ran": 6, "failed": 1}
    assert fake.most == 2 and len(fake.calls) == 6
    failed = tmp_path / "out" / "acrobot" / "k2" / "seed5" / "failed.txt"
    assert failed.read_text().startswith("exit 1\n") and "boom" in failed.read_text()
    assert said[0].startswith("sweep: 6 runs") and any("FAILED (exit 1" in s for s in said)
    assert said[-1].startswith("[6/6]") and "0 to go, ETA 0m00s" in said[-1]
    spec = json.loads((tmp_path / "out" / "cartpole" / "k1" / "seed0" / sweep.SPEC_FILE).read_text())
    assert spec["spec"]["overrides"] == list(grid.runs[0].overrides) and spec["meta"]["baseline"] == "k1"

    # again: everything is done (the failure too, which is not retried)
    again = FakeTrainer()
    assert (await sweep.run_sweep(sweep.read_grid(grid_file(tmp_path)), again, said.append))["done_before"] == 6
    assert again.calls == []
    # an interrupted run and a run whose overrides changed are trained again, from a wiped folder
    (tmp_path / "out" / "cartpole" / "k1" / "seed1" / "summary.json").write_text('{"interrupted": true}')
    (tmp_path / "out" / "cartpole" / "k1" / "seed1" / "stale.txt").write_text("x")
    changed = sweep.read_grid(grid_file(tmp_path, GRID.replace('"learner.num_nets" = 2', '"learner.num_nets" = 3')))
    third = FakeTrainer()
    counts = await sweep.run_sweep(changed, third, said.append)
    assert sorted(third.calls) == [("acrobot", "k2", 5), ("cartpole", "k1", 1), ("cartpole", "k2", 0),
                                   ("cartpole", "k2", 1)]
    assert counts["done_before"] == 2 and not (tmp_path / "out" / "cartpole" / "k1" / "seed1" / "stale.txt").exists()


async def test_an_interrupted_child_stops_the_sweep(tmp_path):
    grid = sweep.read_grid(grid_file(tmp_path), parallel=1)
    fake = FakeTrainer(rc=130)
    with pytest.raises(KeyboardInterrupt):
        await sweep.run_sweep(grid, fake, lambda m: None)
    assert len(fake.calls) == 1  # the runs queued behind it never start


def test_a_real_sweep_of_two_tiny_runs_then_compare(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = GRID.replace("[scenarios.acrobot]\nseeds = [5]\nscore_range = [-500, 0]\n", "").replace("seeds = 2",
                                                                                                    "seeds = 1")
    path = grid_file(tmp_path, text)
    assert main(["sweep", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[2/2]" in out and f"asyncdqn compare {tmp_path / 'out'}" in out
    for arm in ("k1", "k2"):
        run = tmp_path / "out" / "cartpole" / arm / "seed0"
        assert json.loads((run / "summary.json").read_text())["env_steps"] >= 1200
        assert "train" in (run / "train.log").read_text() or (run / "train.log").is_file()
    assert main(["sweep", str(path)]) == 0                    # resumed: nothing to do
    assert "2 done before, 0 to go" in capsys.readouterr().out
    pytest.importorskip("rliable")
    assert main(["compare", str(tmp_path / "out"), "--reps", "100"]) == 0
    assert (tmp_path / "out" / "compare" / "compare.json").is_file()
