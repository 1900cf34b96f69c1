"""planner/solvers/scale.py: tiles are proportional samples, the tile's layout is repeated on every tile,
type stages generalise swarm, the judge picks the best candidate on a sample of the region, and the whole
fleet's plan covers the model (proxy-judged tiles, logical clock: reproducible)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from planner import bundled
from planner.errors import InvalidInput
from planner.generate import multi_region, single_region
from planner.solvers import scale, solve
from planner.solvers.scale import (
    repeat_layout,
    split_tiles,
    sub_cluster,
    type_stage_layout,
    type_stage_recipes,
)
from planner.solvers.search import to_placement
from planner.throughput import typical_throughput


def test_split_tiles_is_proportional_and_loses_no_node() -> None:
    by_type = {"A100": [f"a{i}" for i in range(5)], "T4": [f"t{i}" for i in range(11)], "V100": ["v0"]}
    base, extras, orphans = split_tiles(by_type, 2)
    assert [sorted(b) for b in base] == [["A100", "T4"], ["A100", "T4"]]
    assert all(len(b["A100"]) == 2 and len(b["T4"]) == 5 for b in base)
    assert orphans == ["v0"]
    # One A100 and one T4 left over, dealt round-robin.
    assert sorted(len(e) for e in extras) == [1, 1]
    seen = [n for b in base for names in b.values() for n in names] + [n for e in extras for n in e] + orphans
    assert sorted(seen) == sorted(n for names in by_type.values() for n in names)


def test_repeat_layout_copies_ranges_by_type_and_widens_stages_with_extras() -> None:
    cluster = single_region({"A100": 3, "T4": 4}, random.Random(0))
    by_type: dict[str, list[str]] = {}
    for n in cluster.nodes:
        by_type.setdefault(n.gpu_type, []).append(n.name)
    base, extras, _ = split_tiles(by_type, 2)
    rep = base[0]
    layout = {rep["A100"][0]: (0, 40), rep["T4"][0]: (40, 20), rep["T4"][1]: (60, 20)}
    out = repeat_layout(cluster, rep, layout, base, extras)
    assert len(out) == 7
    assert out[base[1]["A100"][0]] == (0, 40)
    assert [out[n] for n in base[1]["T4"]] == [(40, 20), (60, 20)]
    (extra,) = [n for e in extras for n in e]
    assert out[extra] == (0, 40)


def test_sub_cluster_keeps_only_its_links() -> None:
    cluster = single_region({"A100": 2, "T4": 3}, random.Random(0))
    names = [n.name for n in cluster.nodes[:3]]
    sub = sub_cluster(cluster, names, "t")
    assert [n.name for n in sub.nodes] == names
    assert all(lk.src in {*names, "source"} and lk.dst in {*names, "sink"} for lk in sub.links)
    # Source and sink links for each, and both directions between every pair.
    assert len(sub.links) == 3 + 3 + 3 * 2


def test_sub_cluster_keeps_the_cluster_order_and_so_the_same_flow_split() -> None:
    # The max-flow's split depends on the order nodes are numbered in; a judge handed a region grouped by
    # GPU type must still route a layout as the fleet it is built on does.
    from planner.flow import plan_from_placement

    model = bundled.model("llama2-70b")
    profiles = bundled.profiles(model)
    cluster = single_region({"A100": 6, "L4": 9, "T4": 15}, random.Random(0))
    tp = typical_throughput(cluster, model, profiles, bundled.helix_settings(model))
    by_type = sorted(cluster.nodes, key=lambda n: (n.gpu_type, n.name))
    names = [n.name for n in by_type]
    assert names != [n.name for n in cluster.nodes]
    sub = sub_cluster(cluster, names, "judge")
    assert [n.name for n in sub.nodes] == [n.name for n in cluster.nodes]
    layout = type_stage_layout(cluster, tp, names, model.num_layers, {"A100": 8, "L4": 4, "T4": 4})
    placement = to_placement(layout, model.num_layers)
    flows = [
        plan_from_placement(
            c, model, profiles, placement, method="judge", throughput=tp, partial=False, split="balanced"
        ).edge_flows
        for c in (cluster, sub)
    ]
    assert flows[0] == flows[1]
    # What the old order gave: the same max-flow value, another split.
    grouped = dataclasses.replace(cluster, nodes=tuple(by_type))
    other = plan_from_placement(
        grouped, model, profiles, placement, method="judge", throughput=tp, partial=False, split="balanced"
    )
    assert other.edge_flows != flows[0]


@pytest.fixture(scope="module")
def llama() -> tuple[object, object, object]:
    model = bundled.model("llama2-70b")
    return model, bundled.profiles(model), bundled.helix_settings(model)


def test_scale_plans_every_tile_the_same_way(llama) -> None:
    model, profiles, settings = llama
    cluster = single_region({"A100": 10, "L4": 14, "T4": 24}, random.Random(0))
    plan = solve(
        "scale", cluster, model, profiles, settings=settings, time_limit_s=5.0, options={"tile_nodes": 24}
    )
    stats = plan.solver_stats
    assert stats["tiles"] == 2
    assert stats["left_out"] == []
    # The proxy prefers the repeated tile to every type-stage layout on this fleet.
    region = stats["regions"]["default"]
    assert region["chosen"] == "tiles" and region["judged_on_nodes"] == 48
    assert region["scores"]["tiles"] == max(region["scores"].values())
    assert "typesA100:4-L4:4-T4:4" in region["scores"]
    assert len(plan.placement.ranges) == 48
    assert plan.placement.has_full_chain()
    assert plan.provenance["flow_split"] == "balanced"

    # Both tiles hold the same multiset of (GPU type, range).
    def shape(names: list[str]) -> list[tuple[str, int, int]]:
        return sorted(
            (cluster.node(n).gpu_type, plan.placement.ranges[n].start, plan.placement.ranges[n].size)
            for n in names
        )

    by_type: dict[str, list[str]] = {}
    for n in cluster.nodes:
        by_type.setdefault(n.gpu_type, []).append(n.name)
    base, extras, _ = split_tiles(by_type, 2)
    assert shape([n for v in base[0].values() for n in v]) == shape([n for v in base[1].values() for n in v])
    # Reproducible on the logical clock.
    again = solve(
        "scale", cluster, model, profiles, settings=settings, time_limit_s=5.0, options={"tile_nodes": 24}
    )
    assert again.placement == plan.placement
    assert plan.objective_tok_per_s == pytest.approx(again.objective_tok_per_s, rel=1e-12)


def test_scale_plans_each_region_on_its_own(llama) -> None:
    model, profiles, settings = llama
    regions = {"east": {"A100": 5, "L4": 7, "T4": 12}, "west": {"A100": 5, "L4": 7, "T4": 12}}
    cluster = multi_region(regions, random.Random(0))
    plan = solve(
        "scale", cluster, model, profiles, settings=settings, time_limit_s=5.0, options={"tile_nodes": 24}
    )
    assert set(plan.solver_stats["regions"]) == {"east", "west"}
    assert plan.objective_tok_per_s > 0
    assert all(r["tiles"] == 1 and r["nodes"] == 24 for r in plan.solver_stats["regions"].values())
    assert len(plan.placement.ranges) == 48


def test_bad_tile_size_names_the_field(llama) -> None:
    model, profiles, settings = llama
    cluster = single_region({"A100": 2, "T4": 4}, random.Random(0))
    with pytest.raises(InvalidInput) as err:
        solve("scale", cluster, model, profiles, settings=settings, options={"tile_nodes": 0})
    assert err.value.field == "tile_nodes"


def _by_type(cluster) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n in cluster.nodes:
        out.setdefault(n.gpu_type, []).append(n.name)
    return out


def test_type_stages_generalise_swarm(llama) -> None:
    model, profiles, settings = llama
    cluster = single_region({"A100": 8, "L4": 12, "T4": 20}, random.Random(0))
    tp = typical_throughput(cluster, model, profiles, settings)
    names = [n.name for n in cluster.nodes]
    recipes = type_stage_recipes(cluster, tp, names, model.num_layers)
    # 70B on T4s: swarm's stage is 4 layers; an A100 may hold 2 or 3 of them, L4 (7 layers) and T4 one.
    assert recipes[0] == {"A100": 4, "L4": 4, "T4": 4}
    assert {r["A100"] for r in recipes} == {4, 8, 12}
    assert all(r["L4"] == 4 and r["T4"] == 4 for r in recipes)
    layout = type_stage_layout(cluster, tp, names, model.num_layers, {"A100": 8, "L4": 4, "T4": 4})
    assert sorted(layout) == sorted(names)
    for name, (start, size) in layout.items():
        assert start % size == 0 and start + size <= model.num_layers
        assert size == (8 if cluster.node(name).gpu_type == "A100" else 4)
    placement = to_placement(layout, model.num_layers)
    assert placement.has_full_chain()
    # Balanced: every layer's capacity within one node's share of the mean.
    cap = [0.0] * model.num_layers
    for name, (start, size) in layout.items():
        for layer in range(start, start + size):
            cap[layer] += tp.capacity(cluster.node(name).gpu_type, size)
    assert max(cap) - min(cap) <= tp.capacity("A100", 8) + 1e-9
    # A layer count that is not a multiple of the stage, or more than the GPU holds: no layout.
    assert type_stage_layout(cluster, tp, names, model.num_layers, {"A100": 6, "L4": 4, "T4": 4}) == {}
    assert type_stage_layout(cluster, tp, names, model.num_layers, {"A100": 4, "L4": 8, "T4": 4}) == {}


def _sizes(sub, placement) -> set[tuple[str, int]]:
    return {(sub.node(n).gpu_type, r.size) for n, r in placement.ranges.items()}


def _judged(llama, cluster, scorer_for, *, tile_nodes: int, time_limit_s: float):
    """`scale` on `cluster` with a fake judge (scorer_for: (sub-fleet, lanes) -> scorer)."""
    model, profiles, settings = llama
    options = {"tile_nodes": tile_nodes, "scorer_for": scorer_for}
    return solve(
        "scale", cluster, model, profiles, settings=settings, time_limit_s=time_limit_s, options=options
    )


def test_the_judge_picks_the_best_candidate_and_builds_it_on_the_whole_region(llama, monkeypatch) -> None:
    cluster = single_region({"A100": 10, "L4": 14, "T4": 24}, random.Random(0))
    # Judged on a sample (one of two tiles) when the region is bigger than JUDGE_NODES.
    monkeypatch.setattr(scale, "JUDGE_NODES", 24)
    judged: list[int] = []

    def scorer_for(sub, lanes=None):
        def score(placement):
            judged.append(len(sub.nodes))
            # A judge that likes one layout best: A100s holding 12 layers, every other node 4.
            return (2.0 if _sizes(sub, placement) == {("A100", 12), ("L4", 4), ("T4", 4)} else 1.0), {}

        return score

    plan = _judged(llama, cluster, scorer_for, tile_nodes=24, time_limit_s=30.0)
    region = plan.solver_stats["regions"]["default"]
    assert region["tiles"] == 2 and region["judged_on_nodes"] == 24
    assert region["chosen"] == max(region["scores"], key=lambda k: (region["scores"][k], k == "tiles"))
    assert region["chosen"] == "typesA100:12-L4:4-T4:4"
    assert len(plan.placement.ranges) == 48 and plan.placement.has_full_chain()
    assert {plan.placement.ranges[n].size for n in _by_type(cluster)["A100"]} == {12}
    # Every score ran on a 24-node sub-fleet (the tile, then the sample), never on the whole fleet.
    assert judged and set(judged) == {24}


def test_per_type_stages_let_each_type_cover_the_model_alone(llama) -> None:
    model, profiles, settings = llama
    cluster = single_region({"A100": 13, "L4": 22, "T4": 27}, random.Random(0))
    tp = typical_throughput(cluster, model, profiles, settings)
    names = [n.name for n in cluster.nodes]
    recipe = {"A100": 8, "L4": 4, "T4": 4}
    mixed = type_stage_layout(cluster, tp, names, model.num_layers, recipe)
    laned = type_stage_layout(cluster, tp, names, model.num_layers, recipe, per_type=True)
    assert sorted(laned) == sorted(names)
    assert scale.covers_alone(cluster, laned, model.num_layers)
    # Mixed, a type fills the others' gaps and may leave layers it never holds.
    assert not scale.covers_alone(cluster, mixed, model.num_layers)
    for gpu, k in recipe.items():
        starts = [laned[n][0] for n in names if cluster.node(n).gpu_type == gpu]
        per_stage = [starts.count(a) for a in range(0, model.num_layers, k)]
        assert max(per_stage) - min(per_stage) <= 1, gpu  # each type spread evenly on its own
    few = single_region({"A100": 4, "L4": 22, "T4": 27}, random.Random(0))
    names = [n.name for n in few.nodes]
    short = type_stage_layout(few, tp, names, model.num_layers, recipe, per_type=True)
    assert not scale.covers_alone(few, short, model.num_layers)  # four A100s hold 32 of 80 layers


@pytest.mark.parametrize("liked", ["type", "region"])
def test_the_judge_sees_each_candidates_lanes_and_the_plan_keeps_the_winners(llama, liked) -> None:
    num_layers = llama[0].num_layers
    cluster = single_region({"A100": 10, "L4": 20, "T4": 20}, random.Random(0))
    seen: list[dict[str, str]] = []

    def scorer_for(sub, lanes=None):
        def score(placement):
            seen.append(dict(lanes or {}))
            # A judge that likes the candidates in `liked` lanes, type stages with A100s at 8 layers best.
            best = _sizes(sub, placement) == {("A100", 8), ("L4", 4), ("T4", 4)}
            return 1.0 + ((lanes or {}).get("default") == liked) + best, {}

        return score

    plan = _judged(llama, cluster, scorer_for, tile_nodes=50, time_limit_s=60.0)
    region = plan.solver_stats["regions"]["default"]
    assert {"default": "type"} in seen and {"default": "region"} in seen
    laned = "typesA100:8-L4:4-T4:4" + scale.LANED
    assert laned in region["scores"] and "typesA100:8-L4:4-T4:4" in region["scores"]
    gpu = {n.name: n.gpu_type for n in cluster.nodes}
    switches = [
        (u, v)
        for (u, v), f in plan.edge_flows.items()
        if f > 0 and u in gpu and v in gpu and gpu[u] != gpu[v]
    ]
    assert plan.placement.has_full_chain() and len(plan.placement.ranges) == 50
    if liked == "type":
        assert region["chosen"] == laned
        assert plan.provenance["flow_lanes"] == {"default": "type"}
        assert not switches
        built = {n: (r.start, r.size) for n, r in plan.placement.ranges.items()}
        assert scale.covers_alone(cluster, built, num_layers)
    else:
        assert not region["chosen"].endswith(scale.LANED)  # the mixed type stages, or the tile if as good
        assert plan.provenance["flow_lanes"] == {"default": "region"}
