"""Routing after workers are lost: the same plan without some nodes. Flows through a lost node are dropped,
so IWRR shifts the load to the remaining successors in their planned proportions; callers that can should
recompute the flow on the reduced cluster (planner.flow) and build a fresh policy from that plan."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from planner.cluster import Cluster
from planner.errors import InvalidInput, NoRoute
from planner.model import ModelSpec
from planner.plan import Plan
from planner.profile import ProfileSet


def without_nodes(plan: Plan, names: Iterable[str]) -> Plan:
    """`plan` minus the nodes `names`: their layer ranges and every edge flow touching them. Raises NoRoute
    (naming the uncovered layers) when what is left cannot cover every layer."""
    gone = frozenset(names)
    placement = plan.placement.without(set(gone))
    uncovered = placement.uncovered()
    if uncovered:
        where = ", ".join(f"[{a},{b})" for a, b in uncovered)
        raise NoRoute(f"without {sorted(gone)} no node holds layers {where}", uncovered=uncovered)
    flows = {(u, v): f for (u, v), f in plan.edge_flows.items() if u not in gone and v not in gone}
    provenance = dict(plan.provenance)
    provenance["without_nodes"] = sorted(set(provenance.get("without_nodes", [])) | gone)
    return replace(plan, placement=placement, edge_flows=flows, provenance=provenance)


def replan_without(
    plan: Plan,
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    names: Iterable[str],
    *,
    settings: Mapping[str, Any] | None = None,
) -> Plan:
    """Recompute the max-flow (the routing weights) on the fleet without `names`, keeping every other
    node's layers: what a coordinator does after losing workers. Falls back to `without_nodes` (dropped
    flows) when the reduced placement has no throughput model. Raises NoRoute when layers are lost."""
    from planner.flow import plan_from_placement
    from planner.flow_split import lanes_of

    gone = frozenset(names)
    dropped = without_nodes(plan, gone)
    partial = bool(plan.provenance.get("partial_inference", True))
    try:
        fresh = plan_from_placement(
            cluster.without(gone),
            model,
            profiles,
            dropped.placement,
            method=plan.method,
            settings=settings,
            partial=partial,
            lanes=lanes_of(plan.provenance),
            provenance=dropped.provenance,
        )
    except InvalidInput:
        return dropped
    if fresh.objective_tok_per_s <= 0:
        raise NoRoute(f"without {sorted(gone)} no chain of live nodes carries any flow")
    return fresh


def reflow_without(
    plan: Plan,
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    names: Iterable[str],
    *,
    settings: Mapping[str, Any] | None = None,
) -> Plan:
    """`replan_without` for routing alone: one max-flow on the fleet without `names`, over the arcs the plan
    already routed on (its recorded `partial_inference`), and nothing else. The bounds and ceilings that
    planner.flow.plan_from_placement adds cost ten times the flow itself (bench/coordinator.py) and routing
    reads none of them, so a coordinator that must route again within milliseconds of a loss skips them;
    the plan's metrics are dropped rather than left describing the bigger fleet. Raises NoRoute when layers
    are lost or no chain carries flow; falls back to `without_nodes` when the fleet has no throughput model.
    The flow stays in the plan's lanes (planner.flow_split), as in `replan_without`."""
    from planner.flow import solve_max_flow
    from planner.flow_split import fit_lanes, lane_local, lanes_of

    gone = frozenset(names)
    dropped = without_nodes(plan, gone)
    partial = bool(plan.provenance.get("partial_inference", True))
    reduced = cluster.without(gone)
    lanes = lanes_of(plan.provenance)
    if lanes is not None:
        lanes = fit_lanes(reduced, dropped.placement, lanes)
    routed = reduced if lanes is None else lane_local(reduced, lanes)
    try:
        result = solve_max_flow(
            routed, model, profiles, dropped.placement, settings=settings, partial=partial
        )
    except InvalidInput:
        return dropped
    if result.value_tok_per_s <= 0:
        raise NoRoute(f"without {sorted(gone)} no chain of live nodes carries any flow")
    provenance = {**dropped.provenance, "flows_only": True}
    if lanes is not None:
        provenance["flow_lanes"] = lanes
    return replace(
        dropped,
        edge_flows=result.edge_flows,
        objective_tok_per_s=result.value_tok_per_s,
        bound_tok_per_s=None,
        metrics={"bottlenecks": [f"{b.kind}:{b.name}" for b in result.bottlenecks]},
        provenance=provenance,
        cluster=reduced,
    )
