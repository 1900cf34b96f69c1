"""Local search over placements with max-flow as the oracle: starts from the paper's heuristics, lane layouts
(parallel chains, each node holding what it can serve at the lane's rate) and stage layouts (serve.py), then a
randomised neighbourhood walk (resize, shift a joint, move/copy/drop a node, swap two nodes; compound moves;
restarts from the best) under a time budget, stopping early at the coverage bound (proven optimal).

Why: the paper's MILP has a near-useless relaxation and open-source solvers stall on it; a max-flow solve
costs a few milliseconds, so thousands of candidate placements fit in seconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from planner.cluster import Cluster
from planner.flow import build_flow_graph, max_flow
from planner.model import ModelSpec
from planner.placement import LayerRange, Placement
from planner.solvers.base import SolveContext, SolveResult, get_solver, register
from planner.throughput import ThroughputTable

# Ranges: node name -> (start, size); absent = idle.
Layout = dict[str, tuple[int, int]]


def to_placement(layout: Mapping[str, tuple[int, int]], num_layers: int) -> Placement:
    return Placement(num_layers, {n: LayerRange(s, s + k) for n, (s, k) in layout.items()})


def from_placement(placement: Placement) -> Layout:
    return {n: (r.start, r.size) for n, r in placement.ranges.items()}


@dataclass
class FlowOracle:
    """Max-flow value of a layout, memoised (the walk revisits layouts often). `slowed` scales the compute
    capacity of nodes running below their GPU type's profile (re-planning after a node slowed: the throughput
    table is per type, so the scaling happens here)."""

    cluster: Cluster
    model: ModelSpec
    throughput: ThroughputTable
    partial: bool = True
    calls: int = 0
    slowed: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._cache: dict[tuple[tuple[str, int, int], ...], float] = {}

    def value(self, layout: Mapping[str, tuple[int, int]]) -> float:
        key = tuple(sorted((n, s, k) for n, (s, k) in layout.items()))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        self.calls += 1
        g, _ = build_flow_graph(
            self.cluster,
            self.model,
            to_placement(layout, self.model.num_layers),
            self.throughput,
            partial=self.partial,
        )
        for name, factor in self.slowed.items():
            edge = ((name, "start"), (name, "end"))
            if g.has_edge(*edge):
                g.edges[edge]["capacity"] *= factor
        value, _ = max_flow(g, value_only=True)
        self._cache[key] = float(value)
        return float(value)


def _node_order(cluster: Cluster, tp: ThroughputTable) -> list[str]:
    """Region by region (fewest slow cross-region hops), fastest types first within a region."""
    return [
        n.name for n in sorted(cluster.nodes, key=lambda n: (n.region, -tp.capacity(n.gpu_type, 1), n.name))
    ]


def lane_layout(
    cluster: Cluster, tp: ThroughputTable, num_layers: int, lanes: int, order: list[str] | None = None
) -> Layout:
    """`lanes` parallel pipelines, nodes dealt round-robin in `order`. Each lane gets the largest per-lane
    rate F such that its nodes, each holding the most layers it can serve at F, cover all layers; a lane
    that cannot cover [0, L) at any rate is left idle."""
    names = order or _node_order(cluster, tp)
    groups = [names[i::lanes] for i in range(lanes)]
    layout: Layout = {}
    for group in groups:
        layout.update(_chain(cluster, tp, num_layers, group))
    return layout


def _chain(cluster: Cluster, tp: ThroughputTable, num_layers: int, group: list[str]) -> Layout:
    def sizes(rate: float) -> list[int]:
        out = []
        for name in group:
            gpu = cluster.node(name).gpu_type
            fit = [k for k in range(1, tp.max_layers(gpu) + 1) if tp.capacity(gpu, k) >= rate]
            out.append(max(fit) if fit else 0)
        return out

    if sum(sizes(0.0)) < num_layers:
        return {}
    lo, hi = 0.0, max(tp.capacity(cluster.node(n).gpu_type, 1) for n in group)
    for _ in range(60):
        mid = (lo + hi) / 2
        if sum(sizes(mid)) >= num_layers:
            lo = mid
        else:
            hi = mid
    layout: Layout = {}
    start = 0
    for name, k in zip(group, sizes(lo), strict=True):
        if k == 0 or start >= num_layers:
            continue
        k = min(k, num_layers - start)
        layout[name] = (start, k)
        start += k
    return layout if start >= num_layers else {}


class Neighbourhood:
    """Random moves on a layout; every move keeps each node within 1..max layers and inside [0, L)."""

    def __init__(self, ctx: SolveContext) -> None:
        self.ctx = ctx
        self.num_layers = ctx.model.num_layers
        self.names = [n.name for n in ctx.cluster.nodes]
        self.kmax = {
            n.name: min(ctx.throughput.max_layers(n.gpu_type), self.num_layers) for n in ctx.cluster.nodes
        }
        self.gpu = {n.name: n.gpu_type for n in ctx.cluster.nodes}

    def _clip(self, name: str, start: int, size: int) -> tuple[int, int]:
        size = max(1, min(size, self.kmax[name], self.num_layers))
        start = max(0, min(start, self.num_layers - size))
        return start, size

    def move(self, layout: Layout) -> Layout:
        rng = self.ctx.rng
        new = dict(layout)
        holders = list(new)
        kind = rng.random()
        if holders and kind < 0.25:
            # Resize one node, keeping its start or its end.
            name = rng.choice(holders)
            s, k = new[name]
            d = rng.choice((-2, -1, 1, 2))
            new[name] = self._clip(name, s, k + d) if rng.random() < 0.5 else self._clip(name, s - d, k + d)
        elif holders and kind < 0.5:
            # Shift a joint: a node ending where another starts; one grows, the other shrinks.
            name = rng.choice(holders)
            s, k = new[name]
            nexts = [m for m in holders if new[m][0] == s + k]
            if not nexts:
                return self.move(layout) if rng.random() < 0.5 else new
            other = rng.choice(nexts)
            d = rng.choice((-2, -1, 1, 2))
            s2, k2 = new[other]
            if 1 <= k + d <= self.kmax[name] and 1 <= k2 - d <= self.kmax[other]:
                new[name] = (s, k + d)
                new[other] = (s2 + d, k2 - d)
        elif kind < 0.75:
            # Place a node (idle or not) so that it starts at an existing boundary.
            name = rng.choice(self.names)
            bounds = sorted({0} | {s + k for s, k in new.values() if s + k < self.num_layers})
            start = rng.choice(bounds)
            ends = sorted({s for s, _ in new.values() if s > start} | {self.num_layers})
            fitting = [e for e in ends if e - start <= self.kmax[name]]
            size = (
                (rng.choice(fitting) - start)
                if fitting and rng.random() < 0.8
                else rng.randint(1, self.kmax[name])
            )
            new[name] = self._clip(name, start, size)
        elif holders and kind < 0.85:
            name = rng.choice(holders)
            del new[name]
        elif len(holders) >= 2:
            # Swap two nodes of different types, each clipped to what it can hold.
            a, b = rng.sample(holders, 2)
            if self.gpu[a] != self.gpu[b]:
                (sa, ka), (sb, kb) = new[a], new[b]
                new[a] = self._clip(a, sb, kb)
                new[b] = self._clip(b, sa, ka)
        return new


def improve(
    ctx: SolveContext,
    starts: list[Layout],
    score: Callable[[Layout], float],
    *,
    deadline: float,
    started: float,
    bound: float | None = None,
    temperature: float = 0.002,
    max_iters: int | None = None,
) -> tuple[Layout, float, int]:
    """Annealed walk from the best start: accept better or equal moves, and worse ones with probability
    exp(-drop/(T*best)); restart from the best every so often. Stops at `deadline`, `max_iters`, or
    when the caller's stop flag is raised."""
    rng = ctx.rng
    hood = Neighbourhood(ctx)
    scored = [(score(s), i) for i, s in enumerate(starts) if s]
    if not scored:
        return {}, 0.0, 0
    best_value, idx = max(scored)
    best = dict(starts[idx])
    current, current_value = dict(best), best_value
    iters = 0
    since_best = 0
    while not ctx.stopped() and ctx.now() < deadline and (max_iters is None or iters < max_iters):
        iters += 1
        cand = hood.move(current)
        # Compound moves cross two-step barriers (move a node and re-join its neighbour in one go).
        while cand and rng.random() < 0.4:
            cand = hood.move(cand)
        if not cand:
            continue
        value = score(cand)
        drop = current_value - value
        if drop <= 0 or rng.random() < math.exp(-drop / max(1e-9, temperature * max(best_value, 1.0))):
            current, current_value = cand, value
        if current_value > best_value * (1 + 1e-12):
            best, best_value, since_best = dict(current), current_value, 0
            ctx.report(best_value, bound, started, note="search")
        else:
            since_best += 1
        if since_best > 400:
            # Restart from the best, kicked by a few random moves.
            current, since_best = dict(best), 0
            for _ in range(rng.randint(1, 4)):
                current = hood.move(current) or current
            current_value = score(current)
        if bound is not None and best_value >= bound * (1 - 1e-9):
            break
    return best, best_value, iters


def summarize_starts(values: Mapping[str, float]) -> dict[str, float]:
    """Start values for the stats: every heuristic, plus the best stage layout and the best lane layout."""
    out = {n: v for n, v in values.items() if not n.startswith(("stages", "lanes"))}
    for prefix in ("stages", "lanes"):
        family = {n: v for n, v in values.items() if n.startswith(prefix)}
        if family:
            best = max(family, key=lambda n: family[n])
            out[best] = family[best]
    return out


def heuristic_starts(
    ctx: SolveContext, *, stages: bool = True, deadline: float | None = None
) -> list[tuple[str, Layout]]:
    """Placements of the paper's heuristics, stage layouts sized for max-flow (unless `stages` is False;
    built until `deadline` on ctx's clock, many-type fleets having hundreds) and the lane layouts."""
    starts: list[tuple[str, Layout]] = []
    for name in ("petals", "swarm", "separate", "homogeneous"):
        try:
            # Each heuristic gets its own RNG seeded like a standalone run, so its start is reproducible.
            fresh = replace(ctx, rng=random.Random(ctx.seed))
            starts.append((name, from_placement(get_solver(name)(fresh).placement)))
        except Exception:  # noqa: BLE001 - a heuristic that cannot place this fleet is simply not a start
            continue
    # Stage layouts sized for max-flow (parallel replicas per region and GPU type; see serve.py).
    from planner.solvers.stages import stage_candidates

    if stages:
        starts += [(name, lay) for name, lay in stage_candidates(ctx, kv_weights=(0.0,), deadline=deadline)]
    nodes = len(ctx.cluster.nodes)
    for lanes in range(1, min(nodes, 6) + 1):
        lay = lane_layout(ctx.cluster, ctx.throughput, ctx.model.num_layers, lanes)
        if lay:
            starts.append((f"lanes{lanes}", lay))
    return starts


@register("search")
def solve_search(ctx: SolveContext) -> SolveResult:
    """Max-flow local search: best of the heuristic and lane starts, then the annealed walk until the time
    limit (or the chaining-relaxed coverage bound is reached, which proves optimality)."""
    from planner.flow import coverage_bound

    started = ctx.now()
    oracle = FlowOracle(ctx.cluster, ctx.model, ctx.throughput, partial=True)
    starts = heuristic_starts(ctx, deadline=started + ctx.time_limit_s / 2)
    start_values = summarize_starts({name: oracle.value(lay) for name, lay in starts})
    bound = coverage_bound(ctx.cluster, ctx.throughput)
    max_iters = ctx.options.get("max_iters")
    best, value, iters = improve(
        ctx,
        [lay for _, lay in starts],
        oracle.value,
        deadline=started + ctx.time_limit_s,
        started=started,
        bound=bound,
        max_iters=int(max_iters) if max_iters is not None else None,
    )
    stats = {
        "start_values": start_values,
        "iterations": iters,
        "oracle_calls": oracle.calls,
        "objective_tok_per_s": value,
        "coverage_bound_tok_per_s": bound,
        "proven_optimal": value >= bound * (1 - 1e-9),
    }
    return SolveResult(to_placement(best, ctx.model.num_layers), partial=True, stats=stats)
