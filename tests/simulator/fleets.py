"""Small hand-built fleets for simulator tests: an 8-layer model on LLaMA-2-70B per-layer profiles."""

from __future__ import annotations

from dataclasses import replace

from planner import bundled
from planner.cluster import SINK, SOURCE, Cluster, Link, Node
from planner.model import ModelSpec
from planner.placement import LayerRange, Placement
from planner.plan import Plan
from planner.profile import ProfileSet


def toy_model() -> ModelSpec:
    return replace(bundled.model("llama2-70b"), name="toy-8", num_layers=8)


def profiles() -> ProfileSet:
    return bundled.profiles("llama2-70b")


def diamond(latency_s: float = 0.001, bandwidth: float = 1e9) -> tuple[Cluster, Plan]:
    """source -> a (A100, [0,4)) -> {b, c} (L4, T4, [4,8)) -> sink; flows 100 = 70 + 30."""
    nodes = (Node("a", "A100"), Node("b", "L4"), Node("c", "T4"))
    edges = [(SOURCE, "a"), ("a", "b"), ("a", "c"), ("b", SINK), ("c", SINK)]
    links = tuple(Link(u, v, bandwidth, latency_s) for u, v in edges)
    placement = Placement(8, {"a": LayerRange(0, 4), "b": LayerRange(4, 8), "c": LayerRange(4, 8)})
    flows = {(SOURCE, "a"): 100.0, ("a", "b"): 70.0, ("a", "c"): 30.0, ("b", SINK): 70.0, ("c", SINK): 30.0}
    plan = Plan("diamond", "toy-8", "hand", placement, flows, objective_tok_per_s=100.0)
    return Cluster(nodes, links, name="diamond"), plan


def chain(latency_s: float, hops: int = 4) -> tuple[Cluster, Plan]:
    """A single chain of `hops` L4 nodes, 8 // hops layers each."""
    names = [f"n{i}" for i in range(hops)]
    nodes = tuple(Node(n, "L4") for n in names)
    path = [SOURCE, *names, SINK]
    links = tuple(Link(u, v, 1e9, latency_s) for u, v in zip(path, path[1:], strict=False))
    per = 8 // hops
    placement = Placement(8, {n: LayerRange(i * per, (i + 1) * per) for i, n in enumerate(names)})
    flows = {(u, v): 50.0 for u, v in zip(path, path[1:], strict=False)}
    return Cluster(nodes, links, name="chain"), Plan(
        "chain", "toy-8", "hand", placement, flows, objective_tok_per_s=50.0
    )


def two_lanes() -> tuple[Cluster, Plan]:
    """Two pipelines of equal planned flow: source -> a1 -> b1 -> sink and source -> a2 -> b2 -> sink
    (A100s hold [0,4), L4s [4,8)); no link between the lanes."""
    nodes = (Node("a1", "A100"), Node("b1", "L4"), Node("a2", "A100"), Node("b2", "L4"))
    edges = [(SOURCE, "a1"), ("a1", "b1"), ("b1", SINK), (SOURCE, "a2"), ("a2", "b2"), ("b2", SINK)]
    links = tuple(Link(u, v, 1e9, 0.001) for u, v in edges)
    placement = Placement(
        8, {"a1": LayerRange(0, 4), "b1": LayerRange(4, 8), "a2": LayerRange(0, 4), "b2": LayerRange(4, 8)}
    )
    plan = Plan(
        "two-lanes", "toy-8", "hand", placement, dict.fromkeys(edges, 50.0), objective_tok_per_s=100.0
    )
    return Cluster(nodes, links, name="two-lanes"), plan
