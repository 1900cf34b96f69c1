"""planner.solvers.serve: stage layouts are valid, the proxy behaves, and the injected scorer decides."""

from __future__ import annotations

import itertools
import random

import pytest

from planner import bundled
from planner.solvers.base import SolveContext, check_placement
from planner.solvers.search import from_placement, to_placement
from planner.solvers.serve import ProxyOracle, groups_of, solve_serve, stage_candidates, stage_layout
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
