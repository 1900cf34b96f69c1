"""A failure run with re-planning next to the same run without it (same seed): the figures that compare the
two (simulator.transition.transition_figures). `brl simulate --fail N@T --replan` and the simulator
service's dry runs with `fail` + `replan` both call `run_with_replan`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from planner.cluster import Cluster
from planner.errors import InvalidInput
from planner.model import ModelSpec
from planner.plan import Plan
from planner.profile import ProfileSet
from simulator.config import SimConfig
from simulator.run import SimResult, WatchLine, simulate
from simulator.transition import planner_replanner, transition_figures


@dataclass(frozen=True)
class ReplanRun:
    """The run with re-planning, the same run without, and the figures comparing them."""

    with_replan: SimResult
    without_replan: SimResult
    figures: Mapping[str, Any]


def compare_without_replan(
    cluster: Cluster, model: ModelSpec, profiles: ProfileSet, plan: Plan, cfg: SimConfig, result: SimResult
) -> tuple[SimResult, dict[str, Any]]:
    """The same run as `result` (same seed) without re-planning, and the figures that compare the two."""
    if not cfg.failures:
        raise InvalidInput("re-planning needs a failure to re-plan after", field="failures")
    without = simulate(cluster, model, profiles, plan, replace(cfg, replan=False))
    failure_s = result.start_s + min(at for _, at in cfg.failures)
    first_lost = [n for n, at in cfg.failures if result.start_s + at == failure_s]
    lo, hi = result.window_s
    figures = transition_figures(
        without=without.decode_series,
        with_replan=result.decode_series,
        window_start_s=lo if lo < failure_s else result.start_s,
        end_s=hi,
        transitions=result.transitions,
        failure_s=failure_s,
        covered_without=not plan.placement.without(set(first_lost)).uncovered(),
    )
    return without, figures


def run_with_replan(
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    plan: Plan,
    cfg: SimConfig,
    *,
    replan_time_limit_s: float = 10.0,
    on_watch: Callable[[WatchLine], None] | None = None,
) -> ReplanRun:
    """Simulate `plan` through `cfg.failures` re-planning after each (planner.replan, incremental, with
    `replan_time_limit_s` of search), then the same run without re-planning."""
    if not cfg.failures:
        raise InvalidInput("re-planning needs a failure to re-plan after", field="failures")
    replanner = planner_replanner(cluster, model, profiles, seed=cfg.seed, time_limit_s=replan_time_limit_s)
    result = simulate(
        cluster, model, profiles, plan, replace(cfg, replan=True), on_watch=on_watch, replanner=replanner
    )
    without, figures = compare_without_replan(cluster, model, profiles, plan, cfg, result)
    return ReplanRun(result, without, figures)
