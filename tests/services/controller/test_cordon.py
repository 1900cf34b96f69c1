"""Cordons on an in-process fleet (real registry, fleet routing; the workers' Load is a gated fake): a node
the controller unloads, or whose Load drops layers another worker also holds, takes no new request from
the moment the order is given, and is routable again once it serves its new range (or its load failed).
The sole holder of some layers stays routable while it loads (a refusal beats a 503), and gives them up
only once another worker has loaded them."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from planner.errors import Unavailable
from planner.placement import LayerRange
from planner.routing import RouteRequest
from services.controller.controller import Controller
from services.coordinator.fleet import Fleet
from services.worker.records import LoadOrder, LoadReport
from tests.services.controller.fake_coord import FakeLoads, fake_controller, make_coord, plan_of
from tests.services.controller.test_idle_workers import PLAN4

pytestmark = pytest.mark.anyio


class Watching(FakeLoads):
    """FakeLoads that, once each order arrives, notes what routing would do, then waits for the gate."""

    def __init__(self, fleet: Fleet, fail: bool = False) -> None:
        self.open = asyncio.Event()
        super().__init__(fail=fail, gate=self.open)
        self.fleet = fleet
        self.seen: dict[str, tuple[frozenset[str], set[str]]] = {}  # node -> (cordoned, chain nodes)

    async def __call__(self, address: str, order: LoadOrder) -> LoadReport:
        used: set[str] = set()
        for i in range(20):  # new requests routed while this node drains: which nodes do they go through?
            chain = self.fleet.choose(RouteRequest(f"{address}-{i}", 8, 8))
            assert chain is not None
            used |= {hop.node for hop in chain}
            self.fleet.release(f"{address}-{i}")
        self.seen[address.removeprefix("addr-")] = (self.fleet.registry.cordoned(), used)
        return await super().__call__(address, order)


def controller(coord: Any, loads: FakeLoads) -> Controller:
    return fake_controller(coord, loads)


async def test_a_node_told_to_unload_takes_no_new_request_while_it_drains() -> None:
    coord, registry, _ = make_coord(PLAN4)
    loads = Watching(coord.fleet)
    ctl = controller(coord, loads)
    target = plan_of({"fast": (0, 10), "fast2": (10, 30)})  # mid and slow left out, nothing to load
    loads.open.set()
    await ctl.roll_out_plan(target, {"source": "inline"})
    # The unload orders were given at the swap: both nodes cordoned, every new chain avoids them.
    assert registry.cordoned() == {"mid", "slow"} and registry.get("mid") is not None
    coord.fleet.rebuild()
    assert coord.fleet.plan is target  # the routable workers are exactly the new plan's
    await ctl.wait_idle()
    for node in ("mid", "slow"):
        cordoned, used = loads.seen[node]
        assert node in cordoned and used == {"fast", "fast2"}, (node, cordoned, used)
    # Unloaded: idle, no longer cordoned (a later Load makes it serve again).
    assert set(registry.idle()) == {"mid", "slow"} and registry.cordoned() == frozenset()


async def test_a_load_that_drops_shared_layers_cordons_the_node_until_its_new_range_serves() -> None:
    coord, registry, _ = make_coord(PLAN4)
    loads = Watching(coord.fleet)
    ctl = controller(coord, loads)
    # mid [10,20) -> [0,10): fast2 also holds [10,20), so mid is cordoned while it loads. fast [0,10) ->
    # [0,20) keeps all it held: routable.
    target = plan_of({"fast": (0, 20), "mid": (0, 10), "slow": (20, 30), "fast2": (10, 30)})
    task = asyncio.create_task(ctl.roll_out_plan(target, {"source": "inline"}))
    while len(loads.seen) < 2:
        await asyncio.sleep(0.01)
    assert registry.cordoned() == {"mid"}
    assert "mid" not in loads.seen["fast"][1] and "fast" in loads.seen["mid"][1]
    loads.open.set()
    await task
    state = registry.get("mid")
    assert state is not None and (state.info.layers.start, state.info.layers.end) == (0, 10)
    assert registry.cordoned() == frozenset()


async def test_the_sole_holder_of_layers_stays_routable_and_a_failed_load_uncordons() -> None:
    coord, registry, _ = make_coord(PLAN4)
    loads = Watching(coord.fleet, fail=True)
    ctl = controller(coord, loads)
    # fast is the only holder of [0,10): cordoning it would leave no chain (503s) while it loads.
    target = plan_of({"fast": (10, 30), "mid": (0, 10), "slow": (20, 30), "fast2": (10, 30)})
    task = asyncio.create_task(ctl.roll_out_plan(target, {"source": "inline"}))
    while not loads.seen:
        await asyncio.sleep(0.01)
    assert registry.cordoned() == {"mid"}  # mid's [10,20) is also fast2's; fast's [0,10) is nobody else's
    # fast's Load gives up [0,10): it waits for mid to hold those layers, and mid's Load fails.
    assert list(loads.seen) == ["mid"]
    loads.open.set()
    with pytest.raises(Unavailable):
        await task
    assert list(loads.seen) == ["mid"]
    assert registry.cordoned() == frozenset()  # the loads failed: both keep serving their old ranges
    state = registry.get("mid")
    assert state is not None and state.info.layers.start == 10


def test_a_cordon_lasts_until_the_worker_serves_another_range_or_leaves() -> None:
    _, registry, _ = make_coord(PLAN4)
    version = registry.version
    assert registry.cordon("mid") and not registry.cordon("mid") and not registry.cordon("nobody")
    assert registry.version == version + 1  # routing rebuilds
    assert "mid" in registry.alive() and "mid" not in registry.routable()
    assert registry.uncovered() == [] and registry.uncovered(routable_only=True) == []  # fast2 holds [10,20)
    assert registry.cordon("fast2") and registry.uncovered(routable_only=True) == [(10, 20)]
    state = registry.get("mid")
    assert state is not None
    registry.register(state.info)  # its heartbeat re-registration, same range: still cordoned
    assert registry.cordoned() == {"mid", "fast2"}
    registry.register(replace(state.info, layers=LayerRange(0, 10)))  # serves its new range
    registry.remove("fast2")
    assert registry.cordoned() == frozenset() and set(registry.routable()) == {"fast", "mid", "slow"}
