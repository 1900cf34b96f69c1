"""The rollout controller: runs in the coordinator's process (`brl run --auto-replan`, BRL_AUTO_REPLAN=1),
watches fleet membership through the registry and, when a worker of the plan in force is lost, re-plans,
dry-runs and rolls the new plan out in stages (rollout.py). Thin: the decisions are planner.replan's and
the simulator's. One rollout at a time; a loss during a rollout is handled right after it, from the plan
then in force. Requests in flight are never dropped: those on the lost worker re-run (engine recovery),
the others finish on their chains while their old ranges drain on the workers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from services.controller import rollout
from services.controller.rollout import LoadFn, RolloutFigures, Scorer
from services.coordinator import planswap
from services.coordinator.registry import LOST, WorkerState

if TYPE_CHECKING:
    from planner.cluster import Cluster
    from services.coordinator.main import Coordinator

log = logging.getLogger("brl.controller")

# Search time of one re-plan: recovery time counts, and the repaired start (restore coverage, move the
# fewest layers) is usually found in the first fraction of a second.
REPLAN_TIME_LIMIT_S = 2.0
ScorerFactory = Callable[["Cluster"], Scorer | None]


class Controller:
    def __init__(
        self,
        coord: Coordinator,
        *,
        load_fn: LoadFn | None = None,
        scorer_factory: ScorerFactory | None = None,
        replan_time_limit_s: float = REPLAN_TIME_LIMIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.coord = coord
        self.clock = clock
        self.replan_time_limit_s = replan_time_limit_s
        self._load_fn = load_fn or self._grpc_load
        self._scorer_factory = scorer_factory or simulator_scorer_for(coord)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.last: RolloutFigures | None = None
        self.rollouts = 0
        self._closed = False

    def attach(self) -> Controller:
        self.coord.registry.watch(self.on_fleet_event)
        return self

    def on_fleet_event(self, kind: str, state: WorkerState) -> None:
        """Registry hook (on the event loop): a loss starts a rollout; joins are not acted on yet."""
        if kind != LOST or self._closed:
            return
        detected = self.clock()
        task = asyncio.get_running_loop().create_task(self.handle_loss(state, detected))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop reacting to fleet events and cancel a rollout in progress (the coordinator shuts down)."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def wait_idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def status(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "running": self._lock.locked(),
            "rollouts": self.rollouts,
            "last": None if self.last is None else self.last.to_dict(),
        }

    # -- one rollout -----------------------------------------------------------------------------------
    async def handle_loss(self, state: WorkerState, detected_s: float) -> None:
        async with self._lock:
            try:
                figures = await self._roll_out(state, detected_s)
            except Exception as exc:  # noqa: BLE001 - a failed rollout (gRPC, planner) must not end the coordinator
                log.exception("rollout after losing %s failed", state.info.name)
                figures = RolloutFigures("failed", f"{type(exc).__name__}: {exc}", (state.info.name,))
            self.last = figures
            self.rollouts += 1
            log.info("rollout: %s", figures.to_dict())

    async def _roll_out(self, state: WorkerState, detected_s: float) -> RolloutFigures:
        fleet = self.coord.fleet
        # The lost worker's last heartbeat (or registration) is the last time it was known alive.
        detect_s = max(0.0, detected_s - state.last_seen_s)
        plan = fleet.base_plan
        cluster = None if plan is None else rollout.plan_fleet(plan, fleet.base_cluster)
        if plan is None or cluster is None or fleet.profiles is None:
            return RolloutFigures("skipped", "no plan, fleet or profiles to re-plan from", (state.info.name,))
        lost = rollout.lost_nodes(plan, cluster, set(fleet.registry.names()))
        if not lost:
            return RolloutFigures("skipped", "the plan in force does not use the lost worker", ())
        log.info("rollout: %s lost (detected %.2f s after its last heartbeat); re-planning", lost, detect_s)
        t0 = self.clock()
        result = await asyncio.to_thread(
            rollout.replan_for_loss,
            plan,
            cluster,
            fleet.model,
            fleet.profiles,
            lost,
            time_limit_s=self.replan_time_limit_s,
            clock=time.monotonic,
            seed=self.coord.settings.seed,
        )
        t1 = self.clock()
        log.info("rollout: re-planned in %.2f s: %d layers to load", t1 - t0, result.layers_moved)
        survivors = plan.placement.without(set(lost))
        scorer = self._scorer_factory(result.plan.cluster or cluster)
        go, why, before, after = await asyncio.to_thread(rollout.worth_rolling_out, result, scorer, survivors)
        t2 = self.clock()
        log.info("rollout: dry run in %.2f s: %s", t2 - t1, why)
        common: dict[str, Any] = {
            "lost": lost,
            "detect_s": detect_s,
            "replan_s": t1 - t0,
            "dryrun_s": t2 - t1,
            "uncovered_before": tuple(survivors.uncovered()),
            "score_before": before,
            "score_after": after,
            "layers_moved": result.layers_moved,
        }
        if not go:
            moves = tuple(rollout.move_record(m, None) for m in result.moves)
            return RolloutFigures("skipped", why, moves=moves, finished_at=time.time(), **common)
        loads = rollout.loads_needed(result.moves, fleet.registry)
        log.info("rollout: loading %s", {n: str(r) for n, _, r in loads})
        reports = await rollout.load_all(loads, fleet.registry, self._load_fn)
        t3 = self.clock()
        log.info("rollout: loaded in %.2f s", t3 - t2)
        planswap.apply(self.coord, result.plan, {"source": "controller", "after_losing": list(lost)})
        t4 = self.clock()
        log.info("rollout: plan swapped; recovered %.2f s after the loss", detect_s + (t4 - detected_s))
        moves = tuple(rollout.move_record(m, reports.get(m.node)) for m in result.moves)
        return RolloutFigures(
            "rolled_out",
            why,
            load_s=t3 - t2,
            swap_s=t4 - t3,
            recover_s=detect_s + (t4 - detected_s),
            moves=moves,
            finished_at=time.time(),
            **common,
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
