"""Step timings -> per-layer tables and KV capacity: the split, its noise guards, the capacity rules."""

from __future__ import annotations

import pytest

from planner import bundled
from planner.errors import InvalidInput
from services.profiling.measure import Series
from services.profiling.profile import runtime_model
from services.profiling.tables import (
    fixed_pool_capacity,
    memory_budget_capacity,
    per_layer_table,
    split,
)


def test_split_recovers_slope_and_intercept_of_a_line() -> None:
    # step(k) = 2 + 3k ms at batch 10, 5 + 7k at batch 20, measured at k = 1 and k = 4.
    s = split(Series((10, 20), (5.0, 12.0), (14.0, 33.0), 4))
    assert s.slope_ms == pytest.approx((3.0, 7.0))
    assert s.intercept_ms == pytest.approx((2.0, 5.0))
    table = per_layer_table(s, 10)
    # A node of 10 layers: 10 x table = its whole step (slope x 10 + intercept).
    assert 10 * table.ms(10) == pytest.approx(32.0, abs=1e-3)
    assert table.points[0] == (0.0, 0.0)


def test_split_falls_back_to_the_average_when_noise_makes_the_intercept_negative() -> None:
    s = split(Series((1,), (1.0,), (12.0,), 4))  # slope 11/3 > the one-layer time
    assert s.intercept_ms == (0.0,)
    assert s.slope_ms == pytest.approx((3.0,))


def test_tables_never_decrease() -> None:
    s = split(Series((1, 2, 4), (1.0, 0.5, 2.0), (4.0, 2.0, 8.0), 4))
    ms = [y for _, y in per_layer_table(s, 4).points]
    assert ms == sorted(ms) and ms[-1] > 0


def test_fixed_pool_matches_the_bundled_cpu_profiles() -> None:
    # The coordinator's bundled CPU profiles use the torch worker's default 0.5 GiB pool at float32.
    model = runtime_model("smollm2-135m", "float32")
    cap = fixed_pool_capacity(model, 30, 2**29)
    bundled_cpu = bundled.profiles("smollm2-135m").get("cpu")
    assert cap.kv_entries == bundled_cpu.kv_capacity[:30]
    assert model.bytes_per_layer == int(bundled.helix_settings("smollm2-135m")["param_bytes_per_layer"])


def test_memory_budget_gives_less_kv_to_more_layers_and_caps_the_layer_count() -> None:
    model = runtime_model("smollm2-135m", "float32")
    cap = memory_budget_capacity(model, 30, 2**30, min_kv_tokens=2048)
    assert list(cap.kv_entries) == sorted(cap.kv_entries, reverse=True)
    assert cap.max_layers == len(cap.kv_entries) <= 30
    small = memory_budget_capacity(model, 30, 400 * 2**20, min_kv_tokens=2048)
    assert small.max_layers < cap.max_layers
    assert all(e >= k * 2048 for k, e in enumerate(small.kv_entries, start=1))
    with pytest.raises(InvalidInput):
        memory_budget_capacity(model, 30, 2**20, min_kv_tokens=2048)
