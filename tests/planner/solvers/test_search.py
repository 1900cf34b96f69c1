"""planner.solvers.search: the local search reaches enumerated optima, proves optimality on cluster24, and
never ends below its best start."""

from __future__ import annotations

import time

import pytest

from planner import bundled
from planner.solvers import solve
from planner.solvers.search import FlowOracle, lane_layout, solve_search
from tests.planner.solvers import fleets
from tests.planner.solvers.test_milp import CASES


@pytest.mark.parametrize(("types", "rows", "slow"), CASES)
def test_reaches_enumerated_optimum_with_partial_joins(types, rows, slow) -> None:
    model = fleets.tiny_model(5)
    cluster = fleets.complete_cluster(types, slow=slow)
    tp = fleets.table(model, rows)
    optimum = fleets.enumerate_optimum(cluster, model, tp, partial=True)
    result = solve_search(fleets.context(cluster, model, tp, options={"max_iters": 3000}))
    assert result.stats["objective_tok_per_s"] == pytest.approx(optimum, rel=1e-6)
    assert FlowOracle(cluster, model, tp).value(
        {n: (r.start, r.size) for n, r in result.placement.ranges.items()}
    ) == pytest.approx(optimum, rel=1e-6)


def test_cluster24_70b_is_solved_to_the_coverage_bound() -> None:
    cluster = bundled.cluster("cluster24")
    model = bundled.model("llama2-70b")
    plan = solve(
        "search",
        cluster,
        model,
        bundled.profiles(model),
        settings=bundled.helix_settings(model),
        time_limit_s=5.0,
        clock=time.perf_counter,
    )
    assert plan.solver_stats["proven_optimal"]
    assert plan.objective_tok_per_s == pytest.approx(2045.64, rel=1e-3)
    assert plan.objective_tok_per_s >= max(plan.solver_stats["start_values"].values()) * (1 - 1e-9)


def test_lane_layouts_cover_the_model_with_fewer_hops() -> None:
    from planner.throughput import typical_throughput

    cluster = bundled.cluster("cluster24")
    model = bundled.model("llama1-30b")
    tp = typical_throughput(cluster, model, bundled.profiles(model), bundled.helix_settings(model))
    one, two = lane_layout(cluster, tp, 60, 1), lane_layout(cluster, tp, 60, 2)
    assert sum(1 for s, _ in one.values() if s == 0) == 1
    assert sum(1 for s, _ in two.values() if s == 0) == 2
    for lay in (one, two):
        assert all(k <= tp.max_layers(cluster.node(n).gpu_type) for n, (_, k) in lay.items())
        assert sum(k for _, k in lay.values()) == 60 * (1 if lay is one else 2)
    # 70B: the whole fleet holds 152 layers at most, so two disjoint copies cannot exist.
    model70 = bundled.model("llama2-70b")
    tp70 = typical_throughput(cluster, model70, bundled.profiles(model70), bundled.helix_settings(model70))
    assert lane_layout(cluster, tp70, 80, 2) == {}
