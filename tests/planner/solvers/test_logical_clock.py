"""Without an injected clock a solve still ends: time is logical and the time limit acts as a work budget."""

from __future__ import annotations

import pytest

from planner import bundled
from planner.solvers import solve
from planner.solvers.base import LOGICAL_TICK_S


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["search", "milp"])
def test_solve_without_a_clock_returns_a_valid_plan(method: str) -> None:
    cluster = bundled.cluster("local-cpu")
    model = bundled.model("smollm2-135m")
    plan = solve(method, cluster, model, bundled.profiles(model), time_limit_s=0.5, clock=None)
    assert plan.placement.has_full_chain()
    assert plan.objective_tok_per_s > 0


def test_same_seed_without_a_clock_gives_the_same_plan() -> None:
    cluster = bundled.cluster("cluster10")
    model = bundled.model("llama1-30b")
    profiles = bundled.profiles(model)
    first = solve("search", cluster, model, profiles, time_limit_s=200 * LOGICAL_TICK_S, seed=3)
    second = solve("search", cluster, model, profiles, time_limit_s=200 * LOGICAL_TICK_S, seed=3)
    assert first.placement == second.placement
    assert first.objective_tok_per_s == second.objective_tok_per_s
