"""Planning at scale (hundreds to thousands of GPUs): plan one small "tile" of the fleet with `serve`, then
repeat its layout over every other tile. A tile is a proportional sample of one region (its GPU types in
the region's proportions, about `tile_nodes` nodes), so every tile of a region is the same fleet up to a
node or two and one serve run (candidates ranked by the cheap proxy, a few simulated) stands for all.

Why tiles: serve's search simulates whole candidates, and one simulated second of a 1,000-GPU fleet costs
as much as a full score of a 40-GPU one; the proxy's max-flow per candidate grows with the links squared.
Nodes left over when a type's count does not divide by the tile count join a tile as extra replicas of a
same-type node's range (a stage one node wider); types too rare to appear in every tile are planned as a
group of their own when they can hold the model, and left out otherwise (reported in the stats).

A repeated tile is not always the best layout at scale: swarm's stages get finer-balanced as the fleet
grows, so a tile that beat swarm on 40 nodes can lose to swarm on 200. So the repeated tile competes with
"type stages" (swarm with a layer count per GPU type: fast GPUs hold several of swarm's stages, halving
their hops) built on the whole region, all judged on a sample of up to JUDGE_NODES nodes of the region.
A type-stage layout keeps its flow in type lanes (planner.flow_split): a chain never switches GPU type, so
a fast node's KV never waits on a slow node's hops; a repeated tile keeps the chains serve chose for it,
types mixed, inside its region.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from planner.cluster import SINK, SOURCE, Cluster
from planner.errors import BrlError, InvalidInput
from planner.flow_split import Lanes, fit_lanes, lane_local
from planner.placement import Placement
from planner.profile import ProfileSet
from planner.solvers.base import SolveContext, SolveResult, register
from planner.solvers.search import Layout, to_placement
from planner.solvers.serve import ProxyOracle, serving_proxy, solve_serve
from planner.solvers.swarm import stage_size
from planner.throughput import ThroughputTable

# A tile as big as the paper's "high heterogeneity" fleet: serve plans 40-odd nodes well within a minute.
DEFAULT_TILE_NODES = 40
# Of the time limit: most for the tiles' serve runs (shared by node count); the rest builds the plan.
TILE_SHARE = 0.8
# Of a region's share: the tile's serve run; the rest judges the repeated tile against the type stages.
TILE_SERVE_SHARE = 0.3
# Candidates are judged on (a proportional sample of) about this many nodes of a region, so a score costs
# the same at 1,000 GPUs as at 200. Fewer misjudge: on 120 of the 200-GPU mix, 70B's 8-layer A100 stages
# get 2.4 nodes per slot (4 at 200) and the judge preferred the repeated tile, which serves 18% less.
JUDGE_NODES = 200
# Per GPU type, hold 1..MAX_STAGES_PER_NODE of swarm's stages.
MAX_STAGES_PER_NODE = 3
MAX_RECIPES = 12
# A type-stage candidate in type lanes is named after its recipe with this suffix.
LANED = "/lanes"

Scorer = Callable[[Placement], tuple[float, Mapping[str, Any]]]


def sub_cluster(cluster: Cluster, names: list[str], name: str) -> Cluster:
    """`cluster` restricted to `names` (their links among themselves and with the coordinator), its nodes in
    the cluster's order whatever the order of `names`: the max-flow's split, which routing follows, depends on
    the order nodes are numbered in, and a judge that saw a region's nodes grouped by type scored a layout 8%
    below the same layout on the fleet as built (4,027 vs 4,386 decode tok/s, 200 GPUs)."""
    keep = set(names)
    names = [node.name for node in cluster.nodes if node.name in keep]
    links = [lk for lk in cluster.out_links(SOURCE) if lk.dst in keep]
    for n in names:
        links += [lk for lk in cluster.out_links(n) if lk.dst in keep or lk.dst == SINK]
    return Cluster(
        nodes=tuple(cluster.node(n) for n in names),
        links=tuple(links),
        name=name,
        coordinator_region=cluster.coordinator_region,
        coordinator_nic_bytes_per_s=cluster.coordinator_nic_bytes_per_s,
        meta=cluster.meta,
    )


def split_tiles(
    by_type: Mapping[str, list[str]], tiles: int
) -> tuple[list[dict[str, list[str]]], list[list[str]], list[str]]:
    """Each type's nodes cut into `tiles` equal runs (the base of every tile, by type), the leftovers dealt
    round-robin to the tiles as extras, and the nodes of types with fewer nodes than tiles (orphans)."""
    base: list[dict[str, list[str]]] = [{} for _ in range(tiles)]
    extras: list[list[str]] = [[] for _ in range(tiles)]
    orphans: list[str] = []
    dealt = 0
    for gpu, names in sorted(by_type.items()):
        each = len(names) // tiles
        if each == 0:
            orphans += names
            continue
        for j in range(tiles):
            base[j][gpu] = names[j * each : (j + 1) * each]
        for name in names[tiles * each :]:
            extras[dealt % tiles].append(name)
            dealt += 1
    return base, extras, orphans


def repeat_layout(
    cluster: Cluster,
    rep: Mapping[str, list[str]],
    layout: Layout,
    base: list[dict[str, list[str]]],
    extras: list[list[str]],
) -> Layout:
    """The representative tile's `layout` copied onto every tile: the i-th node of a type takes the range
    of the representative's i-th node of that type; an extra takes the ranges of its type's placed nodes
    in turn (so extras widen different stages)."""
    out: Layout = {}
    placed_of = {gpu: [n for n in names if n in layout] for gpu, names in rep.items()}
    for tile, more in zip(base, extras, strict=True):
        for gpu, names in tile.items():
            for i, name in enumerate(names):
                if rep[gpu][i] in layout:
                    out[name] = layout[rep[gpu][i]]
        used: dict[str, int] = {}
        for name in more:
            gpu = cluster.node(name).gpu_type
            placed = placed_of.get(gpu, [])
            if placed:
                i = used.get(gpu, 0)
                used[gpu] = i + 1
                out[name] = layout[placed[i % len(placed)]]
    return out


def type_stage_layout(
    cluster: Cluster,
    tp: ThroughputTable,
    names: list[str],
    num_layers: int,
    layers_of: Mapping[str, int],
    *,
    per_type: bool = False,
) -> Layout:
    """Swarm with a layer count k per GPU type (each a multiple of swarm's stage size q): nodes, the most
    layer-throughput first, start at a multiple of their k where the layers they would hold carry the
    least capacity so far (ties: the earliest). Aligned on k, nodes of a type join each other end to
    start, so a token can cross the model on the fast type alone in L/k hops (aligned on q, a fast node
    would often wait on a slow one to reach its start). `per_type`: the least capacity of the node's own
    type (then of all types), so each type covers the model evenly on its own, as type lanes route it.
    {} when a k is not a multiple of q or more than the type holds."""
    q = stage_size(num_layers, min(tp.max_layers(cluster.node(n).gpu_type) for n in names))
    for gpu, k in layers_of.items():
        if k % q or not 0 < k <= min(num_layers, tp.max_layers(gpu)):
            return {}
    cap = [0.0] * num_layers
    own: dict[str, list[float]] = {}
    out: Layout = {}

    def rate(name: str) -> float:
        gpu = cluster.node(name).gpu_type
        return tp.capacity(gpu, layers_of[gpu]) * layers_of[gpu]

    for name in sorted(names, key=lambda n: (-rate(n), n)):
        gpu = cluster.node(name).gpu_type
        k = layers_of[gpu]
        mine = own.setdefault(gpu, [0.0] * num_layers) if per_type else cap
        start = min(
            range(0, num_layers - k + 1, k), key=lambda a: (sum(mine[a : a + k]), sum(cap[a : a + k]), a)
        )
        for layer in range(start, start + k):
            cap[layer] += tp.capacity(gpu, k)
            if per_type:
                mine[layer] += tp.capacity(gpu, k)
        out[name] = (start, k)
    return out


def covers_alone(cluster: Cluster, layout: Layout, num_layers: int) -> bool:
    """Every GPU type of `layout` holds every layer on its own nodes, so type lanes keep every region it
    spans (the rule is planner.flow_split.fit_lanes's, asked of the layout before it is built)."""
    if not layout:
        return False
    asked = dict.fromkeys({cluster.node(n).region for n in layout}, "type")
    return fit_lanes(cluster, to_placement(layout, num_layers), asked) == asked


def type_stage_recipes(
    cluster: Cluster, tp: ThroughputTable, names: list[str], num_layers: int
) -> list[dict[str, int]]:
    """Layer counts per GPU type: 1..MAX_STAGES_PER_NODE of swarm's stages each (swarm itself first, then
    more layers on the fastest types first), at most MAX_RECIPES."""
    types = sorted({cluster.node(n).gpu_type for n in names}, key=lambda g: (-tp.capacity(g, 1), g))
    q = stage_size(num_layers, min(tp.max_layers(g) for g in types))
    options = [
        [q * m for m in range(1, MAX_STAGES_PER_NODE + 1) if q * m <= min(num_layers, tp.max_layers(g))]
        for g in types
    ]
    combos = sorted(itertools.product(*options), key=lambda ks: (sum(ks) != q * len(ks), [-k for k in ks]))
    return [dict(zip(types, ks, strict=True)) for ks in combos[:MAX_RECIPES]]


def type_stage_proxy(
    cluster: Cluster, tp: ThroughputTable, profiles: ProfileSet, layout: Layout, num_layers: int
) -> float:
    """serve's serving proxy of a type-stage layout without a max-flow run (hundreds of nodes on a full
    mesh): the flow is the least layer capacity, each node carrying its share of its first layer's."""
    cap = [0.0] * num_layers
    for name, (start, k) in layout.items():
        for layer in range(start, start + k):
            cap[layer] += tp.capacity(cluster.node(name).gpu_type, k)
    flow = min(cap)
    if flow <= 0:
        return 0.0
    node_flows = {
        name: tp.capacity(cluster.node(name).gpu_type, k) * flow / cap[start]
        for name, (start, k) in layout.items()
    }
    return serving_proxy(cluster, profiles, layout, num_layers, flow, node_flows).decode_tok_per_s


def _plan_group(
    ctx: SolveContext, cluster: Cluster, time_limit_s: float, scorer: Scorer | None
) -> tuple[Layout, dict[str, Any]]:
    """serve on a small sub-fleet; {} when it cannot hold the model."""
    sub = replace(ctx, cluster=cluster, time_limit_s=time_limit_s, scorer=scorer, _ticks=ctx._ticks)
    try:
        result = solve_serve(sub)
    except BrlError as exc:
        return {}, {"error": str(exc)}
    except IndexError:  # serve built no candidate in its time (or none that holds the model)
        return {}, {"error": "no candidate"}
    layout = {n: (r.start, r.size) for n, r in result.placement.ranges.items()}
    stats = {
        k: result.stats[k]
        for k in ("chosen", "candidates", "scored", "decode_tok_per_s")
        if k in result.stats
    }
    return layout, stats


def _judge_sample(
    base: list[dict[str, list[str]]], names_all: list[str]
) -> tuple[list[dict[str, list[str]]], list[str]]:
    """What candidates are judged on: the whole region when it has at most JUDGE_NODES nodes (no tiles
    returned), else its first tiles' bases and their nodes."""
    if len(names_all) <= JUDGE_NODES:
        return [], names_all
    size = max(1, sum(len(v) for v in base[0].values()))
    sample = base[: max(1, JUDGE_NODES // size)]
    return sample, [n for tile in sample for names in tile.values() for n in names]


def _judge(
    ctx: SolveContext, sample: Cluster, candidates: Sequence[tuple[str, Layout, Lanes]], until: float
) -> dict[str, float]:
    """Decode tokens/s of each candidate on `sample` with its flow in its lanes: the region scorer's
    (simulated) when there is one, the serving proxy's otherwise. The first candidate is always judged;
    the rest while time remains. (`ctx.scorer` alone cannot be given lanes: it judges layouts as placed.)"""
    scorer_for = ctx.options.get("scorer_for")
    judges: dict[tuple[tuple[str, str], ...], tuple[Any, ProxyOracle]] = {}
    out: dict[str, float] = {}
    spent = 0.0
    for name, lay, lanes in candidates:
        if out and (ctx.stopped() or ctx.now() + spent >= until):
            break
        key = tuple(sorted(lanes.items()))
        if key not in judges:
            scorer = scorer_for(sample, lanes=lanes) if callable(scorer_for) else ctx.scorer
            local = lane_local(sample, lanes)
            judges[key] = scorer, ProxyOracle(replace(ctx, cluster=local, _ticks=ctx._ticks))
        scorer, proxy = judges[key]
        began = ctx.now()
        if not lay:
            out[name] = 0.0
        elif scorer is not None:
            try:
                out[name] = float(scorer(to_placement(lay, ctx.model.num_layers))[0])
            except BrlError:
                out[name] = 0.0
        else:
            out[name] = proxy.value(lay)
        spent = max(spent, ctx.now() - began)
    return out


@register("scale")
def solve_scale(ctx: SolveContext) -> SolveResult:
    """Per region: one serve run on its first tile (about `options["tile_nodes"]` nodes), the layout
    repeated over the region's tiles; that and the type stages are judged on a sample of the region, and
    the winner is built on the whole region. `options["scorer_for"]` ((cluster, lanes=None) -> scorer)
    judges on the tile or sample alone, the flow in the candidate's lanes; without it `ctx.scorer` judges
    them placed on the whole fleet, and without either the serving proxy does."""
    started = ctx.now()
    tile_nodes = int(ctx.options.get("tile_nodes", DEFAULT_TILE_NODES))
    if tile_nodes < 1:
        raise InvalidInput(f"tile_nodes must be >= 1, got {tile_nodes}", field="tile_nodes")
    scorer_for = ctx.options.get("scorer_for")
    num_layers = ctx.model.num_layers
    regions: dict[str, dict[str, list[str]]] = {}
    for node in ctx.cluster.nodes:
        regions.setdefault(node.region, {}).setdefault(node.gpu_type, []).append(node.name)
    total = len(ctx.cluster.nodes)
    layout: Layout = {}
    lanes: dict[str, str] = {}
    stats: dict[str, Any] = {"tile_nodes": tile_nodes, "regions": {}}
    left_out: list[str] = []
    for region in sorted(regions):
        by_type = regions[region]
        names_all = [n for names in by_type.values() for n in names]
        count = len(names_all)
        tiles = max(1, round(count / tile_nodes))
        budget = TILE_SHARE * ctx.time_limit_s * count / total
        region_started = ctx.now()
        while True:
            base, extras, orphans = split_tiles(by_type, tiles)
            rep = base[0]
            names = [n for names in rep.values() for n in names]
            tile = sub_cluster(ctx.cluster, names, f"{ctx.cluster.name}/{region}/tile")
            scorer = scorer_for(tile) if callable(scorer_for) else ctx.scorer
            tile_layout, tile_stats = _plan_group(ctx, tile, TILE_SERVE_SHARE * budget, scorer)
            if tile_layout or tiles == 1:
                break
            tiles = max(1, tiles // 2)  # a tile too small to hold the model: fewer, bigger tiles
        repeated = repeat_layout(ctx.cluster, rep, tile_layout, base, extras)
        if orphans:
            group = sub_cluster(ctx.cluster, orphans, f"{ctx.cluster.name}/{region}/rest")
            rest, _ = _plan_group(ctx, group, 0.05 * budget, None)
            repeated.update(rest)
        # The contest, on a sample: the type stages in proxy order, the repeated tile second (the first
        # score always runs; the rest while the region's time lasts).
        sample_tiles, sample_names = _judge_sample(base, names_all)
        sample = sub_cluster(ctx.cluster, sample_names, f"{ctx.cluster.name}/{region}/sample")
        if sample_tiles:
            tile_on_sample = repeat_layout(
                ctx.cluster, rep, tile_layout, sample_tiles, [[]] * len(sample_tiles)
            )
        else:
            tile_on_sample = dict(repeated)  # the sample is the whole region
        recipes = type_stage_recipes(ctx.cluster, ctx.throughput, names_all, num_layers)
        mixed_of = {
            _recipe_name(r): type_stage_layout(ctx.cluster, ctx.throughput, sample_names, num_layers, r)
            for r in recipes
        }
        recipes.sort(
            key=lambda r: (
                -type_stage_proxy(
                    ctx.cluster, ctx.throughput, ctx.profiles, mixed_of[_recipe_name(r)], num_layers
                )
            )
        )
        # Each recipe in proxy order, in type lanes first (where every type covers the model alone),
        # then mixed in its region; the repeated tile second.
        type_lanes, region_lanes = {region: "type"}, {region: "region"}
        staged: list[tuple[str, Layout, Lanes]] = []
        for r in recipes:
            name = _recipe_name(r)
            laned = type_stage_layout(ctx.cluster, ctx.throughput, sample_names, num_layers, r, per_type=True)
            if laned and covers_alone(ctx.cluster, laned, num_layers):
                staged.append((name + LANED, laned, type_lanes))
            staged.append((name, mixed_of[name], region_lanes))
        candidates = staged[:1] + [("tiles", tile_on_sample, region_lanes)] + staged[1:]
        scores = _judge(ctx, sample, candidates, until=region_started + budget)
        chosen = max(scores, key=lambda k: (scores[k], k == "tiles"))
        lanes[region] = "region"
        if chosen == "tiles":
            layout.update(repeated)
        else:
            recipe = next(r for r in recipes if _recipe_name(r) == chosen.removesuffix(LANED))
            whole = functools.partial(type_stage_layout, ctx.cluster, ctx.throughput, names_all, num_layers)
            laned = whole(recipe, per_type=True) if chosen.endswith(LANED) else {}
            if laned and covers_alone(ctx.cluster, laned, num_layers):
                layout.update(laned)
                lanes[region] = "type"
            else:
                layout.update(whole(recipe))
        left_out += [n for n in names_all if n not in layout]
        stats["regions"][region] = {
            "nodes": count,
            "tiles": tiles,
            "tile": tile_stats,
            "judged_on_nodes": len(sample_names),
            "scores": {k: round(v, 1) for k, v in scores.items()},
            "chosen": chosen,
        }
    if not layout:
        return SolveResult(to_placement({}, num_layers), partial=False, stats=stats)
    stats["left_out"] = sorted(left_out)
    stats["plan_s"] = round(ctx.now() - started, 3)
    stats["tiles"] = sum(r["tiles"] for r in stats["regions"].values())
    stats["per_tile_nodes"] = math.ceil(total / max(1, stats["tiles"]))
    return SolveResult(
        to_placement(layout, num_layers),
        partial=False,
        stats=stats,
        split="balanced",
        lanes=lanes,
    )


def _recipe_name(layers_of: Mapping[str, int]) -> str:
    return "types" + "-".join(f"{g}:{k}" for g, k in layers_of.items())
