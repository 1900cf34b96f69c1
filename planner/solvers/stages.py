"""Stage layouts, the candidates of the serving-aware planner: nodes grouped by (region, GPU type), each
group cut into stages of `width` nodes holding the same layers side by side (width trades hops for
parallel KV), stages sized to balance rate against KV per layer, groups ordered along the pipeline."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping

from planner.cluster import Cluster
from planner.profile import ProfileSet
from planner.solvers.base import SolveContext
from planner.solvers.search import Layout
from planner.throughput import ThroughputTable

WIDTHS = (1, 2, 3, 4, 6, 8, 12)


def groups_of(cluster: Cluster, tp: ThroughputTable) -> list[list[str]]:
    """Nodes by (region, GPU type): regions in name order, fastest type first within a region."""
    keyed: dict[tuple[str, str], list[str]] = {}
    for node in cluster.nodes:
        keyed.setdefault((node.region, node.gpu_type), []).append(node.name)
    order = sorted(keyed, key=lambda rt: (rt[0], -tp.capacity(rt[1], 1), rt[1]))
    return [keyed[k] for k in order]


def stage_layout(
    cluster: Cluster,
    tp: ThroughputTable,
    num_layers: int,
    groups: list[list[str]],
    widths: list[int],
    *,
    profiles: ProfileSet | None = None,
    kv_weight: float = 0.0,
) -> Layout:
    """Stages of `width` nodes per group (a remainder joins the group's last stage). Each stage gets the
    largest size k whose merit reaches a common threshold, the threshold being the highest at which the
    sizes still add up to L. Merit = rate^(1-w) * (KV tokens per layer)^w with w = `kv_weight`: w=0 sizes
    for max-flow, larger w keeps KV-poor stages (GPUs holding many layers) shorter. {} if L cannot fit."""
    stages: list[list[str]] = []
    for names, width in zip(groups, widths, strict=True):
        count = max(1, len(names) // width)
        cut = [names[i * width : (i + 1) * width] for i in range(count)]
        cut[-1] = cut[-1] + names[count * width :]
        stages += cut

    def gpu(name: str) -> str:
        return cluster.node(name).gpu_type

    def merit(stage: list[str], k: int) -> float:
        rate = sum(tp.capacity(gpu(n), k) for n in stage)
        if kv_weight <= 0 or profiles is None:
            return rate
        kv = sum(profiles.get(gpu(n)).kv_capacity_for(k) / k for n in stage)
        return float(rate ** (1 - kv_weight) * kv**kv_weight)

    merits = {
        id(st): [merit(st, k) for k in range(1, min(tp.max_layers(gpu(n)) for n in st) + 1)] for st in stages
    }

    def size(stage: list[str], threshold: float) -> int:
        fit = [k for k, m in enumerate(merits[id(stage)], start=1) if m >= threshold]
        return max(fit) if fit else 0

    if sum(size(s, 0.0) for s in stages) < num_layers:
        return {}
    lo, hi = 0.0, max(max(m) for m in merits.values())
    for _ in range(40):
        mid = (lo + hi) / 2
        if sum(size(s, mid) for s in stages) >= num_layers:
            lo = mid
        else:
            hi = mid
    sizes = [size(st, lo) for st in stages]
    # Trim the excess from the stages with the most slack (the largest sizes), not just the last one.
    excess = sum(sizes) - num_layers
    while excess > 0:
        i = max(range(len(sizes)), key=lambda j: (sizes[j], j))
        sizes[i] -= 1
        excess -= 1
    layout: Layout = {}
    start = 0
    for stage, k in zip(stages, sizes, strict=True):
        if k <= 0:
            continue
        for name in stage:
            layout[name] = (start, k)
        start += k
    return layout if start == num_layers else {}


KV_WEIGHTS = (0.0, 0.35, 0.7)
# Width combinations drawn when a fleet has too many GPU types to try them all.
SAMPLED_WIDTHS = 200


Recipe = tuple[tuple[int, ...], tuple[int, ...], float]  # (group order, widths, KV weight)


def width_options(ctx: SolveContext, order: tuple[int, ...]) -> list[list[int]]:
    base = groups_of(ctx.cluster, ctx.throughput)
    return [[w for w in WIDTHS if w <= len(base[i])] or [1] for i in order]


def width_choices(options: list[list[int]], limit: int, sample: int, seed: int) -> list[tuple[int, ...]]:
    """Every width combination when there are at most `limit`; otherwise (many GPU types: 7 groups give
    ~10^5) `sample` of them: each group at the same width first, then seeded random draws."""
    total = math.prod(len(o) for o in options)
    if total <= limit:
        return list(itertools.product(*options))
    chosen: dict[tuple[int, ...], None] = {}
    for w in WIDTHS:
        chosen[tuple(max([x for x in o if x <= w] or [o[0]]) for o in options)] = None
    rng = random.Random(seed)
    while len(chosen) < min(sample, total):
        chosen[tuple(rng.choice(o) for o in options)] = None
    return list(chosen)


def stage_candidates(
    ctx: SolveContext,
    limit: int = 4000,
    kv_weights: tuple[float, ...] = KV_WEIGHTS,
    orders: bool = False,
    recipes: dict[str, Recipe] | None = None,
    *,
    sample: int = SAMPLED_WIDTHS,
    deadline: float | None = None,
) -> list[tuple[str, Layout]]:
    """Stage layouts over width choices per group (`width_choices`), a few KV weights for the sizing and
    (with `orders`) every order of up to three groups along the pipeline. `recipes`, when given, receives
    name -> recipe. With `deadline` (on ctx's clock) generation stops there, after at least one layout."""
    base = groups_of(ctx.cluster, ctx.throughput)
    out: list[tuple[str, Layout]] = []
    seen: set[tuple[tuple[str, int, int], ...]] = set()
    perms = (
        list(itertools.permutations(range(len(base))))
        if orders and len(base) <= 3
        else [tuple(range(len(base)))]
    )
    for order in perms:
        for widths in width_choices(width_options(ctx, tuple(order)), limit, sample, ctx.seed):
            for kv_weight in kv_weights:
                if deadline is not None and out and ctx.now() >= deadline:
                    return out
                name, lay = recipe_layout(ctx, (tuple(order), tuple(widths), kv_weight))
                key = tuple(sorted((n, s, k) for n, (s, k) in lay.items()))
                if lay and key not in seen:
                    seen.add(key)
                    out.append((name, lay))
                    if recipes is not None:
                        recipes[name] = (tuple(order), tuple(widths), kv_weight)
    return out


def recipe_neighbours(ctx: SolveContext, recipe: Recipe) -> list[Recipe]:
    """Recipes one step away: one group's width changed to any other option, or another KV weight."""
    order, widths, kv_weight = recipe
    out: list[Recipe] = []
    for i, options in enumerate(width_options(ctx, order)):
        for w in options:
            if w != widths[i]:
                out.append((order, widths[:i] + (w,) + widths[i + 1 :], kv_weight))
    out += [(order, widths, kv) for kv in KV_WEIGHTS if kv != kv_weight]
    return out


def recipe_layout(ctx: SolveContext, recipe: Recipe) -> tuple[str, Layout]:
    order, widths, kv_weight = recipe
    base = groups_of(ctx.cluster, ctx.throughput)
    groups = [base[i] for i in order]
    tag = "".join(ctx.cluster.node(g[0]).gpu_type[0] for g in groups) if len(groups) <= 3 else ""
    lay = stage_layout(
        ctx.cluster,
        ctx.throughput,
        ctx.model.num_layers,
        groups,
        list(widths),
        profiles=ctx.profiles,
        kv_weight=kv_weight,
    )
    return f"stages{tag}{'-'.join(map(str, widths))}/kv{kv_weight:g}", lay


def reorderings(ctx: SolveContext, recipe: Recipe) -> list[tuple[str, Layout]]:
    """The same stages in every other group order (up to three groups)."""
    order, widths, kv_weight = recipe
    if len(order) > 3:
        return []
    width_of = dict(zip(order, widths, strict=True))
    out = []
    for perm in itertools.permutations(order):
        if perm != order:
            name, lay = recipe_layout(ctx, (perm, tuple(width_of[i] for i in perm), kv_weight))
            if lay:
                out.append((name, lay))
    return out


def shift_neighbours(layout: Layout, ctx: SolveContext) -> list[Layout]:
    """Move one layer across each stage boundary (both ways), within every holder's max layers."""
    stages: dict[tuple[int, int], list[str]] = {}
    for name, sk in layout.items():
        stages.setdefault(sk, []).append(name)
    keys = sorted(stages)
    kmax = {n.name: ctx.throughput.max_layers(n.gpu_type) for n in ctx.cluster.nodes}
    out = []
    for a, b in itertools.pairwise(keys):
        if a[0] + a[1] != b[0]:
            continue
        for d in (1, -1):
            ka, kb = a[1] + d, b[1] - d
            if (
                ka < 1
                or kb < 1
                or any(ka > kmax[n] for n in stages[a])
                or any(kb > kmax[n] for n in stages[b])
            ):
                continue
            new = dict(layout)
            for n in stages[a]:
                new[n] = (a[0], ka)
            for n in stages[b]:
                new[n] = (b[0] + d, kb)
            out.append(new)
    return out


def structure(cluster: Cluster, layout: Mapping[str, tuple[int, int]]) -> tuple[tuple[str, int, int], ...]:
    """A layout up to the order of its stages: sorted (GPU type, size, replicas) per distinct range."""
    stages: dict[tuple[int, int], list[str]] = {}
    for name, sk in layout.items():
        stages.setdefault(sk, []).append(cluster.node(name).gpu_type)
    return tuple(sorted((min(types), k, len(types)) for (_, k), types in stages.items()))
