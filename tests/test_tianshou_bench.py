"""benchmarks/cartpole_vs_sb3.py's third system, Tianshou (benchmarks/tianshou_cartpole.py), without tianshou.

CI has no tianshou: these tests check the parent's plan, its skip note and its summary with fake children,
and that the child script can be imported (and so is standalone) with nothing but the standard library.
"""

from __future__ import annotations

import ast
import json
import math
import sys

import pytest

from helpers.bench_scripts import BENCH, load_benchmark

bench = load_benchmark("cartpole_vs_sb3")
ts_bench = load_benchmark("tianshou_cartpole")

# The final JSON line's keys before tianshou (issue 16's two-system output): they must stay as they are.
TWO_SYSTEM_KEYS = ["benchmark", "quick", "asyncdqn_solved", "sb3_solved", "asyncdqn_median_time_to_solve_s",
                   "sb3_median_time_to_solve_s", "ratio_time_to_solve", "ratio_time_to_solve_vs_sb3_ex_eval",
                   "ratio_wall_all_seeds", "asyncdqn_median_charged_s", "sb3_median_charged_s",
                   "ratio_charged_all_seeds", "summary", "machine"]


def _run(system, wall, steps, solved, budget=50_000):
    return {"system": system, "wall_s": wall, "env_steps": steps, "budget_steps": budget, "solved": solved,
            "wall_ex_eval_s": wall - 1.0, "final_mean": 500.0 if solved else 100.0, "cpu_s": wall}


def test_the_plan_interleaves_the_three_systems_seed_by_seed_with_one_budget_for_sb3_and_tianshou():
    args = bench.parser().parse_args(["--sb3-steps", "40000", "--tianshou-threads", "2"])
    plan = bench.build_plan(args, {"asyncdqn": [0, 1], "sb3": [0, 1, 2], "tianshou": [5, 6]},
                            ["total_steps=40000"])
    assert [(p["system"], p["seed"]) for p in plan] == [
        ("asyncdqn", 0), ("sb3", 0), ("tianshou", 5), ("asyncdqn", 1), ("sb3", 1), ("tianshou", 6), ("sb3", 2)]
    sb3, ts = plan[1], plan[2]
    assert ts["sb3_steps"] == sb3["sb3_steps"] == 40_000
    assert ts["threads"] == 2 and sb3["threads"] == 1
    protocol = ("eval_every", "eval_episodes", "stop_at", "final_episodes")
    assert {k: ts[k] for k in protocol} == {k: sb3[k] for k in protocol} == {k: plan[0][k] for k in protocol} \
        == {"eval_every": 2500, "eval_episodes": 10, "stop_at": 475.0, "final_episodes": 20}


def test_without_tianshou_the_plan_is_the_two_system_plan():
    args = bench.parser().parse_args([])
    common = {"eval_every": 2500, "eval_episodes": 10, "stop_at": 475.0, "final_episodes": 20}
    assert bench.build_plan(args, {"asyncdqn": [0], "sb3": [0, 1]}, ["total_steps=50000"]) == [
        {"system": "asyncdqn", "seed": 0, "threads": 1, "overrides": ["total_steps=50000"], **common},
        {"system": "sb3", "seed": 0, "threads": 1, "sb3_steps": 50_000, **common},
        {"system": "sb3", "seed": 1, "threads": 1, "sb3_steps": 50_000, **common}]


def test_a_missing_tianshou_python_skips_the_system_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "TIANSHOU_PYTHON", tmp_path / "absent" / "python")
    python, note = bench.tianshou_python(None)
    assert python is None and "skipped" in note and "make bench-tianshou" in note
    monkeypatch.setattr(bench, "TIANSHOU_PYTHON", tmp_path)  # a folder is not an interpreter
    assert bench.tianshou_python(None)[0] is None
    present = tmp_path / "python"
    present.write_text("")
    monkeypatch.setattr(bench, "TIANSHOU_PYTHON", present)
    assert bench.tianshou_python(None) == (str(present), None)
    assert bench.tianshou_python("")[0] is None                      # '' turns it off
    with pytest.raises(SystemExit):                                   # a named python must exist
        bench.tianshou_python(str(tmp_path / "typo"))


def test_the_tianshou_summary_counts_unsolved_seeds_at_their_full_wall_time():
    rows = [_run("tianshou", 10.0, 20_000, True), _run("tianshou", 40.0, 50_000, False),
            _run("tianshou", 45.0, 50_000, False)]
    t = bench.summarise("tianshou", rows)
    assert t["median_charged_s"] == 40.0              # of 10, 40, 45: the unsolved at their full time
    assert t["median_time_to_solve_s"] == 10.0 and t["solved"] == 1 and t["runs"] == 3
    a = bench.summarise("asyncdqn", [_run("asyncdqn", 20.0, 30_000, True)])
    h = bench.versus(a, t, "_vs_tianshou")
    assert h["ratio_charged_all_seeds_vs_tianshou"] == 0.5
    assert h["ratio_time_to_solve_vs_tianshou"] == 2.0
    assert h["ratio_time_to_solve_vs_tianshou_ex_eval"] == 20.0 / 9.0
    assert h["tianshou_solved"] == "1/3"
    # a seed that stopped early and then failed was never timed over its budget: no charged ratio
    t_inf = bench.summarise("tianshou", rows + [_run("tianshou", 9.0, 20_000, False)] * 4)
    assert t_inf["median_charged_s"] == math.inf
    assert bench.versus(a, t_inf, "_vs_tianshou")["ratio_charged_all_seeds_vs_tianshou"] is None


def test_the_sb3_headline_keeps_its_names():
    a = bench.summarise("asyncdqn", [_run("asyncdqn", 20.0, 30_000, True)])
    s = bench.summarise("sb3", [_run("sb3", 10.0, 20_000, True)])
    assert list(bench.versus(a, s)) == [k for k in TWO_SYSTEM_KEYS if k not in ("benchmark", "quick", "summary",
                                                                                  "machine")]


@pytest.fixture
def calls(monkeypatch):
    """main() with SB3 'installed' and run_child answering from a table instead of training; the list of
    (system, seed, script, python) it was asked for."""
    calls = []
    real_find_spec = bench.importlib.util.find_spec
    monkeypatch.setattr(bench.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "stable_baselines3" else real_find_spec(name, *a))

    def run_child(script, spec, timeout=None, python=None):
        calls.append((spec["system"], spec["seed"], script.name, python))
        wall = {"asyncdqn": 10.0, "sb3": 20.0, "tianshou": 40.0}[spec["system"]]
        return {"system": spec["system"], "seed": spec["seed"], "wall_s": wall, "eval_s": 1.0,
                "wall_ex_eval_s": wall - 1.0, "env_steps": 20_000, "stop_step": 20_000, "updates": 100,
                "budget_steps": spec.get("sb3_steps", 50_000), "final_mean": 500.0, "cpu_s": wall}

    monkeypatch.setattr(bench, "run_child", run_child)
    return calls


@pytest.fixture
def python(tmp_path):
    """A file that stands for another venv's python (run_child is faked: it never runs)."""
    path = tmp_path / "python"
    path.write_text("")
    return path


def _main(monkeypatch, capsys, *argv):
    monkeypatch.setattr(sys, "argv", ["cartpole_vs_sb3.py", *argv])
    rc = bench.main()
    out = capsys.readouterr().out
    return rc, out, json.loads(out.strip().splitlines()[-1]) if rc == 0 else None


def test_without_tianshou_main_prints_a_note_and_its_old_output(tmp_path, monkeypatch, capsys, calls):
    monkeypatch.setattr(bench, "TIANSHOU_PYTHON", tmp_path / "absent")
    rc, out, line = _main(monkeypatch, capsys, "--seeds", "0,1", "--sb3-seeds", "0,1")
    assert rc == 0 and "tianshou: skipped" in out
    assert [c[0] for c in calls] == ["asyncdqn", "sb3", "asyncdqn", "sb3"]
    assert list(line) == TWO_SYSTEM_KEYS
    assert [s["system"] for s in line["summary"]] == ["asyncdqn", "sb3"]
    assert not [ln for ln in out.splitlines() if "tianshou" in ln and not ln.startswith("tianshou: skipped")]


def test_with_tianshou_main_runs_it_under_its_python_and_reports_the_ratio(monkeypatch, capsys, calls, python):
    rc, out, line = _main(monkeypatch, capsys, "--seeds", "0", "--sb3-seeds", "0", "--tianshou-seeds", "0,1",
                          "--tianshou-python", str(python))
    assert rc == 0
    assert calls == [("asyncdqn", 0, "cartpole_vs_sb3.py", None), ("sb3", 0, "cartpole_vs_sb3.py", None),
                     ("tianshou", 0, "tianshou_cartpole.py", str(python)),
                     ("tianshou", 1, "tianshou_cartpole.py", str(python))]
    assert [s["system"] for s in line["summary"]] == ["asyncdqn", "sb3", "tianshou"]
    assert line["tianshou_solved"] == "2/2" and line["ratio_time_to_solve_vs_tianshou"] == 0.25
    assert line["ratio_time_to_solve"] == 0.5                        # the SB3 ratio is still asyncdqn / SB3
    assert "asyncdqn / tianshou median time-to-solve: 0.250" in out
    assert list(line)[:len(TWO_SYSTEM_KEYS) - 2] == TWO_SYSTEM_KEYS[:-2]  # the old keys first, in their order


def test_a_budget_tianshou_cannot_split_into_eval_epochs_stops_before_any_run(monkeypatch, capsys, calls, python):
    rc, out, _ = _main(monkeypatch, capsys, "--sb3-steps", "51000", "--tianshou-python", str(python))
    assert rc == 2 and "multiple of the eval interval" in out and calls == []
    assert ts_bench.budget_problem(50_000, 2500) is None
    assert ts_bench.budget_problem(3000, 1000) is None
    assert ts_bench.budget_problem(25_050, 2505) is not None       # not whole collection steps of 10


def test_the_tianshou_child_is_standalone():
    """Its top level imports the standard library only (the parent imports it into the project's venv), and
    nowhere asyncdqn (it runs under .venv-tianshou's python)."""
    tree = ast.parse((BENCH / "tianshou_cartpole.py").read_text())
    top = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    top |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
    assert top <= set(sys.stdlib_module_names) | {"__future__"}
    everywhere = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                  for alias in node.names}
    everywhere |= {node.module.split(".")[0] for node in ast.walk(tree)
                   if isinstance(node, ast.ImportFrom) and node.module}
    assert "asyncdqn" not in everywhere and "_common" not in everywhere and "tianshou" in everywhere
