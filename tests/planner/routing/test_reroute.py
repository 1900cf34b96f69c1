"""planner/routing/reroute.py: after a loss, the flow is recomputed in the plan's lanes (a type-stage plan
whose flow never switched GPU types does not start switching when a node goes)."""

from __future__ import annotations

from planner.flow import plan_from_placement
from planner.placement import LayerRange, Placement
from planner.routing import reflow_without, replan_without
from tests.planner.solvers.fleets import complete_cluster, profiles, tiny_model

MODEL = tiny_model(8)


def _laned_plan():
    # Two A100 chains (4 layers each) and two L4 chains (2 layers each), one region in type lanes.
    fleet = complete_cluster(["A100"] * 4 + ["L4"] * 8)
    ranges = {f"n{i}": LayerRange(4 * (i % 2), 4 * (i % 2) + 4) for i in range(4)}
    ranges |= {f"n{i}": LayerRange(2 * (i % 4), 2 * (i % 4) + 2) for i in range(4, 12)}
    placement = Placement(8, ranges)
    plan = plan_from_placement(
        fleet, MODEL, profiles(), placement, method="hand", partial=False, lanes={"default": "type"}
    )
    return fleet, plan


def _switches(plan, fleet) -> list[tuple[str, str]]:
    gpu = {n.name: n.gpu_type for n in fleet.nodes}
    return [
        (u, v)
        for (u, v), f in plan.edge_flows.items()
        if f > 0 and u in gpu and v in gpu and gpu[u] != gpu[v]
    ]


def test_flows_stay_in_type_lanes_after_a_loss() -> None:
    fleet, plan = _laned_plan()
    assert plan.objective_tok_per_s > 0 and not _switches(plan, fleet)
    mixed = plan_from_placement(fleet, MODEL, profiles(), plan.placement, method="hand", partial=False)
    # The A100 stage is the one lost: without lanes the survivor's chains would borrow L4 stages.
    assert mixed.provenance.get("flow_lanes") is None
    for reroute in (reflow_without, replan_without):
        after = reroute(plan, fleet, MODEL, profiles(), ["n1"])
        assert "n1" not in after.placement.ranges
        assert after.objective_tok_per_s > 0
        assert not _switches(after, fleet), reroute.__name__
        assert after.provenance["flow_lanes"] == {"default": "type"}
    unlaned = reflow_without(mixed, fleet, MODEL, profiles(), ["n1"])
    assert _switches(unlaned, fleet)


def test_a_type_that_no_longer_covers_the_model_falls_back_to_region_lanes() -> None:
    """Both A100s holding layers 4-8 lost: in type lanes the other two would carry nothing; the region
    falls back to region lanes and their chains go on through L4 stages."""
    fleet, plan = _laned_plan()
    for reroute in (reflow_without, replan_without):
        after = reroute(plan, fleet, MODEL, profiles(), ["n1", "n3"])
        assert after.provenance["flow_lanes"] == {"default": "region"}, reroute.__name__
        assert any(u in ("n0", "n2") for (u, _), f in after.edge_flows.items() if f > 0)
        assert _switches(after, fleet)
