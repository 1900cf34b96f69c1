"""How an SLO plan shares its flow between parallel regions: the balanced split reweighted, region by region,
to the least prompt blocking (planner.solvers.slo_candidates' proxy), as long as enough flow remains.

Why: the balanced split shares a stage's flow by capacity, the split that carries the most. At a latency SLO
a fleet runs far below that (3cluster24: capacity ~20% of max-flow) and what binds is the tail of the time
per output token: waits behind prompts, which grow with the square of a node's (or link's) share of the
tokens. On a branch layout the faster branch gets most of the flow by capacity, so its nodes and its slow
link carry most of the prompts; shifting tokens toward the other branch evens the waits out. 3cluster24,
`serve`'s branch layout (region-0's A100s as trunk, region-1 and region-2 as branches): region-1 gets 27%
of the flow by capacity; at 36-42% the capacity at p95 TTFT <= 10 s / TPOT <= 2 s rises from 246 to 260
tokens/s (600-s runs, seed 0), at 0-14% it falls to 180-205, and the proxy's minimum lies at 42%.

How: the flow is decomposed into source-to-sink paths; a region's weight w <= 1 scales every path through
it (a path through several weighted regions takes their product), so the result is still a flow within
every capacity. Weights are chosen by coordinate descent over a few levels, keeping the flow's value at
least `min_value` (the caller's share of the max-flow). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping

from planner.cluster import SINK, SOURCE, Cluster
from planner.model import ModelSpec
from planner.placement import Placement
from planner.plan import Edge
from planner.profile import ProfileSet
from planner.throughput import TYPICAL_INPUT_TOKENS

# A long prompt: the p95 input of the Azure conversation trace (1,353 tokens; the mean is 763).
LONG_PROMPT_TOKENS = 1350
# The levels a region's weight is tried at (1 = the balanced split's flow).
WEIGHT_LEVELS = (1.0, 0.85, 0.7, 0.55, 0.4, 0.3)
# A reweighting is kept only if it lowers the proxy by this share (the proxy is not that precise).
MIN_GAIN = 0.01
# Rounds of coordinate descent over the regions at most.
MAX_ROUNDS = 3
# Flow below this share of the source's is left out of the path decomposition (float residue).
RESIDUE = 1e-9

Path = tuple[tuple[str, ...], float]


def prompt_blocking(
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    placement: Placement,
    edge_flows: Mapping[Edge, float],
) -> float:
    """sum over nodes and node-to-node links x of s_x^2 * tau_x(mean prompt) * tau_x(long prompt), s_x the
    share of the tokens passing x (planner.solvers.slo_candidates); lower is better, inf without flow."""
    value = sum(f for (u, _), f in edge_flows.items() if u == SOURCE)
    if value <= 0:
        return float("inf")
    node_flows: dict[str, float] = {}
    for (_, v), f in edge_flows.items():
        if v != SINK:
            node_flows[v] = node_flows.get(v, 0.0) + f
    total = 0.0
    for name, node_flow in node_flows.items():
        share = node_flow / value
        if share <= 0 or name not in placement.ranges:
            continue
        layers = placement.ranges[name].size
        prof = profiles.get(cluster.node(name).gpu_type)
        mean = layers * prof.prompt_s_per_layer(TYPICAL_INPUT_TOKENS)
        long = layers * prof.prompt_s_per_layer(LONG_PROMPT_TOKENS)
        total += share * share * mean * long
    bytes_per_token = model.activation_bytes_per_token + model.token_bytes
    for (u, v), f in edge_flows.items():
        if u == SOURCE or v == SINK:
            continue
        link = cluster.link(u, v)
        if link is None:
            continue
        share = f / value
        per_token_s = bytes_per_token / link.bandwidth_bytes_per_s
        total += share * share * (TYPICAL_INPUT_TOKENS * per_token_s) * (LONG_PROMPT_TOKENS * per_token_s)
    return total


def flow_paths(edge_flows: Mapping[Edge, float]) -> list[Path]:
    """A decomposition of the flow into source-to-sink paths (node names between the endpoints, amount),
    the widest edge first at every node. Flow that does not reach the sink (float residue) is dropped."""
    left = {e: f for e, f in edge_flows.items() if f > 0}
    out: dict[str, list[str]] = {}
    for u, v in left:
        out.setdefault(u, []).append(v)
    value = sum(f for (u, _), f in left.items() if u == SOURCE)
    floor = RESIDUE * max(value, 1.0)
    paths: list[Path] = []
    # Every path (or dead end) empties at least one edge, so this many turns suffice.
    for _ in range(len(left) + 1):
        nodes = [SOURCE]
        while nodes[-1] != SINK:
            here = nodes[-1]
            nxt = max(out.get(here, ()), key=lambda v: (left.get((here, v), 0.0), v), default=None)
            if nxt is None or left.get((here, nxt), 0.0) <= floor or len(nodes) > len(out) + 1:
                break
            nodes.append(nxt)
        edges = list(zip(nodes, nodes[1:], strict=False))
        if not edges:
            break
        amount = min(left[e] for e in edges)
        for e in edges:
            left[e] -= amount
        if nodes[-1] != SINK:
            left[edges[-1]] = 0.0  # a dead end: residue, not a path
            continue
        paths.append((tuple(nodes[1:-1]), amount))
    return paths


def weighted_flows(
    paths: list[Path], weights: Mapping[str, float], region_of: Mapping[str, str]
) -> dict[Edge, float]:
    """Edge flows of `paths`, each scaled by the product of the weights of the regions it passes."""
    flows: dict[Edge, float] = {}
    for nodes, amount in paths:
        factor = 1.0
        for region in {region_of[n] for n in nodes}:
            factor *= weights.get(region, 1.0)
        hops = (SOURCE, *nodes, SINK)
        for e in zip(hops, hops[1:], strict=False):
            flows[e] = flows.get(e, 0.0) + amount * factor
    return flows


def slo_weights(
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    placement: Placement,
    edge_flows: Mapping[Edge, float],
    *,
    min_value: float,
) -> tuple[dict[str, float], dict[Edge, float]]:
    """Region weights (only those below 1) and the reweighted edge flows with the least prompt blocking
    whose value stays >= `min_value`; ({}, the flows unchanged) where one region serves or nothing gains."""
    paths = flow_paths(edge_flows)
    region_of = {n.name: n.region for n in cluster.nodes}
    regions = sorted({region_of[n] for nodes, _ in paths for n in nodes})
    if len(regions) < 2:
        return {}, dict(edge_flows)

    def cost(weights: Mapping[str, float]) -> tuple[float, float, dict[Edge, float]]:
        flows = weighted_flows(paths, weights, region_of)
        value = sum(f for (u, _), f in flows.items() if u == SOURCE)
        return prompt_blocking(cluster, model, profiles, placement, flows), value, flows

    weights: dict[str, float] = {}
    best, _, best_flows = cost(weights)
    for _ in range(MAX_ROUNDS):
        moved = False
        for region in regions:
            for level in WEIGHT_LEVELS:
                if level == weights.get(region, 1.0):
                    continue
                trial = {**weights, region: level}
                blocking, value, flows = cost(trial)
                if value >= min_value and blocking < best * (1 - MIN_GAIN):
                    weights, best, best_flows, moved = trial, blocking, flows, True
        if not moved:
            break
    kept = {r: w for r, w in sorted(weights.items()) if w < 1.0}
    if not kept:
        return {}, dict(edge_flows)
    return kept, best_flows
