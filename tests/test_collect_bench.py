"""benchmarks/collect.py: the interleaved rates, from hand-made 'train' records and raw-loop bursts."""

from __future__ import annotations

import pytest

from helpers.bench_scripts import load_benchmark

collect = load_benchmark("collect")


def test_bursts_inside_the_window_are_left_out_of_the_run_and_make_the_raw_rate():
    train = [{"env_steps": 1000, "wall_s": 1.0}, {"env_steps": 5000, "wall_s": 2.0},
             {"env_steps": 9000, "wall_s": 3.0}]
    bursts = [(0.5, 0.6, 999),     # before the window (start-up): not counted
              (1.2, 1.3, 1500),    # inside
              (2.5, 2.7, 1500),    # inside
              (2.95, 3.05, 999)]   # straddles the end: not counted
    ours, raw = collect.steady_rates(train, bursts)
    # The window is 2.0 s with 0.3 s of bursts: 8000 steps in 1.7 s; the raw loop made 3000 steps in 0.3 s.
    assert ours == pytest.approx(8000 / 1.7)
    assert raw == pytest.approx(3000 / 0.3)


def test_another_loops_bursts_are_left_out_of_the_run_but_not_counted_as_this_loops():
    train = [{"env_steps": 1000, "wall_s": 1.0}, {"env_steps": 9000, "wall_s": 3.0}]
    bursts = [(1.2, 1.3, 1500)]
    vector = [(1.3, 1.5, 64000), (3.5, 3.6, 64000)]  # the second lies after the window
    ours, raw = collect.steady_rates(train, bursts, vector)
    assert ours == pytest.approx(8000 / (2.0 - 0.1 - 0.2))  # both loops' bursts inside the window left out
    assert raw == pytest.approx(1500 / 0.1)
    ours_v, raw_v = collect.steady_rates(train, vector, bursts)
    assert ours_v == pytest.approx(ours) and raw_v == pytest.approx(64000 / 0.2)


def test_the_probe_times_the_vector_loop_of_the_given_width_after_the_single_env_burst():
    probe = collect.RawProbe(100, 0.1, 0, 0.0, width=8, vector_steps=160)
    calls, step = [], probe.vec.step
    probe.vec.step = lambda a: (calls.append(len(a)), step(a))[1]
    probe.burst()
    assert sum(calls) == 160 and set(calls) == {8}
    (a, b, n), = probe.bursts
    (c, d, m), = probe.vector_bursts
    assert n == 100 and m == 160 and a < b <= c < d


def test_without_bursts_the_raw_rate_is_none_and_the_run_rate_is_plain():
    train = [{"env_steps": 0, "wall_s": 0.5}, {"env_steps": 2000, "wall_s": 1.5}]
    assert collect.steady_rates(train, []) == (pytest.approx(2000.0), None)


def test_one_record_gives_no_window():
    assert collect.steady_rates([{"env_steps": 10, "wall_s": 1.0}], [(1.0, 1.1, 5)]) == (None, None)


def test_the_raw_loop_steps_the_given_actions_and_resets_at_episode_ends():
    class Env:
        def __init__(self):
            self.actions, self.resets = [], 0

        def step(self, a):
            self.actions.append(a)
            return None, 0.0, len(self.actions) % 3 == 0, False, {}

        def reset(self):
            self.resets += 1

    env = Env()
    collect.raw_steps(env, [1, 0, 1, 1, 0, 0, 1])
    assert env.actions == [1, 0, 1, 1, 0, 0, 1] and env.resets == 2


def test_the_vector_loops_count_every_sub_env_step():
    rate = collect.vector_loop(640, 0, 64, "vector_entry_point")
    assert rate > 0 and collect.vector_loop(64, 0, 8, "sync") > 0


def test_the_policy_loop_runs_the_scenarios_nets_on_the_native_vector_env():
    from asyncdqn import config

    cfg = config.load("cartpole", [], seed=0)
    assert collect.policy_vector_loop(640, 0, 64, cfg) > 0
    assert collect.policy_vector_loop(60, 0, 6, config.load("cartpole", ["learner.num_nets=4"], seed=0)) > 0
