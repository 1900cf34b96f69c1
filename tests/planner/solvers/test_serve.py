"""planner.solvers.serve: stage layouts are valid, the proxy behaves, and the injected scorer decides."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest

from planner import bundled
from planner.solvers.base import SolveContext, check_placement
from planner.solvers.confirm import CONFIRM_REPLICAS
from planner.solvers.search import from_placement, to_placement
from planner.solvers.serve import (
    CANDIDATE_SHARE,
    FINAL_RESERVE_SHARE,
    ProxyOracle,
    groups_of,
    solve_serve,
    stage_candidates,
    stage_layout,
)
from planner.throughput import typical_throughput


@pytest.fixture(scope="module")
def ctx70() -> SolveContext:
    cluster = bundled.cluster("cluster24")
    model = bundled.model("llama2-70b")
    profiles = bundled.profiles(model)
    tp = typical_throughput(cluster, model, profiles, bundled.helix_settings(model))
    return SolveContext(cluster, model, profiles, tp, random.Random(0), time_limit_s=5.0)


def test_stage_layouts_are_valid_and_trade_hops_for_width(ctx70) -> None:
    groups = groups_of(ctx70.cluster, ctx70.throughput)
    assert [ctx70.cluster.node(g[0]).gpu_type for g in groups] == ["A100", "L4", "T4"]
    hops = {}
    for widths in itertools.product((1, 2), (1, 2), (1, 2, 3)):
        lay = stage_layout(ctx70.cluster, ctx70.throughput, 80, groups, list(widths))
        if not lay:
            continue
        placement = to_placement(lay, 80)
        check_placement(ctx70.cluster, ctx70.throughput, placement, partial=False)
        hops[widths] = len({sk for sk in lay.values()})
    assert hops[(1, 1, 1)] == 24
    assert hops[(1, 2, 3)] < hops[(1, 2, 1)] < hops[(1, 1, 1)]


def test_proxy_sees_kv_and_hops_that_max_flow_ignores(ctx70) -> None:
    proxy = ProxyOracle(ctx70)
    groups = groups_of(ctx70.cluster, ctx70.throughput)
    deep = proxy.estimate(stage_layout(ctx70.cluster, ctx70.throughput, 80, groups, [1, 1, 1]))
    wide = proxy.estimate(stage_layout(ctx70.cluster, ctx70.throughput, 80, groups, [1, 2, 3]))
    assert deep.max_flow_tok_per_s > wide.max_flow_tok_per_s
    assert deep.hops == pytest.approx(24.0)
    assert deep.token_latency_s > wide.token_latency_s
    assert wide.decode_tok_per_s > deep.decode_tok_per_s
    ilp = proxy.estimate(from_placement(bundled.layout("ilp", "cluster24", "llama2-70b")))
    assert ilp.max_flow_tok_per_s == pytest.approx(1289.56, rel=1e-3)
    assert 14 <= ilp.hops <= 16


def test_the_scorer_decides_and_the_result_is_valid(ctx70) -> None:
    seen: list[int] = []

    def fewest_holders(placement) -> tuple[float, dict]:
        # A stand-in for the simulator: prefers plans that use fewer nodes.
        seen.append(len(placement))
        return 100.0 - len(placement), {"holders": len(placement)}

    ctx = SolveContext(
        ctx70.cluster,
        ctx70.model,
        ctx70.profiles,
        ctx70.throughput,
        random.Random(0),
        time_limit_s=5.0,
        scorer=fewest_holders,
        options={"max_scored": 8, "proxy_iters": 50},
    )
    result = solve_serve(ctx)
    check_placement(ctx.cluster, ctx.throughput, result.placement, partial=False)
    assert result.stats["scored"] == len(seen) <= 8
    assert result.stats["decode_tok_per_s"] == max(result.stats["scores"].values())
    assert len(result.placement) == min(seen)


def test_without_a_scorer_the_proxy_picks(ctx70) -> None:
    ctx = SolveContext(
        ctx70.cluster,
        ctx70.model,
        ctx70.profiles,
        ctx70.throughput,
        random.Random(0),
        time_limit_s=5.0,
        options={"proxy_iters": 50},
    )
    result = solve_serve(ctx)
    check_placement(ctx.cluster, ctx.throughput, result.placement, partial=False)
    assert result.stats["proxy_decode_tok_per_s"] >= max(result.stats["proxy"].values()) - 0.1  # rounded
    assert len(stage_candidates(ctx)) > 10


def test_a_plan_comes_back_even_when_time_is_up(ctx70) -> None:
    calls: list[int] = []

    def scorer(placement) -> tuple[float, dict]:
        calls.append(1)
        return 1.0, {}

    ctx = SolveContext(
        ctx70.cluster,
        ctx70.model,
        ctx70.profiles,
        ctx70.throughput,
        random.Random(0),
        time_limit_s=0.0,
        scorer=scorer,
        should_stop=lambda: True,
    )
    result = solve_serve(ctx)
    assert len(calls) == 1
    check_placement(ctx.cluster, ctx.throughput, result.placement, partial=False)


class FakeWallClock:
    """A wall clock the test controls: each reading costs `tick_s`, each score `score_s`."""

    def __init__(self, tick_s: float, score_s: float) -> None:
        self.t, self.tick_s, self.score_s = 0.0, tick_s, score_s

    def __call__(self) -> float:
        self.t += self.tick_s
        return self.t

    def scorer(self, placement) -> tuple[float, dict]:
        self.t += self.score_s
        return float(len(placement)), {}


@pytest.mark.parametrize("score_s", [0.5, 3.0])
def test_the_time_limit_is_wall_clock_seconds_including_scoring(ctx70, score_s: float) -> None:
    clock = FakeWallClock(tick_s=0.002, score_s=score_s)
    ctx = SolveContext(
        ctx70.cluster,
        ctx70.model,
        ctx70.profiles,
        ctx70.throughput,
        random.Random(0),
        time_limit_s=20.0,
        clock=clock,
        scorer=clock.scorer,
    )
    result = solve_serve(ctx)
    # Every phase (candidates, scores, shifts) ends inside the limit, with the final slice left over.
    assert clock.t <= 20.0 * (1 - FINAL_RESERVE_SHARE) + 0.01
    assert result.stats["scored"] >= 2
    assert result.stats["candidates_s"] <= 20.0 * CANDIDATE_SHARE + 0.01


def test_many_gpu_types_sample_widths_and_respect_the_clock() -> None:
    from planner.generate import single_region

    counts = {"A100": 4, "V100": 6, "L4": 8, "L4x2": 4, "T4": 10, "T4x2": 6, "T4x4": 4}
    cluster = single_region(counts, random.Random(1))
    model = bundled.model("llama2-70b")
    profiles = bundled.profiles(model)
    tp = typical_throughput(cluster, model, profiles, bundled.helix_settings(model))
    clock = FakeWallClock(tick_s=0.002, score_s=0.2)
    ctx = SolveContext(
        cluster, model, profiles, tp, random.Random(0), time_limit_s=2.0, clock=clock, scorer=clock.scorer
    )
    assert len(groups_of(cluster, tp)) == 7
    result = solve_serve(ctx)
    check_placement(cluster, tp, result.placement, partial=False)
    assert clock.t <= 2.0 * (1 - FINAL_RESERVE_SHARE) + 0.01
    assert result.stats["candidates"] > 10


def test_with_many_groups_the_order_phase_scores_more_structures() -> None:
    """Seven GPU types have no group reorderings to try: the order phase's time goes to structures the
    first phase had no time for, so more are scored than fit in the first phase alone."""
    from planner.generate import single_region
    from planner.solvers.serve import STRUCTURE_SHARE

    counts = {"A100": 4, "V100": 6, "L4": 8, "L4x2": 4, "T4": 10, "T4x2": 6, "T4x4": 4}
    cluster = single_region(counts, random.Random(0))
    model = bundled.model("llama2-70b")
    profiles = bundled.profiles(model)
    tp = typical_throughput(cluster, model, profiles, bundled.helix_settings(model))
    clock = FakeWallClock(tick_s=0.01, score_s=1.0)
    ctx = SolveContext(
        cluster, model, profiles, tp, random.Random(0), time_limit_s=20.0, clock=clock, scorer=clock.scorer
    )
    result = solve_serve(ctx)
    unshifted = [name for name in result.stats["scores"] if "+shift" not in name]
    # Scores of 1 s from the end of the candidates phase to the structure phase's end, at most.
    first_phase = int(STRUCTURE_SHARE * 20.0 - result.stats["candidates_s"]) + 1
    assert len(unshifted) > first_phase
    assert clock.t <= 20.0 * (1 - FINAL_RESERVE_SHARE) + 0.01
    check_placement(cluster, tp, result.placement, partial=False)


def test_no_candidate_in_time_is_a_typed_error(ctx70, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a very large fleet the candidate phase can end before building one: a named error, not an IndexError."""
    from planner.errors import InfeasiblePlan
    from planner.solvers import serve

    monkeypatch.setattr(serve, "ranked_candidates", lambda *args, **kwargs: [])
    with pytest.raises(InfeasiblePlan, match="no candidate placement"):
        solve_serve(ctx70)


class SeededJudge:
    """A stand-in for the simulator (its runs are too slow for a unit test): fewer holders score higher,
    and the first run adds a bonus to placements with an odd number of holders that replicas do not."""

    def __init__(self) -> None:
        self.replicas: list[int] = []

    def __call__(self, placement) -> tuple[float, dict]:
        return 100.0 - len(placement) + (3.0 if len(placement) % 2 else 0.0), {}

    def replica(self, placement, r: int) -> tuple[float, dict]:
        self.replicas.append(r)
        return 100.0 - len(placement), {}


def test_serve_confirms_its_contenders_with_a_replicating_scorer(ctx70) -> None:
    judge = SeededJudge()
    ctx = dataclasses.replace(
        ctx70, rng=random.Random(0), scorer=judge, options={"max_scored": 8, "proxy_iters": 50}
    )
    result = solve_serve(ctx)
    check_placement(ctx.cluster, ctx.throughput, result.placement, partial=False)
    confirmed = result.stats["confirmed"]
    assert confirmed and all(len(v) == 1 + CONFIRM_REPLICAS for v in confirmed.values())
    assert sorted(set(judge.replicas)) == list(range(1, CONFIRM_REPLICAS + 1))
    means = {name: sum(v) / len(v) for name, v in confirmed.items()}
    assert result.stats["chosen"] == max(means, key=lambda n: means[n])
    assert result.stats["decode_tok_per_s"] == pytest.approx(max(means.values()), abs=0.01)
