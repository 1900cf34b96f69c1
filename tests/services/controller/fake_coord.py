"""An in-process coordinator for the controller tests: a real registry, fleet routing and plan on the
local-cpu4 fleet of SmolLM2 workers, a stand-in engine, and a Load that records its orders instead of
loading layers. Each test states its ranges and the controller's timings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from planner import bundled
from planner.flow import plan_from_placement
from planner.placement import LayerRange, Placement
from planner.plan import Plan
from services.controller.controller import AWAIT_PLANNED_S, JOIN_DEBOUNCE_S, LOSS_DEBOUNCE_S, Controller
from services.coordinator.fleet import Fleet
from services.coordinator.registry import Registry, WorkerInfo
from services.worker.records import LOAD_BESIDE, LoadOrder, LoadReport
from services.worker.records import WorkerInfo as WorkerRecord

MODEL = bundled.model("smollm2-135m")
PROFILES = bundled.profiles(MODEL)
CLUSTER = bundled.cluster("local-cpu4")
TYPES = {n.name: n.gpu_type for n in CLUSTER.nodes}


def plan_of(ranges: Mapping[str, tuple[int, int]]) -> Plan:
    placement = Placement(MODEL.num_layers, {n: LayerRange(*r) for n, r in ranges.items()})
    return plan_from_placement(CLUSTER, MODEL, PROFILES, placement, method="test")


def make_coord(
    ranges: Mapping[str, tuple[int, int]], *, registered: bool = True
) -> tuple[Any, Registry, Plan]:
    """A coordinator whose plan in force holds `ranges`; with `registered` a worker serving each range is
    registered already, otherwise none is (a fresh deployment)."""
    plan = plan_of(ranges)
    registry = Registry(time.monotonic, expiry_s=60.0, num_layers=MODEL.num_layers)
    if registered:
        for name, (a, b) in ranges.items():
            registry.register(WorkerInfo(name, f"addr-{name}", LayerRange(a, b), TYPES[name], 4096))
    fleet = Fleet(registry, MODEL, plan=plan, cluster=CLUSTER, profiles=PROFILES)
    engine = SimpleNamespace(running={}, plan_swapped=lambda: None)
    coord = SimpleNamespace(
        fleet=fleet, registry=registry, engine=engine, settings=SimpleNamespace(seed=0), plan_origin={}
    )
    return coord, registry, plan


class FakeLoads:
    """The workers' Load: records each order by address; `fail` raises instead, `gate` holds every order
    until it is set; `gates` and `failing` do the same for some addresses only. `log` lists ("start" |
    "end", address) in the order they happened."""

    def __init__(
        self,
        fail: bool = False,
        gate: asyncio.Event | None = None,
        *,
        gates: Mapping[str, asyncio.Event] | None = None,
        failing: frozenset[str] = frozenset(),
    ) -> None:
        self.orders: dict[str, LoadOrder] = {}
        self.fail = fail
        self.gate = gate
        self.gates = dict(gates or {})
        self.failing = failing
        self.log: list[tuple[str, str]] = []
        self.started = asyncio.Event()

    async def __call__(self, address: str, order: LoadOrder) -> LoadReport:
        self.started.set()
        self.log.append(("start", address))
        for gate in (self.gate, self.gates.get(address)):
            if gate is not None:
                await gate.wait()
        self.log.append(("end", address))
        if self.fail or address in self.failing:
            raise RuntimeError(f"{address}: out of memory")
        self.orders[address] = order
        info = WorkerRecord(
            MODEL.name, 30, order.start_layer, order.end_layer, 576, 49152, "float32", "torch", address, 4096
        )
        return LoadReport(info, LOAD_BESIDE, layers_read=order.end_layer - order.start_layer, load_s=0.01)


def fake_controller(
    coord: Any,
    loads: FakeLoads,
    *,
    judge: Any = None,
    loss_debounce_s: float = LOSS_DEBOUNCE_S,
    join_debounce_s: float = JOIN_DEBOUNCE_S,
    await_planned_s: float = AWAIT_PLANNED_S,
) -> Controller:
    """A controller attached to `coord` with a short re-plan; `judge` is the dry run's scorer (None: no
    simulator, the rollout is not judged), the other settings are the controller's own."""
    return Controller(
        coord,
        load_fn=loads,
        scorer_factory=lambda c: judge,
        replan_time_limit_s=0.5,
        loss_debounce_s=loss_debounce_s,
        join_debounce_s=join_debounce_s,
        await_planned_s=await_planned_s,
    ).attach()
