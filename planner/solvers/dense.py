"""Dense chains: on a fleet with room for fewer than two copies of the model, one pipeline over every node,
each node's layer count chosen so the layer with the least KV holds the most, and the KV ceilings on
queries in flight that bound what any layout of such a fleet serves (bench/planner_cluster10.py)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from planner.cluster import SINK, SOURCE, Cluster
from planner.errors import InvalidInput
from planner.profile import ProfileSet
from planner.solvers.base import SolveContext
from planner.solvers.search import Layout
from planner.solvers.stages import groups_of

# Below this many copies of the model in layer slots, no second pipeline can even be half built: the fleet
# is one pipeline, and KV per layer decides what it serves (cluster10: 86 slots for 60 layers, 1.43 copies;
# queries in flight are capped by the KV of the fullest layer). Fuller fleets (cluster24/70B: 152 slots for
# 80 layers) run parallel pipelines, which the stage layouts cover.
DENSE_MAX_COPIES = 1.5
# KV levels tried below the highest one: a lower level leaves spare slots that shorten the slow nodes.
LEVELS = 3
# Group orders tried per level (every order of up to four GPU-type groups; first ones otherwise).
MAX_ORDERS = 24


@dataclass(frozen=True)
class KVCeiling:
    """KV per layer (tokens) a layout can guarantee its least-held layer. `chain_tokens`: the best single
    pipeline (every layer on one node), what dense chains reach. `any_layout_tokens`: no layout exceeds it,
    replicas and overlaps included: the least-held layer holds at most the mean, and the mean is at most
    the fleet's largest total KV over layer counts covering the model, divided by the layer count."""

    chain_tokens: float
    any_layout_tokens: float
    slots: int


def kv_per_layer(profiles: ProfileSet, gpu_type: str, k: int) -> float:
    """KV tokens per layer of a node of `gpu_type` holding k layers (its capacity spread over them)."""
    return profiles.get(gpu_type).kv_capacity_for(k) / k


def _counts_at(types: Sequence[str], profiles: ProfileSet, level: float) -> list[int]:
    """Per node, the most layers it may hold keeping at least `level` KV tokens per layer (0: none)."""
    out = []
    for t in types:
        fit = [k for k in range(1, profiles.get(t).max_layers + 1) if kv_per_layer(profiles, t, k) >= level]
        out.append(max(fit, default=0))
    return out


def chain_levels(
    types: Sequence[str], profiles: ProfileSet, num_layers: int
) -> list[tuple[float, list[int]]]:
    """The KV levels a single chain over these nodes can guarantee, highest first, each with the most
    layers per node at that level (their sum covers the model). Only levels where a count changes matter."""
    if num_layers < 1:
        raise InvalidInput(f"a model has at least 1 layer, got {num_layers}", field="num_layers")
    levels = sorted(
        {kv_per_layer(profiles, t, k) for t in set(types) for k in range(1, profiles.get(t).max_layers + 1)},
        reverse=True,
    )
    out = []
    for level in levels:
        counts = _counts_at(types, profiles, level)
        if sum(counts) >= num_layers:
            out.append((level, counts))
    return out


def kv_ceiling(cluster: Cluster, profiles: ProfileSet, num_layers: int) -> KVCeiling:
    """See KVCeiling. The any-layout figure is a knapsack: choose each node's layer count (0 = unused) to
    maximise the total KV with at least `num_layers` slots; the least-held layer gets at most total / L."""
    types = [n.gpu_type for n in cluster.nodes]
    slots = sum(profiles.get(t).max_layers for t in types)
    levels = chain_levels(types, profiles, num_layers)
    chain = levels[0][0] if levels else 0.0
    # best[s] = the most KV (token x layer entries) with s slots covered, s capped at num_layers.
    best = [-1.0] * (num_layers + 1)
    best[0] = 0.0
    for t in types:
        prof = profiles.get(t)
        nxt = list(best)
        for s, kv in enumerate(best):
            if kv < 0:
                continue
            for k in range(1, prof.max_layers + 1):
                reach = min(num_layers, s + k)
                nxt[reach] = max(nxt[reach], kv + prof.kv_capacity_for(k))
        best = nxt
    any_layout = best[num_layers] / num_layers if best[num_layers] >= 0 else 0.0
    return KVCeiling(chain_tokens=chain, any_layout_tokens=any_layout, slots=slots)


def _trimmed(counts: list[int], types: Sequence[str], num_layers: int, first: str) -> list[int]:
    """Drop the surplus over `num_layers`, one layer at a time from the node of type `first` holding the
    most (then from any type): shorter holdings only raise KV per layer, so the level holds."""
    sizes = list(counts)
    excess = sum(sizes) - num_layers
    while excess > 0:
        pool = [i for i, t in enumerate(types) if t == first and sizes[i] > 1] or [
            i for i in range(len(sizes)) if sizes[i] > 1
        ]
        i = max(pool, key=lambda j: (sizes[j], j))
        sizes[i] -= 1
        excess -= 1
    return sizes


def _connected(cluster: Cluster, order: Sequence[str]) -> bool:
    hops = [SOURCE, *order, SINK]
    return all(cluster.link(u, v) is not None for u, v in zip(hops, hops[1:], strict=False))


def dense_candidates(ctx: SolveContext) -> list[tuple[str, Layout]]:
    """Single chains over every node for fleets with fewer than DENSE_MAX_COPIES copies' worth of slots
    ([] otherwise). Per KV level (the highest LEVELS), the surplus is trimmed from each GPU type in turn;
    per trim, the (region, type) groups go in every order, each group's nodes longest holding first
    (measured on cluster10: 5,5,5,5,4,4 T4 layers serve 7% more than 4,4,5,5,5,5)."""
    cluster, profiles, num_layers = ctx.cluster, ctx.profiles, ctx.model.num_layers
    names = [n.name for n in cluster.nodes]
    types = [cluster.node(n).gpu_type for n in names]
    slots = sum(profiles.get(t).max_layers for t in types)
    if not names or slots >= DENSE_MAX_COPIES * num_layers:
        return []
    groups = groups_of(cluster, ctx.throughput)
    out: list[tuple[str, Layout]] = []
    seen: set[tuple[tuple[str, int, int], ...]] = set()
    for li, (_, counts) in enumerate(chain_levels(types, profiles, num_layers)[:LEVELS]):
        for first in dict.fromkeys(types):
            size_of = dict(zip(names, _trimmed(counts, types, num_layers, first), strict=True))
            for gi, perm in enumerate(itertools.islice(itertools.permutations(groups), MAX_ORDERS)):
                order = [n for g in perm for n in sorted(g, key=lambda n: (-size_of[n], names.index(n)))]
                order = [n for n in order if size_of[n] > 0]
                if not _connected(cluster, order):
                    continue
                layout: Layout = {}
                start = 0
                for n in order:
                    layout[n] = (start, size_of[n])
                    start += size_of[n]
                key = tuple(sorted((n, s, k) for n, (s, k) in layout.items()))
                if start != num_layers or key in seen:
                    continue
                seen.add(key)
                out.append((f"dense{li}-{first}-o{gi}", layout))
    return out
