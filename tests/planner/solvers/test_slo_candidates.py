"""planner.solvers.slo_candidates: the prompt-blocking proxy grows when a link between regions slows, and
`slo_ranked` orders layouts by it until its deadline, keeping the old order for the rest."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from planner import bundled
from planner.slo_routing import slo_flow
from planner.solvers.base import SolveContext
from planner.solvers.branches import branch_candidates
from planner.solvers.search import to_placement
from planner.solvers.slo_candidates import fewest_crossings, prompt_blocking, slo_ranked
from planner.throughput import typical_throughput


@pytest.fixture(scope="module")
def ctx() -> SolveContext:
    cluster = bundled.cluster("3cluster24")
    model = bundled.model("llama2-70b")
    profiles = bundled.profiles(model)
    table = typical_throughput(cluster, model, profiles, bundled.helix_settings(model))
    return SolveContext(cluster, model, profiles, table, random.Random(0))


def _proxy(ctx: SolveContext, lay) -> float:
    placement = to_placement(lay, ctx.model.num_layers)
    _, flow = slo_flow(ctx.cluster, ctx.model, ctx.profiles, placement, ctx.throughput)
    return prompt_blocking(ctx, placement, flow)


def test_slower_links_between_regions_mean_more_blocking(ctx: SolveContext) -> None:
    _, lay = branch_candidates(ctx)[0]
    names = set(ctx.cluster.node_names)
    slow = replace(
        ctx.cluster,
        links=tuple(
            replace(lk, bandwidth_bytes_per_s=lk.bandwidth_bytes_per_s / 2)
            if lk.src in names
            and lk.dst in names
            and ctx.cluster.node(lk.src).region != ctx.cluster.node(lk.dst).region
            else lk
            for lk in ctx.cluster.links
        ),
    )
    base = _proxy(ctx, lay)
    assert 0 < base < _proxy(replace(ctx, cluster=slow), lay)


def test_ranked_by_the_proxy_until_the_deadline(ctx: SolveContext) -> None:
    layouts = branch_candidates(ctx)[:8]
    ordered = slo_ranked(ctx, layouts, deadline=ctx.now() + 1e6)
    assert sorted(ordered) == sorted(layouts)
    values = [_proxy(ctx, lay) for _, lay in ordered]
    assert values == sorted(values) and values[0] < values[-1]
    # A deadline already past: the first layout is still keyed, the rest keep their order.
    late = slo_ranked(ctx, layouts, deadline=ctx.now() - 1.0)
    assert late == layouts


def _serial(ctx: SolveContext) -> dict[str, tuple[int, int]]:
    """Every node in one pipeline, region after region: any chain crosses between regions twice."""
    names = sorted(ctx.cluster.node_names, key=lambda n: (ctx.cluster.node(n).region, n))
    per, layers = divmod(ctx.model.num_layers, len(names))
    lay, start = {}, 0
    for i, name in enumerate(names):
        size = per + (1 if i < layers else 0)
        lay[name] = (start, size)
        start += size
    return lay


def test_fewest_crossings_reads_the_placement(ctx: SolveContext) -> None:
    num_layers = ctx.model.num_layers
    _, branch = branch_candidates(ctx)[0]
    assert fewest_crossings(ctx, to_placement(branch, num_layers)) == 1
    assert fewest_crossings(ctx, to_placement(_serial(ctx), num_layers)) == 2
    gap = {n: (s, k) for n, (s, k) in _serial(ctx).items() if s != 0}  # nothing holds layer 0
    assert fewest_crossings(ctx, to_placement(gap, num_layers)) > len(gap)


def test_layouts_that_can_cross_least_are_keyed_first(ctx: SolveContext) -> None:
    branches = branch_candidates(ctx)[:3]
    layouts = [("serial", _serial(ctx)), *branches]
    # Out of time before the first: the order is fewest possible crossings first, then the old order.
    assert slo_ranked(ctx, layouts, deadline=ctx.now() - 1.0) == [*branches, layouts[0]]
    assert sorted(slo_ranked(ctx, layouts, deadline=ctx.now() + 1e6)) == sorted(layouts)
