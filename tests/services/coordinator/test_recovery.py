"""Recovery after worker loss, on a fake fleet: detaching and re-queueing a request, the retry limit, probes
that fail or raise, a worker rejecting a request, a worker leaving the registry, declaring a worker lost."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Sequence

import pytest

from planner.errors import InvalidInput, Unavailable
from services.coordinator.engine import EngineLimits, GenParams, Handle
from services.coordinator.eventlog import EventLog
from services.worker.client import HopAddress, StepInput
from services.worker.records import INVALID_ARGUMENT, UNAVAILABLE, TokenResult, error_result
from tests.services.coordinator.fakes import FakeChain, FakeWorld, make_engine, reference

pytestmark = pytest.mark.anyio

TWO_CHAINS = {"a": (0, 2), "b": (2, 4), "c": (2, 4)}


async def collect(handle: Handle) -> list[int]:
    return [t async for t in handle.tokens()]


async def test_detach_then_enqueue_puts_the_request_first_with_its_tokens_so_far() -> None:
    world = FakeWorld()
    engine = make_engine(world, TWO_CHAINS)
    try:
        engine.submit("r1", [1, 2, 3], GenParams(max_tokens=6))
        r = engine.running["r1"]
        r.generated = [7, 8]  # as if two tokens had come back already
        runner = r.runner
        assert runner is not None
        old = engine.recovery.detach_for_retry(r)
        assert old == "r1" and r.wire_id != old
        assert r.runner is None and "r1" not in runner.requests
        assert "r1" not in engine.running
        assert engine.fleet.kv.total_used() == 0
        engine.recovery.enqueue_retry(r, "test")
        assert engine.waiting[0] is r
        assert r.pending == [*r.prompt, *r.generated] and r.cached == 0 and r.retries == 1
    finally:
        await engine.stop()


async def test_retries_beyond_the_limit_fail_the_request_unavailable() -> None:
    world = FakeWorld()
    engine = make_engine(world, TWO_CHAINS, limits=EngineLimits(max_retries=1, tick_s=0.02))
    try:
        handle = engine.submit("r1", [1, 2], GenParams(max_tokens=4))
        r = engine.running["r1"]
        for attempt in range(engine.limits.max_retries + 1):
            engine.recovery.detach_for_retry(r)
            engine.recovery.enqueue_retry(r, f"boom {attempt}")
            engine.waiting.clear()  # keep it off a chain: each attempt "fails" before it starts
        assert r.done and r.finish_reason == "error"
        with pytest.raises(Unavailable, match="boom 1"):
            await collect(handle)
        assert engine.metrics.reroutes._value.get() == engine.limits.max_retries
    finally:
        await engine.stop()


class RaisingProbeWorld(FakeWorld):
    """A probe of a dead worker raises (its channel closed under it) instead of answering False."""

    async def probe(self, address: str) -> bool:
        if not self.workers[address].alive:
            raise RuntimeError("channel closed")
        return True


async def test_a_probe_that_raises_counts_as_lost_and_loses_no_request() -> None:
    world = RaisingProbeWorld()
    world.step_delay_s = 0.002
    engine = make_engine(world, TWO_CHAINS)
    await engine.start()
    try:
        prompts = [[i, i + 3] for i in range(8)]
        handles = [engine.submit(f"r{i}", p, GenParams(max_tokens=20)) for i, p in enumerate(prompts)]
        await asyncio.sleep(0.01)
        world.workers["fake:b"].alive = False
        outs = await asyncio.wait_for(asyncio.gather(*(collect(h) for h in handles)), 10.0)
        assert outs == [reference(p, 20) for p in prompts]
        assert "b" not in engine.fleet.registry.names()
        assert engine.metrics.worker_lost._value.get() >= 1
    finally:
        await engine.stop()


class RejectingWorld(FakeWorld):
    """Every step is refused as invalid by the last hop (a bad request, not a dead worker)."""

    def chain(self, hops: Sequence[HopAddress]) -> FakeChain:
        return RejectingChain(self, list(hops))


class RejectingChain(FakeChain):
    async def step(self, items: Sequence[StepInput]) -> list[TokenResult]:
        hop = self.hops[-1].address
        return [error_result(i.request_id, INVALID_ARGUMENT, "token id out of range", hop) for i in items]


async def test_a_rejected_request_fails_invalid_without_retry_or_lost_worker() -> None:
    world = RejectingWorld()
    engine = make_engine(world, TWO_CHAINS)
    await engine.start()
    try:
        handle = engine.submit("r1", [1, 2], GenParams(max_tokens=4))
        with pytest.raises(InvalidInput, match="token id out of range"):
            await asyncio.wait_for(collect(handle), 5.0)
        assert engine.metrics.reroutes._value.get() == 0
        assert sorted(engine.fleet.registry.names()) == sorted(TWO_CHAINS)
    finally:
        await engine.stop()


async def test_a_worker_leaving_the_registry_reroutes_its_requests_and_frees_their_kv() -> None:
    world = FakeWorld()
    world.step_delay_s = 0.002
    engine = make_engine(world, TWO_CHAINS)
    await engine.start()
    try:
        prompts = [[i, 2 * i] for i in range(8)]
        handles = [engine.submit(f"r{i}", p, GenParams(max_tokens=20)) for i, p in enumerate(prompts)]
        await asyncio.sleep(0.01)
        on_b = [r.id for r in engine.running.values() if r.chain and "b" in [h.node for h in r.chain]]
        engine.fleet.registry.remove("b")  # deregistered while still up: its chain must be abandoned
        outs = await asyncio.wait_for(asyncio.gather(*(collect(h) for h in handles)), 10.0)
        assert outs == [reference(p, 20) for p in prompts]
        assert engine.metrics.reroutes._value.get() >= len(on_b) > 0
        await asyncio.sleep(0.05)
        # Attempts abandoned on a->b were aborted on the surviving hop a: nothing is left cached there.
        assert world.workers["fake:a"].cache == {}
    finally:
        await engine.stop()


async def test_declare_lost_removes_the_worker_and_logs_the_event() -> None:
    world = FakeWorld()
    engine = make_engine(world, TWO_CHAINS)
    iterations = io.StringIO()
    engine.events = EventLog(iterations=iterations)
    try:
        engine.recovery.declare_lost_address("fake:c")
        engine.recovery.declare_lost("nobody")  # unknown: nothing happens
        assert sorted(engine.fleet.registry.names()) == ["a", "b"]
        assert engine.metrics.worker_lost._value.get() == 1
        events = [json.loads(line) for line in iterations.getvalue().splitlines()]
        assert [(e["event"], e["worker"]) for e in events] == [("worker_lost", "c")]
    finally:
        await engine.stop()


class ChangingLayersWorld(FakeWorld):
    """The first steps are refused the way a worker changing layers (Load) refuses them: UNAVAILABLE
    "loading", then "draining"; the worker is alive all along. Probes are counted."""

    refusals: list[str]
    probes: int = 0

    def chain(self, hops: Sequence[HopAddress]) -> FakeChain:
        return ChangingLayersChain(self, list(hops))

    async def probe(self, address: str) -> bool:
        self.probes += 1
        return await super().probe(address)


class ChangingLayersChain(FakeChain):
    async def step(self, items: Sequence[StepInput]) -> list[TokenResult]:
        world = self.world
        assert isinstance(world, ChangingLayersWorld)
        if world.refusals:
            why = world.refusals.pop(0)
            return [error_result(i.request_id, UNAVAILABLE, why, self.hops[0].address) for i in items]
        return await super().step(items)


async def test_loading_and_draining_refusals_retry_without_using_retries_or_losing_the_worker() -> None:
    world = ChangingLayersWorld()
    world.refusals = [
        "this worker is loading layers [0,4): retry when the load is done",
        "layers [0,2) are draining on this worker; it is moving to [0,4): start new requests on another chain",
        "this worker is loading layers [0,4): retry when the load is done",
    ]
    # No failure retry allowed at all: only the transient refusals' own re-routes can save the request.
    engine = make_engine(world, TWO_CHAINS, limits=EngineLimits(max_retries=0, tick_s=0.02))
    await engine.start()
    try:
        handle = engine.submit("r1", [1, 2], GenParams(max_tokens=6))
        assert await asyncio.wait_for(collect(handle), 10.0) == reference([1, 2], 6)
        assert world.refusals == []
        assert world.probes == 0  # a live worker changing layers is not suspected
        assert sorted(engine.fleet.registry.names()) == sorted(TWO_CHAINS)
        assert engine.metrics.worker_lost._value.get() == 0
    finally:
        await engine.stop()


async def test_an_unavailable_without_loading_or_draining_still_counts_as_a_failure() -> None:
    world = ChangingLayersWorld()
    world.refusals = ["worker overloaded"]
    engine = make_engine(world, TWO_CHAINS, limits=EngineLimits(max_retries=0, tick_s=0.02))
    await engine.start()
    try:
        handle = engine.submit("r1", [1, 2], GenParams(max_tokens=6))
        with pytest.raises(Unavailable, match="worker overloaded"):
            await asyncio.wait_for(collect(handle), 10.0)
        assert world.probes >= 1
    finally:
        await engine.stop()
