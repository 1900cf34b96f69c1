"""Placement methods, one registry keyed by the CLI's `--method` names, and `solve` which runs one and
returns a checked Plan (max-flow split, bounds, statistics)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from planner.cluster import Cluster
from planner.flow import plan_from_placement
from planner.model import ModelSpec
from planner.placement import Placement
from planner.plan import Plan
from planner.profile import ProfileSet
from planner.solvers import homogeneous, milp, petals, scale, search, separate, serve, swarm  # noqa: F401  (registration)
from planner.solvers.base import (
    Progress,
    SolveContext,
    SolveResult,
    check_placement,
    get_solver,
    method_names,
    register,
)
from planner.throughput import ThroughputTable, typical_throughput

__all__ = [
    "Progress",
    "SolveContext",
    "SolveResult",
    "check_placement",
    "get_solver",
    "method_names",
    "register",
    "solve",
    "solve_placement",
]


def solve_placement(method: str, ctx: SolveContext) -> SolveResult:
    """Run one method and check what it returns (every node within its max layers, [0, L) covered)."""
    result = get_solver(method)(ctx)
    check_placement(ctx.cluster, ctx.throughput, result.placement, partial=result.partial)
    return result


def solve(
    method: str,
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    *,
    settings: Mapping[str, Any] | None = None,
    throughput: ThroughputTable | None = None,
    seed: int = 0,
    time_limit_s: float = 30.0,
    clock: Callable[[], float] | None = None,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    options: Mapping[str, Any] | None = None,
    scorer: Callable[[Placement], tuple[float, Mapping[str, Any]]] | None = None,
) -> Plan:
    """Plan `model` on `cluster` with `method`; the Plan records the method, seed and solver statistics."""
    tp = throughput or typical_throughput(cluster, model, profiles, settings)
    ctx = SolveContext(
        cluster=cluster,
        model=model,
        profiles=profiles,
        throughput=tp,
        rng=random.Random(seed),
        seed=seed,
        time_limit_s=time_limit_s,
        clock=clock,
        progress=progress,
        should_stop=should_stop,
        options=dict(options or {}),
        scorer=scorer,
    )
    started = ctx.now()
    result = solve_placement(method, ctx)
    stats = dict(result.stats)
    if clock is not None:
        stats["wall_s"] = ctx.now() - started
    return plan_from_placement(
        cluster,
        model,
        profiles,
        result.placement,
        method=method,
        throughput=tp,
        partial=result.partial,
        split=result.split,
        lanes=result.lanes,
        solver_stats=stats,
        provenance={
            "method": method,
            "seed": seed,
            "time_limit_s": time_limit_s,
            "options": {k: v for k, v in (options or {}).items() if isinstance(v, int | float | str | bool)},
        },
    )
