"""Metrics: metrics.jsonl written asynchronously with aiofiles, TensorBoard scalars, the learning curve.

Place in the flow: a sink beside every stage. Stages `emit` records (cheap, non-blocking); the writer
task owns the file and drains the queue; `close` flushes what is left.

Record kinds: `episode` (an actor's finished episode), `train` (every `log_every` env steps), `merge`
(every target merge: scores, weights, their entropy, each net's distance from the merge, the Q disagreement
across nets, each net's share of the replay data), `eval` (periodic greedy evaluation).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from pathlib import Path

import aiofiles
import numpy as np


def _plain(value):
    """JSON-safe: numpy to Python, NaN/inf to None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


_EPISODE_KEYS = ("kind", "env_steps", "actor", "net", "return", "length")


def _episode_json(r: dict) -> str | None:
    """An episode record as json.dumps writes it, or None if it is not a plain one: there are several per
    vector step, and json.dumps (~10 us here) was a sizeable part of a 64-env CartPole step (issue 16)."""
    ret = r["return"]
    if (type(ret) is not float or not math.isfinite(ret) or type(r["env_steps"]) is not int
            or type(r["actor"]) is not int or type(r["net"]) is not int or type(r["length"]) is not int):
        return None
    return (f'{{"kind": "episode", "env_steps": {r["env_steps"]}, "actor": {r["actor"]}, "net": {r["net"]}, '
            f'"return": {ret!r}, "length": {r["length"]}}}')


def to_json(record: dict) -> str:
    if record.get("kind") == "episode" and tuple(record) == _EPISODE_KEYS:
        line = _episode_json(record)
        if line is not None:
            return line
    try:  # most records (an episode's) hold only Python scalars: skip the recursive conversion
        return json.dumps(record, allow_nan=False)
    except (TypeError, ValueError):  # numpy values, NaN/inf
        return json.dumps(_plain(record), allow_nan=False)


def _lines(records: list[dict]) -> str:
    return "".join(to_json(r) + "\n" for r in records)


class MetricsWriter:
    """`emit` queues a record; `run` writes what is queued at most every `batch_s` seconds (one aiofiles
    write and flush each time: every write is a round trip through a thread, which cost the actors' event
    loop ~10% when CartPole's 10-step episodes each got their own); `close` makes `run` write the rest now."""

    def __init__(self, path: Path, tensorboard_dir: Path | None = None, batch_s: float = 0.1):
        self.path = Path(path)
        self.batch_s = batch_s
        self.queue: asyncio.Queue[dict | None] = asyncio.Queue()
        self._closing = asyncio.Event()
        self.tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self.tb = None
            else:
                self.tb = SummaryWriter(str(tensorboard_dir))

    def emit(self, record: dict) -> None:
        self.queue.put_nowait(record)

    async def run(self) -> None:
        """Drain records to disk until `close` sends the sentinel. Cancelled (a run failing: its task group
        cancels this task right after `close`), it still appends what it holds, in a plain blocking write."""
        batch: list[dict | None] = []
        try:
            async with aiofiles.open(self.path, "a", encoding="utf-8") as f:
                while True:
                    batch = [await self.queue.get()]
                    if batch[0] is not None and not self._closing.is_set():
                        with contextlib.suppress(TimeoutError):  # let a batch gather, unless closing
                            async with asyncio.timeout(self.batch_s):
                                await self._closing.wait()
                    records, closed = self._take(batch)  # one write for everything already waiting
                    batch = []  # handed to the write below
                    if records:
                        await f.write(_lines(records))
                        await f.flush()
                        for r in records:
                            self._scalars(r)
                    if closed:
                        return
        except asyncio.CancelledError:
            records, _ = self._take(batch)
            if records:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(_lines(records))
            raise
        finally:
            self._close_tb()

    def _take(self, batch: list[dict | None]) -> tuple[list[dict], bool]:
        """`batch` plus every record already queued, without the sentinel; and whether the sentinel came."""
        while not self.queue.empty():
            batch.append(self.queue.get_nowait())
        records = [r for r in batch if r is not None]
        return records, len(records) < len(batch)

    NOT_SCALARS = frozenset({"env_steps", "actor", "net", "updates", "in_a_row"})  # ids and x-axes, not curves
    # One TensorBoard point per finished episode cost ~15% of the actors' event loop on CartPole; the
    # 'train' records carry the recent mean return instead (metrics.jsonl still holds every episode).
    NOT_CURVES = frozenset({"episode", "env_fault"})
    # Lists with one value per net, written as one curve per net (`merge/weights_0`, ...): the merge
    # diagnostics of issue 6 (weights, scores, each net's distance from the merge, each net's share of the
    # replay data) and the train records' per-net loss.
    PER_NET = frozenset({"weights", "scores", "distance", "replay_share", "loss_per_net"})

    def _scalars(self, record: dict) -> None:
        if self.tb is None or record["kind"] in self.NOT_CURVES:
            return
        step = record.get("env_steps", 0)
        for key, value in record.items():
            if key in self.NOT_SCALARS:
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.tb.add_scalar(f"{record['kind']}/{key}", value, step)
            elif isinstance(value, (list, np.ndarray)) and key in self.PER_NET:
                for k, v in enumerate(value):
                    if v is not None and math.isfinite(v):
                        self.tb.add_scalar(f"{record['kind']}/{key}_{k}", v, step)

    def _close_tb(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None

    def close(self) -> None:
        self.queue.put_nowait(None)
        self._closing.set()


def read_records(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_learning_curve(metrics_path: Path, out_png: Path, title: str) -> None:
    """Episode returns (raw and smoothed) and greedy evaluations against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_records(metrics_path)
    eps = [(r["env_steps"], r["return"]) for r in records if r["kind"] == "episode"]
    evals = [(r["env_steps"], r["mean"], r["std"]) for r in records if r["kind"] == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if eps:
        x, y = np.array(eps).T
        ax.plot(x, y, ".", alpha=0.15, markersize=2, color="tab:blue", label="actor episodes")
        w = max(1, len(y) // 50)
        smooth = np.convolve(y, np.ones(w) / w, mode="valid")
        ax.plot(x[w - 1:], smooth, color="tab:blue", label=f"actor episodes (mean of {w})")
    if evals:
        x, m, s = np.array(evals).T
        ax.errorbar(x, m, yerr=s, fmt="o-", color="tab:red", label="greedy eval (mean ± std)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    if eps or evals:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
