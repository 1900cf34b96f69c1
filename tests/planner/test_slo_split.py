"""planner.slo_split: on 3cluster24 branch layouts the path decomposition rebuilds the balanced split; region
weights lower the prompt-blocking proxy while the flow stays a flow (conserved, within the original edge
flows) of at least the value asked for; an SLO plan carries the weights and the routed value."""

from __future__ import annotations

import random

import pytest

from planner import bundled
from planner.cluster import SINK, SOURCE
from planner.flow import plan_from_placement, solve_max_flow
from planner.slo_routing import MIN_FLOW_SHARE, slo_plan
from planner.slo_split import flow_paths, prompt_blocking, slo_weights, weighted_flows
from planner.solvers.base import SolveContext
from planner.solvers.branches import branch_candidates
from planner.solvers.search import to_placement
from tests.planner.conftest import bundled_fleet


@pytest.fixture(scope="module")
def fleet():
    return bundled_fleet("3cluster24")


@pytest.fixture(scope="module")
def branch_plans(fleet):
    """(placement, balanced-split plan, unrestricted max-flow value) of the first branch layouts."""
    cluster, model, profiles, table = fleet
    ctx = SolveContext(cluster, model, profiles, table, random.Random(0))
    out = []
    for _, lay in branch_candidates(ctx)[:16]:
        placement = to_placement(lay, model.num_layers)
        full = solve_max_flow(cluster, model, profiles, placement, throughput=table, partial=False)
        if full.value_tok_per_s <= 0:
            continue
        plan = plan_from_placement(
            cluster, model, profiles, placement, method="t", throughput=table, partial=False, split="balanced"
        )
        out.append((placement, plan, full.value_tok_per_s))
    return out


def _value(flows) -> float:
    return sum(f for (u, _), f in flows.items() if u == SOURCE)


def test_the_paths_rebuild_the_flow(fleet, branch_plans) -> None:
    cluster = fleet[0]
    region_of = {n.name: n.region for n in cluster.nodes}
    for _, plan, _ in branch_plans:
        rebuilt = weighted_flows(flow_paths(plan.edge_flows), {}, region_of)
        for edge, f in plan.edge_flows.items():
            assert rebuilt.get(edge, 0.0) == pytest.approx(f, rel=1e-6, abs=1e-6)


def test_weights_lower_the_proxy_and_keep_a_flow_of_the_value_asked(fleet, branch_plans) -> None:
    cluster, model, profiles, _ = fleet
    weighted = 0
    for placement, plan, full in branch_plans:
        floor = MIN_FLOW_SHARE * full
        weights, flows = slo_weights(cluster, model, profiles, placement, plan.edge_flows, min_value=floor)
        before = prompt_blocking(cluster, model, profiles, placement, plan.edge_flows)
        after = prompt_blocking(cluster, model, profiles, placement, flows)
        if not weights:
            assert flows == dict(plan.edge_flows)
            continue
        weighted += 1
        assert all(0 < w < 1 for w in weights.values())
        assert after < before * 0.99
        assert _value(flows) >= floor * (1 - 1e-9)
        # Still a flow: conserved at every node, and no edge carries more than the balanced split gave it.
        for name in placement.ranges:
            inflow = sum(f for (_, v), f in flows.items() if v == name)
            outflow = sum(f for (u, _), f in flows.items() if u == name)
            assert inflow == pytest.approx(outflow, rel=1e-6, abs=1e-6)
        for edge, f in flows.items():
            assert f <= plan.edge_flows[edge] * (1 + 1e-9)
        assert _value(flows) == pytest.approx(sum(f for (_, v), f in flows.items() if v == SINK), rel=1e-9)
    assert weighted >= 3  # the case the module exists for is common among branch layouts


def test_no_room_below_the_value_means_no_weights(fleet, branch_plans) -> None:
    cluster, model, profiles, _ = fleet
    placement, plan, _ = branch_plans[0]
    weights, flows = slo_weights(
        cluster, model, profiles, placement, plan.edge_flows, min_value=_value(plan.edge_flows)
    )
    assert weights == {} and flows == dict(plan.edge_flows)


def test_the_slo_plan_carries_its_weights_and_routed_value(fleet, branch_plans) -> None:
    cluster, model, profiles, table = fleet
    for placement, _, _ in branch_plans:
        plan = slo_plan(cluster, model, profiles, placement, method="serve", throughput=table)
        weights = plan.provenance.get("flow_region_weights")
        if not weights:
            continue
        assert plan.objective_tok_per_s == pytest.approx(_value(plan.edge_flows), rel=1e-9)
        assert plan.objective_tok_per_s < plan.provenance["max_flow_before_weights_tok_per_s"]
        assert "flow_region_pairs" in plan.provenance and "partial_inference" in plan.provenance
        return
    pytest.fail("no branch layout got region weights")


def test_one_region_gets_no_weights() -> None:
    cluster, model, profiles, table = bundled_fleet("cluster24")
    placement = bundled.layout("ilp", "cluster24", "llama2-70b")
    plan = slo_plan(cluster, model, profiles, placement, method="serve", throughput=table)
    assert "flow_region_weights" not in plan.provenance and plan.objective_tok_per_s > 0
