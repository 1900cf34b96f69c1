"""The staged steps of a live rollout, each a small function the controller calls in order: decide what
changed (lost and joined nodes, idle workers included), re-plan (pure planner.replan), dry-run in the
simulator, load the new ranges on the workers (in parallel, idle workers too; a Load that gives up layers
only once another worker holds them), swap the coordinator's plan; the old ranges drain on the workers by
themselves, and the nodes the new plan drops are unloaded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from planner.cluster import Cluster, Node
from planner.model import ModelSpec
from planner.placement import LayerRange, Placement
from planner.plan import Plan
from planner.profile import ProfileSet
from planner.replan import Replan, replan
from planner.replan_moves import FleetChange, LayerMove
from services.coordinator.registry import IdleWorker, Registry, WorkerInfo, WorkerState
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
    joined: tuple[str, ...] = ()
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
    # Idle workers given the range the plan in force names them for (no re-plan), and the nodes told to
    # unload (Load of [0,0)) after the swap because the new plan drops them.
    assigned: tuple[Mapping[str, Any], ...] = ()
    unloaded: tuple[str, ...] = ()
    finished_at: float = 0.0  # wall clock (time.time())
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}
        for k in ("detect_s", "replan_s", "dryrun_s", "load_s", "swap_s", "recover_s"):
            out[k] = round(out[k], 3)
        out["uncovered_before"] = [list(r) for r in self.uncovered_before]
        out["moves"] = [dict(m) for m in self.moves]
        out["assigned"] = [dict(a) for a in self.assigned]
        out["unloaded"] = list(self.unloaded)
        out["lost"] = list(self.lost)
        out["joined"] = list(self.joined)
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class Change:
    """The fleet against the plan in force: `lost` = planned nodes not serving; `joined` = live workers
    (serving or idle) the plan gives no range; `change` = the FleetChange to re-plan with (every node of the
    plan's fleet that is not live counts as lost, so no layer goes to a dead node; joiners outside that
    fleet join it, those inside it are idle nodes the search picks up by itself)."""

    lost: tuple[str, ...]
    joined: tuple[str, ...]
    change: FleetChange
    skipped_joins: tuple[str, ...] = ()  # live workers of a GPU type without a profile (cannot be planned)

    def is_empty(self) -> bool:
        return not (self.lost or self.joined)


def lost_nodes(plan: Plan, cluster: Cluster, alive: set[str]) -> tuple[str, ...]:
    """Nodes of the plan's fleet that are not alive now (the FleetChange to re-plan for)."""
    return tuple(sorted(n for n in cluster.node_names if n not in alive and n in plan.placement.ranges))


def fleet_change(
    plan: Plan,
    cluster: Cluster,
    alive: Mapping[str, WorkerState],
    profiled_types: set[str],
    known: Cluster | None = None,
    idle: Mapping[str, IdleWorker] | None = None,
) -> Change:
    """What to re-plan for. `idle` workers the plan names are lost like dead ones (they hold nothing of
    what it counts on); the others are joiners. A joiner outside `cluster` takes its region and NIC speeds
    from the node of the same name in `known` (the fleet file: a worker that comes back after it was
    re-planned away), else from a node of its GPU type, else from the fleet's first node; its links are
    copied on apply."""
    unplanned_idle = {n: w for n, w in (idle or {}).items() if n not in plan.placement.ranges}
    lost = lost_nodes(plan, cluster, set(alive))
    absent = tuple(sorted(n for n in cluster.node_names if n not in alive and n not in unplanned_idle))
    gpu_types = {n: w.info.gpu_type for n, w in alive.items()} | {
        n: w.gpu_type for n, w in unplanned_idle.items()
    }
    joined: list[str] = []
    new_nodes: list[Node] = []
    skipped: list[str] = []
    for name, gpu_type in sorted(gpu_types.items()):
        if name in plan.placement.ranges:
            continue
        if gpu_type not in profiled_types:
            skipped.append(name)
            continue
        joined.append(name)
        if cluster.has_node(name):
            continue
        like = known.node(name) if known is not None and known.has_node(name) else None
        if like is None or like.gpu_type != gpu_type:
            like = next((n for n in cluster.nodes if n.gpu_type == gpu_type), None) or (
                cluster.nodes[0] if cluster.nodes else None
            )
        new_nodes.append(
            Node(
                name,
                gpu_type,
                region=like.region if like else cluster.coordinator_region,
                nic_in_bytes_per_s=like.nic_in_bytes_per_s if like else Node.nic_in_bytes_per_s,
                nic_out_bytes_per_s=like.nic_out_bytes_per_s if like else Node.nic_out_bytes_per_s,
            )
        )
    return Change(lost, tuple(joined), FleetChange(lost=absent, joined=tuple(new_nodes)), tuple(skipped))


def plan_fleet(plan: Plan, fallback: Cluster | None) -> Cluster | None:
    """The fleet the plan in force was made for: a re-plan embeds its changed fleet, so nodes lost earlier
    are not offered again."""
    return plan.cluster or fallback


def replan_for_change(
    plan: Plan,
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    change: FleetChange,
    *,
    min_gain: float,
    time_limit_s: float,
    clock: Callable[[], float],
    seed: int = 0,
) -> Replan:
    return replan(
        plan,
        cluster,
        model,
        profiles,
        change,
        min_gain=min_gain,
        time_limit_s=time_limit_s,
        clock=clock,
        seed=seed,
    )


def worth_rolling_out(
    result: Replan, scorer: Scorer | None, survivors: Placement, min_gain: float = 0.0
) -> tuple[bool, str, float, float]:
    """(roll out?, why, simulated tok/s before, after): the dry run. A plan that restores coverage always
    rolls out (the survivors serve nothing; the simulator still predicts what the new plan will serve);
    otherwise the simulator judges old-minus-lost against the new plan (max-flow without a scorer), and
    only a relative gain above `min_gain` rolls out (hysteresis: a flapping node causes no churn)."""
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
        gain = result.score_after > result.score_before * (1.0 + min_gain)
        why = "max-flow gain" if gain else f"no max-flow gain above {min_gain:.0%}"
        return gain, why, result.score_before, result.score_after
    before, _ = scorer(survivors)
    after, _ = scorer(result.plan.placement)
    if after > before * (1.0 + min_gain):
        return True, f"the simulator predicts {after:.1f} tok/s vs {before:.1f} without it", before, after
    return (
        False,
        f"the simulator predicts no gain above {min_gain:.0%} ({after:.1f} vs {before:.1f} tok/s)",
        before,
        after,
    )


def loads_needed(moves: tuple[LayerMove, ...], registry: Registry) -> list[tuple[str, str, LayerRange]]:
    """(node, address, new range) of each live worker, serving or idle, whose range changes."""
    idle = registry.idle()
    out: list[tuple[str, str, LayerRange]] = []
    for m in moves:
        if m.after is None or m.after == m.before:
            continue
        state = registry.get(m.node)
        if state is not None and state.info.layers != m.after:
            out.append((m.node, state.info.address, m.after))
        elif state is None and m.node in idle:
            out.append((m.node, idle[m.node].address, m.after))
    return out


def plan_loads(
    plan: Plan, registry: Registry, *, idle_only: bool = False
) -> list[tuple[str, str, LayerRange]]:
    """(node, address, range) of each live worker that does not hold what `plan` places on it: the idle
    ones it names (`idle_only`: only those), and the serving ones whose range differs."""
    idle = registry.idle()
    out: list[tuple[str, str, LayerRange]] = []
    for name, rng in sorted(plan.placement.ranges.items()):
        state = registry.get(name)
        if state is None and name in idle:
            out.append((name, idle[name].address, rng))
        elif state is not None and not idle_only and state.info.layers != rng:
            out.append((name, state.info.address, rng))
    return out


def serving_info(registry: Registry, node: str, rng: LayerRange, report: LoadReport) -> WorkerInfo | None:
    """What `node` serves after a Load of `rng`, to register at once (it also re-registers itself at its
    next heartbeat): its registration with the new range, from its idle one when it held nothing."""
    state = registry.get(node)
    if state is not None:
        return None if state.info.layers == rng else replace(state.info, layers=rng)
    idle = registry.idle().get(node)
    if idle is None or report.info.kv_capacity_tokens < 1:
        return None  # gone meanwhile, or no KV figure yet: its own registration will tell
    return WorkerInfo(
        node,
        idle.address,
        rng,
        idle.gpu_type,
        report.info.kv_capacity_tokens,
        model=idle.model,
        backend=idle.backend,
        speed_factor=idle.speed_factor,
    )


def _shared(a: LayerRange, b: LayerRange) -> range:
    return range(max(a.start, b.start), min(a.end, b.end))


def drops_stay_held(
    node: str, rng: LayerRange, registry: Registry, in_flight: Mapping[str, LayerRange]
) -> bool:
    """Whether every layer `node` gives up by loading `rng` is held by another routable worker even if
    every Load in flight (`in_flight`: node -> new range) ends now: such a worker is counted for the
    layers both its ranges share only. True for an idle worker (it gives up nothing)."""
    state = registry.get(node)
    if state is None:
        return True
    dropped = set(range(state.info.layers.start, state.info.layers.end)) - set(range(rng.start, rng.end))
    for name, other in registry.routable().items():
        if not dropped:
            break
        if name != node:
            held = other.info.layers
            dropped -= set(
                _shared(held, in_flight[name]) if name in in_flight else range(held.start, held.end)
            )
    return not dropped


async def load_each(
    loads: list[tuple[str, str, LayerRange]], registry: Registry, load_fn: LoadFn
) -> dict[str, LoadReport | Exception]:
    """Load every new range, in parallel where that uncovers nothing; each worker is then registered with
    its new range at once, so new requests route to it as soon as it is live. A Load that gives up layers
    (a shrink or a shift) waits until another worker holds them for sure: the worker drops them as soon as
    its Load returns, and a layer no routable worker holds refuses new requests (503). When none of the
    waiting Loads can go safely and none is in flight, they go together (ranges swapped in a cycle: the
    old all-parallel order), unless a Load has failed: then they are not sent (the worker keeps its range,
    the plan in force stays). A failed load is returned as its exception."""

    async def one(node: str, address: str, rng: LayerRange) -> LoadReport:
        report = await load_fn(address, LoadOrder(rng.start, rng.end))
        info = serving_info(registry, node, rng, report)
        if info is not None:
            registry.register(info)
        return report

    pending = list(loads)
    in_flight: dict[str, LayerRange] = {}
    tasks: dict[asyncio.Task[LoadReport], str] = {}
    out: dict[str, LoadReport | Exception] = {}
    try:
        while pending or tasks:
            ready = []
            for load in pending:
                if drops_stay_held(load[0], load[2], registry, in_flight):
                    ready.append(load)
                    in_flight[load[0]] = load[2]
            if not ready and not tasks:
                if any(isinstance(res, Exception) for res in out.values()):
                    for node, _, rng in pending:
                        out[node] = RuntimeError(f"{node}: {rng} not loaded: a load it waited for failed")
                    break
                ready = pending
            for load in ready:
                in_flight[load[0]] = load[2]
                tasks[asyncio.ensure_future(one(*load))] = load[0]
            pending = [load for load in pending if load not in ready]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                node = tasks.pop(task)
                del in_flight[node]
                if task.cancelled():
                    raise asyncio.CancelledError  # the coordinator shuts down
                exc = task.exception()
                if exc is not None and not isinstance(exc, Exception):
                    raise exc
                out[node] = exc if exc is not None else task.result()
    finally:
        for task in tasks:
            task.cancel()
    return {node: out[node] for node, _, _ in loads}


async def load_all(
    loads: list[tuple[str, str, LayerRange]], registry: Registry, load_fn: LoadFn
) -> dict[str, LoadReport]:
    """`load_each`, raising the first error (after every load has ended)."""
    results = await load_each(loads, registry, load_fn)
    for res in results.values():
        if isinstance(res, Exception):
            raise res
    return {node: res for node, res in results.items() if isinstance(res, LoadReport)}


def assign_record(node: str, rng: LayerRange, result: LoadReport | Exception) -> dict[str, Any]:
    if isinstance(result, Exception):
        return {"node": node, "after": [rng.start, rng.end], "error": f"{type(result).__name__}: {result}"}
    return {
        "node": node,
        "after": [rng.start, rng.end],
        "load_s": round(result.load_s, 3),
        "mode": result.mode,
    }


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


def dropped_nodes(
    before: Plan, after: Plan, serving: Mapping[str, WorkerState], joined: tuple[str, ...]
) -> list[str]:
    """Serving workers the old plan placed (or that joined and were planned for) and the new plan leaves
    out: they are unloaded after the swap. Workers nobody planned for (no profile) are left alone."""
    planned = set(before.placement.ranges) | set(joined)
    return sorted(n for n in serving if n in planned and n not in after.placement.ranges)


async def unload(node: str, info: WorkerInfo, registry: Registry, load_fn: LoadFn) -> LoadReport:
    """Load of the empty range: the worker drains its running requests (no force), frees every layer and
    stays registered holding nothing; it is registered idle at once (it re-registers so itself too)."""
    report = await load_fn(info.address, LoadOrder(0, 0))
    state = registry.get(node)
    if state is not None and state.info.address == info.address:
        registry.register(
            IdleWorker(node, info.address, info.gpu_type, 0, info.model, info.backend, info.speed_factor)
        )
    return report
