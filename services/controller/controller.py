"""The rollout controller: runs in the coordinator's process (`brl run --auto-replan`, BRL_AUTO_REPLAN=1),
watches fleet membership through the registry and assigns layers at run time: an idle worker (started
without a range) that the plan in force names gets its range loaded; when a worker of the plan is lost or a
worker the plan gives no layers joins, it re-plans, dry-runs and rolls the new plan out in stages
(rollout.py), then unloads the nodes the new plan drops. Thin: the decisions are planner.replan's and the
simulator's. Events are noted and debounced by events.py (several in a short window make one batch of
loads or one re-plan); one rollout at a time, and events during a rollout are handled right after it,
from the plan then in force.
Requests in flight are never dropped: those on a lost worker re-run (engine recovery), the others finish on
their chains while their old ranges drain on the workers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from planner.errors import Unavailable
from services.controller import rollout
from services.controller.events import FleetEvents
from services.controller.orders import WorkerOrders
from services.controller.rollout import LoadFn, RolloutFigures, Scorer
from services.coordinator import planswap

if TYPE_CHECKING:
    from planner.cluster import Cluster
    from planner.plan import Plan
    from services.coordinator.main import Coordinator

log = logging.getLogger("brl.controller")

# Search time of one re-plan: recovery time counts, and the repaired start (restore coverage, move the
# fewest layers) is usually found in the first fraction of a second.
REPLAN_TIME_LIMIT_S = 2.0
# Hysteresis: a plan that does not restore coverage is rolled out only when the simulator predicts at
# least this relative gain over the plan in force (planner.replan uses the same margin in its search).
MIN_GAIN = 0.05
# Debounce: a loss, or an idle worker the plan in force names, waits this long for further events (coverage
# is at stake: short; workers of one StatefulSet that come up together still make one batch of loads), a
# join longer (a node that flaps in and out within the window never causes a re-plan). Each new event
# restarts the wait, up to MAX_DEBOUNCE_S after the first one.
LOSS_DEBOUNCE_S = 0.2
JOIN_DEBOUNCE_S = 2.0
MAX_DEBOUNCE_S = 10.0
# A node of the plan in force that has not registered yet (a fresh deployment: pods start one by one) is
# awaited, not lost; one still missing this long after the controller started counts as lost (a pod that
# never gets a GPU must not leave its layers uncovered for good).
AWAIT_PLANNED_S = 120.0
ScorerFactory = Callable[["Cluster"], Scorer | None]


class Controller:
    def __init__(
        self,
        coord: Coordinator,
        *,
        load_fn: LoadFn | None = None,
        scorer_factory: ScorerFactory | None = None,
        replan_time_limit_s: float = REPLAN_TIME_LIMIT_S,
        min_gain: float = MIN_GAIN,
        loss_debounce_s: float = LOSS_DEBOUNCE_S,
        join_debounce_s: float = JOIN_DEBOUNCE_S,
        max_debounce_s: float = MAX_DEBOUNCE_S,
        await_planned_s: float = AWAIT_PLANNED_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.coord = coord
        self.clock = clock
        self.replan_time_limit_s = replan_time_limit_s
        self.min_gain = min_gain
        self.orders = WorkerOrders(coord.fleet.registry, load_fn or self._grpc_load, self._unstarted_on)
        self.events = FleetEvents(
            coord.fleet,
            self.orders,
            self._schedule,
            loss_debounce_s=loss_debounce_s,
            join_debounce_s=join_debounce_s,
            max_debounce_s=max_debounce_s,
            await_planned_s=await_planned_s,
            clock=clock,
        )
        self._scorer_factory = scorer_factory or simulator_scorer_for(coord)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pump: asyncio.Task[None] | None = None
        self.last: RolloutFigures | None = None
        self.rollouts = 0
        self.history: list[dict[str, Any]] = []  # every rollout's figures, oldest first (the last 20)
        self._closed = False

    def attach(self) -> Controller:
        """Watch the registry (on the event loop); idle workers that registered before are events now."""
        self.events.attach()
        return self

    def _schedule(self, now: float) -> None:
        """An event needs a rollout: the pump runs (debounced batches, one at a time) unless it does."""
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run_pending())
            self._tasks.add(self._pump)
            self._pump.add_done_callback(self._tasks.discard)

    async def _run_pending(self) -> None:
        events = self.events
        while events.pending() and not self._closed:
            await events.debounce()
            async with self._lock:
                lost, joined, first_s = events.take()
                # Leader gate: with coordinator replicas only the leader rolls out; the others adopt its plan.
                if not getattr(self.coord, "is_leader", lambda: True)():
                    continue
                # Idle workers a batch already gave their planned ranges (they arrived during it): done.
                joined = {n for n in joined if not events.serves_as_planned(n)}
                if lost or joined:
                    await self._roll_out_logged(lost, joined, first_s)

    def take_over(self) -> None:
        """This replica just became the leader (services/coordinator/leader.py): re-check the plan in force
        against the live fleet, as the former leader may have died before acting on a change."""
        self.events.take_over()

    async def close(self) -> None:
        """Stop reacting to fleet events and cancel a rollout in progress (the coordinator shuts down)."""
        self._closed = True
        tasks = [*self._tasks, *self.orders.tasks, *self.events.close()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_idle(self) -> None:
        """Returns once no rollout is pending or running and no unload is in progress."""
        while self._tasks or self.orders.tasks:
            await asyncio.gather(*self._tasks, *self.orders.tasks, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "running": self._lock.locked(),
            "pending": {"lost": sorted(self.events.lost), "joined": sorted(self.events.joined)},
            "unloading": sorted(self.orders.unloading),
            "rollouts": self.rollouts,
            "last": None if self.last is None else self.last.to_dict(),
            "history": list(self.history),
            # With replicas: who leads, and the plans this replica adopted from its peers (it followed).
            "replicas": getattr(getattr(self.coord, "leadership", None), "status", dict)(),
        }

    # -- one rollout -----------------------------------------------------------------------------------
    def _record(self, figures: RolloutFigures) -> None:
        self.last = figures
        self.rollouts += 1
        self.history = [*self.history[-19:], figures.to_dict()]
        log.info("rollout: %s", figures.to_dict())

    async def _roll_out_logged(
        self, lost: dict[str, tuple[float, float]], joined: set[str], first_event_s: float
    ) -> None:
        try:
            figures = await self._roll_out(lost, joined, first_event_s)
        except Exception as exc:  # noqa: BLE001 - a failed rollout (gRPC, planner) must not end the coordinator
            log.exception("rollout after losing %s / joining %s failed", sorted(lost), sorted(joined))
            figures = RolloutFigures(
                "failed", f"{type(exc).__name__}: {exc}", tuple(sorted(lost)), tuple(sorted(joined))
            )
        self._record(figures)

    async def _roll_out(
        self, events_lost: dict[str, tuple[float, float]], events_joined: set[str], first_event_s: float = 0.0
    ) -> RolloutFigures:
        fleet = self.coord.fleet
        started = self.clock()
        # The first lost worker's last heartbeat (or registration) is the last time it was known alive;
        # recovery is counted from there. A rollout for joins counts from the first event of its batch.
        last_seen = min((seen for seen, _ in events_lost.values()), default=None)
        noticed = min((at for _, at in events_lost.values()), default=first_event_s or started)
        detect_s = 0.0 if last_seen is None else max(0.0, noticed - last_seen)
        t_origin = noticed - detect_s
        plan = fleet.base_plan
        if plan is None:
            return RolloutFigures("skipped", "no plan in force", tuple(sorted(events_lost)))
        # Idle workers that registered while the previous batch loaded are given their ranges too.
        assigned: tuple[dict[str, Any], ...] = ()
        for _ in range(3):
            batch = await self.orders.assign_idle(plan, plan.cluster or fleet.base_cluster)
            assigned += batch
            if not batch:
                break
        t_assigned = self.clock()
        failed = [a for a in assigned if "error" in a]
        assigned_only = RolloutFigures(
            "failed" if assigned and len(failed) == len(assigned) else "assigned",
            f"idle workers given the ranges the plan in force names them for ({len(failed)} failed)",
            (),
            load_s=t_assigned - started,
            recover_s=t_assigned - t_origin,
            assigned=assigned,
            finished_at=time.time(),
        )
        cluster = rollout.plan_fleet(plan, fleet.base_cluster)
        if cluster is None or fleet.profiles is None:
            if assigned:
                return assigned_only
            return RolloutFigures(
                "skipped", "no fleet or profiles to re-plan from", tuple(sorted(events_lost))
            )
        alive = {n: s for n, s in fleet.registry.alive().items() if n not in self.orders.unloading}
        idle = {n: w for n, w in fleet.registry.idle().items() if n not in self.orders.unloading}
        if not alive and not idle:  # the fleet is shutting down, or every worker died: nothing to plan for
            return RolloutFigures("skipped", "no live worker", tuple(sorted(events_lost)))
        found = rollout.fleet_change(
            plan, cluster, alive, set(fleet.profiles.types()), fleet.base_cluster, idle=idle
        )
        if found.skipped_joins:
            log.warning("rollout: no profile for the GPU type of %s: not planned", list(found.skipped_joins))
        lost, joined = found.lost, found.joined
        # Only news re-plans: a loss of a worker that was there (not one still awaited), or a worker that
        # joined since the last rollout (idle workers the search left out before are still candidates of any
        # re-plan, but do not start one again).
        gone = set(lost) & self.events.seen - set(fleet.registry.idle())  # a named idle worker is not gone
        if not gone and not set(joined) & events_joined:
            if assigned:
                return assigned_only
            return RolloutFigures("skipped", "the plan in force uses no lost worker and no worker joined", ())
        log.info(
            "rollout: lost %s, joined %s (detected %.2f s after the last heartbeat); re-planning",
            list(lost),
            list(joined),
            detect_s,
        )
        t0 = self.clock()
        result = await asyncio.to_thread(
            rollout.replan_for_change,
            plan,
            cluster,
            fleet.model,
            fleet.profiles,
            found.change,
            min_gain=self.min_gain,
            time_limit_s=self.replan_time_limit_s,
            clock=time.monotonic,
            seed=self.coord.settings.seed,
        )
        t1 = self.clock()
        log.info("rollout: re-planned in %.2f s: %d layers to load", t1 - t0, result.layers_moved)
        survivors = plan.placement.without(set(lost))
        scorer = self._scorer_factory(result.plan.cluster or cluster)
        go, why, before, after = await asyncio.to_thread(
            rollout.worth_rolling_out, result, scorer, survivors, self.min_gain
        )
        t2 = self.clock()
        log.info("rollout: dry run in %.2f s: %s", t2 - t1, why)
        common: dict[str, Any] = {
            "lost": lost,
            "joined": joined,
            "detect_s": detect_s,
            "replan_s": t1 - t0,
            "dryrun_s": t2 - t1,
            "uncovered_before": tuple(survivors.uncovered()),
            "score_before": before,
            "score_after": after,
            "layers_moved": result.layers_moved,
            "assigned": assigned,
        }
        if not go:
            moves = tuple(rollout.move_record(m, None) for m in result.moves)
            return RolloutFigures("skipped", why, moves=moves, finished_at=time.time(), **common)
        reports = await self.orders.load_moves(result.moves)
        t3 = self.clock()
        log.info("rollout: loaded in %.2f s", t3 - t2)
        dropped = rollout.dropped_nodes(plan, result.plan, fleet.registry.alive(), joined)
        planswap.apply(
            self.coord,
            result.plan,
            {"source": "controller", "after_losing": list(lost), "after_joining": list(joined)},
        )
        t4 = self.clock()
        unloaded = self.orders.unload_later(dropped)
        if unloaded:
            log.info("rollout: %s have no range in the new plan: unloading them", list(unloaded))
        recover_s = t4 - t_origin
        log.info("rollout: plan swapped %.2f s after the first event", recover_s)
        moves = tuple(rollout.move_record(m, reports.get(m.node)) for m in result.moves)
        return RolloutFigures(
            "rolled_out",
            why,
            load_s=t3 - t2,
            swap_s=t4 - t3,
            recover_s=recover_s,
            moves=moves,
            unloaded=unloaded,
            finished_at=time.time(),
            **common,
        )

    # -- an operator's plan ----------------------------------------------------------------------------
    async def roll_out_plan(self, plan: Plan, origin: dict[str, Any]) -> RolloutFigures:
        """`POST /v1/admin/plan` with a controller: roll the given plan out in the same stages (load every
        range it places on a live worker, idle ones included; swap; unload the serving workers it leaves
        out) rather than only switch routing to it. A failed load keeps the plan in force (Unavailable)."""
        async with self._lock:
            fleet = self.coord.fleet
            started = self.clock()
            loads = rollout.plan_loads(plan, fleet.registry)
            results = await self.orders.load(loads)
            errors = {n: e for n, e in results.items() if isinstance(e, Exception)}
            t_loaded = self.clock()
            moves = tuple(rollout.assign_record(n, r, results[n]) for n, _, r in loads)
            if errors:
                why = "; ".join(f"{n}: {type(e).__name__}: {e}" for n, e in sorted(errors.items()))
                self._record(RolloutFigures("failed", f"operator plan: loads failed: {why}", (), moves=moves))
                raise Unavailable(
                    f"the plan could not be loaded on {sorted(errors)}; the plan in force stays"
                )
            serving = fleet.registry.alive()
            dropped = sorted(n for n in serving if n not in plan.placement.ranges)
            planswap.apply(self.coord, plan, origin)
            t_swapped = self.clock()
            figures = RolloutFigures(
                "rolled_out",
                f"operator plan ({origin.get('source', 'admin')})",
                (),
                load_s=t_loaded - started,
                swap_s=t_swapped - t_loaded,
                recover_s=t_swapped - started,
                layers_moved=sum(r.layers_read for r in results.values() if not isinstance(r, Exception)),
                moves=moves,
                unloaded=self.orders.unload_later(dropped),
                finished_at=time.time(),
            )
            self._record(figures)
            return figures

    def _unstarted_on(self, name: str) -> int:
        """Requests routed over `name` whose prompt has not been through their chain yet."""
        running = getattr(self.coord.engine, "running", {})
        return sum(
            1
            for r in running.values()
            if r.cached == 0 and r.chain is not None and any(hop.node == name for hop in r.chain)
        )

    async def _grpc_load(self, address: str, order: Any) -> Any:
        from services.worker.client import load

        return await load(address, order, connections=self.coord.engine.connections)


def simulator_scorer_for(coord: Coordinator) -> ScorerFactory:
    """The simulator as the dry run's judge, on the changed fleet (None without profiles)."""

    def make(cluster: Cluster) -> Scorer | None:
        from services.cli.plan import simulator_scorer

        profiles = coord.fleet.profiles
        if profiles is None:
            return None
        scorer: Scorer = simulator_scorer(cluster, coord.fleet.model, profiles, seed=coord.settings.seed)
        return scorer

    return make
