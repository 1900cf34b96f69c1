"""Stage layouts aligned with what nodes already hold: a from-scratch stage layout (serve.py) keeps its
stages (GPU type, replicas, size) but their order along the pipeline and their sizes (within `slack`
layers) are re-chosen, by dynamic programming, so that the nodes load as few layers as possible. Pure.

Why: on one fast network the order of a layout's stages barely changes what it serves, yet a from-scratch
layout puts its stages wherever its recipe says, so even re-dealt among interchangeable nodes (relabel) it
loads most of the model again. Aligned, the same shape reuses much of the current placement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from planner.cluster import Cluster
from planner.replan_candidates import relabel
from planner.solvers.search import Layout
from planner.throughput import ThroughputTable

# Past this many DP states a layout is not aligned (a fleet of many single-node stages): the relabelled
# from-scratch layout still stands for it.
MAX_STATES = 50_000


@dataclass(frozen=True)
class StageKind:
    """Stages that are interchangeable for the DP: `width` nodes of one GPU type in one region, `size`
    layers (as the from-scratch layout sized them); `count` of them in the layout."""

    gpu_type: str
    region: str
    width: int
    size: int
    count: int
    max_layers: int


def stage_kinds(
    layout: Mapping[str, tuple[int, int]], cluster: Cluster, tp: ThroughputTable
) -> list[StageKind]:
    """The stages of `layout` (nodes sharing one range, all of one GPU type and region) by kind, in a fixed
    order. [] when a range is shared by nodes of different kinds (not a stage layout)."""
    stages: dict[tuple[int, int], list[str]] = {}
    for name, sk in layout.items():
        stages.setdefault(sk, []).append(name)
    counts: dict[tuple[str, str, int, int], int] = {}
    for (_, k), names in stages.items():
        kinds = {(cluster.node(n).gpu_type, cluster.node(n).region) for n in names}
        if len(kinds) != 1:
            return []
        gpu, region = kinds.pop()
        key = (gpu, region, len(names), k)
        counts[key] = counts.get(key, 0) + 1
    return [
        StageKind(gpu, region, width, size, count, tp.max_layers(gpu))
        for (gpu, region, width, size), count in sorted(counts.items())
    ]


def align(
    layout: Mapping[str, tuple[int, int]],
    base: Mapping[str, tuple[int, int]],
    cluster: Cluster,
    tp: ThroughputTable,
    num_layers: int,
    *,
    slack: int = 0,
) -> Layout:
    """`layout`'s stages re-ordered and re-sized (each within `slack` layers of its size) to load the
    fewest layers against `base`, then dealt to nodes (relabel). {} when `layout` is not a stage layout or
    the DP would be too large."""
    kinds = stage_kinds(layout, cluster, tp)
    if not kinds:
        return {}
    states = num_layers
    for kind in kinds:
        states *= kind.count + 1
    if states > MAX_STATES:
        return {}
    held: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for node in cluster.nodes:
        if node.name in base:
            held.setdefault((node.gpu_type, node.region), []).append(base[node.name])

    def cost(kind: StageKind, start: int, size: int) -> int:
        # Optimistic: the `width` holders of this kind overlapping [start, start+size) the most load the
        # rest; relabel settles who actually takes which stage.
        overlaps = sorted(
            (
                max(0, min(s + k, start + size) - max(s, start))
                for s, k in held.get((kind.gpu_type, kind.region), [])
            ),
            reverse=True,
        )
        return kind.width * size - sum(overlaps[: kind.width])

    sizes = [
        [k for k in range(kind.size - slack, kind.size + slack + 1) if 1 <= k <= kind.max_layers]
        for kind in kinds
    ]
    most = [max(s) for s in sizes]

    @cache
    def best(start: int, left: tuple[int, ...]) -> tuple[int, tuple[tuple[int, int], ...]]:
        if start == num_layers:
            return (0, ()) if not any(left) else (1 << 30, ())
        if sum(c * m for c, m in zip(left, most, strict=True)) < num_layers - start:
            return (1 << 30, ())
        found: tuple[int, tuple[tuple[int, int], ...]] = (1 << 30, ())
        for j, kind in enumerate(kinds):
            if not left[j]:
                continue
            rest = left[:j] + (left[j] - 1,) + left[j + 1 :]
            for k in sizes[j]:
                if start + k > num_layers:
                    continue
                tail_cost, tail = best(start + k, rest)
                total = cost(kind, start, k) + tail_cost
                if total < found[0]:
                    found = (total, ((j, k), *tail))
        return found

    total, steps = best(0, tuple(kind.count for kind in kinds))
    best.cache_clear()
    if total >= 1 << 30:
        return {}
    return _deal(kinds, steps, base, cluster)


def _deal(
    kinds: list[StageKind],
    steps: tuple[tuple[int, int], ...],
    base: Mapping[str, tuple[int, int]],
    cluster: Cluster,
) -> Layout:
    """Nodes for the DP's stage sequence: each stage takes the free nodes of its kind that overlap it most
    (ties: fleet order), then relabel's swaps cut the layers loaded further."""
    free: dict[tuple[str, str], list[str]] = {}
    for node in cluster.nodes:
        free.setdefault((node.gpu_type, node.region), []).append(node.name)
    out: Layout = {}
    start = 0
    for j, k in steps:
        kind = kinds[j]
        pool = free[(kind.gpu_type, kind.region)]

        def overlap(name: str, a: int = start, size: int = k) -> int:
            s, n = base.get(name, (0, 0))
            return max(0, min(s + n, a + size) - max(s, a))

        picks = sorted(pool, key=lambda name: -overlap(name))[: kind.width]
        for name in picks:
            pool.remove(name)
            out[name] = (start, k)
        start += k
    return relabel(out, base, cluster)
