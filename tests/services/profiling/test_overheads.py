"""The measured serving terms as simulator inputs: step factors rescale tables and head, hop latency lands
on every link, the lone-decode prediction reads what the simulator charges."""

from __future__ import annotations

import dataclasses

import pytest

from planner import bundled
from planner.profile import LatencyTable, ProfileSet
from services.profiling.overheads import (
    lone_decode_ms,
    scale_steps,
    step_factor,
    with_hop_latency,
    without_head,
)


def _with_head(gpu_type: str, points: tuple[tuple[float, float], ...]) -> ProfileSet:
    profiles = bundled.profiles("smollm2-135m")
    p = dataclasses.replace(profiles.get(gpu_type), lm_head=LatencyTable(((0.0, 0.0), *points)))
    return dataclasses.replace(profiles, by_gpu={**profiles.by_gpu, gpu_type: p})


def test_step_factor_makes_the_profile_predict_the_measured_step() -> None:
    profiles = _with_head("cpu-mid", ((1.0, 5.0), (8.0, 9.0)))
    before = lone_decode_ms(profiles, "cpu-mid", 10, last=True)
    f = step_factor(3 * before, before)
    assert f == pytest.approx(3.0)
    after = scale_steps(profiles, {"cpu-mid": f})
    assert lone_decode_ms(after, "cpu-mid", 10, last=True) == pytest.approx(3 * before)
    assert after.get("cpu-mid").prompt.ms(100) == pytest.approx(3 * profiles.get("cpu-mid").prompt.ms(100))
    assert after.get("cpu-fast") == profiles.get("cpu-fast")  # other types untouched


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
