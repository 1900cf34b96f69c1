"""Separate pipelines (paper's baseline): one or more pipelines per GPU type, layers split evenly."""

from __future__ import annotations

import math

from planner.errors import InfeasiblePlan
from planner.placement import LayerRange, Placement
from planner.solvers.base import SolveContext, SolveResult, register


def split_evenly(num_layers: int, parts: int) -> list[int]:
    """Layer counts for `parts` nodes; the larger pieces go last, as in the paper's hand-made files."""
    base, extra = divmod(num_layers, parts)
    return [base] * (parts - extra) + [base + 1] * extra


def _pipelines(names: list[str], max_layers: int, num_layers: int) -> tuple[list[list[str]], list[str]]:
    per = math.ceil(num_layers / max_layers)
    count = len(names) // per
    if count == 0:
        return [], names
    groups: list[list[str]] = [[] for _ in range(count)]
    for j, name in enumerate(names):
        groups[j % count].append(name)
    return groups, []


@register("separate")
def solve_separate(ctx: SolveContext) -> SolveResult:
    """Each GPU type forms as many pipelines as its nodes allow (all nodes used, spread evenly). Types too
    small for one pipeline under their max layers pool their nodes into mixed pipelines, fastest first."""
    num_layers = ctx.model.num_layers
    tp = ctx.throughput
    by_type: dict[str, list[str]] = {}
    for node in ctx.cluster.nodes:
        by_type.setdefault(node.gpu_type, []).append(node.name)
    ranges: dict[str, LayerRange] = {}
    leftover: list[str] = []
    pipelines = 0
    for t, names in by_type.items():
        groups, rest = _pipelines(names, tp.max_layers(t), num_layers)
        leftover += rest
        for group in groups:
            start = 0
            for name, size in zip(group, split_evenly(num_layers, len(group)), strict=True):
                ranges[name] = LayerRange(start, start + size)
                start += size
            pipelines += 1
    # Pool the rest: fastest per layer first, each node its most layers, full pipelines only.
    leftover.sort(
        key=lambda n: -tp.capacity(ctx.cluster.node(n).gpu_type, tp.max_layers(ctx.cluster.node(n).gpu_type))
    )
    current: dict[str, LayerRange] = {}
    length = 0
    for name in leftover:
        k = tp.max_layers(ctx.cluster.node(name).gpu_type)
        end = min(length + k, num_layers)
        current[name] = LayerRange(length, end)
        length = end
        if length == num_layers:
            ranges.update(current)
            current, length = {}, 0
            pipelines += 1
    if not ranges:
        raise InfeasiblePlan(f"the fleet cannot hold one full copy of the {num_layers}-layer model")
    return SolveResult(Placement(num_layers, ranges), partial=False, stats={"pipelines": pipelines})
