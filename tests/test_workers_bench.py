"""benchmarks/workers.py: the cores each part of a run kept busy, from hand-made /proc samples."""

from __future__ import annotations

import pytest

from helpers.bench_scripts import load_benchmark

wb = load_benchmark("workers")


def test_cores_are_the_cpu_seconds_between_the_window_s_first_and_last_samples_over_their_time():
    sampler = wb.CpuSampler(0.5, t0=0.0)
    sampler.samples = [(0.5, {"loop": 0.0, "threads": 0.0, "workers": 0.0}),   # before the window
                       (1.0, {"loop": 0.1, "threads": 0.5, "workers": 0.0}),
                       (2.0, {"loop": 0.2, "threads": 1.4, "workers": 0.1}),
                       (3.0, {"loop": 0.3, "threads": 2.4, "workers": 0.2}),
                       (3.5, {"loop": 9.0, "threads": 9.0, "workers": 9.0})]  # after it
    cores = sampler.cores_between(0.9, 3.2)
    assert cores == {"loop": pytest.approx(0.1), "threads": pytest.approx(0.95), "workers": pytest.approx(0.1)}
    assert sampler.cores_between(1.1, 1.9) is None  # fewer than two samples inside


def test_cpu_parts_reads_this_process():
    before = wb.cpu_parts()
    sum(i * i for i in range(200_000))  # some work on this (the main) thread
    after = wb.cpu_parts()
    assert set(before) == {"loop", "threads", "workers"}
    assert after["loop"] >= before["loop"] and min(before.values()) >= 0.0
