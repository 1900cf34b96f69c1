"""petals / swarm / separate / homogeneous: the paper's layouts and values, and validity on random fleets."""

from __future__ import annotations

import random

import pytest

from planner import bundled
from planner.errors import InfeasiblePlan, UnknownName
from planner.solvers import method_names, solve
from planner.solvers.base import get_solver
from planner.solvers.separate import split_evenly
from tests.planner.solvers import fleets

HEURISTICS = ("petals", "swarm", "separate", "homogeneous")


@pytest.fixture(scope="module")
def fleet70():
    cluster = bundled.cluster("cluster24")
    model = bundled.model("llama2-70b")
    return cluster, model, bundled.profiles(model), bundled.helix_settings(model)


@pytest.mark.parametrize("method", ["petals", "swarm", "homogeneous"])
def test_reproduces_the_papers_stored_layout(fleet70, method: str) -> None:
    cluster, model, profiles, settings = fleet70
    plan = solve(method, cluster, model, profiles, settings=settings, seed=0)
    assert dict(plan.placement.ranges) == dict(bundled.layout(method, "cluster24", "llama2-70b").ranges)


@pytest.mark.parametrize(
    ("method", "value"), [("petals", 952.11), ("swarm", 757.85), ("homogeneous", 531.70)]
)
def test_max_flow_matches_paper(fleet70, method: str, value: float) -> None:
    cluster, model, profiles, settings = fleet70
    plan = solve(method, cluster, model, profiles, settings=settings, seed=0)
    assert plan.objective_tok_per_s == pytest.approx(value, rel=1e-3)


def test_homogeneous_makes_one_pipeline_of_fast_types_first(fleet70) -> None:
    cluster, model, profiles, settings = fleet70
    plan = solve("homogeneous", cluster, model, profiles, settings=settings)
    types = sorted((r.start, cluster.node(n).gpu_type) for n, r in plan.placement.ranges.items())
    # Type boundaries do not reset the pipeline: a fifth L4 closes it and every T4 stays idle.
    assert [t for _, t in types] == ["A100"] * 4 + ["L4"] * 5


def test_separate_uses_one_pipeline_per_type_when_each_type_fits() -> None:
    cluster = bundled.cluster("cluster24")
    model = bundled.model("llama1-30b")
    plan = solve("separate", cluster, model, bundled.profiles(model), settings=bundled.helix_settings(model))
    assert plan.solver_stats["pipelines"] == 3
    for gpu in ("A100", "L4", "T4"):
        starts = [r.start for n, r in plan.placement.ranges.items() if cluster.node(n).gpu_type == gpu]
        assert starts.count(0) == 1
    assert split_evenly(60, 8) == [7, 7, 7, 7, 8, 8, 8, 8]


def test_registry_lists_methods_and_rejects_unknown() -> None:
    assert {"petals", "swarm", "separate", "homogeneous", "milp", "search"} <= set(method_names())
    with pytest.raises(UnknownName):
        get_solver("gurobi")


def _random_fleet(seed: int):
    rng = random.Random(seed)
    num_layers = rng.choice([6, 8, 12])
    model = fleets.tiny_model(num_layers)
    rows = {}
    for t in ("X", "Y", "Z"):
        kmax = rng.randint(1, 5)
        top = rng.uniform(50, 500)
        rows[t] = sorted((top / k * rng.uniform(0.7, 1.0) for k in range(1, kmax + 1)), reverse=True)
    types = [rng.choice("XYZ") for _ in range(rng.randint(2, 9))]
    slow = {
        (i, j): rng.uniform(1e5, 1e7)
        for i in range(len(types))
        for j in range(i + 1, len(types))
        if rng.random() < 0.3
    }
    return fleets.complete_cluster(types, slow=slow), model, fleets.table(model, rows)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("method", HEURISTICS + ("search",))
def test_never_returns_an_invalid_placement(seed: int, method: str) -> None:
    cluster, model, tp = _random_fleet(seed)
    ctx = fleets.context(cluster, model, tp, seed=seed, options={"max_iters": 200})
    try:
        result = get_solver(method)(ctx)
    except InfeasiblePlan:
        capacity = sum(tp.max_layers(n.gpu_type) for n in cluster.nodes)
        # Only a fleet that is short of layers, or a swarm without enough nodes or a common stage, may refuse.
        assert method in ("swarm", "homogeneous", "separate") or capacity < model.num_layers
        return
    assert fleets.valid(result.placement, cluster, tp)


@pytest.mark.parametrize("seed", range(4))
def test_same_seed_same_result(seed: int) -> None:
    cluster, model, tp = _random_fleet(seed)
    runs = [
        get_solver("search")(fleets.context(cluster, model, tp, seed=seed, options={"max_iters": 150}))
        for _ in range(2)
    ]
    assert runs[0].placement == runs[1].placement
