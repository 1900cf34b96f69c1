"""The controller's intake of fleet events: losses and joins from the registry, idle workers that appear
(the registry sends no JOINED for them), planned nodes awaited until they register (or counted lost), and
the leader's take-over check; each batch is debounced before the controller acts on it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from services.coordinator.registry import JOINED, LOST, WorkerState

if TYPE_CHECKING:
    from planner.placement import LayerRange
    from services.controller.orders import WorkerOrders
    from services.coordinator.fleet import Fleet

log = logging.getLogger("brl.controller")
# Lost worker -> (its last sign of life, when the loss was noticed).
Lost = dict[str, tuple[float, float]]


class FleetEvents:
    """Events not yet acted on. `schedule(now)` (the controller's) is called for each one that needs a
    rollout; `debounce()` then waits for the batch to settle and `take()` hands it over."""

    def __init__(
        self,
        fleet: Fleet,
        orders: WorkerOrders,
        schedule: Callable[[float], None],
        *,
        loss_debounce_s: float,
        join_debounce_s: float,
        max_debounce_s: float,
        await_planned_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.fleet = fleet
        self.registry = fleet.registry
        self.orders = orders
        self.schedule = schedule
        self.loss_debounce_s = loss_debounce_s
        self.join_debounce_s = join_debounce_s
        self.max_debounce_s = max_debounce_s
        self.await_planned_s = await_planned_s
        self.clock = clock
        self.lost: Lost = {}
        self.joined: set[str] = set()  # joins and idle workers that registered (named by the plan or not)
        self._idle_seen: set[str] = set()  # the registry's idle workers at the last look
        self.seen: set[str] = set()  # every worker that registered (or was awaited too long) since the start
        self._first_event_s = 0.0
        self._last_event_s = 0.0
        self._awaiting: asyncio.Task[None] | None = None
        self.closed = False

    def attach(self) -> None:
        """Watch the registry (on the event loop); idle workers that registered before are events now."""
        self.registry.watch(self.on_fleet_event)
        self.registry.subscribe(self.on_registry_change)
        self.seen |= set(self.registry.alive())
        self.on_registry_change()
        # Not one of the controller's tasks: wait_idle() is about rollouts and unloads, not this timer.
        self._awaiting = asyncio.get_running_loop().create_task(self._stop_awaiting())

    def close(self) -> list[asyncio.Task[None]]:
        """Stop noting events; returns the timer to cancel and await."""
        self.closed = True
        return [self._awaiting] if self._awaiting else []

    async def _stop_awaiting(self) -> None:
        """After await_planned_s, the plan's nodes that never registered count as lost (a re-plan)."""
        await asyncio.sleep(self.await_planned_s)
        plan = self.fleet.base_plan
        missing = set() if plan is None else set(plan.placement.ranges) - self.seen
        self.seen |= missing
        if missing and not self.closed:
            log.warning("rollout: %s never registered in %.0f s: lost", sorted(missing), self.await_planned_s)
            now = self.clock()
            for name in missing:
                self.lost.setdefault(name, (now, now))
            self._note(now)

    def on_fleet_event(self, kind: str, state: WorkerState) -> None:
        """Registry hook (on the event loop): a loss or a join is noted, and a debounced rollout scheduled.
        A worker registering with the range this controller loaded into it, or the one the plan in force
        gives it, is no news."""
        if self.closed or kind not in (LOST, JOINED):
            return
        name = state.info.name
        self.seen.add(name)
        if kind == JOINED and self._expected(name, state.info.layers):
            return
        now = self.clock()
        if kind == LOST:
            self.lost.setdefault(name, (state.last_seen_s, now))
            self.joined.discard(name)
        else:
            self.joined.add(name)
        self._note(now)

    def on_registry_change(self) -> None:
        """Registry hook: an idle worker that appeared since the last look is an event (the registry sends
        no JOINED for it), unless this controller unloaded it."""
        if self.closed:
            return
        idle = set(self.registry.idle())
        new = sorted(idle - self._idle_seen - self.orders.unloading)
        self._idle_seen = idle
        self.seen |= idle
        if new:
            self.joined.update(new)
            self._note(self.clock())

    def take_over(self) -> None:
        """This replica just became the leader: the plan in force is checked against the live fleet, as the
        former leader may have died before acting on a change."""
        now, plan = self.clock(), self.fleet.base_plan
        for name in self.fleet.plan_mismatch():
            if plan is not None and name not in plan.placement.ranges:
                self.joined.add(name)
            else:
                self.lost.setdefault(name, (now, now))
        if self.pending() and not self.closed:
            self._note(now)

    def _expected(self, name: str, layers: LayerRange) -> bool:
        if name in self.orders.loading:
            return True
        plan = self.fleet.base_plan
        return plan is not None and plan.placement.ranges.get(name) == layers

    def serves_as_planned(self, name: str) -> bool:
        state = self.registry.get(name)
        return state is not None and self._expected(name, state.info.layers)

    def _note(self, now: float) -> None:
        if self._first_event_s <= 0.0:  # the first event of a new batch
            self._first_event_s = now
        self._last_event_s = now
        self.schedule(now)

    def pending(self) -> bool:
        return bool(self.lost or self.joined)

    def _urgent(self) -> bool:
        """A loss, or an idle worker the plan in force names, is pending: coverage is at stake."""
        if self.lost:
            return True
        plan = self.fleet.base_plan
        idle = self.registry.idle()
        return plan is not None and any(n in idle and n in plan.placement.ranges for n in self.joined)

    async def debounce(self) -> None:
        """Waits until no event came for the debounce window (short when coverage is at stake), or until
        max_debounce_s after the first event."""
        while True:
            window_s = self.loss_debounce_s if self._urgent() else self.join_debounce_s
            now = self.clock()
            wait_s = min(self._last_event_s + window_s - now, self._first_event_s + self.max_debounce_s - now)
            if wait_s <= 0:
                return
            await asyncio.sleep(wait_s)

    def take(self) -> tuple[Lost, set[str], float]:
        """The batch (lost, joined, when its first event came); the next event starts a new one."""
        batch = (self.lost, self.joined, self._first_event_s)
        self.lost, self.joined = {}, set()
        self._first_event_s = self._last_event_s = 0.0
        return batch
