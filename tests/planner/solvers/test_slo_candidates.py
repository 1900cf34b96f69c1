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
from planner.solvers.slo_candidates import prompt_blocking, slo_ranked
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
