"""The measured serving terms as simulator inputs: step factors rescale tables and head, hop latency lands
on every link, the lone-decode prediction reads what the simulator charges."""

from __future__ import annotations

import dataclasses

import pytest

from planner import bundled
from planner.profile import LatencyTable, ProfileSet
from services.profiling.overheads import (
    lone_decode_ms,
    step_overhead_s,
    with_hop_latency,
    without_head,
)


def _with_head(gpu_type: str, points: tuple[tuple[float, float], ...]) -> ProfileSet:
    profiles = bundled.profiles("smollm2-135m")
    p = dataclasses.replace(profiles.get(gpu_type), lm_head=LatencyTable(((0.0, 0.0), *points)))
    return dataclasses.replace(profiles, by_gpu={**profiles.by_gpu, gpu_type: p})


def test_step_overhead_is_the_measured_steps_cpu_beyond_the_compute() -> None:
    # A worker at speed 0.5 measured at 100 ms: 50 ms of CPU, of which the profile predicts 40.
    assert step_overhead_s(100.0, 40.0, speed=0.5) == pytest.approx(0.010)
    # Measured while it had half a core: only 25 ms of its own work, less than the profile's 40: none.
    assert step_overhead_s(100.0, 40.0, speed=0.5, share=0.5) == 0.0
    profiles = _with_head("cpu-mid", ((1.0, 5.0),))
    compute = lone_decode_ms(profiles, "cpu-mid", 10, last=True)
    assert step_overhead_s(compute + 3.0, compute) == pytest.approx(0.003)


def test_lone_decode_reads_bs1_adds_the_head_on_last_hops_and_the_throttle() -> None:
    profiles = _with_head("cpu-mid", ((1.0, 5.0),))
    table = profiles.get("cpu-mid").decode
    assert any(x == 1 for x, _ in table.points)  # `brl profile` measures bs=1
    assert lone_decode_ms(profiles, "cpu-mid", 10, last=False) == pytest.approx(10 * table.ms(1))
    assert lone_decode_ms(profiles, "cpu-mid", 10, last=True) == pytest.approx(10 * table.ms(1) + 5.0)
    assert lone_decode_ms(profiles, "cpu-mid", 10, last=True, speed=0.5) == pytest.approx(
        2 * (10 * table.ms(1) + 5.0)
    )
    assert lone_decode_ms(without_head(profiles), "cpu-mid", 10, last=True) == pytest.approx(10 * table.ms(1))


def test_hop_latency_lands_on_every_link() -> None:
    cluster = with_hop_latency(bundled.cluster("local-cpu"), 0.004)
    assert cluster.links and all(lk.latency_s == 0.004 for lk in cluster.links)
    assert cluster.node_names == bundled.cluster("local-cpu").node_names
