"""The minimum cut of a placement's flow network: the edges that limit its max-flow (what to upgrade first),
each with its capacity and flow. By max-flow/min-cut the
cut's capacity equals the max-flow value; pages and reports show it as the plan's bottlenecks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx

from planner.cluster import SINK, SOURCE
from planner.errors import InvalidInput
from planner.flow import build_flow_graph, max_flow
from planner.plan import Plan
from planner.throughput import ThroughputTable

# Residual capacity under this fraction of an edge's capacity counts as none (solver round-off).
RESIDUAL_REL = 1e-9

# Where an edge of the split-node graph sits: u/in -> u/start is the in-NIC, start -> end the GPU, end -> out
# the out-NIC; out -> in between two vertices is a link (or the coordinator's NIC at source and sink).
_NODE_PARTS = {("in", "start"): "nic_in", ("start", "end"): "compute", ("end", "out"): "nic_out"}


@dataclass(frozen=True)
class CutEdge:
    """One saturated edge of the cut. `src`/`dst` are node names (source/sink included); for a node's own
    NIC or GPU both are that node. `kind`: "compute", "nic_in", "nic_out", "link" or "coordinator"."""

    kind: str
    src: str
    dst: str
    capacity_tok_per_s: float
    flow_tok_per_s: float

    @property
    def label(self) -> str:
        if self.kind in ("link", "coordinator"):
            return f"{self.kind}:{self.src}->{self.dst}"
        return f"{self.kind}:{self.src}"


@dataclass(frozen=True)
class MinCut:
    value_tok_per_s: float
    edges: tuple[CutEdge, ...]

    @property
    def capacity_tok_per_s(self) -> float:
        return sum(e.capacity_tok_per_s for e in self.edges)

    def nodes(self, kind: str) -> tuple[str, ...]:
        """Nodes whose `kind` part ("compute", "nic_in", "nic_out") is cut."""
        return tuple(e.src for e in self.edges if e.kind == kind)

    def links(self) -> tuple[tuple[str, str], ...]:
        """Cut edges between two vertices of the fleet graph (node links and the coordinator's arcs)."""
        return tuple((e.src, e.dst) for e in self.edges if e.kind in ("link", "coordinator"))


def _name(vertex: Any) -> str:
    return str(vertex if vertex in (SOURCE, SINK) else vertex[0])


def _edge(u: Any, v: Any, capacity: float, flow: float) -> CutEdge:
    if u == SOURCE or v == SINK:  # the coordinator's own NIC: source -> source/out, sink/in -> sink
        return CutEdge("coordinator", SOURCE if u == SOURCE else _name(u), _name(v), capacity, flow)
    if u[1] == "out" and v[1] == "in":
        kind = "coordinator" if SOURCE in (u[0], v[0]) or SINK in (u[0], v[0]) else "link"
        return CutEdge(kind, _name(u), _name(v), capacity, flow)
    return CutEdge(_NODE_PARTS[(u[1], v[1])], _name(u), _name(u), capacity, flow)


def residual_reachable(g: nx.DiGraph, flow: Mapping[Any, Mapping[Any, float]]) -> set[Any]:
    """Vertices reachable from the source in the residual graph: forward where capacity is left,
    backward where flow could be pushed back."""
    seen = {SOURCE}
    stack: list[Any] = [SOURCE]
    while stack:
        u = stack.pop()
        for v, data in g[u].items():
            cap = float(data.get("capacity", float("inf")))
            if v not in seen and cap - flow[u][v] > RESIDUAL_REL * max(1.0, cap):
                seen.add(v)
                stack.append(v)
        for v in g.predecessors(u):
            if v not in seen and flow[v][u] > RESIDUAL_REL * max(1.0, flow[v][u]):
                seen.add(v)
                stack.append(v)
    return seen


def min_cut(g: nx.DiGraph) -> MinCut:
    """The minimum s-t cut of a flow graph built by `planner.flow.build_flow_graph`."""
    value, flow = max_flow(g)
    if value <= 0 or not flow:
        return MinCut(0.0, ())
    side = residual_reachable(g, flow)
    edges = [
        _edge(u, v, float(data["capacity"]), float(flow[u][v]))
        for u in side
        for v, data in g[u].items()
        if v not in side and float(data.get("capacity", 0.0)) > 0
    ]
    # A stable order for reports: the kind, then the names.
    edges.sort(key=lambda e: (e.kind, e.src, e.dst))
    return MinCut(value, tuple(edges))


def plan_min_cut(plan: Plan, throughput: ThroughputTable) -> MinCut:
    """The min cut of a plan's placement over the arcs it routes on (its recorded `partial_inference`),
    with the throughput table it was planned with. Needs the fleet and model the plan embeds."""
    if plan.cluster is None or plan.model is None:
        raise InvalidInput(
            "the plan embeds no cluster or model; load it with its fleet", field="plan.cluster"
        )
    partial = bool(plan.provenance.get("partial_inference", True))
    g, _ = build_flow_graph(plan.cluster, plan.model, plan.placement, throughput, partial=partial)
    return min_cut(g)
