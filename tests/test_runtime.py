"""The asyncio runtime: backpressure of the bounded queue, and whole tiny runs (they end by themselves,
leave no tasks behind, write their artifacts, are reproducible with max_lead = 0, and stop early on
demand). The step gate and the replay-ratio budget are tested in test_schedule.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import threading
import tomllib

import gymnasium as gym
import numpy as np
import pytest
import torch

from asyncdqn import checkpoint, config, runtime
from asyncdqn.collect.actor import Actor, EnvFaults, InferenceBatcher
from asyncdqn.evaluation import EvalResult
from asyncdqn.metrics import plot_learning_curve, read_records, to_json
from asyncdqn.nets import EnsembleQNet, GreedyPolicy
from asyncdqn.schedule import StepGate
from asyncdqn.transitions import ChunkBuilder
from conftest import tiny_config, tiny_values


# -------------------------------------------------------------------------------------- backpressure


@pytest.mark.timeout(30)
async def test_full_queue_blocks_actors_and_a_consumer_releases_them():
    n_actors, k, rows, maxsize = 3, 2, 8, 2
    net = EnsembleQNet(k, 4, 2, (8,)).reset_parameters(0).requires_grad_(False)
    batcher = InferenceBatcher(net, n_actors, (4,), np.dtype(np.float32))
    gate = StepGate(10**9)
    queue: asyncio.Queue = asyncio.Queue(maxsize=maxsize)
    actors = [Actor(i, lambda: gym.make("CartPole-v1"), i,
                    ChunkBuilder(rows, (4,), np.dtype(np.float32), 0.99, 1, net=i % k), np.random.default_rng(i))
              for i in range(n_actors)]
    faults = EnvFaults(0, 0.0, lambda rec: None)
    tasks = [asyncio.create_task(batcher.serve())]
    tasks += [asyncio.create_task(a.run(batcher, gate, queue, lambda i: 0.5, lambda *a: None, faults))
              for a in actors]
    consumed: list = []

    async def consume() -> None:
        while True:
            consumed.append(await queue.get())

    try:
        await asyncio.sleep(0.3)
        assert queue.qsize() == maxsize
        t1 = gate.steps
        await asyncio.sleep(0.2)
        t2 = gate.steps
        assert t1 == t2, "actors kept stepping although the queue was full"
        # every step taken sits in a queued chunk or in the one chunk each blocked actor waits to put:
        # at most (maxsize + actors) chunks of at most rows - 1 new steps
        assert 0 < t1 <= (maxsize + n_actors) * (rows - 1)
        assert batcher.forwards > 0 and batcher.requests >= t1

        tasks.append(asyncio.create_task(consume()))
        await asyncio.sleep(0.2)
        assert gate.steps > t2 and len(consumed) > maxsize + n_actors
        assert sum(c.steps for c in consumed) <= gate.steps
    finally:
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for a in actors:
            a.env.close()
    assert all(t.done() and t.cancelled() for t in tasks)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)


# ------------------------------------------------------------------------------------ whole tiny runs


def test_run_writes_config_metrics_checkpoint_summary_and_curve(trained_run):
    cfg, out, summary = trained_run.cfg, trained_run.out, trained_run.summary

    toml = tomllib.loads((out / "config.toml").read_text())
    assert config.from_dict(toml) == cfg
    # the resolved config lists every field, not only the ones that differ from the defaults
    assert set(toml) == {f.name for f in dataclasses.fields(config.RunConfig)}
    for section, cls in config.SECTION_TYPES.items():
        assert set(toml[section]) == {f.name for f in dataclasses.fields(cls)}, section
    assert toml["learner"]["hidden"] == [16, 16] and toml["total_steps"] == 1100

    records = read_records(out / "metrics.jsonl")
    kinds = {r["kind"] for r in records}
    assert {"episode", "train", "merge", "final_eval"} <= kinds
    assert "eval" not in kinds                                       # eval.every = 0
    merges = [r for r in records if r["kind"] == "merge"]
    assert [m["updates"] for m in merges] == list(range(25, 226, 25))  # merge.every 25, 225 updates
    for m in merges:
        assert len(m["weights"]) == 2 and sum(m["weights"]) == pytest.approx(1.0)
    episodes = [r for r in records if r["kind"] == "episode"]
    assert {r["actor"] for r in episodes} == {0, 1, 2}
    assert all(r["net"] == r["actor"] % 2 for r in episodes)        # actor i acts with net i mod K
    assert all(r["return"] == r["length"] for r in episodes)        # CartPole: reward 1 per step
    trains = [r for r in records if r["kind"] == "train"]
    assert len(trains) >= 3 and all(t["env_steps"] >= 250 for t in trains)

    ckpt = checkpoint.load(out)
    assert ckpt["counters"]["env_steps"] == summary["env_steps"]
    assert ckpt["counters"]["updates"] == summary["updates"]
    assert ckpt["env"]["obs_shape"] == [4] and ckpt["env"]["n_actions"] == 2
    assert set(ckpt["online"]) == {k for k, _ in EnsembleQNet(2, 4, 2, (16, 16)).named_parameters()}
    assert ckpt["online"]["head.weight"].shape == (2, 16, 2)
    policy = checkpoint.policy_from(ckpt)
    assert isinstance(policy, GreedyPolicy)
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    env.close()
    action = policy(obs[None])
    assert action.shape == (1,) and int(action[0]) in (0, 1)
    q = policy.q_values(np.stack([obs, -obs]))
    assert q.shape == (2, 2) and np.isfinite(q).all()

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in ("env_steps", "updates", "wall_s", "eval_return_mean", "eval_return_std", "merge_weights"):
        assert key in on_disk
    assert len(on_disk["merge_weights"]) == 2 and sum(on_disk["merge_weights"]) == pytest.approx(1.0)
    assert on_disk["merge_weights"] == pytest.approx(policy.w_K.reshape(-1).tolist())
    assert on_disk["eval_episodes"] == 2 and on_disk["env"] == "CartPole-v1"
    final = [r for r in records if r["kind"] == "final_eval"]
    assert len(final) == 1 and on_disk["eval_return_mean"] == pytest.approx(final[0]["mean"])
    assert on_disk["eval_return_std"] == pytest.approx(final[0]["std"])
    assert on_disk["stopped_early"] is False and on_disk["replay_bytes_per_row"] == 43

    png = (out / "learning_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_updates_honour_the_replay_ratio(trained_run):
    cfg, summary = trained_run.cfg, trained_run.summary
    assert summary["env_steps"] == cfg.total_steps == 1100
    assert summary["updates"] == int(cfg.learner.replay_ratio * (cfg.total_steps - cfg.learner.learning_starts))
    assert summary["updates"] == 225 and summary["skipped_updates"] == 0


@pytest.mark.timeout(60)
async def test_run_ends_by_itself_and_leaves_no_tasks_or_threads(tmp_path):
    threads_before = set(threading.enumerate())
    cfg = tiny_config(total_steps=700, eval={"every": 300, "episodes": 1})
    summary = await asyncio.wait_for(runtime.run(cfg, tmp_path), 45)
    assert summary["env_steps"] == 700 and summary["updates"] == 125
    assert asyncio.all_tasks() == {asyncio.current_task()}
    extra = [t for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    # only the event loop's default executor (asyncio.to_thread, aiofiles) may keep idle workers
    assert all(t.name.startswith("asyncio_") for t in extra), [t.name for t in extra]
    records = read_records(tmp_path / "metrics.jsonl")
    evals = [r["env_steps"] for r in records if r["kind"] == "eval"]
    assert 1 <= len(evals) <= 2 and all(s >= 300 for s in evals)


@pytest.mark.timeout(60)
async def test_run_finishes_when_the_last_update_needs_exactly_total_steps(tmp_path):
    # replay_ratio 0.7 over 30 steps: int(0.7 * 30) = 21 updates, and 21 / 0.7 = 30.000000000000004 in
    # floating point. The learner must still make its last update at step 230 = total_steps instead of
    # waiting for step 231, which the actors are never allowed to take.
    cfg = tiny_config(total_steps=230, actors={"num_actors": 1},
                      learner={"replay_ratio": 0.7, "learning_starts": 200, "max_lead": 0})
    try:
        summary = await asyncio.wait_for(runtime.run(cfg, tmp_path), 8)   # ~0.3 s when it works
    except TimeoutError:
        pytest.fail("runtime.run hung: the learner waits for more env steps than budget() lets actors take")
    assert summary["env_steps"] == 230 and summary["updates"] == 21


def online_params(out) -> dict:
    return checkpoint.load(out)["online"]


@pytest.mark.timeout(60)
async def test_seeded_lockstep_runs_are_bit_identical(tmp_path):
    def cfg(seed: int):
        return tiny_config(seed=seed, total_steps=700, actors={"num_actors": 1},
                           learner={"max_lead": 0}, merge={"every": 10})

    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        summary = await runtime.run(cfg(seed), tmp_path / name)
        assert summary["updates"] == 125
        runs[name] = online_params(tmp_path / name)
    a, b, c = runs["a"], runs["b"], runs["c"]
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)
    records = [read_records(tmp_path / n / "metrics.jsonl") for n in "ab"]
    returns = [[r["return"] for r in recs if r["kind"] == "episode"] for recs in records]
    assert returns[0] == returns[1] and len(returns[0]) > 10


@pytest.mark.timeout(60)
async def test_early_stop_at_an_evaluation_target(tmp_path):
    cfg = tiny_config(total_steps=20_000, eval={"every": 300, "episodes": 1, "stop_at": 1.0})
    summary = await asyncio.wait_for(runtime.run(cfg, tmp_path), 45)
    assert summary["stopped_early"] is True
    assert 300 <= summary["env_steps"] < 20_000
    assert summary["evaluated_policy"] == "best periodic eval"
    evals = [r for r in read_records(tmp_path / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals and evals[0]["mean"] >= 1.0
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.timeout(60)
async def test_early_stop_also_works_without_learning(tmp_path):
    # replay_ratio 0 (collect only): the learner makes no update and just waits for the budget. An eval
    # reaching stop_at must still end the run, as summary["stopped_early"] then claims.
    # The actors keep collecting while the evaluation runs in its thread, so the budget is far larger
    # than what they can take in that time (3,000 steps once finished first: a flaky test).
    cfg = tiny_config(total_steps=500_000, learner={"replay_ratio": 0.0},
                      eval={"every": 200, "episodes": 1, "stop_at": 1.0})
    summary = await asyncio.wait_for(runtime.run(cfg, tmp_path), 45)
    assert summary["stopped_early"] is True and summary["updates"] == 0
    assert summary["env_steps"] < 250_000, f"ran {summary['env_steps']} steps after stopping at step 200"


@pytest.mark.timeout(60)
async def test_external_stop_event_ends_the_run(tmp_path):
    stop = asyncio.Event()
    seen = []

    def progress(p: runtime.Progress) -> None:
        seen.append(p.env_steps)
        if p.env_steps >= 300:
            stop.set()

    cfg = tiny_config(total_steps=50_000)
    summary = await asyncio.wait_for(runtime.run(cfg, tmp_path, progress=progress, stop=stop), 45)
    assert summary["stopped_early"] is True and summary["env_steps"] < 50_000
    assert seen and seen[-1] >= 300
    assert checkpoint.load(tmp_path)["counters"]["env_steps"] == summary["env_steps"]
    assert asyncio.all_tasks() == {asyncio.current_task()}


def test_learning_curve_of_a_run_without_finished_episodes(tmp_path):
    # A short run on an env with long episodes (Acrobot: 500 steps) may finish no episode and hold no eval:
    # the plot must still be written, without a matplotlib warning (an error under this suite's filters,
    # and a stray line on the CLI's stderr otherwise).
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(to_json({"kind": "train", "env_steps": 200, "loss": None}) + "\n")
    plot_learning_curve(metrics, tmp_path / "curve.png", "empty")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiny_values_merge_is_deep():
    # guard for the helper the tests above rely on
    v = tiny_values(learner={"max_lead": 0})
    assert v["learner"]["max_lead"] == 0 and v["learner"]["hidden"] == [16, 16]
    assert math.isinf(tiny_config().eval.stop_at)


@pytest.mark.parametrize("dueling", [False, True])
def test_numpy_forward_matches_torch_and_follows_in_place_copies(dueling):
    from asyncdqn.nets import copy_params_, numpy_forward

    net = EnsembleQNet(3, 5, 4, (16, 8), dueling).reset_parameters(0).requires_grad_(False)
    fwd = numpy_forward(net)
    x = np.random.default_rng(0).normal(size=(3, 7, 5)).astype(np.float32)
    np.testing.assert_allclose(fwd(x), net(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)
    other = EnsembleQNet(3, 5, 4, (16, 8), dueling).reset_parameters(1)
    copy_params_(net, other)  # the actors' copy is refreshed in place after learner calls
    np.testing.assert_allclose(fwd(x), other(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(60)
async def test_a_stop_needs_a_confirming_evaluation(tmp_path, monkeypatch):
    # Scripted evaluations: the first periodic eval reaches stop_at but its confirmation does not, so the
    # run goes on; the next one is confirmed and the run stops. The kept policy is ranked by the mean of
    # all 10 + 20 episodes.
    script = iter([500.0, 100.0, 480.0, 490.0])
    calls = []

    def fake_evaluate(make_env, policy, episodes, seed, parallel=10):
        if len(calls) >= 4:  # the final evaluation
            return EvalResult(np.full(episodes, 1.0), np.ones(episodes, dtype=np.int64))
        calls.append((episodes, seed))
        return EvalResult(np.full(episodes, next(script)), np.ones(episodes, dtype=np.int64))

    monkeypatch.setattr(runtime, "evaluate", fake_evaluate)
    cfg = tiny_config(total_steps=50_000, eval={"every": 300, "episodes": 10, "stop_at": 475.0,
                                                "confirm_episodes": 20})
    summary = await asyncio.wait_for(runtime.run(cfg, tmp_path), 45)
    assert summary["stopped_early"] and summary["env_steps"] < 50_000
    assert [c[0] for c in calls] == [10, 20, 10, 20]
    assert calls[1][1] == calls[0][1] + 5_000 and calls[2][1] != calls[0][1]  # other starts each time
    confirms = [r for r in read_records(tmp_path / "metrics.jsonl") if r["kind"] == "eval_confirm"]
    assert [c["confirmed"] for c in confirms] == [False, True]
    assert summary["best_periodic_eval"] == pytest.approx((10 * 480 + 20 * 490) / 30)
    # 500 then 100 ranks the first policy at 233.3: below the confirmed one
