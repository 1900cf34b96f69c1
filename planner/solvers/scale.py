"""Planning at scale (hundreds to thousands of GPUs): plan one small "tile" of the fleet with `serve`, then
repeat its layout over every other tile. A tile is a proportional sample of one region (its GPU types in
the region's proportions, about `tile_nodes` nodes), so every tile of a region is the same fleet up to a
node or two and one serve run (candidates ranked by the cheap proxy, a few simulated) stands for all.

Why tiles: serve's search simulates whole candidates, and one simulated second of a 1,000-GPU fleet costs
as much as a full score of a 40-GPU one; the proxy's max-flow per candidate grows with the links squared.
Nodes left over when a type's count does not divide by the tile count join a tile as extra replicas of a
same-type node's range (a stage one node wider); types too rare to appear in every tile are planned as a
group of their own when they can hold the model, and left out otherwise (reported in the stats).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from planner.cluster import SINK, SOURCE, Cluster
from planner.errors import BrlError, InvalidInput
from planner.placement import Placement
from planner.solvers.base import SolveContext, SolveResult, register
from planner.solvers.search import Layout, to_placement
from planner.solvers.serve import solve_serve

# A tile as big as the paper's "high heterogeneity" fleet: serve plans 40-odd nodes well within a minute.
DEFAULT_TILE_NODES = 40
# Of the time limit: most for the tiles' serve runs (shared by node count); the rest builds the plan.
TILE_SHARE = 0.8

Scorer = Callable[[Placement], tuple[float, Mapping[str, Any]]]


def sub_cluster(cluster: Cluster, names: list[str], name: str) -> Cluster:
    """`cluster` restricted to `names` (their links among themselves and with the coordinator)."""
    keep = set(names)
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


@register("scale")
def solve_scale(ctx: SolveContext) -> SolveResult:
    """Tiles per region (about `options["tile_nodes"]` nodes each), one serve run per region on its first
    tile, the layout repeated over the region's tiles. `options["scorer_for"]` (cluster -> scorer) judges a
    tile on the tile alone; without it `ctx.scorer` judges the tile placed on the whole fleet."""
    started = ctx.now()
    tile_nodes = int(ctx.options.get("tile_nodes", DEFAULT_TILE_NODES))
    if tile_nodes < 1:
        raise InvalidInput(f"tile_nodes must be >= 1, got {tile_nodes}", field="tile_nodes")
    scorer_for = ctx.options.get("scorer_for")
    regions: dict[str, dict[str, list[str]]] = {}
    for node in ctx.cluster.nodes:
        regions.setdefault(node.region, {}).setdefault(node.gpu_type, []).append(node.name)
    total = len(ctx.cluster.nodes)
    layout: Layout = {}
    stats: dict[str, Any] = {"tile_nodes": tile_nodes, "regions": {}}
    left_out: list[str] = []
    for region in sorted(regions):
        by_type = regions[region]
        count = sum(len(v) for v in by_type.values())
        tiles = max(1, round(count / tile_nodes))
        budget = TILE_SHARE * ctx.time_limit_s * count / total
        while True:
            base, extras, orphans = split_tiles(by_type, tiles)
            rep = base[0]
            names = [n for names in rep.values() for n in names]
            tile = sub_cluster(ctx.cluster, names, f"{ctx.cluster.name}/{region}/tile")
            scorer = scorer_for(tile) if callable(scorer_for) else ctx.scorer
            tile_layout, tile_stats = _plan_group(ctx, tile, budget, scorer)
            if tile_layout or tiles == 1:
                break
            tiles = max(1, tiles // 2)  # a tile too small to hold the model: fewer, bigger tiles
        layout.update(repeat_layout(ctx.cluster, rep, tile_layout, base, extras))
        if orphans:
            group = sub_cluster(ctx.cluster, orphans, f"{ctx.cluster.name}/{region}/rest")
            rest, _ = _plan_group(ctx, group, 0.05 * budget, None)
            layout.update(rest)
        left_out += [n for v in by_type.values() for n in v if n not in layout]
        stats["regions"][region] = {"nodes": count, "tiles": tiles, "tile": tile_stats}
    if not layout:
        return SolveResult(to_placement({}, ctx.model.num_layers), partial=False, stats=stats)
    stats["left_out"] = sorted(left_out)
    stats["plan_s"] = round(ctx.now() - started, 3)
    stats["tiles"] = sum(r["tiles"] for r in stats["regions"].values())
    stats["per_tile_nodes"] = math.ceil(total / max(1, stats["tiles"]))
    return SolveResult(
        to_placement(layout, ctx.model.num_layers), partial=False, stats=stats, split="balanced"
    )
