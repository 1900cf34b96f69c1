"""The serving-overhead terms: step factors rescale tables, hop latency lands on every link."""

from __future__ import annotations

import pytest

from planner import bundled
from services.profiling.overheads import (
    lone_decode_ms,
    scale_steps,
    step_factor,
    with_hop_latency,
)


def test_step_factor_makes_the_profile_predict_the_measured_step() -> None:
    profiles = bundled.profiles("smollm2-135m")
    before = lone_decode_ms(profiles, "cpu-mid", 10)
    f = step_factor(3 * before, profiles, "cpu-mid", 10)
    assert f == pytest.approx(3.0)
    after = scale_steps(profiles, {"cpu-mid": f})
    assert lone_decode_ms(after, "cpu-mid", 10) == pytest.approx(3 * before)
    assert after.get("cpu-mid").prompt.ms(100) == pytest.approx(3 * profiles.get("cpu-mid").prompt.ms(100))
    assert after.get("cpu-fast") == profiles.get("cpu-fast")  # other types untouched


def test_hop_latency_lands_on_every_link() -> None:
    cluster = with_hop_latency(bundled.cluster("local-cpu"), 0.004)
    assert cluster.links and all(lk.latency_s == 0.004 for lk in cluster.links)
    assert cluster.node_names == bundled.cluster("local-cpu").node_names


def test_add_head_charges_the_last_hop_type_only() -> None:
    from services.profiling.overheads import add_head

    profiles = bundled.profiles("smollm2-135m")
    out = add_head(profiles, "cpu-slow", 10, {1: 20.0, 4: 40.0})
    slow, before = out.get("cpu-slow"), profiles.get("cpu-slow")
    assert slow.decode.ms(4) == pytest.approx(before.decode.ms(4) + 4.0)  # 40 ms over 10 layers
    assert slow.decode.ms(2) == pytest.approx(before.decode.ms(2) + (20 + 20 / 3) / 10)  # interpolated
    assert slow.prompt.ms(128) == pytest.approx(before.prompt.ms(128) + 2.0)  # one sample per prompt
    assert slow.decode.points[0] == (0.0, 0.0)
    assert out.get("cpu-fast") == profiles.get("cpu-fast")


def test_colocation_slowdown_is_processor_sharing() -> None:
    from services.profiling.overheads import colocation_slowdown

    # Idle neighbours: no slowdown; three always-busy workers on 2 cores: each at 2/3 speed.
    assert colocation_slowdown({"a": 0.9, "b": 0.0, "c": 0.0}, 2)["a"] == pytest.approx(1.0)
    assert colocation_slowdown({"a": 1.0, "b": 1.0, "c": 1.0}, 2)["a"] == pytest.approx(1.5)
    # Half-busy neighbours: both busy a quarter of the time -> 0.25 * 1.5 + 0.75 * 1.0.
    assert colocation_slowdown({"a": 1.0, "b": 0.5, "c": 0.5}, 2)["a"] == pytest.approx(1.125)
    assert colocation_slowdown({"a": 1.0, "b": 1.0, "c": 1.0}, 4)["b"] == pytest.approx(1.0)
    # Two other tenants' threads always runnable: a lone worker on 2 cores runs at 2/3 speed.
    assert colocation_slowdown({"a": 1.0, "b": 0.0}, 2, background=2.0)["a"] == pytest.approx(1.5)
