"""Placements: coverage, gaps and whether a full chain exists."""

from __future__ import annotations

import pytest

from planner import bundled
from planner.errors import InvalidInput
from planner.placement import LayerRange, Placement


def test_layer_range_basics() -> None:
    r = LayerRange(3, 7)
    assert r.size == 4 and 3 in r and 6 in r and 7 not in r and str(r) == "[3,7)"
    for start, end in ((5, 5), (-1, 2), (4, 2)):
        with pytest.raises(InvalidInput):
            LayerRange(start, end)


def test_out_of_bounds_range_names_the_node() -> None:
    with pytest.raises(InvalidInput) as err:
        Placement(10, {"n3": LayerRange(8, 11)})
    assert err.value.field == "n3"


def test_uncovered_runs_and_chain() -> None:
    p = Placement(10, {"a": LayerRange(0, 3), "b": LayerRange(5, 8)})
    assert p.uncovered() == ((3, 5), (8, 10))
    assert not p.has_full_chain()
    assert p.layer_coverage()[:4] == [1, 1, 1, 0]


def test_full_chain_needs_exact_joins() -> None:
    overlapping = Placement(10, {"a": LayerRange(0, 6), "b": LayerRange(4, 10)})
    assert overlapping.uncovered() == ()
    assert not overlapping.has_full_chain()  # ranges overlap but do not join exactly
    joined = Placement(10, {"a": LayerRange(0, 6), "b": LayerRange(4, 10), "c": LayerRange(6, 10)})
    assert joined.has_full_chain()
    assert joined.holders_starting_at(6) == ("c",)
    assert not joined.without({"c"}).has_full_chain()


def test_published_ilp_layout_has_full_chain() -> None:
    p = bundled.layout("ilp", "cluster24", "llama2-70b")
    assert len(p) == 24 and p.uncovered() == () and p.has_full_chain()
    homogeneous = bundled.layout("homogeneous", "cluster24", "llama2-70b")
    # docs/placement-and-routing.md §4: one pipeline of 4 A100 x12 + 4 L4 x7 + 1 T4 x4, 15 nodes unused
    assert len(homogeneous) == 9 and homogeneous.has_full_chain()
    assert sorted(r.size for r in homogeneous.ranges.values()) == [4] + [7] * 4 + [12] * 4
