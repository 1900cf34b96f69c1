"""The controller's rollout on an in-process fleet (real registry, fleet routing and planner.replan; the
workers' Load is a recording fake): a lost sole holder gets its layers covered again and the plan swapped;
a loss the survivors absorb rolls nothing out; a failed load leaves the plan in force; a join with a gain
loads layers on the joiner, one without a gain (or a node that flaps) moves nothing; events in one window
make one re-plan, and a loss during a rollout is re-planned right after, from the plan then in force."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from planner.placement import LayerRange, Placement
from services.controller.controller import Controller
from services.coordinator.registry import WorkerInfo
from tests.services.controller.fake_coord import FakeLoads, fake_controller, make_coord

pytestmark = pytest.mark.anyio


def controller(coord: Any, loads: FakeLoads) -> Controller:
    return fake_controller(coord, loads, loss_debounce_s=0.01, join_debounce_s=0.05)


async def test_losing_a_sole_holder_loads_new_ranges_then_swaps_the_plan() -> None:
    coord, registry, plan = make_coord(
        {"fast": (0, 10), "mid": (10, 20), "slow": (20, 30), "fast2": (10, 30)}
    )
    loads = FakeLoads()
    ctl = controller(coord, loads)
    registry.remove("fast")
    await ctl.wait_idle()
    last = ctl.status()["last"]
    assert last["outcome"] == "rolled_out", last
    assert last["lost"] == ["fast"] and last["uncovered_before"] == [[0, 10]]
    assert not registry.uncovered()  # the registry holds the new ranges as soon as they are loaded
    new = coord.fleet.base_plan
    assert new is not plan and "fast" not in new.placement.ranges
    for name, rng in new.placement.ranges.items():
        state = registry.get(name)
        assert state is not None and state.info.layers == rng
    changed = {m["node"] for m in last["moves"] if m["after"] != m["before"]}
    assert {a.removeprefix("addr-") for a in loads.orders} == changed
    assert coord.plan_origin["source"] == "controller"
    assert last["recover_s"] >= last["replan_s"] + last["load_s"]
    assert coord.fleet.routable and coord.fleet.plan is new


async def test_the_dry_run_refuses_a_plan_the_simulator_says_serves_less() -> None:
    # Every layer stays covered after losing slow, so the simulator (here a fake judge that prefers the
    # survivors' placement) decides; the re-plan is not rolled out and nothing is loaded.
    coord, registry, plan = make_coord({"fast": (0, 10), "fast2": (10, 30), "mid": (0, 20), "slow": (20, 30)})
    survivors = plan.placement.without({"slow"})
    judged: list[Placement] = []

    def judge(placement: Placement) -> tuple[float, dict[str, Any]]:
        judged.append(placement)
        return (100.0 if placement == survivors else 50.0), {}

    loads = FakeLoads()
    ctl = fake_controller(coord, loads, judge=judge, loss_debounce_s=0.01)
    registry.remove("slow")
    await ctl.wait_idle()
    last = ctl.status()["last"]
    assert last["outcome"] == "skipped" and "no gain" in last["reason"], last
    assert (last["score_before"], last["score_after"]) == (100.0, 50.0)
    assert len(judged) == 2 and loads.orders == {} and coord.fleet.base_plan is plan


async def test_a_lost_worker_outside_the_plan_rolls_nothing_out() -> None:
    coord, registry, plan = make_coord({"fast": (0, 30), "mid": (0, 20)})
    registry.register(WorkerInfo("slow", "addr-slow", LayerRange(0, 12), "cpu-slow", 4096))
    loads = FakeLoads()
    ctl = controller(coord, loads)
    registry.remove("slow")
    await ctl.wait_idle()
    last = ctl.status()["last"]
    assert last["outcome"] == "skipped" and last["lost"] == [], last
    assert loads.orders == {} and coord.fleet.base_plan is plan


async def test_a_failed_load_keeps_the_plan_in_force_and_reports_failed() -> None:
    coord, registry, plan = make_coord(
        {"fast": (0, 10), "mid": (10, 20), "slow": (20, 30), "fast2": (10, 30)}
    )
    ctl = controller(coord, FakeLoads(fail=True))
    registry.remove("fast")
    await ctl.wait_idle()
    last = ctl.status()["last"]
    assert last["outcome"] == "failed" and "out of memory" in last["reason"]
    assert coord.fleet.base_plan is plan


async def test_a_join_with_a_gain_gets_layers_and_the_plan_swaps() -> None:
    # fast2 is a node of the fleet file the plan leaves idle; it registers holding one layer no chain uses.
    coord, registry, plan = make_coord({"fast": (0, 10), "mid": (10, 20), "slow": (20, 30)})
    loads = FakeLoads()
    ctl = controller(coord, loads)
    registry.register(WorkerInfo("fast2", "addr-fast2", LayerRange(25, 26), "cpu-fast", 4096))
    await ctl.wait_idle()
    last = ctl.status()["last"]
    assert last["outcome"] == "rolled_out" and last["joined"] == ["fast2"] and last["lost"] == [], last
    assert last["score_after"] > last["score_before"] * 1.05  # max-flow judge: above the hysteresis margin
    new = coord.fleet.base_plan
    assert new is not plan and "fast2" in new.placement.ranges
    assert "addr-fast2" in loads.orders
    assert registry.get("fast2").info.layers == new.placement.ranges["fast2"]  # type: ignore[union-attr]
    assert coord.plan_origin["after_joining"] == ["fast2"]
    assert coord.fleet.routable and coord.fleet.plan is new


async def test_a_joiner_outside_the_fleet_file_joins_it_with_copied_links() -> None:
    coord, registry, _ = make_coord({"fast": (0, 10), "mid": (10, 20), "slow": (20, 30)})
    loads = FakeLoads()
    ctl = controller(coord, loads)
    registry.register(WorkerInfo("spot1", "addr-spot1", LayerRange(25, 26), "cpu-fast", 4096))
    await ctl.wait_idle()
    last = ctl.status()["last"]
    assert last["outcome"] == "rolled_out" and last["joined"] == ["spot1"], last
    new = coord.fleet.base_plan
    assert new.cluster is not None and new.cluster.has_node("spot1")
    assert "spot1" in new.placement.ranges and "addr-spot1" in loads.orders
    # Routing keeps the fleet file's links (plus the joiner's) rather than a synthesised graph.
    assert coord.fleet.base_cluster.has_node("spot1") and coord.fleet.cluster.has_node("spot1")
    assert coord.fleet.plan is new


async def test_a_join_without_a_simulated_gain_moves_nothing() -> None:
    coord, registry, plan = make_coord({"fast": (0, 30), "fast2": (0, 30)})
    loads = FakeLoads()
    # The judge sees no difference.
    ctl = fake_controller(coord, loads, judge=lambda placement: (100.0, {}), join_debounce_s=0.05)
    registry.register(WorkerInfo("slow", "addr-slow", LayerRange(0, 12), "cpu-slow", 4096))
    await ctl.wait_idle()
    last = ctl.status()["last"]
    assert last["joined"] == ["slow"] and last["outcome"] == "skipped", last
    assert loads.orders == {} and coord.fleet.base_plan is plan


async def test_a_node_that_flaps_within_the_window_causes_no_move() -> None:
    coord, registry, plan = make_coord({"fast": (0, 10), "mid": (10, 20), "slow": (20, 30)})
    loads = FakeLoads()
    ctl = controller(coord, loads)
    registry.register(WorkerInfo("fast2", "addr-fast2", LayerRange(25, 26), "cpu-fast", 4096))
    registry.remove("fast2")
    await ctl.wait_idle()
    assert ctl.rollouts == 1 and ctl.status()["last"]["outcome"] == "skipped"
    assert loads.orders == {} and coord.fleet.base_plan is plan


async def test_a_loss_and_a_join_in_one_window_make_one_replan() -> None:
    coord, registry, _ = make_coord({"fast": (0, 10), "mid": (10, 20), "slow": (20, 30)})
    loads = FakeLoads()
    ctl = fake_controller(coord, loads, loss_debounce_s=0.3)
    registry.remove("slow")
    registry.register(WorkerInfo("fast2", "addr-fast2", LayerRange(25, 26), "cpu-fast", 4096))
    await ctl.wait_idle()
    last = ctl.status()["last"]
    assert ctl.rollouts == 1, ctl.status()
    assert last["outcome"] == "rolled_out" and last["lost"] == ["slow"] and last["joined"] == ["fast2"]
    assert not registry.uncovered() and "slow" not in coord.fleet.base_plan.placement.ranges


async def test_a_loss_during_a_rollout_is_replanned_right_after_from_the_new_plan() -> None:
    coord, registry, plan = make_coord(
        {"fast": (0, 10), "mid": (10, 20), "slow": (20, 30), "fast2": (10, 30)}
    )
    gate = asyncio.Event()
    loads = FakeLoads(gate=gate)
    ctl = controller(coord, loads)
    registry.remove("fast")
    await asyncio.wait_for(loads.started.wait(), 30)  # the first rollout is loading
    assert ctl.status()["running"] is True
    registry.remove("slow")
    assert ctl.status()["pending"]["lost"] == ["slow"]
    gate.set()
    await ctl.wait_idle()
    history = ctl.status()["history"]
    assert [h["lost"] for h in history] == [["fast"], ["slow"]], history
    # The second re-plan starts from the first one's plan: fast is no longer in it, only slow is lost.
    first, second = history
    assert first["outcome"] == "rolled_out" and second["outcome"] in ("rolled_out", "skipped"), second
    final = coord.fleet.base_plan
    assert final is not plan and "fast" not in final.placement.ranges
    if second["outcome"] == "rolled_out":
        assert "slow" not in final.placement.ranges
    else:  # the survivors of the first plan still cover every layer and nothing beats them by the margin
        assert "no" in second["reason"] and not final.placement.without({"slow"}).uncovered()
    assert not registry.uncovered() and coord.fleet.routable
