"""metrics.jsonl: records become JSON the same way on both paths, and the writer batches its writes."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from asyncdqn.metrics import MetricsWriter, read_records, to_json


def test_to_json_plain_records_and_numpy_records_give_the_same_json():
    plain = {"kind": "episode", "env_steps": 12, "actor": 3, "return": 9.5, "done": True}
    assert to_json(plain) == json.dumps(plain)
    mixed = {"kind": "merge", "env_steps": np.int64(12), "weights": np.array([0.25, 0.75]),
             "scores": [np.float32(1.5), float("nan")], "q": float("inf")}
    assert json.loads(to_json(mixed)) == {"kind": "merge", "env_steps": 12, "weights": [0.25, 0.75],
                                          "scores": [1.5, None], "q": None}


def _lines(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def test_the_writer_waits_for_a_batch_then_writes_it_and_close_writes_at_once(tmp_path):
    path = tmp_path / "m.jsonl"
    writer = MetricsWriter(path, batch_s=0.3)
    task = asyncio.create_task(writer.run())
    writer.emit({"kind": "episode", "n": 1})
    await asyncio.sleep(0.05)
    writer.emit({"kind": "episode", "n": 2})
    await asyncio.sleep(0.05)
    assert _lines(path) == 0, "written before its batch window closed"
    for _ in range(100):  # the window closes at 0.3 s; the write goes through a thread
        await asyncio.sleep(0.02)
        if _lines(path) == 2:
            break
    assert [r["n"] for r in read_records(path)] == [1, 2]

    slow = MetricsWriter(tmp_path / "slow.jsonl", batch_s=30.0)
    slow_task = asyncio.create_task(slow.run())
    slow.emit({"kind": "episode", "n": 3})
    await asyncio.sleep(0.01)
    slow.close()  # must not wait out the 30 s window
    await asyncio.wait_for(slow_task, 5.0)
    assert [r["n"] for r in read_records(tmp_path / "slow.jsonl")] == [3]
    writer.close()
    await asyncio.wait_for(task, 5.0)


async def test_a_cancelled_writer_still_appends_the_records_it_holds(tmp_path):
    """A failing run's task group cancels the writer right after `close`: no record may be lost then."""
    path = tmp_path / "m.jsonl"
    writer = MetricsWriter(path, batch_s=30.0)
    task = asyncio.create_task(writer.run())
    writer.emit({"kind": "env_fault", "n": 1})
    await asyncio.sleep(0.05)  # the writer holds record 1 and waits out its batch window
    writer.emit({"kind": "env_fault", "n": 2})  # still in the queue
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert [r["n"] for r in read_records(path)] == [1, 2]


@pytest.mark.parametrize("record", [
    {"kind": "episode", "env_steps": 5, "actor": 3, "net": 1, "return": 12.0, "length": 12},
    {"kind": "episode", "env_steps": 70, "actor": 0, "net": 0, "return": -0.1 + 1e-17, "length": 1},
    {"kind": "episode", "env_steps": 70, "actor": 0, "net": 0, "return": 1e-300, "length": 1},
])
def test_episode_records_are_written_as_json_dumps_writes_them(record):
    """The episode fast path (an f-string) must give json.dumps's bytes, so readers never see a difference."""
    assert to_json(record) == json.dumps(record)


def test_episode_records_the_fast_path_cannot_write_take_the_general_one():
    nan = {"kind": "episode", "env_steps": 1, "actor": 0, "net": 0, "return": float("nan"), "length": 1}
    assert json.loads(to_json(nan))["return"] is None
    numpy_return = {**nan, "return": np.float32(2.5), "env_steps": np.int64(3)}
    assert json.loads(to_json(numpy_return)) == {**nan, "return": 2.5, "env_steps": 3}
    extra = {**nan, "return": 1.0, "note": "x"}
    assert json.loads(to_json(extra)) == extra
