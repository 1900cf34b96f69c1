"""Branch layouts (planner/solvers/branches.py): a trunk region and parallel branch regions, each request
crossing one region boundary; slow-link detection; serve ranking fewer crossings first on such fleets."""

from __future__ import annotations

import random
import time

import pytest

from planner import bundled
from planner.cluster import Cluster
from planner.solvers.base import SolveContext, check_placement
from planner.solvers.branches import (
    EDGE,
    _edge_split,
    branch_candidates,
    slow_links,
)
from planner.solvers.search import to_placement
from planner.solvers.serve import ProxyOracle, ranked_candidates
from planner.solvers.stages import groups_of, stage_layout
from planner.throughput import typical_throughput


def _ctx(name: str) -> SolveContext:
    cluster = bundled.cluster(name)
    model = bundled.model("llama2-70b")
    profiles = bundled.profiles(model)
    tp = typical_throughput(cluster, model, profiles, bundled.helix_settings(model))
    return SolveContext(
        cluster, model, profiles, tp, random.Random(0), time_limit_s=5.0, clock=time.perf_counter
    )


@pytest.fixture(scope="module")
def ctx3() -> SolveContext:
    return _ctx("3cluster24")


def _regions(cluster: Cluster, names: list[str]) -> set[str]:
    return {cluster.node(n).region for n in names}


def test_branch_layouts_are_valid_and_cross_one_region_boundary(ctx3) -> None:
    cands = branch_candidates(ctx3)
    proxy = ProxyOracle(ctx3)
    assert len(cands) >= 20
    names = {name for name, _ in cands}
    assert any(".e/" in n or "we." in n for n in names)  # the edge-width variants are built
    crossings = []
    for name, lay in cands:
        check_placement(ctx3.cluster, ctx3.throughput, to_placement(lay, 80), partial=False)
        crossings.append(proxy.estimate(lay).crossings)
        # The trunk's layers are held in one region only; every other region holds the rest in full.
        trunk_region = name.split("-t")[0].split("-", 1)[1]
        t = int(name.split("-t")[1].split("-")[0])
        back = name.startswith("branchb")
        trunk = [n for n, (s, _) in lay.items() if (s >= 80 - t if back else s < t)]
        assert _regions(ctx3.cluster, trunk) == {trunk_region}
        for region in _regions(ctx3.cluster, list(lay)) - {trunk_region}:
            held = sorted((s, k) for n, (s, k) in lay.items() if ctx3.cluster.node(n).region == region)
            covered = sum(k for _, k in dict(held).items())
            assert covered == 80 - t, (name, region)
    # Every request crosses once; where branches' inner stage boundaries meet, the max-flow split may also
    # send tokens across (ranked after), but most branch layouts cross exactly once.
    assert min(crossings) >= 1 - 1e-6
    assert sum(c < 1 + 1e-6 for c in crossings) >= len(crossings) / 3


def test_a_one_region_fleet_has_no_branches_and_no_slow_links() -> None:
    ctx = _ctx("cluster24")
    assert branch_candidates(ctx) == []
    assert not slow_links(ctx.cluster, ctx.model)


def test_slow_links_and_crossings_of_a_chain(ctx3) -> None:
    assert slow_links(ctx3.cluster, ctx3.model)
    # A chain over the three regions in name order (stage layouts) crosses two boundaries.
    groups = groups_of(ctx3.cluster, ctx3.throughput)
    chain = stage_layout(ctx3.cluster, ctx3.throughput, 80, groups, [1] * len(groups))
    assert chain and ProxyOracle(ctx3).estimate(chain).crossings == pytest.approx(2.0, abs=1e-6)


def test_edge_split_widens_the_stage_at_the_crossing_only() -> None:
    groups = [["a", "b", "c"], ["d", "e", "f", "g"]]
    at_end, widths = _edge_split(groups, at_end=True)
    assert at_end == [["a", "b", "c"], ["d", "e"], ["f", "g"]] and widths == [1, 1, 2]
    at_start, widths = _edge_split(groups, at_end=False)
    assert at_start == [["a", "b"], ["c"], ["d", "e", "f", "g"]] and widths == [2, 1, 1]
    assert EDGE == 0


def test_serve_ranks_fewer_region_crossings_first_on_slow_links(ctx3) -> None:
    proxy = ProxyOracle(ctx3)
    ranked = ranked_candidates(ctx3, proxy, {}, time.perf_counter() + 5.0)
    crossings = [round(proxy.estimate(lay).crossings, 1) for _, lay in ranked]
    assert crossings[0] == 1 and crossings == sorted(crossings)
    assert any(name.startswith("branch") for name, _ in ranked[:5])
    assert any(c >= 2 for c in crossings)  # the chains are still there, after
