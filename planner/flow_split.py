"""Post-processing of a max-flow for layouts that repeat ranges: a balanced split of the flow over the
replicas of each range (the router's weights, so no replica's KV fills first while the others idle), and
the fleet cut down to links inside regions, for layouts planned one region at a time (`scale`).

`planner.flow.plan_from_placement` applies both; this module sits above `planner.flow` (it reads a
`FlowResult` and link capacities), so flow imports it only inside that function.
"""

from __future__ import annotations

from dataclasses import replace

from planner.cluster import SINK, SOURCE, Cluster
from planner.flow import FlowResult, link_tok_per_s
from planner.model import ModelSpec
from planner.placement import Placement
from planner.plan import Edge


def balanced_split(
    cluster: Cluster,
    model: ModelSpec,
    placement: Placement,
    result: FlowResult,
    *,
    by_region: bool = False,
) -> dict[Edge, float] | None:
    """The same max-flow with every group of nodes holding an identical range sharing the group's flow in
    proportion to capacity, edge by edge (u in group a, v in group b: flow(a->b) x share(u) x share(v)).
    Conservation and node capacities hold by construction; returns None when a link would be overloaded.
    Preflow-push often piles a stage's flow on one replica (e.g. 758/530/188 over three equal T4s); as the
    router's weights come from the split, that replica's KV fills first while the others idle.
    `by_region`: a group is an identical range within one region (a flow kept inside regions stays so)."""
    region = {n.name: n.region for n in cluster.nodes} if by_region else {}
    group_of: dict[str, tuple[int, int, str]] = {
        n: (r.start, r.end, region.get(n, "")) for n, r in placement.ranges.items()
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


def region_local(cluster: Cluster) -> Cluster:
    """`cluster` without the links between nodes of different regions. A layout planned region by region
    repeats the same ranges in every region; a balanced split shares each range's flow over all its
    holders, so two thirds of a three-region fleet's hops would cross slow links its plan never meant."""
    region = {n.name: n.region for n in cluster.nodes}
    links = tuple(
        lk
        for lk in cluster.links
        if lk.src not in region or lk.dst not in region or region[lk.src] == region[lk.dst]
    )
    return replace(cluster, links=links)
