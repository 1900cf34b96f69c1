"""The coordinator overhead bench's toy run (real coordinator processes, stub gRPC workers), and its
routing half checked against the walk it replaced."""

import random

from bench.coordinator_routing import (
    FLEET42,
    BeforeMaxFlow,
    fleets,
    lost_node,
    requests,
    run_decisions,
)
from planner import bundled
from planner.generate import single_region
from planner.routing import make_policy, reflow_without, replan_without
from planner.routing.maxflow import MaxFlowPolicy
from planner.solvers import solve
from tests.bench.bench_run import bench_figures


def test_bench_coordinator_quick_prints_json_last() -> None:
    figures, _ = bench_figures("coordinator.py", "--quick")
    assert figures["quick"] is True
    assert figures["routing.nodes24.decisions_per_s"] > 0
    assert figures["routing.nodes24.speedup"] > 0
    assert 0 < figures["routing.nodes24.admitted_share"] < 1  # the KV book both admits and refuses
    assert figures["replan_flow_ms.nodes24"] > 0
    for replicas in (1, 2):
        assert figures[f"end_to_end.replicas{replicas}.tokens"] == 2 * 2 * 8  # clients x requests x tokens
        assert figures[f"end_to_end.replicas{replicas}.failed"] == 0
        assert figures[f"cpu_us_per_token.replicas{replicas}"] > 0
    assert figures["profile_top"] and "ncalls" in figures["profile_top"][0]


def test_fast_walk_chooses_as_the_old_one_on_42_nodes() -> None:
    model = bundled.model("llama2-70b")
    profiles = bundled.profiles(model)
    cluster = single_region(FLEET42, random.Random(0), name="fleet42")
    plan = solve("petals", cluster, model, profiles, seed=0)
    reqs = requests(1500, seed=3)
    old = BeforeMaxFlow(plan, cluster)
    new = make_policy("maxflow", plan, cluster, dead_end="rollback")  # the old walk's rule
    assert isinstance(new, MaxFlowPolicy)
    _, before = run_decisions(old, plan, reqs)
    _, after = run_decisions(new, plan, reqs)
    assert after == before
    assert any(c is None for c in after) and any(c is not None for c in after)
    assert [t.loads for t in new.iwrr.values()] == [t.loads for t in old.iwrr.values()]


def test_reflow_without_routes_like_replan_without() -> None:
    model = bundled.model("llama2-70b")
    profiles = bundled.profiles(model)
    (fleet,) = fleets(("nodes24",), model, profiles)
    gone = lost_node(fleet.plan)
    fast = reflow_without(fleet.plan, fleet.cluster, model, profiles, [gone])
    full = replan_without(fleet.plan, fleet.cluster, model, profiles, [gone])
    assert gone not in fast.placement.ranges and fast.provenance["flows_only"] is True
    assert fast.objective_tok_per_s == full.objective_tok_per_s
    assert dict(fast.edge_flows) == dict(full.edge_flows)
