"""The flow network of a placement and its max-flow: how many tokens/s the fleet can push through layers
[0, L), the per-edge split the max-flow router uses as weights, upper bounds, and what saturates.

Graph (paper §6.1): source -> source/out -> v/in for nodes starting at layer 0; every compute node u is split
u/in -> u/start -> u/end -> u/out (in-NIC, tp(k_u), out-NIC); u/out -> v/in for each link whose ranges join;
u/out -> sink/in -> sink for nodes ending at L. Capacities in tokens/s: a link moves bandwidth / bytes per
token (activation + token id between nodes, token id alone to and from the coordinator); bandwidths are the
paper's bytes/s (no /8). Solved by networkx's default preflow-push on a graph built in a fixed order (source,
nodes in cluster order, links in cluster order) so the per-edge split is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from planner.cluster import SINK, SOURCE, Cluster, Link
from planner.errors import InvalidInput
from planner.model import ModelSpec
from planner.placement import Placement
from planner.plan import Edge, Plan
from planner.profile import ProfileSet
from planner.throughput import ThroughputTable, peak_tok_per_s, typical_throughput

# Relative slack under which an edge counts as saturated in the bottleneck report.
SATURATION_REL = 1e-6


@dataclass(frozen=True)
class Bottleneck:
    """One edge of a minimum cut: `kind` is "compute", "nic_in", "nic_out", "link" or "coordinator"."""

    kind: str
    name: str
    capacity_tok_per_s: float
    flow_tok_per_s: float


@dataclass(frozen=True)
class FlowResult:
    value_tok_per_s: float
    edge_flows: Mapping[Edge, float]
    node_flows: Mapping[str, float]
    node_capacity_tok_per_s: Mapping[str, float]
    bottlenecks: tuple[Bottleneck, ...] = ()
    arcs: tuple[Edge, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def saturated_nodes(self) -> tuple[str, ...]:
        return tuple(
            n
            for n, f in self.node_flows.items()
            if f > 0 and f >= self.node_capacity_tok_per_s[n] * (1 - SATURATION_REL)
        )


def arc_valid(placement: Placement, link: Link, *, partial: bool = True) -> bool:
    """Whether a request can cross `link` under this placement. Source arcs need start 0, sink arcs end L.
    Between nodes the next range must start exactly where this one ends; with `partial` (what the paper's
    scheduler tolerates at run time, and what petals uses) it may also start earlier and run only the
    layers above this node's end."""
    if link.src == SOURCE:
        rng = placement.get(link.dst)
        return rng is not None and rng.start == 0
    if link.dst == SINK:
        rng = placement.get(link.src)
        return rng is not None and rng.end == placement.num_layers
    a, b = placement.get(link.src), placement.get(link.dst)
    if a is None or b is None:
        return False
    if partial:
        return b.start <= a.end < b.end
    return b.start == a.end


def placement_arcs(cluster: Cluster, placement: Placement, *, partial: bool = True) -> tuple[Link, ...]:
    return tuple(lk for lk in cluster.links if arc_valid(placement, lk, partial=partial))


def link_tok_per_s(link: Link, model: ModelSpec, *, with_token: bool = True) -> float:
    """Tokens/s a link moves: to/from the coordinator only token ids cross; between nodes the hidden state
    (plus the token id in the scheduler's graph; the MILP drops it, ~1e-4 relative)."""
    if link.src == SOURCE or link.dst == SINK:
        return link.bandwidth_bytes_per_s / model.token_bytes
    size = model.activation_bytes_per_token + (model.token_bytes if with_token else 0)
    return link.bandwidth_bytes_per_s / size


def node_capacities(cluster: Cluster, placement: Placement, throughput: ThroughputTable) -> dict[str, float]:
    return {n: throughput.tp(cluster.node(n).gpu_type, rng.size) for n, rng in placement.ranges.items()}


def build_flow_graph(
    cluster: Cluster,
    model: ModelSpec,
    placement: Placement,
    throughput: ThroughputTable,
    *,
    partial: bool = True,
) -> tuple[nx.DiGraph, tuple[Link, ...]]:
    arcs = placement_arcs(cluster, placement, partial=partial)
    g = nx.DiGraph()
    per_token = model.token_bytes + model.activation_bytes_per_token
    g.add_edge(SOURCE, (SOURCE, "out"), capacity=cluster.coordinator_nic_bytes_per_s / model.token_bytes)
    g.add_edge((SINK, "in"), SINK, capacity=cluster.coordinator_nic_bytes_per_s / model.token_bytes)
    preds: dict[str, set[str]] = {}
    succs: dict[str, set[str]] = {}
    for lk in arcs:
        succs.setdefault(lk.src, set()).add(lk.dst)
        preds.setdefault(lk.dst, set()).add(lk.src)
    for node in cluster.nodes:
        rng = placement.get(node.name)
        if rng is None:
            continue
        # A NIC carrying only coordinator traffic moves token ids, otherwise hidden states too (paper §6.1).
        sigma_in = model.token_bytes if preds.get(node.name) == {SOURCE} else per_token
        sigma_out = model.token_bytes if succs.get(node.name) == {SINK} else per_token
        n = node.name
        g.add_edge((n, "in"), (n, "start"), capacity=node.nic_in_bytes_per_s / sigma_in)
        g.add_edge((n, "start"), (n, "end"), capacity=throughput.tp(node.gpu_type, rng.size))
        g.add_edge((n, "end"), (n, "out"), capacity=node.nic_out_bytes_per_s / sigma_out)
    for lk in arcs:
        u = (SOURCE, "out") if lk.src == SOURCE else (lk.src, "out")
        v = (SINK, "in") if lk.dst == SINK else (lk.dst, "in")
        g.add_edge(u, v, capacity=link_tok_per_s(lk, model))
    return g, arcs


def max_flow(g: nx.DiGraph, *, value_only: bool = False) -> tuple[float, dict[Any, dict[Any, float]]]:
    """networkx's default preflow-push (the split the paper's router uses), on a copy of `g` whose nodes
    are numbered in `g`'s build order. Preflow-push discharges "an arbitrary element" of a set of active
    nodes; with string and tuple names that set's order follows the per-process hash salt
    (PYTHONHASHSEED), so one placement got another split (and a max-flow differing in its last bits) in
    every process. Integers hash to themselves, so numbered nodes take the same path in every run."""
    if SOURCE not in g or SINK not in g:
        return 0.0, {}
    names = list(g)
    index = {n: i for i, n in enumerate(names)}
    numbered = nx.DiGraph()
    numbered.add_nodes_from(range(len(names)))
    numbered.add_edges_from((index[u], index[v], data) for u, v, data in g.edges(data=True))
    value, flow = _numbered_max_flow(numbered, index[SOURCE], index[SINK], value_only)
    named = {names[u]: {names[v]: f for v, f in row.items()} for u, row in flow.items()}
    return value, named


def _numbered_max_flow(
    g: nx.DiGraph, source: int, sink: int, value_only: bool
) -> tuple[float, dict[int, dict[int, float]]]:
    """Preflow-push can raise IndexError on graphs with dead-end parts; those carry no flow, so retry on
    the part that lies on some source-sink path, and fall back to Edmonds-Karp only if that fails too."""
    try:
        if value_only:
            return float(nx.maximum_flow_value(g, source, sink)), {}
        value, flow = nx.maximum_flow(g, source, sink)
        return float(value), flow
    except IndexError:
        pass
    useful = nx.descendants(g, source) & nx.ancestors(g, sink) | {source, sink}
    # Built in g's order, not from `useful` (a set): a subgraph view iterates its node set when small.
    sub = nx.DiGraph()
    sub.add_nodes_from(n for n in g if n in useful)
    sub.add_edges_from((u, v, d) for u, v, d in g.edges(data=True) if u in useful and v in useful)
    full: dict[int, dict[int, float]] = {u: dict.fromkeys(g[u], 0.0) for u in g}
    try:
        value, flow = nx.maximum_flow(sub, source, sink)
    except IndexError:
        value, flow = nx.maximum_flow(sub, source, sink, flow_func=nx.algorithms.flow.edmonds_karp)
    for u, row in flow.items():
        full[u].update(row)
    return float(value), full


def _min_cut(g: nx.DiGraph, flow: Mapping[Any, Mapping[Any, float]]) -> set[Any]:
    """Nodes reachable from the source in the residual graph of `flow`."""
    seen = {SOURCE}
    stack: list[Any] = [SOURCE]
    while stack:
        u = stack.pop()
        for v, data in g[u].items():
            if v not in seen and data["capacity"] - flow[u][v] > SATURATION_REL * max(1.0, data["capacity"]):
                seen.add(v)
                stack.append(v)
        for v in g.predecessors(u):
            if v not in seen and flow[v][u] > SATURATION_REL:
                seen.add(v)
                stack.append(v)
    return seen


def _classify(u: Any, v: Any) -> tuple[str, str]:
    if u == SOURCE or v == SINK:
        return "coordinator", "source" if u == SOURCE else "sink"
    if u[1] == "out" and v[1] == "in":
        return "link", f"{u[0]}->{v[0]}"
    kind = {"in": "nic_in", "start": "compute", "end": "nic_out"}[u[1]]
    return kind, str(u[0])


def solve_max_flow(
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    placement: Placement,
    *,
    throughput: ThroughputTable | None = None,
    settings: Mapping[str, Any] | None = None,
    partial: bool = True,
) -> FlowResult:
    """Max-flow of `placement` (tokens/s), the per-edge split between node names (source/sink included),
    and the edges of a minimum cut as the bottleneck report."""
    tp = throughput or typical_throughput(cluster, model, profiles, settings)
    g, arcs = build_flow_graph(cluster, model, placement, tp, partial=partial)
    value, flow = max_flow(g)
    if not flow:
        flow = {u: dict.fromkeys(g[u], 0.0) for u in g}
    edge_flows: dict[Edge, float] = {}
    for lk in arcs:
        u = (SOURCE, "out") if lk.src == SOURCE else (lk.src, "out")
        v = (SINK, "in") if lk.dst == SINK else (lk.dst, "in")
        f = float(flow[u][v])
        if f > 0:
            edge_flows[(lk.src, lk.dst)] = f
    caps = node_capacities(cluster, placement, tp)
    node_flows = {n: float(flow[(n, "start")][(n, "end")]) for n in caps}
    cut = _min_cut(g, flow) if value > 0 else set()
    bottlenecks = []
    for u in cut:
        for v, data in g[u].items():
            if v not in cut and data["capacity"] > 0:
                kind, name = _classify(u, v)
                bottlenecks.append(Bottleneck(kind, name, float(data["capacity"]), float(flow[u][v])))
    bottlenecks.sort(key=lambda b: (b.kind, b.name))
    return FlowResult(
        value_tok_per_s=float(value),
        edge_flows=edge_flows,
        node_flows=node_flows,
        node_capacity_tok_per_s=caps,
        bottlenecks=tuple(bottlenecks),
        arcs=tuple((lk.src, lk.dst) for lk in arcs),
    )


def compute_bound(cluster: Cluster, throughput: ThroughputTable) -> float:
    """The paper's "max compute throughput": sum over nodes of max_k k*cap(k), divided by L. Loose (k=1 wins)."""
    return sum(throughput.best_layer_tok_per_s(n.gpu_type) for n in cluster.nodes) / throughput.num_layers


def coverage_bound(cluster: Cluster, throughput: ThroughputTable, *, rel_tol: float = 1e-9) -> float:
    """Chaining-relaxed bound: F tokens/s must cross every layer once; node i carries at most min(cap_i(k), F)
    tokens/s over at most k layers, so F*L <= sum_i max_k k*min(cap_i(k), F). The ratio of the right side to
    F falls as F grows, so bisection finds the largest feasible F. Valid for any placement and routing."""

    def supply(f: float) -> float:
        return sum(
            max(
                k * min(throughput.capacity(n.gpu_type, k), f)
                for k in range(1, throughput.max_layers(n.gpu_type) + 1)
            )
            for n in cluster.nodes
        )

    lo, hi = 0.0, compute_bound(cluster, throughput)
    # As F -> 0 the supply tends to F * sum_i K_i: a fleet that cannot hold every layer even once carries
    # nothing, and bisection would otherwise shrink hi towards zero without ever stopping.
    if hi <= 0 or sum(throughput.max_layers(n.gpu_type) for n in cluster.nodes) < throughput.num_layers:
        return 0.0
    for _ in range(200):  # 200 halvings reach any relative tolerance a float can express
        if hi - lo <= rel_tol * hi:
            break
        mid = (lo + hi) / 2
        # Relative slack: at a tight bound supply(F) == F*L on a whole interval and rounding would decide.
        if supply(mid) >= mid * throughput.num_layers * (1 - 1e-12):
            lo = mid
        else:
            hi = mid
    return lo


def choose_partial(
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    placement: Placement,
    throughput: ThroughputTable,
) -> tuple[bool, FlowResult]:
    """Exact joins unless arcs into overlapping ("partial") ranges raise the max-flow. MILP layouts join
    exactly and the paper routes them over exact joins only: with partial arcs the same flow value spreads
    onto arcs whose reduced work the flow graph does not see, and the paper's ILP layout serves less.
    Petals-style layouts need the partial arcs to carry anything."""
    exact = solve_max_flow(cluster, model, profiles, placement, throughput=throughput, partial=False)
    wide = solve_max_flow(cluster, model, profiles, placement, throughput=throughput, partial=True)
    if wide.value_tok_per_s > exact.value_tok_per_s * (1 + 1e-9):
        return True, wide
    return False, exact


def plan_from_placement(
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    placement: Placement,
    *,
    method: str,
    throughput: ThroughputTable | None = None,
    settings: Mapping[str, Any] | None = None,
    partial: bool | None = None,
    split: str = "preflow",
    solver_stats: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    lanes: Mapping[str, str] | None = None,
) -> Plan:
    """A Plan for `placement`: its max-flow edge split (routing weights), objective and bounds. `split`:
    "preflow" (networkx's split, as the paper's scheduler uses) or "balanced" (see `flow_split.balanced_split`;
    falls back to preflow where links would be overloaded). `partial`: True routes over arcs into
    overlapping ranges too, False over exact joins only, None (the default) chooses as `choose_partial`,
    so a layout gets the same plan whichever path (`brl simulate --placement`, `brl plan evaluate`, this
    function) made it; the choice is recorded in provenance["partial_inference"]. `lanes`: flow only over
    links inside lanes (planner.flow_split: per region, the region or each GPU type in it, a type lane only
    where every type covers the model) and to and from the coordinator, for layouts planned region by
    region (`scale`); the lanes applied are recorded in provenance["flow_lanes"]; the plan still embeds the
    whole fleet."""
    # Imported here: planner.flow_split builds on this module's FlowResult and link capacities.
    from planner.flow_split import balanced_split, fit_lanes, lane_local

    if split not in ("preflow", "balanced"):
        raise InvalidInput(f"unknown flow split {split!r}; expected preflow or balanced", field="split")
    tp = throughput or typical_throughput(cluster, model, profiles, settings)
    whole = cluster
    if lanes is not None:
        lanes = fit_lanes(cluster, placement, lanes)
        cluster = lane_local(cluster, lanes)
    if partial is None:
        partial, result = choose_partial(cluster, model, profiles, placement, tp)
    else:
        result = solve_max_flow(cluster, model, profiles, placement, throughput=tp, partial=partial)
    edge_flows: Mapping[Edge, float] = result.edge_flows
    used_split = "preflow"
    if split == "balanced":
        balanced = balanced_split(cluster, model, placement, result, lanes=lanes)
        if balanced is not None:
            edge_flows, used_split = balanced, "balanced"
    bound = min(compute_bound(cluster, tp), coverage_bound(cluster, tp))
    all_metrics: dict[str, Any] = {
        "compute_bound_tok_per_s": compute_bound(cluster, tp),
        "coverage_bound_tok_per_s": bound,
        "bottlenecks": [f"{b.kind}:{b.name}" for b in result.bottlenecks],
        "saturated_nodes": list(result.saturated_nodes()),
    }
    # Ceilings on what any run of this placement can reach (None where a profile gives no ceiling).
    for key, decode_only in (("peak_flow_bound_tok_per_s", False), ("decode_flow_bound_tok_per_s", True)):
        ceiling = peak_flow_bound(
            cluster, model, profiles, placement, partial=partial, decode_only=decode_only
        )
        all_metrics[key] = ceiling if math.isfinite(ceiling) else None
    all_metrics.update(metrics or {})
    prov: dict[str, Any] = {"partial_inference": partial, "flow_split": used_split}
    prov.update(provenance or {})
    if lanes is not None:  # the lanes applied, over any a re-plan copied from the plan it replaces
        prov["flow_lanes"] = dict(lanes)
    return Plan(
        cluster_name=whole.name,
        model_name=model.name,
        method=method,
        placement=placement,
        edge_flows=edge_flows,
        objective_tok_per_s=result.value_tok_per_s,
        bound_tok_per_s=bound if math.isfinite(bound) else None,
        solver_stats=dict(solver_stats or {}),
        provenance=prov,
        metrics=all_metrics,
        cluster=whole,
        model=model,
        profiles_name=profiles.model_name,
    )


def peak_flow_bound(
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    placement: Placement,
    *,
    partial: bool,
    decode_only: bool = False,
) -> float:
    """A ceiling on the all-token rate (prompt + decode tokens/s) of any run of this placement: the
    max-flow over the same arcs with each node's capacity its `peak_tok_per_s` and no network limits
    (dropping constraints only raises a max-flow). A node reached over a partial arc may run only the
    layers above the sender's end, so it is credited the peak of the fewest layers it can be asked to run.
    The plan's objective is the max-flow at the paper's typical batch, an estimate this can exceed.
    `decode_only` bounds decode tokens/s instead (each node at its best pure-decode rate)."""
    arcs = placement_arcs(cluster, placement, partial=partial)
    g = nx.DiGraph()
    entries: dict[str, set[int]] = {}
    for lk in arcs:
        rng = placement.get(lk.dst)
        if rng is not None and lk.src != SOURCE:
            sent = placement.get(lk.src)
            entries.setdefault(lk.dst, set()).add(sent.end if sent is not None else rng.start)
    for n, rng in placement.ranges.items():
        fewest = rng.end - max(entries.get(n, {rng.start}) | {rng.start})
        cap = peak_tok_per_s(profiles.get(cluster.node(n).gpu_type), max(1, fewest), decode_only=decode_only)
        if math.isfinite(cap):
            g.add_edge((n, "in"), (n, "out"), capacity=cap)
        else:
            g.add_edge((n, "in"), (n, "out"))  # a table pricing some batch at 0 s: no ceiling here
    for lk in arcs:
        u = SOURCE if lk.src == SOURCE else (lk.src, "out")
        v = SINK if lk.dst == SINK else (lk.dst, "in")
        g.add_edge(u, v)  # no capacity attribute: networkx reads it as unbounded
    try:
        value, _ = max_flow(g, value_only=True)
    except nx.NetworkXUnbounded:
        return math.inf
    return value
