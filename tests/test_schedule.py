"""Schedules (asyncdqn.schedule): the epsilon ladder and its anneal, the PER beta anneal, the replay-ratio
budget and the step gate, on hand-computed cases."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from asyncdqn import config
from asyncdqn.schedule import StepGate, beta_at, budget, epsilon_ladder, epsilon_schedule


async def spin(times: int = 5) -> None:
    """Let every ready callback run (a few loop iterations, no wall-clock time)."""
    for _ in range(times):
        await asyncio.sleep(0)


def test_epsilon_ladder_hand_values():
    # eps_i = 0.4 ** (1 + 7 i / 2): exponents 1, 4.5, 8
    np.testing.assert_allclose(epsilon_ladder(3, 0.4, 7.0), [0.4, 0.4**4.5, 0.4**8], rtol=1e-12)
    np.testing.assert_allclose(epsilon_ladder(1, 0.4, 7.0), [0.4])
    np.testing.assert_allclose(epsilon_ladder(4, 0.5, 0.0), [0.5] * 4)


def schedule_at(ladder: list[float], anneal_steps: int):
    """The schedule the actors use, with the run's step count under the test's control."""
    clock = {"steps": 0}
    epsilon = epsilon_schedule(np.array(ladder), anneal_steps, lambda: clock["steps"])

    def at(steps: int) -> list[float]:
        clock["steps"] = steps
        return [epsilon(i) for i in range(len(ladder))]

    return at


def test_epsilon_anneals_linearly_from_one_to_each_actors_ladder_value():
    at = schedule_at([0.4, 0.1, 0.0], anneal_steps=100)
    assert at(0) == [1.0, 1.0, 1.0]
    np.testing.assert_allclose(at(50), [0.7, 0.55, 0.5], rtol=1e-12)      # 1 + (eps - 1) / 2
    np.testing.assert_allclose(at(75), [0.55, 0.325, 0.25], rtol=1e-12)   # 1 + (eps - 1) * 3/4
    assert at(100) == [0.4, 0.1, 0.0] and at(10_000) == [0.4, 0.1, 0.0]   # the ladder value itself


def test_epsilon_without_annealing_is_the_ladder_value_from_step_0():
    at = schedule_at([0.4, 0.1, 0.0], anneal_steps=0)
    assert at(0) == [0.4, 0.1, 0.0] and at(1) == [0.4, 0.1, 0.0]


def test_beta_anneals_linearly_from_beta0_to_one_over_the_run():
    assert beta_at(0.4, 0, 1000) == 0.4
    assert beta_at(0.4, 250, 1000) == pytest.approx(0.55)    # 0.4 + 0.6 / 4
    assert beta_at(0.4, 500, 1000) == pytest.approx(0.7)
    assert beta_at(0.4, 1000, 1000) == 1.0
    assert beta_at(0.4, 1500, 1000) == 1.0                    # past the budget (a resumed run): stays 1
    assert beta_at(1.0, 0, 1000) == 1.0


def budget_of(ratio: float, learning_starts: int, total_steps: int, per_call: int, max_lead: int):
    return budget(config.from_dict({"total_steps": total_steps, "learner": {
        "replay_ratio": ratio, "learning_starts": learning_starts, "updates_per_call": per_call,
        "max_lead": max_lead}}))


def test_budget_hand_computed_lockstep():
    total, limit = budget_of(0.25, 100, 1000, 8, 0)
    assert total == 225                                 # 0.25 * (1000 - 100)
    # the actors may take learning_starts + (updates + 8) / 0.25 steps
    assert [limit(u) for u in (0, 8, 16, 200, 216)] == [132, 164, 196, 932, 996]
    assert limit(224) == 1000                           # the last call needs 225 updates -> 100 + 900
    assert limit(225) == limit(10_000) == 1000


def test_budget_hand_computed_with_lead():
    total, limit = budget_of(0.25, 100, 1000, 8, 16)
    assert total == 225
    assert [limit(u) for u in (0, 8, 200)] == [148, 180, 948]
    assert limit(216) == 1000                           # 996 + 16 capped at total_steps


def test_budget_more_updates_than_steps_and_collect_only():
    total, limit = budget_of(3.0, 100, 400, 8, 0)
    assert total == 900                                 # 3 * 300
    assert [limit(0), limit(8), limit(896)] == [103, 106, 400]   # ceil(8/3) = 3, ceil(16/3) = 6
    total, limit = budget_of(0.0, 100, 400, 8, 0)
    assert total == 0 and limit(0) == 400


# -------------------------------------------------------------------------------------- the step gate


async def test_step_gate_acquire_blocks_at_the_limit_and_set_limit_releases_one_step_each():
    gate = StepGate(2)
    await gate.acquire()
    await gate.acquire()
    waiters = [asyncio.create_task(gate.acquire()) for _ in range(3)]
    await spin()
    assert gate.steps == 2 and not any(w.done() for w in waiters)
    gate.set_limit(3)                                   # room for exactly one more step
    await spin()
    assert gate.steps == 3 and sum(w.done() for w in waiters) == 1
    [w for w in waiters if not w.done()][0].cancel()
    await spin()
    gate.set_limit(10)
    await spin()
    assert gate.steps == 4                              # the cancelled waiter took no step
    assert all(w.done() for w in waiters)
    assert sum(w.cancelled() for w in waiters) == 1


async def test_step_gate_wait_steps_resolves_exactly_at_the_nth_step():
    gate = StepGate(100)
    w5 = asyncio.create_task(gate.wait_steps(5))
    w3 = asyncio.create_task(gate.wait_steps(3))
    await spin()
    for step in range(1, 7):
        await gate.acquire()
        await spin()
        assert w3.done() == (step >= 3), step
        assert w5.done() == (step >= 5), step
    await asyncio.wait_for(gate.wait_steps(2), 0.1)     # already reached: returns at once


async def test_step_gate_cancelled_waiter_does_not_break_others():
    gate = StepGate(100)
    a = asyncio.create_task(gate.wait_steps(2))
    b = asyncio.create_task(gate.wait_steps(2))
    c = asyncio.create_task(gate.wait_steps(3))
    await spin()
    a.cancel()
    await spin()
    for _ in range(2):
        await gate.acquire()
    await spin()
    assert a.cancelled() and b.done() and not b.cancelled() and not c.done()
    await gate.acquire()
    await spin()
    assert c.done() and not c.cancelled()


def test_budget_at_ratio_one_and_with_no_steps_past_learning_starts():
    total, limit = budget_of(1.0, 100, 400, 8, 0)
    assert total == 300 and [limit(0), limit(296)] == [108, 400]      # one step per update
    total, limit = budget_of(3.0, 100, 50, 8, 0)
    assert total == 0 and limit(0) == 50                              # the run ends before learning starts


def test_budget_limit_when_every_update_is_made_is_the_run_end():
    # 0.3 * 5 = 1.5 -> 1 update, allowed after 1 + ceil(1 / 0.3) = 5 steps; once made, the actors may finish
    total, limit = budget_of(0.3, 1, 6, 1, 0)
    assert total == 1 and limit(0) == 5 and limit(1) == 6


def test_budget_steps_needed_is_the_step_after_which_updates_are_allowed():
    _, limit = budget_of(0.25, 100, 1000, 8, 16)
    assert [limit.steps_needed(u) for u in (0, 1, 8, 225, 10_000)] == [100, 104, 132, 1000, 1000]


def test_step_gate_try_acquire_stops_at_the_limit_and_freeze_grants_no_more():
    gate = StepGate(2)
    assert [gate.try_acquire() for _ in range(3)] == [True, True, False] and gate.steps == 2
    gate.set_limit(5)
    assert gate.try_acquire() and gate.steps == 3
    gate.freeze()
    assert gate.limit == 3 and not gate.try_acquire() and gate.steps == 3


async def test_step_gate_try_acquire_and_advance_to_wake_watchers_at_their_step():
    gate = StepGate(100)
    # heap order (1, 3), (5, 1), (5, 2): the first to wake was registered last
    late = [asyncio.create_task(gate.wait_steps(5)) for _ in range(2)]
    first = asyncio.create_task(gate.wait_steps(1))
    await spin()
    assert gate.try_acquire()
    await spin()
    assert first.done() and first.result() is None and not any(t.done() for t in late)
    for _ in range(4):
        gate.try_acquire()
    await spin()
    assert [t.result() for t in late] == [None, None]      # woken at step 5 exactly (no exception)
    at_9 = asyncio.create_task(gate.wait_steps(9))
    await spin()
    gate.advance_to(9)
    await spin()
    assert gate.steps == 9 and at_9.done()
    await asyncio.wait_for(gate.wait_steps(9), 0.1)          # steps == n: returns at once


async def test_step_gate_counts_parked_actors_and_wakes_wait_parked_at_n():
    gate = StepGate(0)
    two = asyncio.create_task(gate.wait_parked(2))
    one = asyncio.create_task(gate.acquire())
    await spin()
    assert gate.parked == 1 and not two.done()
    other = asyncio.create_task(gate.acquire())
    await spin()
    assert gate.parked == 2 and two.done() and two.result() is None
    await asyncio.wait_for(gate.wait_parked(2), 0.1)         # parked == n: returns at once
    gate.set_limit(2)
    await spin()
    assert one.done() and other.done() and gate.parked == 0 and gate.steps == 2
