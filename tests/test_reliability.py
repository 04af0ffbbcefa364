"""Reliability: exact resume, SIGINT/SIGTERM, env faults, diverging updates, and a stalled learner.

The hostile-input fuzzing and the SIGKILL-during-write tests live in test_fuzz.py and test_crash_safety.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from asyncdqn import checkpoint, config, runtime
from asyncdqn.cli import main
from asyncdqn.collect.local import LocalCollection
from asyncdqn.config import LearnerConfig, MergeConfig
from asyncdqn.learner import Learner
from asyncdqn.metrics import MetricsWriter, read_records
from asyncdqn.transitions import Batch
from asyncdqn.transitions import ChunkBuilder
from conftest import tiny_sets, tiny_values

TESTS = Path(__file__).parent


def lockstep_config(**extra) -> config.RunConfig:
    values = tiny_values(seed=3, total_steps=900, actors={"num_actors": 1}, learner={"max_lead": 0},
                         merge={"every": 10})
    values.update(extra)
    return config.from_dict(values)


def assert_same(a, b, path: str = "") -> None:
    """Deep equality of checkpoint trees: tensors bit for bit, everything else with ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (path, set(a) ^ set(b))
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and a != a:
        assert isinstance(b, float) and b != b, (path, a, b)   # NaN (no evaluation yet) on both sides
    else:
        assert a == b, (path, a, b)


def without_wall_clock(ckpt: dict) -> dict:
    resume = dict(ckpt["resume"])
    resume["run"] = {k: v for k, v in resume["run"].items() if k != "wall_s"}
    return {"policy": ckpt["policy"], "online": ckpt["online"], "target": ckpt["target"],
            "counters": ckpt["counters"], "resume": resume}


# ---------------------------------------------------------------------------------------- exact resume


# the merge's other scores and targets keep state of their own: held-out rows, stamped windows, the
# averaged target's ring, population learning rates and their RNG
MERGE_VARIANTS = {
    "default": {},
    "heldout_averaged_population": {"merge": {"every": 10, "score": "heldout_td", "heldout_every": 3,
                                              "space": "averaged", "snapshots": 3, "since_merge": True},
                                    "population": {"lrs": [1e-4, 3e-3], "explore": True}},
    "greedy_copy_best": {"merge": {"every": 10, "score": "greedy", "score_episodes": 1, "tau": 0.0},
                         "eval": {"every": 300, "episodes": 2, "members": True, "final_episodes": 2}},
    # vector actors (issue 16): a SyncVectorEnv's sub-envs replay their episodes; the native one's arrays
    "vector_sync": {"actors": {"num_actors": 4, "envs_per_actor": 4, "vector": "sync", "chunk_rows": 16}},
    "vector_native": {"actors": {"num_actors": 4, "envs_per_actor": 2, "vector": "native", "chunk_rows": 16}},
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("where, variant", [("after_a_learner_call", "default"),
                                            ("in_the_middle_of_collecting", "default"),
                                            ("after_a_learner_call", "heldout_averaged_population"),
                                            ("in_the_middle_of_collecting", "greedy_copy_best"),
                                            ("in_the_middle_of_collecting", "vector_sync"),
                                            ("after_a_learner_call", "vector_native")])
async def test_interrupted_then_resumed_run_equals_an_uninterrupted_run(tmp_path, monkeypatch, where, variant):
    values = tiny_values(seed=3, total_steps=900, actors={"num_actors": 1}, learner={"max_lead": 0},
                         merge={"every": 10})
    values.update(MERGE_VARIANTS[variant])
    cfg = config.from_dict(values)
    await runtime.run(cfg, tmp_path / "whole")

    stop, interrupt = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    if where == "after_a_learner_call":
        calls, original_run = [], Learner.run

        def run_then_interrupt(self, batches, scores):
            result = original_run(self, batches, scores)
            calls.append(1)
            if len(calls) == 6:  # this runs in the learner thread: hand the events to the loop
                loop.call_soon_threadsafe(interrupt.set)
                loop.call_soon_threadsafe(stop.set)
            return result

        monkeypatch.setattr(Learner, "run", run_then_interrupt)
    else:
        episodes, original_emit = [], MetricsWriter.emit

        def emit_then_interrupt(self, record):
            original_emit(self, record)
            if record["kind"] == "episode":
                episodes.append(1)
                if len(episodes) == 25:  # inside an actor's step, while the learner waits for steps
                    interrupt.set()
                    stop.set()

        monkeypatch.setattr(MetricsWriter, "emit", emit_then_interrupt)
    first = await runtime.run(cfg, tmp_path / "split", stop=stop, interrupt=interrupt)
    monkeypatch.undo()
    assert first["interrupted"] and first["eval_return_mean"] is None
    assert cfg.learner.learning_starts < first["env_steps"] < cfg.total_steps

    resumed = await runtime.run(cfg, tmp_path / "split", resume=checkpoint.load(tmp_path / "split")["resume"])
    assert resumed["resumed"] and not resumed["interrupted"] and resumed["env_steps"] == cfg.total_steps

    whole, split = checkpoint.load(tmp_path / "whole"), checkpoint.load(tmp_path / "split")
    # parameters, target, optimizer, replay rows and RNGs, actor state, merge scores, counters: all equal
    assert_same(without_wall_clock(whole), without_wall_clock(split))
    returns = [[r["return"] for r in read_records(d / "metrics.jsonl") if r["kind"] == "episode"]
               for d in (tmp_path / "whole", tmp_path / "split")]
    assert returns[0] == returns[1] and len(returns[0]) > 30


@pytest.mark.timeout(60)
async def test_resume_without_the_replay_pool_refills_it_and_finishes(tmp_path, monkeypatch):
    # 64-row chunks against 4 steps per update: after the resume the actor parks long before its chunk is
    # full, so the learner must let it fill one (this hung whenever the saved chunk was less than 60 rows).
    cfg = lockstep_config(checkpoint_replay=False, actors={"num_actors": 1, "chunk_rows": 64})
    stop, interrupt = asyncio.Event(), asyncio.Event()
    published = LocalCollection.published

    def interrupt_at_40(self, updates: int) -> None:
        # on the loop after each learner call: a fixed point of the run, whatever the machine's speed
        # (the progress display's 0.25 s ticks could miss a run that ends sooner)
        published(self, updates)
        if updates >= 40:
            interrupt.set()
            stop.set()

    monkeypatch.setattr(LocalCollection, "published", interrupt_at_40)
    first = await runtime.run(cfg, tmp_path, stop=stop, interrupt=interrupt)
    monkeypatch.undo()
    resume = checkpoint.load(tmp_path)["resume"]
    assert "rows" not in resume["replay"]                 # the pool was not saved
    resumed = await runtime.run(cfg, tmp_path, resume=resume)
    assert first["interrupted"] and resumed["env_steps"] == cfg.total_steps
    assert resumed["updates"] == int(0.25 * (900 - 200))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("max_lead", [0, 8])
async def test_learning_starts_below_one_chunk_still_trains(tmp_path, max_lead):
    # The learner may sample after 1 step, but the first chunk reaches the pool only after 64: it must let
    # the actors fill it instead of waiting for rows that never come.
    cfg = config.from_dict(tiny_values(seed=5, total_steps=400, actors={"num_actors": 2, "chunk_rows": 64},
                                       learner={"max_lead": max_lead, "learning_starts": 1}))
    summary = await runtime.run(cfg, tmp_path)
    assert summary["env_steps"] == 400 and summary["updates"] == int(0.25 * 399)


# ---------------------------------------------------------------------------------- signals (the CLI)


def start_training(out: Path, *extra: str) -> subprocess.Popen:
    sets = tiny_sets(10**7) + ["checkpoint_every=16", *extra]
    cmd = [sys.executable, "-m", "asyncdqn.cli", "train", "cartpole", "--out", str(out), "--quiet",
           *[a for s in sets for a in ("--set", s)]]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(proc: subprocess.Popen, out: Path, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while not (out / checkpoint.FILENAME).exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.05)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_checkpoint_exits_130_and_the_run_resumes(tmp_path, capsys, sig):
    out = tmp_path / "run"
    proc = start_training(out)
    wait_for_checkpoint(proc, out)
    time.sleep(0.3)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines() == [
        f"asyncdqn: {sig.name}: stopping the actors and saving a checkpoint ({sig.name} again to abort)"]
    assert f"continue with: asyncdqn train --resume {out}" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    ckpt = checkpoint.load(out)                            # the final checkpoint loads
    steps = ckpt["resume"]["run"]["env_steps"]
    assert steps == summary["env_steps"] and any(r["kind"] == "episode" for r in read_records(out / "metrics.jsonl"))

    rc = main(["train", "--resume", str(out), "--quiet", "--set", f"total_steps={steps + 300}"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["env_steps"] == steps + 300


@pytest.mark.timeout(120)
def test_second_sigint_aborts_at_once_and_the_last_checkpoint_stays_loadable(tmp_path):
    out = tmp_path / "run"
    proc = start_training(out, "checkpoint_every=8")
    wait_for_checkpoint(proc, out)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    checkpoint.load(out)                                   # no exception: intact


def test_resume_refuses_changes_and_finished_runs(trained_run, capsys, tmp_path):
    rc = main(["train", "--resume", str(trained_run.out), "--set", "lr=0.5"])
    assert rc == 2 and "'lr' cannot change in a resumed run" in capsys.readouterr().err
    rc = main(["train", "--resume", str(trained_run.out)])
    err = capsys.readouterr().err
    assert rc == 2 and "extend it with --set total_steps=N" in err and len(err.splitlines()) == 1
    rc = main(["train", "--resume", str(tmp_path)])
    assert rc == 2 and "checkpoint not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- env faults


def test_builder_drops_only_the_partial_episode():
    b = ChunkBuilder(16, (1,), np.dtype(np.float32), 0.9, 1, net=0)
    b.observe(np.array([0.0]))
    b.acted(0, 1.0)
    b.final(np.array([1.0]), terminated=True)         # episode 1: rows 0 (step) and 1 (final)
    b.observe(np.array([10.0]))
    b.acted(1, 1.0)
    b.observe(np.array([11.0]))
    b.acted(1, 1.0)                                   # episode 2 in progress: rows 2, 3
    assert b.size == 4 and b.new_steps == 3
    b.drop_partial_episode()
    assert b.size == 2 and b.new_steps == 1
    chunk = b.flush()
    assert chunk.valid_R.tolist() == [True, False] and chunk.steps == 1 and chunk.obs_RO[:, 0].tolist() == [0, 1]


@pytest.mark.timeout(60)
async def test_failing_envs_are_restarted_and_the_run_completes(tmp_path):
    cfg = config.from_dict(tiny_values(faults={"env_error_rate": 0.01, "restart_backoff_s": 0.001}))
    summary = await runtime.run(cfg, tmp_path)
    faults = [r for r in read_records(tmp_path / "metrics.jsonl") if r["kind"] == "env_fault"]
    assert summary["env_steps"] == cfg.total_steps and summary["updates"] == 225
    assert summary["env_faults"] == len(faults) >= 5          # ~1% of 1100 steps and the resets
    assert all("injected fault" in f["error"] for f in faults)


def test_envs_that_keep_failing_stop_the_run_with_one_line(tmp_path, capsys):
    rc = main(["train", "cartpole", "--out", str(tmp_path), "--quiet",
               *[a for s in tiny_sets(2000) + ["faults.env_error_rate=0.97", "faults.max_env_restarts=3",
                                               "faults.restart_backoff_s=0.001"] for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert "failed 4 times in a row (faults.max_env_restarts = 3)" in err and "injected fault" in err


# ----------------------------------------------------------------------------------------- numerics


def tiny_batch(k: int, ret: float) -> Batch:
    rng = np.random.default_rng(0)
    b = 4
    return Batch(rng.normal(size=(k, b, 3)).astype(np.float32), np.zeros((k, b), np.int64),
                 np.full((k, b), ret, np.float32), np.full((k, b), 0.9, np.float32),
                 rng.normal(size=(k, b, 3)).astype(np.float32), np.ones((k, b), np.float32),
                 np.zeros((k, b), np.int64), np.zeros((k, b), np.int64))


@pytest.mark.parametrize("ret, q_limit", [(float("nan"), 1e6), (float("inf"), 1e6), (1.0, 1e-9)])
def test_bad_updates_are_skipped_counted_and_leave_the_nets_untouched(ret, q_limit):
    learner = Learner(LearnerConfig(num_nets=2, hidden=(8,), q_limit=q_limit, max_bad_updates=2),
                      MergeConfig(every=1000), 3, 2, seed=0)
    before = [p.detach().clone() for p in learner.online.parameters()]
    stats, _ = learner.run([tiny_batch(2, ret)], np.zeros(2))
    assert stats[0].skipped and learner.skipped == 1 and learner.updates == 0 and not learner.diverged
    assert all(torch.equal(a, b) for a, b in zip(before, learner.online.parameters()))
    assert np.isfinite(stats[0].td_abs_KB).all()       # safe to use as replay priorities
    stats, _ = learner.run([tiny_batch(2, ret)] * 3, np.zeros(2))
    assert learner.diverged and len(stats) == 1        # stops at max_bad_updates = 2 in a row
    good = Learner(LearnerConfig(num_nets=2, hidden=(8,)), MergeConfig(every=1000), 3, 2, seed=0)
    assert not good.run([tiny_batch(2, 1.0)], np.zeros(2))[0][0].skipped and good.updates == 1


def test_nan_rewards_stop_the_run_with_one_line(tmp_path, capsys):
    rc = main(["train", "cartpole", "--env-factory", "reliability_envs:nan_reward_cartpole", "--out",
               str(tmp_path), "--quiet",
               *[a for s in tiny_sets(2000) + ["learner.max_bad_updates=20"] for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert "20 updates in a row had a NaN/inf loss" in err and "no checkpoint was written" in err


def test_diverging_q_values_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, capsys):
    sets = tiny_sets(3000) + ["learner.lr=0.5", "learner.q_limit=1e4", "learner.max_bad_updates=40",
                              "checkpoint_every=8"]
    rc = main(["train", "cartpole", "--env-factory", "reliability_envs:exploding_cartpole", "--out", str(tmp_path),
               "--quiet", *[a for s in sets for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert f"the last good checkpoint is {tmp_path / 'checkpoint.pt'}" in err
    ckpt = checkpoint.load(tmp_path)
    assert all(torch.isfinite(v).all() for v in ckpt["online"].values())
    # Saved before the final streak of 40 bad updates: its learner was not in the middle of it. (Its total
    # skipped count may exceed 40: with max_lead > 0 the run is not reproducible, and scattered bad updates
    # before the streak count too.)
    assert ckpt["resume"]["learner"]["bad_in_a_row"] < 40


# ------------------------------------------------------------------------------------------ load


@pytest.mark.timeout(60)
async def test_a_stalled_learner_keeps_memory_bounded(tmp_path, monkeypatch):
    """The learner thread blocks; actors may run far ahead (max_lead huge), so only the bounded queue and
    the preallocated replay ring stand between them and unbounded memory."""
    release = threading.Event()
    original = Learner.run

    def stalled(self, batches, scores):
        release.wait(30)
        return original(self, batches, scores)

    monkeypatch.setattr(Learner, "run", stalled)
    cfg = config.from_dict(tiny_values(total_steps=10**7, learner={"max_lead": 10**7},
                                       replay={"capacity": 2000}, log_every=10**6))
    stop = asyncio.Event()
    seen: list[runtime.Progress] = []
    task = asyncio.create_task(runtime.run(cfg, tmp_path, progress=seen.append, stop=stop))
    traced: list[int] = []  # traced bytes, sampled every 20 ms once tracing starts

    async def until_steps(n: int) -> int:
        while not seen or seen[-1].env_steps < n:
            if tracemalloc.is_tracing():
                traced.append(tracemalloc.get_traced_memory()[0])
            await asyncio.sleep(0.02)
        return seen[-1].env_steps

    try:
        await asyncio.wait_for(until_steps(cfg.replay.capacity), 30)   # the replay ring is full
        tracemalloc.start()
        steps_before = seen[-1].env_steps
        # another 30,000 steps (15 rings) with no update: anything kept per step would show as growth. The
        # metrics writer holds up to 0.1 s of queued episode records at any moment (it writes in batches),
        # which on a fast machine is thousands of steps' worth: compare the lowest samples at the start and
        # at the end, taken between two of its writes, not a single sample at each end.
        # Memory traced from `start` first climbs to what the run keeps alive at any moment (queued chunks and
        # records, env and builder buffers): the window starts once that has settled, 5,000 steps in.
        await asyncio.wait_for(until_steps(steps_before + 5_000), 30)
        first = len(traced)
        steps_after = await asyncio.wait_for(until_steps(steps_before + 35_000), 30)
        tracemalloc.stop()
        mem_before, mem_after = min(traced[first:first + 8]), min(traced[-8:])
        assert seen[-1].updates == 0                            # the learner really is stalled
        assert steps_after - steps_before >= 35_000 and len(traced) - first >= 16
        assert max(p.queue_depth for p in seen) <= cfg.actors.queue_chunks
        # keeping each 32-row chunk (~1.5 KB) would add ~1.4 MB over 30,000 steps, each episode record ~0.5 MB
        assert mem_after - mem_before < 100_000, mem_after - mem_before
    finally:
        stop.set()
        release.set()
        await asyncio.wait_for(task, 30)


# ---------------------------------------------------------------------------------- env worker processes


def worker_config(tmp_path: Path, **faults) -> config.RunConfig:
    values = tiny_values(seed=4, total_steps=1000, actors={"num_actors": 4, "env_workers": 2},
                         env={"id": "CartPole-v1", "factory": "reliability_envs:cartpole_worker_dies",
                              "kwargs": {"marker": str(tmp_path / "died"), "at": 40}},
                         faults={"restart_backoff_s": 0.0, **faults})
    return config.from_dict(values)


@pytest.mark.timeout(90)
async def test_a_worker_that_dies_is_replaced_and_the_run_completes(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    summary = await runtime.run(worker_config(tmp_path), tmp_path / "run")
    assert (tmp_path / "died").exists()  # the worker did die
    faults = [r for r in read_records(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "env_fault"]
    assert any("worker" in r for r in faults), faults  # the death is logged ...
    assert summary["env_steps"] == 1000 and summary["updates"] == int(0.25 * 800)  # ... and the run goes on


@pytest.mark.timeout(90)
def test_workers_that_keep_dying_stop_the_run_with_one_line(tmp_path):
    # A real process: stderr must hold the error line only (the deaths go to metrics.jsonl, not to a
    # logging warning per death).
    scenario = tmp_path / "dying.toml"
    cfg = worker_config(tmp_path, max_worker_restarts=2)
    scenario.write_text(config.to_toml(cfg).replace('at = 40', 'at = 40\nalways = true'))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "asyncdqn.cli", "train", str(scenario), "--out",
                           str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, env=env, timeout=80)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(err) == 1 and "env workers keep dying" in err[0], err
    deaths = [r for r in read_records(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "env_fault" and "worker" in r]
    assert len(deaths) >= 3, deaths


# ---------------------------------------------------------------------------------- frame-stack replay


def frames_config(**extra) -> config.RunConfig:
    return config.from_dict(tiny_values(
        seed=6, total_steps=900, env={"factory": "reliability_envs:stacked_tiny_frames"},
        actors={"num_actors": 1, "chunk_rows": 16}, replay={"capacity": 2000, "batch_size": 16, "frames": "stack"},
        learner={"max_lead": 0, "torso": "minatar", "num_nets": 2}, merge={"every": 10}, **extra))


@pytest.mark.timeout(90)
async def test_stacked_frames_train_in_a_frame_pool_and_resume_exactly(tmp_path):
    cfg = frames_config()
    whole = await runtime.run(cfg, tmp_path / "whole")
    assert whole["env_steps"] == 900 and whole["updates"] == int(0.25 * 700)
    # ~1 frame per transition: far below the 4-frame stack a row would hold
    assert whole["replay_bytes_per_row"] < 2 * 64 + 100

    stop, interrupt = asyncio.Event(), asyncio.Event()

    def progress(p: runtime.Progress) -> None:
        if p.updates >= 60:
            interrupt.set()
            stop.set()

    await runtime.run(cfg, tmp_path / "split", progress=progress, stop=stop, interrupt=interrupt)
    resume = checkpoint.load(tmp_path / "split")["resume"]
    assert "frames" in resume["replay"]
    await runtime.run(cfg, tmp_path / "split", resume=resume)
    a, b = (checkpoint.load(tmp_path / d) for d in ("whole", "split"))
    for key in a["online"]:
        assert torch.equal(a["online"][key], b["online"][key]), key


def test_stack_replay_refuses_flat_observations(tmp_path, capsys):
    rc = main(["train", "cartpole", "--out", str(tmp_path / "run"), "--quiet", "--set", 'replay.frames="stack"'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "replay.frames" in err[0], err
