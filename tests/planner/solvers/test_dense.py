"""planner.solvers.dense: single chains that maximise the least-held layer's KV, only on fleets with room
for about one copy of the model, and KV ceilings that no layout of the fleet exceeds."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest

from planner import bundled
from planner.cluster import SINK, SOURCE, Cluster, Link, Node
from planner.profile import ProfileSet
from planner.solvers.base import SolveContext
from planner.solvers.dense import chain_levels, dense_candidates, kv_ceiling, kv_per_layer
from planner.solvers.serve import ProxyOracle, ranked_candidates
from planner.throughput import typical_throughput
from tests.planner.solvers.fleets import complete_cluster


@pytest.fixture(scope="module")
def profiles30() -> ProfileSet:
    return bundled.profiles("llama1-30b")


def context(cluster: Cluster, num_layers: int, model_name: str = "llama1-30b") -> SolveContext:
    model = dataclasses.replace(bundled.model(model_name), num_layers=num_layers)
    profiles = bundled.profiles(model_name)
    tp = typical_throughput(cluster, model, profiles, bundled.helix_settings(bundled.model(model_name)))
    return SolveContext(cluster, model, profiles, tp, random.Random(0), time_limit_s=5.0)


def least_kv(
    layout: dict[str, tuple[int, int]], cluster: Cluster, profiles: ProfileSet, layers: int
) -> float:
    per_layer = [0.0] * layers
    for name, (start, k) in layout.items():
        for layer in range(start, start + k):
            per_layer[layer] += kv_per_layer(profiles, cluster.node(name).gpu_type, k)
    return min(per_layer)


def test_a_dense_chain_reaches_the_best_least_held_layer_of_any_chain(profiles30: ProfileSet) -> None:
    # 2 L4 (11 layers at most) + 3 T4 (7): 43 slots for 30 layers, 1.43 copies (cluster10's ratio).
    cluster = complete_cluster(["L4", "T4", "L4", "T4", "T4"])
    ctx = context(cluster, 30)
    cands = dense_candidates(ctx)
    assert cands and len({name for name, _ in cands}) == len(cands)
    types = [n.gpu_type for n in cluster.nodes]
    brute = max(
        min(kv_per_layer(profiles30, t, k) for t, k in zip(types, ks, strict=True))
        for ks in itertools.product(*(range(1, profiles30.get(t).max_layers + 1) for t in types))
        if sum(ks) == 30
    )
    first = cands[0][1]
    assert least_kv(first, cluster, profiles30, 30) == pytest.approx(brute, rel=1e-12)
    assert chain_levels(types, profiles30, 30)[0][0] == pytest.approx(brute, rel=1e-12)
    for _, lay in cands:
        # One chain: consecutive ranges cover every layer once, each node within its layer limit.
        spans = sorted(lay.values())
        assert spans[0][0] == 0 and sum(k for _, k in spans) == 30
        assert all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(spans))
        assert all(k <= profiles30.get(cluster.node(n).gpu_type).max_layers for n, (_, k) in lay.items())
    assert dense_candidates(ctx) == cands  # no randomness, no clock


def test_no_layout_beats_the_any_layout_ceiling(profiles30: ProfileSet) -> None:
    cluster = complete_cluster(["L4", "T4", "T4"])
    layers = 9
    ceiling = kv_ceiling(cluster, profiles30, layers)
    assert ceiling.slots == 11 + 7 + 7
    assert ceiling.chain_tokens <= ceiling.any_layout_tokens
    best_any = 0.0
    names = [n.name for n in cluster.nodes]
    options = [
        [None]
        + [(s, k) for k in range(1, profiles30.get(n.gpu_type).max_layers + 1) for s in range(layers - k + 1)]
        for n in cluster.nodes
    ]
    for combo in itertools.product(*options):
        lay = {n: c for n, c in zip(names, combo, strict=True) if c is not None}
        covered = {layer for s, k in lay.values() for layer in range(s, s + k)}
        if len(covered) < layers:
            continue
        value = least_kv(lay, cluster, profiles30, layers)
        assert value <= ceiling.any_layout_tokens * (1 + 1e-12)
        if all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(sorted(lay.values()))):
            assert value <= ceiling.chain_tokens * (1 + 1e-12)
        best_any = max(best_any, value)
    assert best_any >= ceiling.chain_tokens  # the chain figure is reached


def test_fleets_with_room_for_parallel_pipelines_get_no_dense_chain() -> None:
    cluster = bundled.cluster("cluster24")  # 152 slots for LLaMA-2 70B's 80 layers
    assert dense_candidates(context(cluster, 80, "llama2-70b")) == []


def test_chains_only_follow_links_that_exist() -> None:
    nodes = (Node("a", "L4"), Node("b", "T4"), Node("c", "T4"))
    # Only "a" is reachable from the source, so a chain starts a -> T4 -> T4: without a T4 -> T4 link
    # there is none; with b -> c there is exactly that one order.
    links = [Link(SOURCE, "a", 1e9, 0.001), Link("a", "b", 1e9, 0.001), Link("a", "c", 1e9, 0.001)]
    links += [Link("b", "a", 1e9, 0.001), Link("c", "a", 1e9, 0.001)]
    links += [Link(n.name, SINK, 1e9, 0.001) for n in nodes]
    assert dense_candidates(context(Cluster(nodes, tuple(links), name="gappy"), 20)) == []
    links.append(Link("b", "c", 1e9, 0.001))
    cands = dense_candidates(context(Cluster(nodes, tuple(links), name="linked"), 20))
    assert cands
    for _, lay in cands:
        order = [n for n, _ in sorted(lay.items(), key=lambda kv: kv[1][0])]
        assert order[0] == "a" and order[1:] == ["b", "c"]


def test_cluster10_gets_the_kv_balanced_chain_and_the_proxy_ranks_it_first() -> None:
    cluster = bundled.cluster("cluster10")
    ctx = context(cluster, 60)
    ceiling = kv_ceiling(cluster, ctx.profiles, 60)
    # L4 holding 8 layers: 376,704 / 8 tokens per layer; T4 5 -> 53,648; L4 7 -> 59,584 leaves 58 slots.
    assert ceiling.chain_tokens == pytest.approx(47088.0)
    assert ceiling.slots == 86
    assert ceiling.chain_tokens < ceiling.any_layout_tokens < 53300.0
    layouts = dict(dense_candidates(ctx))
    t4_first = [
        lay
        for lay in layouts.values()
        if [k for _, (_, k) in sorted(lay.items(), key=lambda kv: kv[1][0])] == [5, 5, 5, 5, 4, 4, 8, 8, 8, 8]
    ]
    assert len(t4_first) == 1
    assert all(cluster.node(n).gpu_type == ("T4" if s < 28 else "L4") for n, (s, _) in t4_first[0].items())
    proxy = ProxyOracle(ctx)
    ranked = ranked_candidates(ctx, proxy, {}, deadline=1e9)
    assert ranked[0][0].startswith("dense")
    swarm = next(lay for name, lay in ranked if name == "swarm")
    assert proxy.estimate(ranked[0][1]).in_flight > 1.2 * proxy.estimate(swarm).in_flight
