"""Routing after workers are lost: the same plan without some nodes. Flows through a lost node are dropped,
so IWRR shifts the load to the remaining successors in their planned proportions; callers that can should
recompute the flow on the reduced cluster (planner.flow) and build a fresh policy from that plan."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from planner.errors import NoRoute
from planner.plan import Plan


def without_nodes(plan: Plan, names: Iterable[str]) -> Plan:
    """`plan` minus the nodes `names`: their layer ranges and every edge flow touching them. Raises NoRoute
    (naming the uncovered layers) when what is left cannot cover every layer."""
    gone = frozenset(names)
    placement = plan.placement.without(set(gone))
    if not placement.has_full_chain() and plan.placement.has_full_chain():
        uncovered = placement.uncovered()
        where = ", ".join(f"[{a},{b})" for a, b in uncovered) or "no joining chain"
        raise NoRoute(f"without {sorted(gone)} no chain covers the model: {where}", uncovered=uncovered)
    flows = {(u, v): f for (u, v), f in plan.edge_flows.items() if u not in gone and v not in gone}
    provenance = dict(plan.provenance)
    provenance["without_nodes"] = sorted(set(provenance.get("without_nodes", [])) | gone)
    return replace(plan, placement=placement, edge_flows=flows, provenance=provenance)
