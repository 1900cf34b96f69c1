"""Latency tables interpolate; GPU profiles hold KV capacity per layer count."""

from __future__ import annotations

import pytest

from planner import bundled
from planner.errors import InvalidInput, UnknownName
from planner.profile import GpuProfile, LatencyTable, ProfileSet


def _table() -> LatencyTable:
    return LatencyTable(((0.0, 0.0), (100.0, 10.0), (300.0, 20.0)))


def test_interpolates_between_rows() -> None:
    t = _table()
    assert t.ms(0) == 0.0
    assert t.ms(100) == 10.0
    assert t.ms(50) == pytest.approx(5.0)
    assert t.ms(200) == pytest.approx(15.0)
    assert t.seconds(200) == pytest.approx(0.015)


def test_extrapolates_from_last_two_rows() -> None:
    assert _table().ms(500) == pytest.approx(30.0)


@pytest.mark.parametrize(
    "points",
    [((0.0, 0.0),), ((0.0, 0.0), (0.0, 1.0)), ((10.0, 1.0), (5.0, 2.0)), ((0.0, -1.0), (1.0, 1.0))],
)
def test_bad_tables_are_rejected(points: tuple[tuple[float, float], ...]) -> None:
    with pytest.raises(InvalidInput):
        LatencyTable(points)


def _profile(**kw: object) -> GpuProfile:
    args: dict[str, object] = dict(
        gpu_type="X",
        model_name="m",
        vram_bytes=16_000_000_000,
        max_layers=3,
        prompt=_table(),
        decode=_table(),
        kv_capacity=(300, 200, 100),
        decode_max_tokens=(64, 48, 32),
    )
    args.update(kw)
    return GpuProfile(**args)  # type: ignore[arg-type]


def test_kv_capacity_per_k() -> None:
    p = _profile()
    assert [p.kv_capacity_for(k) for k in (1, 2, 3)] == [300, 200, 100]
    assert p.decode_max_for(3) == 32
    for k in (0, 4):
        with pytest.raises(InvalidInput):
            p.kv_capacity_for(k)


def test_profile_needs_kv_for_every_k() -> None:
    with pytest.raises(InvalidInput, match="kv_capacity"):
        _profile(kv_capacity=(300, 200))


def test_bundled_70b_profiles_match_the_paper() -> None:
    ps = bundled.profiles("llama2-70b")
    assert set(ps.types()) == {"A100", "V100", "L4", "L4x2", "T4", "T4x2", "T4x4"}
    a100, l4, t4 = ps.get("A100"), ps.get("L4"), ps.get("T4")
    assert (a100.max_layers, l4.max_layers, t4.max_layers) == (12, 7, 4)
    assert a100.kv_capacity_for(1) == 7973216 and a100.kv_capacity_for(12) == 3377472
    assert [t4.kv_capacity_for(k) for k in range(1, 5)] == [2485120, 2031488, 1577856, 1124224]
    # docs/placement-and-routing.md §1.3: prompt ms per layer at 750 tokens, decode at 16 and 480 sequences
    assert [ps.get(g).prompt.ms(750) for g in ("A100", "L4", "T4", "V100", "L4x2", "T4x2", "T4x4")] == [
        5,
        27,
        48,
        14,
        19,
        28,
        22,
    ]
    assert a100.decode.ms(16) == pytest.approx(1.5) and l4.decode.ms(480) == pytest.approx(26)
    assert (a100.prompt_max_requests, a100.prompt_max_tokens, l4.prompt_max_tokens) == (3, 6144, 2048)
    assert a100.decode_max_for(9) == 480 and a100.decode_max_for(12) == 300 and l4.decode_max_for(7) == 280
    assert (a100.vram_bytes, l4.vram_bytes, t4.vram_bytes) == (40e9, 24e9, 16e9)
    # The paper picked K so that parameters use about half the VRAM.
    layer = bundled.model("llama2-70b").bytes_per_layer
    for gpu in ps.types():
        p = ps.get(gpu)
        assert 2 * p.max_layers * layer <= p.vram_bytes + 1


def test_profile_set_unknown_type_lists_valid() -> None:
    ps = ProfileSet("m", {"X": _profile()})
    with pytest.raises(UnknownName, match="X"):
        ps.get("H100")
