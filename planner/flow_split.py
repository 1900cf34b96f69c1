"""Post-processing of a max-flow for layouts that repeat ranges: a balanced split of the flow over the
replicas of each range (the router's weights, so no replica's KV fills first while the others idle), and
the fleet cut down to the links inside lanes, for layouts planned one region at a time (`scale`).

Lanes: per region, "region" keeps the flow on links inside the region, "type" on links between nodes of one
GPU type inside it. A type-stage layout (`scale`) lets a token cross the model on one GPU type, but its
max-flow also runs chains that switch types where stages align; a query on such a chain holds KV on the fast
nodes for as long as its slow hops take, so the fast nodes run smaller batches: on a 1,000-GPU fleet the
same layout served 1.79x the decode tokens with its flow kept in type lanes (same max-flow).

`planner.flow.plan_from_placement` applies both; this module sits above `planner.flow` (it reads a
`FlowResult` and link capacities), so flow imports it only inside that function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from planner.cluster import SINK, SOURCE, Cluster
from planner.errors import InvalidInput
from planner.flow import FlowResult, link_tok_per_s
from planner.model import ModelSpec
from planner.placement import Placement
from planner.plan import Edge

LANE_RULES = ("region", "type")
# Region -> lane rule; a region not named keeps its flow inside the region.
Lanes = Mapping[str, str]


def lane_labels(cluster: Cluster, lanes: Lanes) -> dict[str, str]:
    """Each node's lane: its region, or its region and GPU type where the region's rule is "type"."""
    return {
        n.name: f"{n.region}/{n.gpu_type}" if lanes.get(n.region) == "type" else n.region
        for n in cluster.nodes
    }


def lane_local(cluster: Cluster, lanes: Lanes) -> Cluster:
    """`cluster` without the links between nodes of different lanes (the coordinator's links stay). Regions:
    a layout planned region by region repeats the same ranges in every region, and a balanced split shares
    each range's flow over all its holders, so two thirds of a three-region fleet's hops would cross slow
    links its plan never meant. Types: see the module's note."""
    label = lane_labels(cluster, lanes)
    links = tuple(
        lk
        for lk in cluster.links
        if lk.src not in label or lk.dst not in label or label[lk.src] == label[lk.dst]
    )
    return replace(cluster, links=links)


def fit_lanes(cluster: Cluster, placement: Placement, lanes: Lanes) -> dict[str, str]:
    """`lanes` with a region kept in type lanes only while every GPU type placed in it holds every layer on
    its own nodes; where one does not (after a loss, or a join of a type the region lacked) the region
    falls back to region lanes, in which that type's nodes still carry flow beside the others."""
    region_of = {n.name: n.region for n in cluster.nodes}
    gpu_of = {n.name: n.gpu_type for n in cluster.nodes}
    held: dict[tuple[str, str], set[int]] = {}
    for name, r in placement.ranges.items():
        region = region_of.get(name)
        if region is not None and lanes.get(region) == "type":
            held.setdefault((region, gpu_of[name]), set()).update(range(r.start, r.end))
    out = dict(lanes)
    for (region, _), layers in held.items():
        if len(layers) < placement.num_layers:
            out[region] = "region"
    return out


def check_lanes(lanes: Any, field: str = "flow_lanes") -> dict[str, str]:
    """`lanes` as read from a plan file or request: a mapping of region -> one of LANE_RULES."""
    if not isinstance(lanes, Mapping):
        raise InvalidInput(f"expected a mapping of region -> lane rule, got {lanes!r}", field=field)
    for region, rule in lanes.items():
        if rule not in LANE_RULES:
            raise InvalidInput(
                f"region {region!r}: lane rule must be one of {', '.join(LANE_RULES)}, got {rule!r}",
                field=f"{field}.{region}",
            )
    return {str(k): str(v) for k, v in lanes.items()}


def lanes_of(provenance: Mapping[str, Any]) -> dict[str, str] | None:
    """The lanes a plan's flow was kept in (None: any link of the fleet), so a re-plan or a re-route after a
    loss keeps them; plans written before lanes had rules say `flow_within_regions`."""
    if "flow_lanes" in provenance:
        return check_lanes(provenance["flow_lanes"], "provenance.flow_lanes")
    if provenance.get("flow_within_regions"):
        return {}
    return None


def balanced_split(
    cluster: Cluster,
    model: ModelSpec,
    placement: Placement,
    result: FlowResult,
    *,
    lanes: Lanes | None = None,
) -> dict[Edge, float] | None:
    """The same max-flow with every group of nodes holding an identical range sharing the group's flow in
    proportion to capacity, edge by edge (u in group a, v in group b: flow(a->b) x share(u) x share(v)).
    Conservation and node capacities hold by construction; returns None when a link would be overloaded.
    Preflow-push often piles a stage's flow on one replica (e.g. 758/530/188 over three equal T4s); as the
    router's weights come from the split, that replica's KV fills first while the others idle.
    `lanes`: a group is an identical range within one lane (a flow kept inside lanes stays so)."""
    lane = lane_labels(cluster, lanes) if lanes is not None else {}
    group_of: dict[str, tuple[int, int, str]] = {
        n: (r.start, r.end, lane.get(n, "")) for n, r in placement.ranges.items()
    }
    members: dict[tuple[int, int, str], list[str]] = {}
    for name, key in group_of.items():
        members.setdefault(key, []).append(name)
    caps = result.node_capacity_tok_per_s
    share: dict[str, float] = {}
    for names in members.values():
        total = sum(caps[n] for n in names)
        for n in names:
            share[n] = caps[n] / total if total > 0 else 1.0 / len(names)
    between: dict[tuple[str, str], float] = {}

    def label(x: str) -> str:
        return x if x in (SOURCE, SINK) else "{}:{}:{}".format(*group_of[x])

    for (u, v), f in result.edge_flows.items():
        pair = (label(u), label(v))
        between[pair] = between.get(pair, 0.0) + f

    def nodes_of(lab: str) -> list[str]:
        if lab in (SOURCE, SINK):
            return [lab]
        a, b, where = lab.split(":", 2)
        return members[(int(a), int(b), where)]

    out: dict[Edge, float] = {}
    for (a, b), f in between.items():
        for u in nodes_of(a):
            for v in nodes_of(b):
                flow = f * share.get(u, 1.0) * share.get(v, 1.0)
                if flow <= 0:
                    continue
                link = cluster.link(u, v)
                if link is None or flow > link_tok_per_s(link, model) * (1 + 1e-9):
                    return None
                out[(u, v)] = flow
    return out
