"""planner.solvers.milp: tiny fleets solved to the optimum found by enumeration; the cluster24 model size
matches the paper's; a short solve never returns less than its warm start."""

from __future__ import annotations

import time

import pytest

from planner import bundled
from planner.errors import InvalidInput
from planner.solvers import solve
from planner.solvers.base import check_placement
from planner.solvers.milp import build_model, prune_links, solve_milp
from planner.throughput import typical_throughput
from tests.planner.solvers import fleets

CASES = [
    # (types, tp rows, slow links) — optima need parallel branches, a slow link avoided, or an idle node.
    (["X", "X", "Y"], {"X": [100.0, 60.0, 30.0], "Y": [70.0, 40.0]}, {(0, 1): 16386 * 50.0}),
    (["X", "Y", "Y"], {"X": [90.0, 80.0, 20.0], "Y": [50.0, 45.0]}, {}),
    (
        ["X", "Y", "Z"],
        {"X": [40.0, 35.0, 30.0], "Y": [200.0, 10.0], "Z": [60.0, 50.0, 45.0]},
        {(1, 2): 16386 * 5.0},
    ),
]


@pytest.mark.parametrize(("types", "rows", "slow"), CASES)
def test_cold_milp_reaches_enumerated_optimum(types, rows, slow) -> None:
    model = fleets.tiny_model(5)
    cluster = fleets.complete_cluster(types, slow=slow)
    tp = fleets.table(model, rows)
    optimum = fleets.enumerate_optimum(cluster, model, tp, partial=False)
    ctx = fleets.context(
        cluster,
        model,
        tp,
        time_limit_s=20.0,
        clock=time.perf_counter,
        options={"start_from": "none", "slice_s": 20},
    )
    result = solve_milp(ctx)
    check_placement(cluster, tp, result.placement, partial=False)
    assert result.stats["objective_tok_per_s"] == pytest.approx(optimum, rel=1e-3)
    assert result.stats["status"] in ("OPTIMAL", "not run")


def test_model_size_matches_paper_formulation() -> None:
    """The paper's 24-node model without pruning has 1848 rows x 1376 columns
    (docs/placement-and-routing.md §3.3)."""
    cluster = bundled.cluster("cluster24")
    model = bundled.model("llama2-70b")
    profiles = bundled.profiles(model)
    tp = typical_throughput(cluster, model, profiles, bundled.helix_settings(model))
    ctx = fleets.context(cluster, model, tp)
    paper = build_model(
        ctx, solver_name="CBC", prune_k=None, symmetry=False, bound_cut=None, tight_big_m=False
    )
    assert (paper.m.num_rows, paper.m.num_cols) == (1848, 1376)
    pruned = build_model(ctx, solver_name="CBC", prune_k=12, symmetry=True, bound_cut=2000.0)
    assert pruned.m.num_cols < 1376
    assert len(pruned.links) < len(cluster.links)


def test_prune_keeps_fastest_links_per_node() -> None:
    cluster = fleets.complete_cluster(["X", "X", "X", "X"], slow={(0, 1): 10.0, (0, 2): 20.0})
    kept = prune_links(cluster.links, 1)
    pairs = {(lk.src, lk.dst) for lk in kept}
    assert ("n0", "n1") not in pairs and ("n0", "n3") in pairs
    for node in cluster.nodes:
        assert any(lk.src == node.name for lk in kept)


def test_short_milp_on_cluster24_is_valid_and_at_least_the_warm_start() -> None:
    cluster = bundled.cluster("cluster24")
    model = bundled.model("llama2-70b")
    plan = solve(
        "milp",
        cluster,
        model,
        bundled.profiles(model),
        settings=bundled.helix_settings(model),
        time_limit_s=3.0,
        clock=time.perf_counter,
        options={"start_from": "petals", "slice_s": 2},
    )
    stats = plan.solver_stats
    assert stats["objective_tok_per_s"] >= stats["warm_start_tok_per_s"] * (1 - 1e-9)
    assert stats["warm_start_tok_per_s"] == pytest.approx(531.70, rel=1e-3)  # petals under exact joins
    assert plan.objective_tok_per_s >= 531.70 * (1 - 1e-3)
    assert plan.placement.has_full_chain()


def test_stop_flag_ends_the_solve_with_the_warm_start() -> None:
    model = fleets.tiny_model(5)
    cluster = fleets.complete_cluster(["X", "X", "Y"])
    tp = fleets.table(model, {"X": [100.0, 60.0, 30.0], "Y": [70.0, 40.0]})
    ctx = fleets.context(cluster, model, tp, time_limit_s=60.0, clock=time.perf_counter)
    stopped = fleets.dataclasses.replace(ctx, should_stop=lambda: True)
    result = solve_milp(stopped)
    assert result.stats["slices"] == 0 and result.stats["stopped_early"]
    assert result.placement.has_full_chain()


def test_unknown_solver_is_an_input_error() -> None:
    model = fleets.tiny_model(5)
    cluster = fleets.complete_cluster(["X", "Y"])
    tp = fleets.table(model, {"X": [100.0, 60.0, 30.0], "Y": [70.0, 40.0]})
    ctx = fleets.context(cluster, model, tp, options={"solver": "gurobi", "start_from": "none"})
    with pytest.raises(InvalidInput):
        solve_milp(ctx)


def test_the_time_limit_holds_when_the_solver_overruns_its_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """CBC finishes its presolve and current node past max_seconds: later slices ask for less, so the
    solve ends inside the limit by the injected clock (each slice here overruns by 0.8 s)."""
    import mip

    fake = {"t": 0.0}
    asked: list[float] = []
    original = mip.Model.optimize

    def clock() -> float:
        fake["t"] += 0.001
        return fake["t"]

    def overrunning(self: mip.Model, *args: object, max_seconds: float = 1.0, **kwargs: object) -> object:
        asked.append(max_seconds)
        original(self, max_seconds=0.2)
        fake["t"] += max_seconds + 0.8
        return mip.OptimizationStatus.FEASIBLE

    monkeypatch.setattr(mip.Model, "optimize", overrunning)
    cluster = bundled.cluster("cluster24")
    model = bundled.model("llama2-70b")
    plan = solve(
        "milp",
        cluster,
        model,
        bundled.profiles(model),
        settings=bundled.helix_settings(model),
        time_limit_s=10.0,
        clock=clock,
        options={"start_from": "petals", "slice_s": 3},
    )
    assert plan.solver_stats["slices"] == len(asked) >= 3
    assert asked[0] == pytest.approx(3.0) and asked[-1] < 3.0  # later slices shrink by the overrun
    assert fake["t"] <= 10.0
