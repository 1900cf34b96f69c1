"""The controller's orders to workers: Loads of planned ranges (idle workers included) and unloads of the
nodes a new plan drops, with the names in the middle of one (a worker the controller is loading registers
with its new range: no news; one it is unloading is no candidate of a re-plan, and its idleness no join).
A worker about to drain (unloaded, or loading a range that drops some of its layers) is cordoned in the
registry first: routing sends it no new request, which it would only refuse as "draining"; an unload
is sent once the requests already routed to the node have started there (the worker knows them then)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from services.controller import rollout
from services.controller.rollout import LoadFn

if TYPE_CHECKING:
    from planner.cluster import Cluster
    from planner.placement import LayerRange
    from planner.plan import Plan
    from planner.replan_moves import LayerMove
    from services.coordinator.registry import Registry, WorkerState
    from services.worker.records import LoadReport

log = logging.getLogger("brl.controller")
Loads = list[tuple[str, str, "LayerRange"]]
# node -> requests routed through it whose prompt has not been through their chain yet.
UnstartedFn = Callable[[str], int]
# An unload waits at most this long for those to start (a prompt's prefill; the drain waits longer anyway).
UNLOAD_SETTLE_MAX_S = 30.0
_SETTLE_POLL_S = 0.02


class WorkerOrders:
    def __init__(self, registry: Registry, load_fn: LoadFn, unstarted: UnstartedFn | None = None) -> None:
        self.registry = registry
        self.load_fn = load_fn
        self.unstarted = unstarted or (lambda name: 0)
        self.loading: set[str] = set()
        self.unloading: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # unloads in progress

    async def load(self, loads: Loads) -> dict[str, LoadReport | Exception]:
        """rollout.load_each, with the names marked as being loaded meanwhile."""
        names = {n for n, _, _ in loads}
        self.loading |= names
        cordoned = self._cordon_replaced(loads)
        try:
            return await rollout.load_each(loads, self.registry, self.load_fn)
        finally:
            self.loading -= names
            for name in cordoned:  # a worker now serving its new range was uncordoned by registering it
                self.registry.uncordon(name)

    def _cordon_replaced(self, loads: Loads) -> set[str]:
        """Cordons each serving worker whose new range drops some of its layers: once the new range is in,
        the worker drains the old one and refuses new requests for it. One whose layers no other routable
        worker holds stays routable (it serves them until the switch: a brief refusal beats a 503)."""
        out: set[str] = set()
        for node, _, rng in loads:
            state = self.registry.get(node)
            if state is None or (rng.start <= state.info.layers.start and state.info.layers.end <= rng.end):
                continue
            gaps = self.registry.uncovered(routable_only=True)
            if self.registry.cordon(node):
                if self.registry.uncovered(routable_only=True) != gaps:
                    self.registry.uncordon(node)
                else:
                    out.add(node)
        return out

    def idle_loads(self, plan: Plan, cluster: Cluster | None) -> Loads:
        """What to load on the idle workers `plan` names (the plan counts on them: no re-plan). A worker
        whose GPU type is not the one the fleet gives that name is left idle (its memory may not fit)."""
        out: Loads = []
        idle = self.registry.idle()
        for node, address, rng in rollout.plan_loads(plan, self.registry, idle_only=True):
            want = cluster.node(node).gpu_type if cluster is not None and cluster.has_node(node) else None
            if want is not None and want != idle[node].gpu_type:
                log.warning(
                    "idle worker %s is a %s, the plan's %s a %s: not given its range",
                    node,
                    idle[node].gpu_type,
                    node,
                    want,
                )
            elif node not in self.unloading:
                out.append((node, address, rng))
        return out

    async def assign_idle(self, plan: Plan, cluster: Cluster | None) -> tuple[dict[str, Any], ...]:
        """Loads the range `plan` gives each idle worker it names, all at once; one record per worker."""
        loads = self.idle_loads(plan, cluster)
        if not loads:
            return ()
        log.info("rollout: giving idle workers their planned ranges %s", {n: str(r) for n, _, r in loads})
        results = await self.load(loads)
        return tuple(rollout.assign_record(n, r, results[n]) for n, _, r in loads)

    async def load_moves(self, moves: tuple[LayerMove, ...]) -> dict[str, LoadReport]:
        """The new ranges of a re-plan on every live worker whose range changes; raises if any failed (the
        plan in force then stays; a worker that did load serves its new range meanwhile)."""
        loads = rollout.loads_needed(moves, self.registry)
        log.info("rollout: loading %s", {n: str(r) for n, _, r in loads})
        results = await self.load(loads)
        errors = [f"{n}: {type(e).__name__}: {e}" for n, e in results.items() if isinstance(e, Exception)]
        if errors:
            raise RuntimeError(f"loads failed: {'; '.join(errors)}")
        return {n: r for n, r in results.items() if not isinstance(r, Exception)}

    def unload_later(self, names: list[str]) -> tuple[str, ...]:
        """Tells each of these serving workers to unload, in the background (a drain waits for its running
        requests; the next rollout need not wait for it). Returns the names told."""
        told: list[str] = []
        for name in names:
            state = self.registry.get(name)
            if state is None or name in self.unloading:
                continue
            self.unloading.add(name)
            self.registry.cordon(name)  # before the Load: no new request meets its drain
            told.append(name)
            task = asyncio.get_running_loop().create_task(self._unload(name, state))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return tuple(told)

    async def _unload(self, name: str, state: WorkerState) -> None:
        # A request routed here just before the cordon may not have reached the worker yet: once the
        # unload is in, the worker would refuse it as draining (and the coordinator re-route it).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UNLOAD_SETTLE_MAX_S
        while self.unstarted(name) and loop.time() < deadline:
            await asyncio.sleep(_SETTLE_POLL_S)
        try:
            report = await rollout.unload(name, state.info, self.registry, self.load_fn)
            log.info("rollout: %s unloaded (drained %.2f s); it is idle", name, report.drain_s)
        except Exception as exc:  # noqa: BLE001 - it keeps its range; routing still uses it while it serves
            log.warning("rollout: %s could not unload: %s: %s", name, type(exc).__name__, exc)
            self.registry.uncordon(name)
        finally:
            self.unloading.discard(name)
