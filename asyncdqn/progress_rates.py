"""Rates and an ETA for the progress display, from successive `runtime.Progress` snapshots.

Place in the flow: the CLI's side of `runtime.report`: the runtime sends a snapshot every 0.25 s; this turns
the last `window_s` seconds of them into env steps/s, updates/s and the time left, and remembers when the
last evaluation arrived. Rates since the start would lie on long runs: before `learning_starts` the actors run
alone and fast, and a resumed run's step count includes the steps of the runs it continues.

Plain code, no event loop, no torch (the CLI imports it before torch). Snapshots are read by attribute:
wall_s, env_steps, total_steps, updates, evals, last_eval.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

WINDOW_S = 30.0  # long enough to smooth over the learner's bursts, short enough to follow a slowdown


class Rates(NamedTuple):
    steps_per_s: float     # over the recent window; nan until two snapshots at different times
    updates_per_s: float
    eta_s: float           # remaining env steps / steps_per_s; 0 when done, nan when unknown
    last_eval: float       # mean return of the last periodic evaluation; nan before the first
    eval_age_s: float      # training seconds since that evaluation arrived; nan when unknown (e.g. resumed)


class RecentRates:
    """Feed it every snapshot in order with `add`; each call returns the rates as of that snapshot."""

    def __init__(self, window_s: float = WINDOW_S):
        self.window_s = window_s
        self.history: deque[tuple[float, int, int]] = deque()  # (wall_s, env_steps, updates)
        self.evals_seen: int | None = None
        self.eval_wall_s = math.nan

    def add(self, p) -> Rates:
        h = self.history
        h.append((p.wall_s, p.env_steps, p.updates))
        # Keep one snapshot at least window_s old (the window's start); drop the older ones.
        while len(h) > 2 and p.wall_s - h[1][0] >= self.window_s:
            h.popleft()
        t0, steps0, updates0 = h[0]
        dt = p.wall_s - t0
        steps_per_s = (p.env_steps - steps0) / dt if dt > 0 else math.nan
        updates_per_s = (p.updates - updates0) / dt if dt > 0 else math.nan
        left = max(0, p.total_steps - p.env_steps)
        eta_s = 0.0 if left == 0 else (left / steps_per_s if steps_per_s > 0 else math.nan)
        if self.evals_seen is not None and p.evals > self.evals_seen:
            self.eval_wall_s = p.wall_s
        self.evals_seen = p.evals
        return Rates(steps_per_s, updates_per_s, eta_s, p.last_eval, p.wall_s - self.eval_wall_s)


def clock(seconds: float) -> str:
    """A duration as H:MM:SS (M:SS under an hour); "—" when unknown."""
    if not math.isfinite(seconds):
        return "—"
    s = max(0, round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def describe(r: Rates) -> str:
    """The rate part of the progress line."""
    steps = "—" if math.isnan(r.steps_per_s) else f"{r.steps_per_s:,.0f}"
    updates = "—" if math.isnan(r.updates_per_s) else f"{r.updates_per_s:,.1f}"
    if math.isnan(r.last_eval):
        ev = "—"
    else:
        ev = f"{r.last_eval:.1f}" + ("" if math.isnan(r.eval_age_s) else f" ({clock(r.eval_age_s)} ago)")
    return f"{steps} steps/s  {updates} upd/s  ETA {clock(r.eta_s)}  eval {ev}"
