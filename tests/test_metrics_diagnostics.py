"""Issue 6's merge diagnostics reach both sinks: metrics.jsonl and TensorBoard.

Diagnostics: the merge weights, their entropy, the disagreement of the K nets (std of Q across nets), each
net's parameter distance from the merge, and each net's share of the replay data. Lists are written to
TensorBoard as one curve per net (`merge/weights_0`, `merge/weights_1`, ...).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncdqn.metrics import MetricsWriter, read_records

PER_NET = ("weights", "distance", "replay_share", "scores")
SCALARS = ("entropy", "q_disagreement")


class _FakeBoard:
    """Stands in for torch's SummaryWriter: records add_scalar calls."""

    def __init__(self):
        self.points: list[tuple[str, float, int]] = []

    def add_scalar(self, tag, value, step):
        self.points.append((tag, value, step))


def test_scalars_writes_every_per_net_list_as_one_curve_per_net(tmp_path):
    writer = MetricsWriter(tmp_path / "m.jsonl")  # no TensorBoard dir: plug in the fake
    writer.tb = _FakeBoard()
    writer._scalars({"kind": "merge", "env_steps": 700, "updates": 50, "scores": [10.0, float("nan")],
                     "weights": np.array([0.25, 0.75]), "entropy": 0.5623, "distance": [0.5, 1.5],
                     "q_disagreement": 0.2, "replay_share": [0.4, 0.6]})
    got = {tag: (value, step) for tag, value, step in writer.tb.points}
    assert got == {
        "merge/scores_0": (10.0, 700),  # the NaN score of a net without episodes yet is left out
        "merge/weights_0": (0.25, 700), "merge/weights_1": (0.75, 700),
        "merge/entropy": (0.5623, 700),
        "merge/distance_0": (0.5, 700), "merge/distance_1": (1.5, 700),
        "merge/q_disagreement": (0.2, 700),
        "merge/replay_share_0": (0.4, 700), "merge/replay_share_1": (0.6, 700),
    }


def test_a_short_run_logs_every_diagnostic_to_jsonl_and_tensorboard(trained_run):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    k = trained_run.cfg.learner.num_nets
    merges = [r for r in read_records(trained_run.out / "metrics.jsonl") if r["kind"] == "merge"]
    assert merges, "the tiny run makes several merges"
    for rec in merges:
        for key in PER_NET:
            assert len(rec[key]) == k, key
        assert math.isclose(sum(rec["weights"]), 1.0, rel_tol=1e-6)
        assert math.isclose(sum(rec["replay_share"]), 1.0, rel_tol=1e-6)
        assert 0.0 <= rec["entropy"] <= math.log(k) + 1e-9
        assert rec["q_disagreement"] >= 0.0
        assert all(d >= 0.0 for d in rec["distance"])

    acc = event_accumulator.EventAccumulator(str(trained_run.out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    wanted = {f"merge/{key}_{i}" for key in ("weights", "distance", "replay_share") for i in range(k)}
    wanted |= {f"merge/{key}" for key in SCALARS}
    assert wanted <= tags, sorted(wanted - tags)
    # one point per merge record for each curve
    assert len(acc.Scalars("merge/weights_0")) == len(merges)
    assert len(acc.Scalars("merge/replay_share_1")) == len(merges)
