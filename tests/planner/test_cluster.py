"""Cluster invariants: unique names, links between known nodes, failure views."""

from __future__ import annotations

import pytest

from planner import bundled
from planner.cluster import SINK, SOURCE, Cluster, Link, Node
from planner.errors import InvalidInput, UnknownName


def _two() -> tuple[Node, ...]:
    return (Node("a", "L4"), Node("b", "T4"))


def test_lookups_and_counts() -> None:
    c = Cluster(
        _two(), (Link(SOURCE, "a", 1e9, 0.001), Link("a", "b", 1e9, 0.001), Link("b", SINK, 1e9, 0.001))
    )
    assert c.node("a").gpu_type == "L4"
    assert c.link("a", "b") is not None and c.link("b", "a") is None
    assert [lk.dst for lk in c.out_links(SOURCE)] == ["a"]
    assert [lk.src for lk in c.in_links(SINK)] == ["b"]
    assert c.gpu_counts() == {"L4": 1, "T4": 1}
    with pytest.raises(UnknownName, match="expected one of: a, b"):
        c.node("z")


@pytest.mark.parametrize(
    "build",
    [
        lambda: Cluster((Node("a", "L4"), Node("a", "T4")), ()),  # duplicate node
        lambda: Cluster(_two(), (Link("a", "zz", 1e9, 0.0),)),  # link to a missing node
        lambda: Cluster(_two(), (Link("a", "b", 1e9, 0.0), Link("a", "b", 2e9, 0.0))),  # duplicate link
        lambda: Cluster(_two(), (Link(SINK, "a", 1e9, 0.0),)),  # out of the sink
        lambda: Cluster((Node(SOURCE, "L4"),), ()),  # reserved name
        lambda: Link("a", "b", -5.0, 0.0),  # negative bandwidth
        lambda: Link("a", "b", 1e9, -0.1),  # negative latency
        lambda: Link("a", "b", 1e9, float("inf")),  # a link that never delivers
        lambda: Link("a", "b", 1e9, float("nan")),
        lambda: Link("a", "b", float("nan"), 0.0),
        lambda: Link("a", "a", 1e9, 0.0),  # self loop
    ],
)
def test_invalid_clusters(build: object) -> None:
    with pytest.raises(InvalidInput):
        build()  # type: ignore[operator]


def test_without_drops_nodes_and_links() -> None:
    c = bundled.cluster("cluster24")
    smaller = c.without(["n0", "n1"])
    assert len(smaller.nodes) == 22
    assert all("n0" not in (lk.src, lk.dst) for lk in smaller.links)
    # complete graph on 22 nodes plus coordinator links
    assert len(smaller.links) == 22 * 21 + 2 * 22


def test_meta_is_not_identity() -> None:
    a = Cluster(_two(), (), meta={"source": "x"})
    b = Cluster(_two(), (), meta={"source": "y"})
    assert a == b
