"""Hand-built small fleets and plans for the routing tests."""

from __future__ import annotations

from planner.cluster import SINK, SOURCE, Cluster, Link, Node
from planner.placement import LayerRange, Placement
from planner.plan import Plan


def diamond(
    flows: dict[tuple[str, str], float] | None = None, *, extra: bool = False
) -> tuple[Plan, Cluster]:
    """source -> a[0,2) -> {b, c}[2,4) -> sink (and d[2,4) with a tiny flow when `extra`)."""
    names = ["a", "b", "c"] + (["d"] if extra else [])
    nodes = tuple(Node(n, "L4") for n in names)
    edges = [(SOURCE, "a"), ("a", "b"), ("a", "c"), ("b", SINK), ("c", SINK)]
    if extra:
        edges += [("a", "d"), ("d", SINK)]
    links = tuple(Link(u, v, 1e9, 0.001) for u, v in edges)
    ranges = {"a": LayerRange(0, 2), "b": LayerRange(2, 4), "c": LayerRange(2, 4)}
    if extra:
        ranges["d"] = LayerRange(2, 4)
    default = {(SOURCE, "a"): 100.0, ("a", "b"): 75.0, ("a", "c"): 25.0, ("b", SINK): 75.0, ("c", SINK): 25.0}
    if extra:
        default.update({(SOURCE, "a"): 102.0, ("a", "d"): 2.0, ("d", SINK): 2.0})
    plan = Plan("diamond", "toy", "hand", Placement(4, ranges), flows or default, objective_tok_per_s=100.0)
    return plan, Cluster(nodes, links, name="diamond")


def two_lanes() -> tuple[Plan, Cluster]:
    """source -> a1[0,2) -> b1[2,4) -> sink and source -> a2[0,2) -> b2[2,4) -> sink, equal flows."""
    nodes = tuple(Node(n, "L4") for n in ("a1", "b1", "a2", "b2"))
    edges = [(SOURCE, "a1"), ("a1", "b1"), ("b1", SINK), (SOURCE, "a2"), ("a2", "b2"), ("b2", SINK)]
    links = tuple(Link(u, v, 1e9, 0.001) for u, v in edges)
    ranges = {"a1": LayerRange(0, 2), "b1": LayerRange(2, 4), "a2": LayerRange(0, 2), "b2": LayerRange(2, 4)}
    plan = Plan(
        "two-lanes",
        "toy",
        "hand",
        Placement(4, ranges),
        dict.fromkeys(edges, 50.0),
        objective_tok_per_s=100.0,
    )
    return plan, Cluster(nodes, links, name="two-lanes")


def line() -> tuple[Plan, Cluster]:
    """One pipeline of three: source -> a[0,1) -> b[1,2) -> c[2,4) -> sink."""
    nodes = tuple(Node(n, "L4") for n in ("a", "b", "c"))
    edges = [(SOURCE, "a"), ("a", "b"), ("b", "c"), ("c", SINK)]
    links = tuple(Link(u, v, 1e9, 0.001) for u, v in edges)
    ranges = {"a": LayerRange(0, 1), "b": LayerRange(1, 2), "c": LayerRange(2, 4)}
    plan = Plan(
        "line", "toy", "hand", Placement(4, ranges), dict.fromkeys(edges, 50.0), objective_tok_per_s=50.0
    )
    return plan, Cluster(nodes, links, name="line")
