"""The order of a rollout's Loads (services.controller.rollout.load_each) on a real registry with a
recording fake Load: a Load that gives up layers goes only once another worker holds them for sure, so
new requests find every layer routable at every step; ranges swapped in a cycle still load; a Load that
waited for a failed one is not sent."""

from __future__ import annotations

import asyncio
import time

import pytest

from planner.placement import LayerRange
from services.controller.rollout import load_each
from services.coordinator.registry import IdleWorker, Registry, WorkerInfo
from services.worker.records import LoadReport
from tests.services.controller.fake_coord import MODEL, FakeLoads

pytestmark = pytest.mark.anyio

Loads = list[tuple[str, str, LayerRange]]


def fleet(ranges: dict[str, tuple[int, int]], idle: tuple[str, ...] = ()) -> tuple[Registry, list[list]]:
    """A registry serving `ranges` (plus `idle` workers holding nothing), and the routable gaps it had
    after each change, as a list that grows."""
    registry = Registry(time.monotonic, expiry_s=60.0, num_layers=MODEL.num_layers)
    for name, (a, b) in ranges.items():
        registry.register(WorkerInfo(name, f"addr-{name}", LayerRange(a, b), "cpu-slow", 4096))
    for name in idle:
        registry.register(IdleWorker(name, f"addr-{name}", "cpu-fast", 0))
    gaps: list[list] = []
    registry.subscribe(lambda: gaps.append(registry.uncovered(routable_only=True)))
    return registry, gaps


def orders(new: dict[str, tuple[int, int]]) -> Loads:
    return [(n, f"addr-{n}", LayerRange(*r)) for n, r in new.items()]


async def until_started(loads: FakeLoads, *addresses: str) -> None:
    for _ in range(200):
        if {a for kind, a in loads.log if kind == "start"} >= set(addresses):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{addresses} never started: {loads.log}")


async def test_a_shrink_waits_for_the_worker_that_takes_its_layer() -> None:
    # The join that refused a request once: slow [0,12) -> [0,11) must not drop layer 11 while mid
    # [12,30) -> [11,30) is still reading it (and the joiner fast, idle, is still loading everything).
    registry, gaps = fleet({"slow": (0, 12), "mid": (12, 30)}, idle=("fast",))
    mid_done, fast_done = asyncio.Event(), asyncio.Event()
    loads = FakeLoads(gates={"addr-mid": mid_done, "addr-fast": fast_done})
    task = asyncio.ensure_future(
        load_each(orders({"fast": (0, 30), "mid": (11, 30), "slow": (0, 11)}), registry, loads)
    )
    await until_started(loads, "addr-fast", "addr-mid")
    await asyncio.sleep(0.05)
    assert ("start", "addr-slow") not in loads.log  # held back while only slow holds layer 11
    mid_done.set()
    await until_started(loads, "addr-slow")
    assert loads.log.index(("end", "addr-mid")) < loads.log.index(("start", "addr-slow"))
    fast_done.set()
    results = await task
    assert all(isinstance(r, LoadReport) for r in results.values()), results
    assert list(results) == ["fast", "mid", "slow"]
    ranges = {n: registry.get(n).info.layers for n in ("fast", "mid", "slow")}  # type: ignore[union-attr]
    assert ranges == {"fast": LayerRange(0, 30), "mid": LayerRange(11, 30), "slow": LayerRange(0, 11)}
    assert gaps and not any(gaps), gaps  # every layer routable after every change


async def test_two_shrinks_of_one_layer_do_not_both_go_first() -> None:
    # a and b both give up layer 11; c takes it. a may go at once (b still holds 11), b only after c.
    registry, gaps = fleet({"a": (0, 12), "b": (0, 12), "c": (12, 30)})
    c_done = asyncio.Event()
    loads = FakeLoads(gates={"addr-c": c_done})
    task = asyncio.ensure_future(
        load_each(orders({"a": (0, 11), "b": (0, 11), "c": (11, 30)}), registry, loads)
    )
    await until_started(loads, "addr-a", "addr-c")
    await asyncio.sleep(0.05)
    assert ("start", "addr-b") not in loads.log
    c_done.set()
    results = await task
    assert all(isinstance(r, LoadReport) for r in results.values()), results
    assert not any(gaps), gaps


async def test_ranges_swapped_in_a_cycle_load_together() -> None:
    # Nobody else holds either half: neither Load can wait for the other, so both go (the old order).
    registry, _ = fleet({"a": (0, 15), "b": (15, 30)})
    gate = asyncio.Event()
    loads = FakeLoads(gate=gate)
    task = asyncio.ensure_future(load_each(orders({"a": (15, 30), "b": (0, 15)}), registry, loads))
    await until_started(loads, "addr-a", "addr-b")
    gate.set()
    results = await task
    assert all(isinstance(r, LoadReport) for r in results.values()), results
    assert registry.get("a").info.layers == LayerRange(15, 30)  # type: ignore[union-attr]


async def test_a_shrink_that_waited_for_a_failed_load_is_not_sent() -> None:
    registry, gaps = fleet({"slow": (0, 12), "mid": (12, 30)})
    loads = FakeLoads(failing=frozenset({"addr-mid"}))
    results = await load_each(orders({"mid": (11, 30), "slow": (0, 11)}), registry, loads)
    assert isinstance(results["mid"], RuntimeError) and "out of memory" in str(results["mid"])
    assert isinstance(results["slow"], RuntimeError) and "failed" in str(results["slow"])
    assert ("start", "addr-slow") not in loads.log
    assert registry.get("slow").info.layers == LayerRange(0, 12)  # type: ignore[union-attr]
    assert not registry.uncovered(routable_only=True) and not any(gaps)
