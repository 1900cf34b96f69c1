"""Run-time layer assignment on an in-process fleet (real registry, fleet routing and planner.replan; the
workers' Load is a recording fake): idle workers the plan in force names get their ranges in one batch with
no re-plan; an idle worker it does not name is a join; an operator's plan is rolled out (loads, swap, the
nodes it leaves out unloaded and idle, which is no join); workers registering with their planned range are
no news."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from planner.placement import LayerRange
from services.controller import rollout
from services.controller.controller import Controller
from services.coordinator.registry import IdleWorker, WorkerInfo
from tests.services.controller.fake_coord import TYPES, FakeLoads, fake_controller, make_coord, plan_of

pytestmark = pytest.mark.anyio
PLAN4 = {"fast": (0, 10), "mid": (10, 20), "slow": (20, 30), "fast2": (10, 30)}


def idle(name: str, gpu_type: str | None = None) -> IdleWorker:
    return IdleWorker(name, f"addr-{name}", gpu_type or TYPES[name], 0)


def controller(coord: Any, loads: FakeLoads) -> Controller:
    return fake_controller(coord, loads, loss_debounce_s=0.05, join_debounce_s=0.1)


async def test_idle_workers_the_plan_names_get_their_ranges_in_one_batch_without_a_replan() -> None:
    coord, registry, plan = make_coord(PLAN4, registered=False)
    loads = FakeLoads()
    ctl = controller(coord, loads)
    assert not coord.fleet.routable  # nothing holds a layer: the coordinator answers 503
    for name in PLAN4:  # a fresh deployment: every worker starts empty
        registry.register(idle(name))
    await ctl.wait_idle()
    status = ctl.status()
    assert ctl.rollouts == 1, status["history"]
    last = status["last"]
    assert last["outcome"] == "assigned" and last["moves"] == [] and last["layers_moved"] == 0, last
    assert {a["node"]: a["after"] for a in last["assigned"]} == {n: list(r) for n, r in PLAN4.items()}
    assert {a: (o.start_layer, o.end_layer) for a, o in loads.orders.items()} == {
        f"addr-{n}": r for n, r in PLAN4.items()
    }
    assert registry.idle() == {} and not registry.uncovered()
    coord.fleet.rebuild()  # what the next request does: route over the workers registered now
    assert coord.fleet.base_plan is plan and coord.fleet.plan is plan and coord.fleet.routable
    # Each loaded worker re-registers itself with its range: no news, no further rollout.
    for name, (a, b) in PLAN4.items():
        registry.register(WorkerInfo(name, f"addr-{name}", LayerRange(a, b), TYPES[name], 2048))
    await ctl.wait_idle()
    assert ctl.rollouts == 1


async def test_an_idle_worker_the_plan_does_not_name_is_a_join_that_gets_layers() -> None:
    coord, registry, plan = make_coord({"fast": (0, 10), "mid": (10, 20), "slow": (20, 30)}, registered=False)
    loads = FakeLoads()
    ctl = controller(coord, loads)
    for name in ("fast", "mid", "slow"):
        registry.register(idle(name))
    await ctl.wait_idle()
    assert ctl.status()["last"]["outcome"] == "assigned"
    registry.register(idle("fast2"))
    await ctl.wait_idle()
    last = ctl.status()["last"]
    assert ctl.rollouts == 2 and last["outcome"] == "rolled_out" and last["joined"] == ["fast2"], last
    new = coord.fleet.base_plan
    assert new is not plan and "fast2" in new.placement.ranges
    order = loads.orders["addr-fast2"]
    assert LayerRange(order.start_layer, order.end_layer) == new.placement.ranges["fast2"]
    state = registry.get("fast2")  # registered with its new range at once, out of the idle list
    assert state is not None and state.info.layers == new.placement.ranges["fast2"]
    assert "fast2" not in registry.idle() and coord.fleet.plan is new


async def test_an_idle_worker_of_another_gpu_type_is_not_given_the_planned_range() -> None:
    coord, registry, _ = make_coord({"fast": (0, 30)}, registered=False)
    loads = FakeLoads()
    ctl = controller(coord, loads)
    registry.register(idle("fast", gpu_type="cpu-slow"))  # holds at most 12 layers: [0,30) would not fit
    await ctl.wait_idle()
    assert "addr-fast" not in loads.orders and "fast" in registry.idle()


async def test_workers_registering_with_their_planned_ranges_cause_no_rollout() -> None:
    coord, registry, plan = make_coord(PLAN4, registered=False)
    ctl = controller(coord, FakeLoads())
    for name, (a, b) in PLAN4.items():  # workers started with --layers (brl run): the plan fits them
        registry.register(WorkerInfo(name, f"addr-{name}", LayerRange(a, b), TYPES[name], 2048))
    await ctl.wait_idle()
    coord.fleet.rebuild()
    assert ctl.rollouts == 0 and ctl.status()["last"] is None and coord.fleet.plan is plan


async def test_an_operator_plan_is_loaded_swapped_and_the_node_it_leaves_out_unloaded() -> None:
    coord, registry, _ = make_coord(PLAN4, registered=False)
    loads = FakeLoads()
    ctl = controller(coord, loads)
    for name, (a, b) in PLAN4.items():
        registry.register(WorkerInfo(name, f"addr-{name}", LayerRange(a, b), TYPES[name], 2048))
    target = plan_of({"fast": (0, 30), "fast2": (0, 30), "mid": (10, 30)})  # slow left out
    figures = await ctl.roll_out_plan(target, {"source": "inline"})
    assert figures.outcome == "rolled_out" and figures.unloaded == ("slow",)
    assert coord.fleet.base_plan is target
    await ctl.wait_idle()
    orders = {a.removeprefix("addr-"): (o.start_layer, o.end_layer) for a, o in loads.orders.items()}
    assert orders == {"fast": (0, 30), "fast2": (0, 30), "mid": (10, 30), "slow": (0, 0)}
    # The dropped node is idle (alive, holding nothing), and that is no join: no re-plan follows.
    assert "slow" in registry.idle() and registry.get("slow") is None
    assert ctl.rollouts == 1 and ctl.status()["unloading"] == []
    coord.fleet.rebuild()
    assert coord.fleet.plan is target and coord.fleet.routable


def test_dropped_nodes_are_the_planned_or_joined_serving_workers_the_new_plan_leaves_out() -> None:
    before, after = plan_of({"fast": (0, 30), "slow": (0, 12)}), plan_of({"fast": (0, 30), "mid": (0, 20)})
    serving = {
        n: SimpleNamespace(info=SimpleNamespace(name=n)) for n in ("fast", "slow", "fast2", "unprofiled")
    }
    # slow: planned before, not after; fast2 joined and got nothing; unprofiled was never planned for.
    got = rollout.dropped_nodes(before, after, serving, ("fast2",))  # type: ignore[arg-type]
    assert got == ["fast2", "slow"]


async def test_a_planned_node_not_registered_yet_is_awaited_then_counted_lost() -> None:
    coord, registry, plan = make_coord(
        {"fast": (0, 10), "mid": (10, 20), "fast2": (10, 30)}, registered=False
    )
    loads = FakeLoads()
    ctl = fake_controller(coord, loads, loss_debounce_s=0.05, await_planned_s=600.0)
    registry.register(idle("mid"))
    registry.register(idle("fast2"))
    await ctl.wait_idle()
    # fast has not come up yet: its pod is still starting, which is no loss (no re-plan).
    assert [h["outcome"] for h in ctl.status()["history"]] == ["assigned"]
    assert coord.fleet.base_plan is plan and registry.uncovered() == [(0, 10)]
    await ctl.close()

    late = fake_controller(coord, loads, await_planned_s=0.05)
    await asyncio.wait_for(until_rollout(late), 60)
    await late.wait_idle()
    last = late.status()["last"]
    assert last["outcome"] == "rolled_out" and last["lost"] == ["fast"], last
    assert "fast" not in coord.fleet.base_plan.placement.ranges and not registry.uncovered()
    await late.close()


async def until_rollout(ctl: Controller) -> None:
    while ctl.rollouts == 0:
        await asyncio.sleep(0.02)
