"""Petals placement (paper §4): every node holds its most layers, placed greedily where the layers are weakest."""

from __future__ import annotations

from planner.placement import LayerRange, Placement
from planner.solvers.base import SolveContext, SolveResult, register


@register("petals")
def solve_petals(ctx: SolveContext) -> SolveResult:
    """Nodes in shuffled order (the paper shuffles, it does not sort); each takes the window [x, x+K) whose
    ascending-sorted per-layer loads are lexicographically smallest (smallest x on ties), then adds its
    throughput to those layers. Routing tolerates partial overlap, as the paper's scheduler does."""
    num_layers = ctx.model.num_layers
    tp = ctx.throughput
    order = []
    for i, node in enumerate(ctx.cluster.nodes):
        k = min(tp.max_layers(node.gpu_type), num_layers)
        order.append((tp.capacity(node.gpu_type, k), i))
    ctx.rng.shuffle(order)
    load = [0.0] * num_layers
    ranges: dict[str, LayerRange] = {}
    for perf, i in order:
        node = ctx.cluster.nodes[i]
        k = min(tp.max_layers(node.gpu_type), num_layers)
        best_x = min(range(num_layers - k + 1), key=lambda x: (sorted(load[x : x + k]), x))
        for layer in range(best_x, best_x + k):
            load[layer] += perf
        ranges[node.name] = LayerRange(best_x, best_x + k)
    return SolveResult(Placement(num_layers, ranges), partial=True, stats={"order": [i for _, i in order]})
