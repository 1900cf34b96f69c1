"""Routing weights for a latency SLO on multi-region fleets: the plan's max-flow split restricted to the
pairs of regions that give the fewest crossings per token while every region of the layout still serves.

Why: on a branch layout (planner.solvers.branches: one trunk region, the others parallel branches holding
the same layers) the stage boundaries of two branches often line up, so the max-flow also routes from one
branch into the other and back to the trunk: two slow region crossings instead of one. A decode token
waits behind every prompt being sent over a 12.5 MB/s link (~1 s for a typical prompt), so each extra
crossing fattens the tail of the time per output token. At a latency SLO a fleet runs far below its
max-flow (3cluster24: capacity ~20% of it), so the capacity a detour adds is not worth its latency.
The real coordinator routes by the plan's edge flows (planner.routing.maxflow), so the restriction is the
plan's routing, honoured as it is simulated. The flow left is then shared between parallel regions by
planner.slo_split (region weights against prompt blocking).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from itertools import combinations

from planner.cluster import SOURCE, Cluster
from planner.flow import FlowResult, plan_from_placement, solve_max_flow
from planner.model import ModelSpec
from planner.placement import Placement
from planner.plan import Plan
from planner.profile import ProfileSet
from planner.slo_split import slo_weights
from planner.throughput import ThroughputTable

RegionPair = frozenset[str]

# A restriction must keep this share of the unrestricted max-flow: an SLO plan never runs near max-flow,
# but a restriction that starves most of the fleet is not a routing choice, it is a smaller fleet.
MIN_FLOW_SHARE = 0.5
# Subsets of region pairs are enumerated: up to 4 regions (6 pairs, 64 subsets); beyond, no restriction.
MAX_PAIRS = 6


def restrict_links(cluster: Cluster, pairs: Iterable[RegionPair]) -> Cluster:
    """`cluster` without the links between nodes of two different regions unless their pair is in `pairs`
    (links from and to the coordinator are kept)."""
    allowed = set(pairs)
    region = {n.name: n.region for n in cluster.nodes}
    links = tuple(
        lk
        for lk in cluster.links
        if lk.src not in region
        or lk.dst not in region
        or region[lk.src] == region[lk.dst]
        or frozenset((region[lk.src], region[lk.dst])) in allowed
    )
    return replace(cluster, links=links)


def _serving_regions(cluster: Cluster, result: FlowResult) -> frozenset[str]:
    return frozenset(cluster.node(n).region for n, f in result.node_flows.items() if f > 1e-9)


def crossings_per_token(cluster: Cluster, result: FlowResult) -> float:
    """Node-to-node links between regions a token takes, weighted by the flow's split."""
    region = {n.name: n.region for n in cluster.nodes}
    crossing = sum(
        f for (u, v), f in result.edge_flows.items() if u in region and v in region and region[u] != region[v]
    )
    return crossing / result.value_tok_per_s if result.value_tok_per_s > 0 else 0.0


def _whole_chain(cluster: Cluster, placement: Placement, region: str) -> bool:
    """Whether `region`'s nodes alone hold an exact chain of every layer (links inside a region assumed)."""
    ranges = sorted((r.start, r.end) for n, r in placement.ranges.items() if cluster.node(n).region == region)
    reached = {0}
    for start, end in ranges:
        if start in reached:
            reached.add(end)
    return placement.num_layers in reached


def slo_flow(
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    placement: Placement,
    throughput: ThroughputTable,
) -> tuple[frozenset[RegionPair] | None, FlowResult]:
    """The region pairs whose links give the fewest crossings per token while every region that serves
    under the unrestricted max-flow still serves, with at least MIN_FLOW_SHARE of that max-flow (ties: fewer
    pairs, then more max-flow), and the max-flow over them. None (and the unrestricted max-flow) when
    nothing is to be gained: one region, too many pairs to enumerate, or the unrestricted flow crosses as
    little."""
    pairs, best, _ = _slo_flow(cluster, model, profiles, placement, throughput)
    return pairs, best


def _slo_flow(
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    placement: Placement,
    throughput: ThroughputTable,
) -> tuple[frozenset[RegionPair] | None, FlowResult, float]:
    """`slo_flow` and the unrestricted max-flow's value."""
    placed = {cluster.node(n).region for n in placement.ranges}
    pairs = sorted((frozenset(p) for p in combinations(sorted(placed), 2)), key=sorted)
    full = solve_max_flow(cluster, model, profiles, placement, throughput=throughput, partial=False)
    if not pairs or len(pairs) > MAX_PAIRS or full.value_tok_per_s <= 0:
        return None, full, full.value_tok_per_s
    serving = _serving_regions(cluster, full)
    # Crossings are compared to the hundredth: flows differ in the last digits between equal layouts.
    best_key = (round(crossings_per_token(cluster, full), 2), len(pairs), -full.value_tok_per_s)
    best: tuple[frozenset[RegionPair] | None, FlowResult] = (None, full)
    # Every token crosses at least once where no region holds a whole chain alone: once a set of pairs
    # reaches that, larger sets cannot do better (ties go to fewer pairs) and are not solved.
    floor = 0.0 if any(_whole_chain(cluster, placement, r) for r in placed) else 1.0
    # k serving regions in one pipeline need k - 1 pairs at least (a region holding every layer alone is
    # left to the unrestricted flow): smaller sets are not tried.
    for size in range(max(1, len(serving) - 1), len(pairs)):
        if best_key[0] <= floor and best_key[1] < size:
            break
        for subset in combinations(pairs, size):
            chosen = frozenset(subset)
            routed = restrict_links(cluster, chosen)
            result = solve_max_flow(routed, model, profiles, placement, throughput=throughput, partial=False)
            if result.value_tok_per_s < MIN_FLOW_SHARE * full.value_tok_per_s:
                continue
            if _serving_regions(cluster, result) != serving:
                continue
            key = (round(crossings_per_token(cluster, result), 2), size, -result.value_tok_per_s)
            if key < best_key:
                best_key, best = key, (chosen, result)
    return (*best, full.value_tok_per_s)


def slo_plan(
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    placement: Placement,
    *,
    method: str,
    throughput: ThroughputTable,
    solver_stats: dict[str, object] | None = None,
    provenance: dict[str, object] | None = None,
) -> Plan:
    """The plan of `placement` for a latency SLO: exact joins, the balanced split, and flow only over the
    region pairs `slo_flow` picks, shared between parallel regions by planner.slo_split (region weights,
    while at least MIN_FLOW_SHARE of the unrestricted max-flow remains); the plan still embeds the whole
    fleet and records the pairs in provenance["flow_region_pairs"], the weights in
    provenance["flow_region_weights"] and the routed flow's value as its objective."""
    pairs, _, full_value = _slo_flow(cluster, model, profiles, placement, throughput)
    routed = cluster if pairs is None else restrict_links(cluster, pairs)
    prov: dict[str, object] = dict(provenance or {})
    if pairs is not None:
        prov["flow_region_pairs"] = sorted("+".join(sorted(p)) for p in pairs)
    plan = plan_from_placement(
        routed,
        model,
        profiles,
        placement,
        method=method,
        throughput=throughput,
        partial=False,
        split="balanced",
        solver_stats=solver_stats,
        provenance=prov,
    )
    weights, flows = slo_weights(
        cluster, model, profiles, placement, plan.edge_flows, min_value=MIN_FLOW_SHARE * full_value
    )
    if weights:
        value = sum(f for (u, _), f in flows.items() if u == SOURCE)
        weighted = {
            **plan.provenance,
            "flow_region_weights": weights,
            "max_flow_before_weights_tok_per_s": plan.objective_tok_per_s,
        }
        plan = replace(plan, edge_flows=flows, objective_tok_per_s=value, provenance=weighted)
    return replace(plan, cluster=cluster)
