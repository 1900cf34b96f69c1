"""planner.flow_split: the balanced split of a max-flow over the replicas of a range, and flow kept inside
lanes (regions, or GPU types in a region) for layouts planned region by region (reached through
plan_from_placement, as callers do)."""

from __future__ import annotations

from typing import Any

import pytest

from planner import bundled
from planner.cluster import SOURCE
from planner.flow import plan_from_placement
from planner.placement import LayerRange, Placement
from planner.throughput import typical_throughput


def test_balanced_split_keeps_the_flow_and_spreads_replicas(fleet70) -> None:
    """Three T4s holding the same range share its flow by capacity; value, conservation, capacities hold."""
    cluster, model, profiles, table = fleet70
    types = {n.name: n.gpu_type for n in cluster.nodes}
    a100 = [n for n, t in types.items() if t == "A100"]
    t4 = [n for n, t in types.items() if t == "T4"][:9]
    l4 = [n for n, t in types.items() if t == "L4"]
    ranges = {}
    for i, n in enumerate(a100):
        ranges[n] = LayerRange(9 * i, 9 * i + 9)
    for i in range(3):
        for n in t4[3 * i : 3 * i + 3]:
            ranges[n] = LayerRange(36 + 4 * i, 40 + 4 * i)
    for i, n in enumerate(l4):
        ranges[n] = LayerRange(48 + 4 * i, 52 + 4 * i)
    placement = Placement(80, ranges)
    pre = plan_from_placement(
        cluster, model, profiles, placement, method="x", throughput=table, partial=False
    )
    bal = plan_from_placement(
        cluster, model, profiles, placement, method="x", throughput=table, partial=False, split="balanced"
    )
    assert bal.provenance["flow_split"] == "balanced"
    assert bal.objective_tok_per_s == pre.objective_tok_per_s
    assert sum(bal.out_flows(SOURCE).values()) == pytest.approx(bal.objective_tok_per_s)
    for name in placement:
        inflow = sum(f for (_, v), f in bal.edge_flows.items() if v == name)
        outflow = sum(f for (u, _), f in bal.edge_flows.items() if u == name)
        assert inflow == pytest.approx(outflow)
        assert inflow <= table.tp(types[name], ranges[name].size) * (1 + 1e-9)
    for i in range(3):
        through = [sum(f for (_, v), f in bal.edge_flows.items() if v == n) for n in t4[3 * i : 3 * i + 3]]
        assert max(through) == pytest.approx(min(through))


def test_a_layout_planned_per_region_routes_inside_its_regions() -> None:
    """Two regions, each holding the model as the same eight stages: the balanced split over the whole fleet
    sends half of every hop across the slow link between them; kept within regions, none crosses, the flow
    is conserved node by node, and the plan still embeds the whole fleet (its cross-region links too)."""
    import random

    from planner.generate import multi_region

    model = bundled.model("llama2-70b")
    profiles = bundled.profiles(model)
    cluster = multi_region({"r0": {"A100": 8}, "r1": {"A100": 8}}, random.Random(0), coordinator_region="r0")
    table = typical_throughput(cluster, model, profiles, bundled.helix_settings(model))
    region = {n.name: n.region for n in cluster.nodes}
    ranges = {}
    for r in ("r0", "r1"):
        names = [n for n in region if region[n] == r]
        for i, n in enumerate(names):
            ranges[n] = LayerRange(10 * i, 10 * i + 10)
    placement = Placement(80, ranges)

    def crossing(plan) -> float:
        return sum(
            f
            for (u, v), f in plan.edge_flows.items()
            if u in region and v in region and region[u] != region[v]
        )

    kwargs: dict[str, Any] = {"method": "x", "throughput": table, "partial": False, "split": "balanced"}
    whole = plan_from_placement(cluster, model, profiles, placement, **kwargs)
    local = plan_from_placement(cluster, model, profiles, placement, lanes={}, **kwargs)
    assert crossing(whole) > 0.1 * whole.objective_tok_per_s
    assert crossing(local) == 0.0
    assert local.provenance["flow_split"] == "balanced" and local.provenance["flow_lanes"] == {}
    assert sum(local.out_flows(SOURCE).values()) == pytest.approx(local.objective_tok_per_s)
    for name in placement:
        inflow = sum(f for (_, v), f in local.edge_flows.items() if v == name)
        outflow = sum(f for (u, _), f in local.edge_flows.items() if u == name)
        assert inflow == pytest.approx(outflow) and inflow > 0
    assert local.cluster == cluster


def test_lane_local_drops_only_the_links_between_regions() -> None:
    import random

    from planner.cluster import SINK
    from planner.flow_split import lane_local
    from planner.generate import multi_region

    cluster = multi_region({"r0": {"A100": 3}, "r1": {"T4": 2}}, random.Random(1))
    region = {n.name: n.region for n in cluster.nodes}
    local = lane_local(cluster, {})
    between = [
        lk
        for lk in cluster.links
        if lk.src in region and lk.dst in region and region[lk.src] != region[lk.dst]
    ]
    assert between  # the fleet has cross-region links to drop
    assert set(local.links) == set(cluster.links) - set(between)
    # The coordinator sits in a region of its own: its links to every node stay.
    assert {lk.dst for lk in local.links if lk.src == SOURCE} == set(region)
    assert {lk.src for lk in local.links if lk.dst == SINK} == set(region)
    assert local.nodes == cluster.nodes


def test_type_lanes_keep_each_gpu_type_on_its_own_links() -> None:
    """Region r0 in type lanes, r1 in its region: r0's A100s and T4s lose the links between them, r1's
    types keep theirs, and a plan in those lanes routes no flow between types of r0 nor between regions."""
    import random

    from planner.flow_split import lane_labels, lane_local
    from planner.generate import multi_region

    model = bundled.model("llama2-70b")
    profiles = bundled.profiles(model)
    fleet = {"r0": {"A100": 10, "T4": 20}, "r1": {"A100": 4, "T4": 8}}
    cluster = multi_region(fleet, random.Random(0), coordinator_region="r0")
    lanes = {"r0": "type"}
    label = lane_labels(cluster, lanes)
    node = {n.name: n for n in cluster.nodes}
    assert {label[n] for n in node} == {"r0/A100", "r0/T4", "r1"}
    local = lane_local(cluster, lanes)
    kept = {(lk.src, lk.dst) for lk in local.links}
    for lk in cluster.links:
        if lk.src in node and lk.dst in node:
            same = label[lk.src] == label[lk.dst]
            assert ((lk.src, lk.dst) in kept) == same

    # Every A100 holds 8 layers and every T4 4, each type stacked end to start within its region.
    ranges = {}
    for region in fleet:
        for gpu, k in (("A100", 8), ("T4", 4)):
            names = [n for n in node if node[n].region == region and node[n].gpu_type == gpu]
            for i, n in enumerate(names):
                start = (i * k) % 80
                ranges[n] = LayerRange(start, start + k)
    placement = Placement(80, ranges)
    table = typical_throughput(cluster, model, profiles, bundled.helix_settings(model))
    kwargs: dict[str, Any] = {"method": "x", "throughput": table, "partial": False, "split": "balanced"}
    plan = plan_from_placement(cluster, model, profiles, placement, lanes=lanes, **kwargs)
    mixed = plan_from_placement(cluster, model, profiles, placement, lanes={}, **kwargs)
    assert plan.provenance["flow_lanes"] == lanes and plan.provenance["flow_split"] == "balanced"
    inner = [(u, v) for (u, v), f in plan.edge_flows.items() if f > 0 and u in node and v in node]
    assert inner and all(label[u] == label[v] for u, v in inner)
    # Each type covers the model alone here: lanes cost no max-flow, they only forbid switching types.
    assert plan.objective_tok_per_s == pytest.approx(mixed.objective_tok_per_s, rel=1e-6)
    assert plan.objective_tok_per_s > 0


def test_lanes_of_reads_plans_old_and_new_and_names_a_bad_rule() -> None:
    from planner.errors import InvalidInput
    from planner.flow_split import lanes_of

    assert lanes_of({}) is None
    assert lanes_of({"flow_within_regions": True}) == {}
    assert lanes_of({"flow_lanes": {"r0": "type", "r1": "region"}}) == {"r0": "type", "r1": "region"}
    with pytest.raises(InvalidInput) as err:
        lanes_of({"flow_lanes": {"r0": "gpu"}})
    assert err.value.field == "provenance.flow_lanes.r0" and "type" in str(err.value)
    with pytest.raises(InvalidInput) as err:
        lanes_of({"flow_lanes": ["r0"]})
    assert err.value.field == "provenance.flow_lanes"


def test_fit_lanes_keeps_type_lanes_only_where_every_type_covers_the_model() -> None:
    import random

    from planner.flow_split import fit_lanes
    from planner.generate import multi_region

    cluster = multi_region({"r0": {"A100": 2, "T4": 4}, "r1": {"A100": 2, "T4": 4}}, random.Random(0))
    node = {n.name: n for n in cluster.nodes}
    ranges = {}
    for region in ("r0", "r1"):
        a100 = [n for n in node if node[n].region == region and node[n].gpu_type == "A100"]
        t4 = [n for n in node if node[n].region == region and node[n].gpu_type == "T4"]
        ranges |= {n: LayerRange(40 * i, 40 * i + 40) for i, n in enumerate(a100)}
        ranges |= {n: LayerRange(20 * i, 20 * i + 20) for i, n in enumerate(t4)}
    # r1 loses the A100 holding layers 40-80: its other A100 no longer makes a chain alone.
    lost = next(
        n for n, r in ranges.items() if node[n].region == "r1" and node[n].gpu_type == "A100" and r.start
    )
    del ranges[lost]
    lanes = fit_lanes(cluster, Placement(80, ranges), {"r0": "type", "r1": "type"})
    assert lanes == {"r0": "type", "r1": "region"}
    assert fit_lanes(cluster, Placement(80, ranges), {"r0": "region"}) == {"r0": "region"}
