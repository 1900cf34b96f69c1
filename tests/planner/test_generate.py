"""Seeded fleet generators: same seed → same fleet; the paper's three-region fleet reproduces exactly."""

from __future__ import annotations

import random

import pytest

from planner import bundled
from planner.cluster import SINK, SOURCE
from planner.errors import InvalidInput
from planner.generate import LinkDist, Uniform, multi_region, single_region

PAPER_REGIONS = {"region-0": {"A100": 4}, "region-1": {"L4": 2, "T4": 8}, "region-2": {"L4": 6, "T4": 4}}


def test_multi_region_seed0_is_the_papers_3cluster24() -> None:
    generated = multi_region(PAPER_REGIONS, random.Random(0), name="3cluster24")
    assert generated == bundled.cluster("3cluster24")


def test_same_seed_same_fleet_other_seed_differs() -> None:
    a = single_region(
        {"A100": 4, "L4": 8, "T4": 12}, random.Random(5), link=LinkDist(Uniform(1e9, 1e8), Uniform(1e-3))
    )
    b = single_region(
        {"A100": 4, "L4": 8, "T4": 12}, random.Random(5), link=LinkDist(Uniform(1e9, 1e8), Uniform(1e-3))
    )
    c = single_region(
        {"A100": 4, "L4": 8, "T4": 12}, random.Random(6), link=LinkDist(Uniform(1e9, 1e8), Uniform(1e-3))
    )
    assert a == b
    assert a != c
    assert a.gpu_counts() == {"A100": 4, "L4": 8, "T4": 12}


def test_single_region_defaults_are_the_papers_lan() -> None:
    c = single_region({"L4": 4, "T4": 6}, random.Random(0))
    assert len(c.links) == 10 * 9 + 20
    assert {(lk.bandwidth_bytes_per_s, lk.latency_s) for lk in c.links} == {(1e9, 1e-3)}


def test_link_values_stay_in_their_ranges() -> None:
    c = multi_region(PAPER_REGIONS, random.Random(11))
    for lk in c.links:
        if SOURCE in (lk.src, lk.dst) or SINK in (lk.src, lk.dst):
            same = False
        else:
            same = c.node(lk.src).region == c.node(lk.dst).region
        if same:
            assert 1.125e9 <= lk.bandwidth_bytes_per_s <= 1.375e9 and lk.latency_s == pytest.approx(1e-3)
        else:
            assert 1e7 <= lk.bandwidth_bytes_per_s <= 1.5e7 and 0.04 - 1e-12 <= lk.latency_s <= 0.06


def test_degree_and_slow_fill() -> None:
    sparse = single_region({"T4": 10}, random.Random(1), avg_degree=4)
    compute = [lk for lk in sparse.links if SOURCE not in (lk.src, lk.dst) and SINK not in (lk.src, lk.dst)]
    assert len(compute) == 2 * (10 * 4 // 2)
    slow = LinkDist(Uniform(1e8), Uniform(0.01))
    filled = single_region({"T4": 10}, random.Random(1), avg_degree=4, slow_link=slow, coordinator_degree=3)
    assert len(filled.out_links(SOURCE)) == 3
    values = {
        lk.bandwidth_bytes_per_s for lk in filled.links if SOURCE not in (lk.src, lk.dst) and SINK != lk.dst
    }
    assert values == {1e9, 1e8}
    assert len(filled.links) == 90 + 6


def test_coordinator_in_a_named_region() -> None:
    c = multi_region({"a": {"L4": 2}, "b": {"T4": 2}}, random.Random(0), coordinator_region="a")
    assert c.coordinator_region == "a"
    to_a, to_b = c.link(SOURCE, "n0"), c.link(SOURCE, "n2")
    assert to_a is not None and to_b is not None
    assert to_a.bandwidth_bytes_per_s > 1e9 > to_b.bandwidth_bytes_per_s


@pytest.mark.parametrize(
    "build",
    [
        lambda: single_region({}, random.Random(0)),
        lambda: single_region({"T4": 0}, random.Random(0)),
        lambda: single_region({"T4": 3}, random.Random(0), avg_degree=5),
        lambda: multi_region({"a": {"T4": 2}}, random.Random(0), coordinator_region="b"),
        lambda: LinkDist(Uniform(1e6, 2e6), Uniform(0.001)),
        lambda: Uniform(1.0, -1.0),
    ],
)
def test_bad_generator_input(build: object) -> None:
    with pytest.raises(InvalidInput):
        build()  # type: ignore[operator]
