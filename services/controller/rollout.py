"""The staged steps of a live rollout, each a small function the controller calls in order: decide the
lost nodes, re-plan (pure planner.replan), dry-run in the simulator, load the new ranges on the workers
(in parallel), swap the coordinator's plan. The old ranges drain on the workers by themselves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from planner.cluster import Cluster
from planner.model import ModelSpec
from planner.placement import LayerRange, Placement
from planner.plan import Plan
from planner.profile import ProfileSet
from planner.replan import Replan, replan
from planner.replan_moves import FleetChange, LayerMove
from services.coordinator.registry import Registry
from services.worker.records import LoadOrder, LoadReport

LoadFn = Callable[[str, LoadOrder], Awaitable[LoadReport]]
# placement -> (simulated decode tok/s, details): services.cli.plan.simulator_scorer on the changed fleet.
Scorer = Callable[[Placement], tuple[float, Mapping[str, Any]]]


@dataclass(frozen=True)
class RolloutFigures:
    """What the last rollout did and how long each stage took (seconds; `recover_s` = from the last sign
    of life of the lost worker to the new plan routing, i.e. detect_s + replan_s + dryrun_s + load_s +
    swap_s)."""

    outcome: str  # "rolled_out", "skipped" (nothing better to do) or "failed"
    reason: str
    lost: tuple[str, ...]
    detect_s: float = 0.0
    replan_s: float = 0.0
    dryrun_s: float = 0.0
    load_s: float = 0.0
    swap_s: float = 0.0
    recover_s: float = 0.0
    uncovered_before: tuple[tuple[int, int], ...] = ()
    score_before: float = 0.0
    score_after: float = 0.0
    layers_moved: int = 0
    moves: tuple[Mapping[str, Any], ...] = ()
    finished_at: float = 0.0  # wall clock (time.time())
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}
        for k in ("detect_s", "replan_s", "dryrun_s", "load_s", "swap_s", "recover_s"):
            out[k] = round(out[k], 3)
        out["uncovered_before"] = [list(r) for r in self.uncovered_before]
        out["moves"] = [dict(m) for m in self.moves]
        out["lost"] = list(self.lost)
        out.update(self.extra)
        return out


def lost_nodes(plan: Plan, cluster: Cluster, alive: set[str]) -> tuple[str, ...]:
    """Nodes of the plan's fleet that are not alive now (the FleetChange to re-plan for)."""
    return tuple(sorted(n for n in cluster.node_names if n not in alive and n in plan.placement.ranges))


def plan_fleet(plan: Plan, fallback: Cluster | None) -> Cluster | None:
    """The fleet the plan in force was made for: a re-plan embeds its changed fleet, so nodes lost earlier
    are not offered again."""
    return plan.cluster or fallback


def replan_for_loss(
    plan: Plan,
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    lost: tuple[str, ...],
    *,
    time_limit_s: float,
    clock: Callable[[], float],
    seed: int = 0,
) -> Replan:
    return replan(
        plan,
        cluster,
        model,
        profiles,
        FleetChange(lost=lost),
        time_limit_s=time_limit_s,
        clock=clock,
        seed=seed,
    )


def worth_rolling_out(
    result: Replan, scorer: Scorer | None, survivors: Placement
) -> tuple[bool, str, float, float]:
    """(roll out?, why, simulated tok/s before, after): the dry run. A plan that restores coverage always
    rolls out (the survivors serve nothing; the simulator still predicts what the new plan will serve);
    otherwise the simulator judges old-minus-lost against the new plan (max-flow without a scorer)."""
    if not any(m.layers_to_load for m in result.moves):
        return False, "the re-plan keeps the surviving placement (no layer to load)", 0.0, 0.0
    if result.plan.placement.uncovered():
        return (
            False,
            f"the re-plan leaves layers {list(result.plan.placement.uncovered())} uncovered",
            0.0,
            0.0,
        )
    if survivors.uncovered():
        after = scorer(result.plan.placement)[0] if scorer is not None else result.score_after
        return True, f"restores coverage of layers {list(survivors.uncovered())}", 0.0, after
    if scorer is None:
        gain = result.score_after > result.score_before
        return gain, "max-flow gain" if gain else "no max-flow gain", result.score_before, result.score_after
    before, _ = scorer(survivors)
    after, _ = scorer(result.plan.placement)
    if after > before:
        return True, f"the simulator predicts {after:.1f} tok/s vs {before:.1f} without it", before, after
    return False, f"the simulator predicts no gain ({after:.1f} vs {before:.1f} tok/s)", before, after


def loads_needed(moves: tuple[LayerMove, ...], registry: Registry) -> list[tuple[str, str, LayerRange]]:
    """(node, address, new range) of each live worker whose range changes."""
    out: list[tuple[str, str, LayerRange]] = []
    for m in moves:
        state = registry.get(m.node)
        if m.after is None or m.after == m.before or state is None or state.info.layers == m.after:
            continue
        out.append((m.node, state.info.address, m.after))
    return out


async def load_all(
    loads: list[tuple[str, str, LayerRange]], registry: Registry, load_fn: LoadFn
) -> dict[str, LoadReport]:
    """Load every new range in parallel; each worker is then registered with its new range at once (it
    also re-registers itself), so new requests route to it as soon as it is live. Raises the first error."""

    async def one(node: str, address: str, rng: LayerRange) -> LoadReport:
        report = await load_fn(address, LoadOrder(rng.start, rng.end))
        state = registry.get(node)
        if state is not None and state.info.layers != rng:
            registry.register(replace(state.info, layers=rng))
        return report

    reports = await asyncio.gather(*(one(*load) for load in loads))
    return {load[0]: rep for load, rep in zip(loads, reports, strict=True)}


def move_record(m: LayerMove, report: LoadReport | None) -> dict[str, Any]:
    return {
        "node": m.node,
        "before": None if m.before is None else [m.before.start, m.before.end],
        "after": None if m.after is None else [m.after.start, m.after.end],
        "layers_to_load": m.layers_to_load,
        "predicted_load_s": round(m.load_s, 3),
        "load_s": None if report is None else round(report.load_s, 3),
        "mode": None if report is None else report.mode,
    }
