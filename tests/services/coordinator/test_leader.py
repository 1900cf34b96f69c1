"""Leader choice and plan stamps of coordinator replicas (services/coordinator/leader.py), in process: the
lowest id the workers report alive leads once it has asked every peer; a dead leader drops out with the
workers' reports; a local swap takes the next version; GetPlan sends the plan only when it is newer; the
newest plan among peers is adopted, and a follower that becomes the leader tells its controller."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from planner import bundled
from planner.flow import plan_from_placement
from planner.formats.plan_json import plan_from_json
from planner.placement import LayerRange, Placement
from planner.plan import Plan
from protos import coordinator_pb2 as pb
from services.coordinator import wire
from services.coordinator.fleet import Fleet
from services.coordinator.leader import START, Leadership, PeerBook, Stamp, choose_leader
from services.coordinator.registry import Registry, WorkerInfo

pytestmark = pytest.mark.anyio

MODEL = bundled.model("smollm2-135m")
PROFILES = bundled.profiles(MODEL)
CLUSTER = bundled.cluster("local-cpu4")


def make_plan(ranges: dict[str, tuple[int, int]]) -> Plan:
    placement = Placement(MODEL.num_layers, {n: LayerRange(*r) for n, r in ranges.items()})
    return plan_from_placement(CLUSTER, MODEL, PROFILES, placement, method="test")


def make_coord(coordinator_id: str, plan: Plan) -> Any:
    registry = Registry(time.monotonic, expiry_s=60.0, num_layers=MODEL.num_layers)
    for name, r in plan.placement.ranges.items():
        registry.register(WorkerInfo(name, f"addr-{name}", r, "cpu-fast", 4096))
    fleet = Fleet(registry, MODEL, plan=plan, cluster=CLUSTER, profiles=PROFILES)
    engine = SimpleNamespace(running={}, plan_swapped=lambda: None)
    return SimpleNamespace(
        coordinator_id=coordinator_id,
        registry=registry,
        fleet=fleet,
        engine=engine,
        plan_origin={"source": "file"},
        controller=None,
    )


PLAN_A = make_plan({"fast": (0, 15), "mid": (15, 30)})
PLAN_B = make_plan({"fast": (0, 10), "mid": (10, 30)})


def test_stamps_order_by_version_then_the_lower_author() -> None:
    assert Stamp(2, "r1.b").newer_than(Stamp(1, "r0.a"))
    assert not Stamp(1, "r0.a").newer_than(Stamp(2, "r1.b"))
    assert Stamp(3, "r0.a").newer_than(Stamp(3, "r1.b"))  # a tie goes to the lower id (the leader)
    assert not Stamp(3, "r1.b").newer_than(Stamp(3, "r0.a"))
    assert not Stamp(3, "r0.a").newer_than(Stamp(3, "r0.a"))
    assert Stamp(1, "r9.z").newer_than(START) and not START.newer_than(START)


def test_the_lowest_id_the_live_workers_report_leads() -> None:
    assert choose_leader("r1.b", ["r0.a", "r2.c"]) == "r0.a"
    assert choose_leader("r0.a", ["r1.b"]) == "r0.a"
    assert choose_leader("r1.b", []) == "r1.b"  # alone
    book = PeerBook()
    book.report("w0", {"r0.a": "h0:1", "r1.b": "h1:1"})
    book.report("w1", {"r1.b": "h1:1", "r2.c": "h2:1"})
    assert book.peers(["w0", "w1"]) == {"r0.a": "h0:1", "r1.b": "h1:1", "r2.c": "h2:1"}
    # Only live workers count: a worker the registry dropped no longer vouches for anyone.
    assert book.peers(["w1"]) == {"r1.b": "h1:1", "r2.c": "h2:1"}
    book.forget("w1")
    assert book.peers(["w0", "w1"]) == {"r0.a": "h0:1", "r1.b": "h1:1"}


async def test_a_follower_leads_once_the_leader_drops_out_and_it_has_asked_every_peer() -> None:
    coord = make_coord("r1.b", PLAN_A)
    took_over: list[int] = []
    coord.controller = SimpleNamespace(take_over=lambda: took_over.append(1))
    lead = Leadership(coord)
    coord.leadership = lead
    both = {"r0.a": "127.0.0.1:1", "r1.b": "127.0.0.1:2"}
    lead.worker_reported("fast", both)
    lead.worker_reported("mid", both)
    assert lead.peers() == {"r0.a": "127.0.0.1:1"}
    assert lead.leader_id() == "r0.a" and not lead.is_leader()
    await lead.sync_once()  # r0 does not answer (nothing listens on port 1): this one follows it
    assert not lead.is_leader() and took_over == []
    # r0 dies: the workers stop reporting it with their next heartbeat.
    lead.worker_reported("fast", {"r1.b": "127.0.0.1:2"})
    lead.worker_reported("mid", {"r1.b": "127.0.0.1:2"})
    assert lead.is_leader()
    await lead.sync_once()
    assert took_over == [1] and lead.status()["takeovers"] == 1
    # A new, lower replica id appears: it is not trusted to lead before it was asked, but this one yields.
    lead.worker_reported("fast", {"r0.c": "127.0.0.1:3", "r1.b": "127.0.0.1:2"})
    assert lead.leader_id() == "r0.c" and not lead.is_leader()
    await lead.close()


async def test_local_swaps_take_the_next_version_and_get_plan_sends_only_newer_plans() -> None:
    coord = make_coord("r0.a", PLAN_A)
    lead = Leadership(coord)
    assert lead.current_stamp() == START
    # The plan given at start is the same everywhere: never sent.
    assert lead.answer(wire.get_plan_request(0, "", "r1.b")).plan_json == ""
    coord.fleet.use_plan(PLAN_B)  # a rollout (or an admin swap) here
    assert lead.current_stamp() == Stamp(1, "r0.a")
    assert lead.current_stamp() == Stamp(1, "r0.a")  # stable until the plan changes again
    reply = lead.answer(wire.get_plan_request(0, "", "r1.b"))
    assert (reply.version, reply.author) == (1, "r0.a")
    sent = plan_from_json(reply.plan_json)
    assert sent.placement.ranges == PLAN_B.placement.ranges
    assert lead.answer(wire.get_plan_request(1, "r0.a", "r1.b")).plan_json == ""
    assert lead.answer(wire.get_plan_request(2, "r1.b", "r1.b")).plan_json == ""


async def test_a_follower_adopts_the_newest_peer_plan_without_re_planning() -> None:
    leader = make_coord("r0.a", PLAN_A)
    leader.leadership = Leadership(leader)
    leader.fleet.use_plan(PLAN_B)
    follower = make_coord("r1.b", PLAN_A)
    lead = Leadership(follower)
    follower.leadership = lead

    async def ask(cid: str, address: str, mine: Stamp) -> pb.GetPlanReply:
        lead._asked.add(cid)
        return leader.leadership.answer(wire.get_plan_request(mine.version, mine.author, "r1.b"))

    lead._ask = ask  # type: ignore[method-assign] # the wire is tested by the real-process test
    lead.worker_reported("fast", {"r0.a": "h0:1", "r1.b": "h1:1"})
    await lead.sync_once()
    assert follower.fleet.base_plan.placement.ranges == PLAN_B.placement.ranges
    assert lead.stamp == Stamp(1, "r0.a")
    assert follower.plan_origin["source"] == "replica" and follower.plan_origin["from"] == "r0.a"
    assert [a["version"] for a in lead.status()["followed"]] == [1]
    await lead.sync_once()  # nothing newer: nothing adopted again
    assert len(lead.adopted) == 1
    # A swap on the follower afterwards goes above every version it heard of.
    follower.fleet.use_plan(PLAN_A)
    assert lead.current_stamp() == Stamp(2, "r1.b")


async def test_a_worker_re_registering_with_an_unexpected_range_asks_for_a_sync_at_once() -> None:
    coord = make_coord("r1.b", PLAN_A)
    lead = Leadership(coord)
    lead.worker_reported("fast", {}, LayerRange(0, 15))
    assert not lead._nudge.is_set()
    lead.worker_reported("fast", {}, LayerRange(0, 20))
    assert lead._nudge.is_set()
