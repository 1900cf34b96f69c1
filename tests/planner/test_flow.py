"""planner.flow: the paper's published max-flow values of its stored layouts, bounds, and flow invariants."""

from __future__ import annotations

import dataclasses

import pytest

from planner import bundled
from planner.cluster import SINK, SOURCE, Cluster, Link, Node
from planner.flow import (
    compute_bound,
    coverage_bound,
    peak_flow_bound,
    plan_from_placement,
    solve_max_flow,
)
from planner.placement import LayerRange, Placement

PAPER_70B = {"ilp": 1289.56, "petals": 952.11, "swarm": 757.85, "homogeneous": 531.70}


@pytest.mark.parametrize(("layout", "value"), sorted(PAPER_70B.items()))
def test_stored_layouts_reproduce_paper_max_flow(fleet70, layout: str, value: float) -> None:
    cluster, model, profiles, table = fleet70
    placement = bundled.layout(layout, "cluster24", "llama2-70b")
    result = solve_max_flow(cluster, model, profiles, placement, throughput=table)
    assert result.value_tok_per_s == pytest.approx(value, rel=1e-3)


def test_compute_bound_matches_paper_and_coverage_bound_is_tighter(fleet70) -> None:
    cluster, _, _, table = fleet70
    assert compute_bound(cluster, table) == pytest.approx(2803.86, rel=1e-3)
    cov = coverage_bound(cluster, table)
    assert 1289.56 < cov < compute_bound(cluster, table)


def test_deep_chain_attains_the_coverage_bound(fleet70) -> None:
    """Every A100 8 layers, every L4 3, every T4 2 (docs/placement-and-routing.md §8.7): 2045.6 tokens/s,
    which the coverage bound proves optimal for max-flow."""
    cluster, model, profiles, table = fleet70
    sizes = {"A100": 8, "L4": 3, "T4": 2}
    ranges = {}
    start = 0
    for node in sorted(cluster.nodes, key=lambda n: ("A100", "L4", "T4").index(n.gpu_type)):
        ranges[node.name] = LayerRange(start, start + sizes[node.gpu_type])
        start += sizes[node.gpu_type]
    assert start == 80
    result = solve_max_flow(cluster, model, profiles, Placement(80, ranges), throughput=table)
    assert result.value_tok_per_s == pytest.approx(2045.6, rel=1e-3)
    assert result.value_tok_per_s <= coverage_bound(cluster, table) * (1 + 1e-6)


def test_flow_is_conserved_and_within_capacities(fleet70) -> None:
    cluster, model, profiles, table = fleet70
    placement = bundled.layout("ilp", "cluster24", "llama2-70b")
    result = solve_max_flow(cluster, model, profiles, placement, throughput=table)
    out_of_source = sum(f for (u, _), f in result.edge_flows.items() if u == SOURCE)
    into_sink = sum(f for (_, v), f in result.edge_flows.items() if v == SINK)
    assert out_of_source == pytest.approx(result.value_tok_per_s)
    assert into_sink == pytest.approx(result.value_tok_per_s)
    for name in placement:
        inflow = sum(f for (_, v), f in result.edge_flows.items() if v == name)
        outflow = sum(f for (u, _), f in result.edge_flows.items() if u == name)
        assert inflow == pytest.approx(outflow, abs=1e-6)
        assert inflow <= result.node_capacity_tok_per_s[name] * (1 + 1e-9)
    # Flow only on arcs whose ranges join.
    for u, v in result.edge_flows:
        if u != SOURCE and v != SINK:
            assert placement.ranges[v].start <= placement.ranges[u].end < placement.ranges[v].end


def test_bottlenecks_are_a_minimum_cut(fleet70) -> None:
    cluster, model, profiles, table = fleet70
    result = solve_max_flow(
        cluster, model, profiles, bundled.layout("homogeneous", "cluster24", "llama2-70b"), throughput=table
    )
    assert sum(b.capacity_tok_per_s for b in result.bottlenecks) == pytest.approx(result.value_tok_per_s)
    assert all(b.flow_tok_per_s == pytest.approx(b.capacity_tok_per_s) for b in result.bottlenecks)
    assert result.bottlenecks[0].kind == "compute"


def test_petals_needs_partial_overlap_arcs(fleet70) -> None:
    cluster, model, profiles, table = fleet70
    petals = bundled.layout("petals", "cluster24", "llama2-70b")
    exact = solve_max_flow(cluster, model, profiles, petals, throughput=table, partial=False)
    assert exact.value_tok_per_s == pytest.approx(531.70, rel=1e-3)


def test_a_slow_link_is_the_bottleneck(fleet70) -> None:
    _, model, profiles, _ = fleet70
    slow = 16386 * 100.0  # bytes/s: 100 tokens/s of hidden state + token id
    nodes = (Node("a", "A100"), Node("b", "A100"))
    links = (Link(SOURCE, "a", 1e9, 0.001), Link("a", "b", slow, 0.001), Link("b", SINK, 1e9, 0.001))
    cluster = Cluster(nodes, links, name="tiny")
    small = dataclasses.replace(model, num_layers=24)
    placement = Placement(24, {"a": LayerRange(0, 12), "b": LayerRange(12, 24)})
    result = solve_max_flow(cluster, small, profiles, placement)
    assert result.value_tok_per_s == pytest.approx(100.0, rel=1e-6)
    assert [(b.kind, b.name) for b in result.bottlenecks] == [("link", "a->b")]


def test_plan_from_placement_records_flows_and_bound(fleet70) -> None:
    cluster, model, profiles, table = fleet70
    plan = plan_from_placement(
        cluster,
        model,
        profiles,
        bundled.layout("swarm", "cluster24", "llama2-70b"),
        method="swarm",
        throughput=table,
    )
    assert plan.objective_tok_per_s == pytest.approx(757.85, rel=1e-3)
    assert plan.bound_tok_per_s is not None and plan.bound_tok_per_s >= plan.objective_tok_per_s
    assert sum(plan.out_flows(SOURCE).values()) == pytest.approx(plan.objective_tok_per_s)
    assert plan.metrics["compute_bound_tok_per_s"] == pytest.approx(2803.86, rel=1e-3)


def test_unknown_split_is_an_input_error(fleet70) -> None:
    from planner.errors import InvalidInput

    cluster, model, profiles, table = fleet70
    with pytest.raises(InvalidInput):
        plan_from_placement(
            cluster,
            model,
            profiles,
            bundled.layout("ilp", "cluster24", "llama2-70b"),
            method="x",
            throughput=table,
            split="fair",
        )


def test_coverage_bound_is_zero_when_the_fleet_cannot_hold_every_layer(fleet70) -> None:
    """Two T4s hold at most 8 of 80 layers: nothing can be served (this used to bisect forever)."""
    cluster, _, _, table = fleet70
    t4s = [n.name for n in cluster.nodes if n.gpu_type == "T4"][:2]
    small = cluster.without(n.name for n in cluster.nodes if n.name not in t4s)
    assert coverage_bound(small, table) == 0.0
    assert coverage_bound(cluster, table) > 0.0


@pytest.mark.parametrize(("layout", "partial", "value"), [("ilp", False, 1289.56), ("petals", True, 952.11)])
def test_partial_arcs_are_chosen_by_one_rule(fleet70, layout: str, partial: bool, value: float) -> None:
    """By default exact joins, unless arcs into overlapping ranges raise the max-flow (petals needs them):
    the rule `brl simulate --layout` uses, so a hand-made plan of a layout is the same plan."""
    cluster, model, profiles, _ = fleet70
    plan = plan_from_placement(
        cluster, model, profiles, bundled.layout(layout, "cluster24", model), method="x"
    )
    assert plan.provenance["partial_inference"] is partial
    assert plan.objective_tok_per_s == pytest.approx(value, rel=1e-3)


@pytest.mark.parametrize("split", ["preflow", "balanced"])
def test_objective_is_the_max_flow_of_the_placement(fleet70, split: str) -> None:
    """Whatever split routes the plan, the figure it reports is its placement's own max-flow, and the
    routed flow leaving the source is that figure."""
    cluster, model, profiles, table = fleet70
    placement = bundled.layout("ilp", "cluster24", "llama2-70b")
    plan = plan_from_placement(cluster, model, profiles, placement, method="x", split=split, partial=False)
    again = solve_max_flow(cluster, model, profiles, placement, throughput=table, partial=False)
    assert plan.provenance["flow_split"] == split
    assert plan.objective_tok_per_s == pytest.approx(again.value_tok_per_s, rel=1e-12)
    assert sum(plan.out_flows(SOURCE).values()) == pytest.approx(plan.objective_tok_per_s, rel=1e-9)


def test_peak_flow_bound_lies_above_the_typical_batch_estimate(fleet70) -> None:
    cluster, model, profiles, _ = fleet70
    plan = plan_from_placement(
        cluster, model, profiles, bundled.layout("ilp", "cluster24", model), method="x"
    )
    peak = plan.metrics["peak_flow_bound_tok_per_s"]
    decode = plan.metrics["decode_flow_bound_tok_per_s"]
    assert plan.objective_tok_per_s < decode <= peak
    # Exact joins here: every node runs its whole range, the same value the function gives directly.
    assert peak_flow_bound(cluster, model, profiles, plan.placement, partial=False) == peak
