"""Homogeneous ("Orca-like") pipelines (paper §4): fastest types first, each node its max layers, in order."""

from __future__ import annotations

from planner.errors import InfeasiblePlan
from planner.placement import LayerRange, Placement
from planner.solvers.base import SolveContext, SolveResult, register


@register("homogeneous")
def solve_homogeneous(ctx: SolveContext) -> SolveResult:
    """Types ordered by tp(K)*K descending, nodes shuffled within a type, appended to the current pipeline
    until it reaches L; type boundaries do not reset it, and a final partial pipeline is discarded."""
    num_layers = ctx.model.num_layers
    tp = ctx.throughput
    by_type: dict[str, list[str]] = {}
    for node in ctx.cluster.nodes:
        by_type.setdefault(node.gpu_type, []).append(node.name)
    types = sorted(by_type, key=lambda t: -tp.capacity(t, tp.max_layers(t)) * tp.max_layers(t))
    ranges: dict[str, LayerRange] = {}
    current: dict[str, LayerRange] = {}
    length = 0
    for t in types:
        names = list(by_type[t])
        ctx.rng.shuffle(names)
        for name in names:
            end = min(length + tp.max_layers(t), num_layers)
            current[name] = LayerRange(length, end)
            length = end
            if length == num_layers:
                ranges.update(current)
                current, length = {}, 0
    if not ranges:
        raise InfeasiblePlan(f"the fleet cannot hold one full copy of the {num_layers}-layer model")
    pipelines = sum(1 for r in ranges.values() if r.start == 0)
    return SolveResult(Placement(num_layers, ranges), partial=False, stats={"pipelines": pipelines})
