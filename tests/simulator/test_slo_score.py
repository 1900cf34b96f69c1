"""simulator.slo_score: the first candidate gets a full capacity search; a later one that fails at the best
capacity so far (raised by the screening margin) is settled by that one run, scores below it and is marked
screened; a better one is searched upward and wins with a full search."""

from __future__ import annotations

import pytest

from planner.placement import LayerRange, Placement
from planner.throughput import typical_throughput
from simulator import slo_score
from simulator.capacity import SloTargets, plan_capacity
from simulator.config import SimConfig
from simulator.slo_score import SCREEN_MARGIN, slo_candidate_plan, slo_scorer
from tests.simulator.fleets import diamond, profiles, toy_model

TARGETS = SloTargets(1.0, 0.1)  # tight: the searches stay at low rates, so the runs are short
DURATION_S = 300.0


def test_a_worse_candidate_is_screened_by_one_run_and_a_better_one_searched(monkeypatch) -> None:
    starts: list[float | None] = []
    real = slo_score.plan_capacity

    def recording(*args, **kwargs):
        starts.append(kwargs["start_tok_per_s"])
        return real(*args, **kwargs)

    monkeypatch.setattr(slo_score, "plan_capacity", recording)
    cluster, _ = diamond()
    model, profs = toy_model(), profiles()
    both = Placement(8, {"a": LayerRange(0, 4), "b": LayerRange(4, 8), "c": LayerRange(4, 8)})
    slow_only = Placement(8, {"a": LayerRange(0, 4), "c": LayerRange(4, 8)})
    score = slo_scorer(cluster, model, profs, TARGETS, duration_s=DURATION_S)
    first, first_details = score(slow_only)
    assert first > 0 and not first_details["screened"] and first_details["simulations"] > 1
    table = typical_throughput(cluster, model, profs)
    # The score is the capacity search of the candidate's SLO plan with the scorer's run length.
    alone = plan_capacity(
        cluster,
        model,
        profs,
        slo_candidate_plan(cluster, model, profs, slow_only, table),
        TARGETS,
        base=SimConfig(seed=0),
        duration_s=DURATION_S,
        tolerance=0.03,
    )
    assert first == alone.rate_tok_per_s
    better, better_details = score(both)
    assert better > first and not better_details["screened"]
    # The first search starts from the plan's max-flow; the next at the best capacity raised by the margin.
    assert starts[0] is None and starts[1] == pytest.approx(first * (1 + SCREEN_MARGIN), rel=1e-12)
    worse, worse_details = score(slow_only)
    assert worse_details["screened"] and worse_details["simulations"] == 1
    assert 0 < worse < better
