"""Swarm placement (paper §4): equal stages of q layers; nodes, fastest first, join the weakest stage."""

from __future__ import annotations

from planner.errors import InfeasiblePlan
from planner.placement import LayerRange, Placement
from planner.solvers.base import SolveContext, SolveResult, register


def stage_size(num_layers: int, smallest_max_layers: int) -> int:
    """The largest q dividing L that every node can hold (70B on T4s: q=4, 20 stages; 30B: q=6, 10 stages)."""
    for q in range(min(smallest_max_layers, num_layers), 0, -1):
        if num_layers % q == 0:
            return q
    return 1


@register("swarm")
def solve_swarm(ctx: SolveContext) -> SolveResult:
    num_layers = ctx.model.num_layers
    tp = ctx.throughput
    nodes = ctx.cluster.nodes
    q = int(
        ctx.options.get("stage_layers")
        or stage_size(num_layers, min(tp.max_layers(n.gpu_type) for n in nodes))
    )
    stages = num_layers // q
    if len(nodes) < stages:
        raise InfeasiblePlan(f"swarm needs at least {stages} nodes for {stages} stages of {q} layers")
    ranked = sorted(((tp.capacity(n.gpu_type, q), i) for i, n in enumerate(nodes)), reverse=True)
    perf = [0.0] * stages
    ranges: dict[str, LayerRange] = {}
    for p, i in ranked:
        stage = min(range(stages), key=lambda s: (perf[s], s))
        perf[stage] += p
        ranges[nodes[i].name] = LayerRange(stage * q, (stage + 1) * q)
    return SolveResult(
        Placement(num_layers, ranges), partial=False, stats={"stage_layers": q, "stages": stages}
    )
