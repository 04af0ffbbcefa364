"""The Ray backend: how actors are split over hosts, a host driven by hand (no Ray needed), a run on a local
Ray instance (resumed from a local run) whose host process is SIGKILLed mid-run, and the one-line errors of
`--backend ray`. CartPole to the scenario's threshold with `--backend ray` is a slow test."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from asyncdqn import checkpoint, config, runtime  # noqa: E402
from asyncdqn.cli import main  # noqa: E402
from asyncdqn.envs.make import env_kwargs, make_env, spec_of  # noqa: E402
from asyncdqn.errors import UserError  # noqa: E402
from asyncdqn.learner import Learner  # noqa: E402
from asyncdqn.metrics import read_records  # noqa: E402
from asyncdqn.collect.ray_host import ActorHost, host_groups  # noqa: E402
from asyncdqn.collect.ray_learner import step_share  # noqa: E402
from conftest import run_in_fresh_loop, tiny_config  # noqa: E402


def test_hosts_get_whole_groups_of_k_actors():
    assert host_groups(8, 4, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert host_groups(3, 2, 2) == [[0, 1], [2]]
    # 5 groups over 3 hosts: [0,1] [2,3] | [4,5] | [6,7] [8]; local index j keeps j mod K = i mod K
    assert host_groups(9, 2, 3) == [[0, 1, 2, 3], [4, 5], [6, 7, 8]]


def test_step_limit_is_split_in_proportion_to_actors_and_sums_to_the_limit():
    cum = [0, 4, 6, 9]  # hosts with 4, 2 and 3 actors
    assert [step_share(90, cum, h) for h in range(3)] == [40, 20, 30]
    for total in range(0, 50):
        assert sum(step_share(total, cum, h) for h in range(3)) == total


def _host(cfg, ids):
    env = make_env(cfg.env, env_kwargs(cfg, False))
    spec = spec_of(env)
    env.close()
    learner = Learner(cfg.learner, cfg.merge, spec.obs_shape, spec.n_actions, 0)
    seqs = np.random.SeedSequence(0).spawn(len(ids))
    return ActorHost(cfg, ids, seqs, spec, copy.deepcopy(learner.online)), learner


async def test_host_parks_at_its_limit_stamps_versions_and_returns_states_when_quiesced():
    cfg = tiny_config(backend={"kind": "ray", "hosts": 1})
    host, learner = _host(cfg, [0, 1, 2])
    await host.start(0, None, 0, 0)
    try:
        d = await host.pull(100, None, 0, 0, "settle")
        assert d.parked and d.steps == 100 and d.actor_states is None
        assert sum(c.steps for c in d.chunks) <= 100 and set(d.versions) == {0}
        # fresh weights with version 3: copied into the host's net, and later chunks carry 3
        zeros = [np.zeros_like(p.detach().numpy()) for p in learner.online.parameters()]
        d = await host.pull(400, zeros, 3, 0, "settle")
        assert all(float(p.abs().sum()) == 0 for p in host.acting.parameters())
        assert d.steps == 400 and d.chunks and d.versions[-1] == 3
        d = await host.pull(1000, None, 3, 0, "quiesce")  # no more steps: the limit is frozen where it is
        assert d.steps == 400 and d.parked and len(d.actor_states) == 3
        assert all(ep[0] in (0, 1, 2) and ep[1] == ep[0] % 2 for ep in d.episodes)
    finally:
        await host.stop()


# ------------------------------------------------------------------------------ a local Ray instance


@pytest.fixture
def local_ray():  # per test: a running Ray would be reused by every later run (`ray_learner.ray_session`)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False,
             logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.mark.timeout(180)
def test_a_resumed_run_on_ray_completes_though_a_host_is_killed_mid_run(local_ray, tmp_path):
    before = tiny_config()  # 1100 steps in this process, then resumed on Ray hosts up to 3000
    run_in_fresh_loop(runtime.run(before, tmp_path))
    resume = checkpoint.load(tmp_path)["resume"]
    cfg = tiny_config(total_steps=3000, backend={"kind": "ray", "hosts": 2, "max_restarts": 2})
    killed = []

    async def kill_a_host_mid_run() -> None:
        metrics = tmp_path / "metrics.jsonl"
        while not any(r["kind"] == "train" and r["env_steps"] > before.total_steps for r in read_records(metrics)):
            await asyncio.sleep(0.1)
        names = [n for n in ray.util.list_named_actors() if n.startswith("asyncdqn-host-1-")]
        pid = await ray.get_actor(names[0]).pid.remote()
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    async def both():
        killer = asyncio.ensure_future(kill_a_host_mid_run())
        try:
            return await runtime.run(cfg, tmp_path, resume=resume)
        finally:
            killer.cancel()

    summary = run_in_fresh_loop(both())
    assert killed, "the run ended before a host could be killed"
    assert summary["host_restarts"] == 1 and summary["env_steps"] == cfg.total_steps and summary["resumed"]
    assert summary["updates"] == int(cfg.learner.replay_ratio * (cfg.total_steps - cfg.learner.learning_starts))
    records = read_records(tmp_path / "metrics.jsonl")
    faults = [r for r in records if r["kind"] == "host_fault"]
    assert len(faults) == 1 and faults[0]["host"] == 1 and faults[0]["lost_actors"] == [2]
    train = [r for r in records if r["kind"] == "train"]
    steps = [r["env_steps"] for r in train]
    assert steps == sorted(steps)  # the hosts' steps continue the resumed count, never restart it
    lags = [r["policy_lag_updates_mean"] for r in train if r["env_steps"] > before.total_steps]
    assert lags and all(lag is None or lag >= 0 for lag in lags)
    assert summary["weight_broadcasts"] >= 1 and summary["chunk_bytes_per_step"] > 0


# ------------------------------------------------------------------------------ one-line errors


def test_unreachable_ray_address_is_one_line(capsys, tmp_path):
    rc = main(["train", "cartpole", "--quiet", "--out", str(tmp_path / "r"), "--ray-address", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "cannot reach the Ray cluster at 127.0.0.1:1" in err
    rc = main(["train", "cartpole", "--quiet", "--backend", "local", "--ray-address", "127.0.0.1:1"])
    assert rc == 2 and "--ray-address needs --backend ray" in capsys.readouterr().err


def test_backend_ray_without_ray_installed_says_how_to_install(capsys, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "ray" or m.startswith(("ray.", "asyncdqn.collect.ray_"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    rc = main(["train", "cartpole", "--quiet", "--out", str(tmp_path / "r"), "--backend", "ray"])
    err = capsys.readouterr().err
    assert rc == 2 and err == ("asyncdqn: error: --backend ray needs Ray: pip install 'asyncdqn[ray]' "
                               "(from a checkout: pip install -e '.[ray]')\n")
    assert not (tmp_path / "r").exists()


def test_backend_config_is_checked():
    with pytest.raises(UserError, match="backend.hosts must be <= 2"):
        tiny_config(backend={"kind": "ray", "hosts": 3})
    with pytest.raises(UserError, match="actors.env_workers must be 0"):
        tiny_config(actors={"env_workers": 1}, backend={"kind": "ray", "hosts": 1})


# ------------------------------------------------------------------------------ learning (slow)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cartpole_with_ray_reaches_the_scenarios_threshold(capsys, tmp_path):
    out = tmp_path / "cp"
    # The scenario's threshold and confirmation; twice its step budget, because with actors in other processes
    # the run is not reproducible (it interleaves by timing): seed 0 stopped at ~86k steps in one run here and
    # had not stopped at 100k in another, run beside other tests (the local backend stopped at ~47k).
    rc = main(["train", "cartpole", "--seed", "0", "--quiet", "--out", str(out), "--backend", "ray",
               "--set", "total_steps=200000"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    stop_at = config.load("cartpole").eval.stop_at
    assert summary["backend"] == "ray" and summary["stopped_early"]
    assert summary["best_periodic_eval"] >= stop_at
