"""Engine behaviour on a fake fleet: generation, EOS, batching, admission limits, no-route errors, KV release
on finish and cancel, and re-routing after a worker dies mid-generation."""

from __future__ import annotations

import asyncio

import pytest

from planner.errors import CapacityExceeded, InvalidInput, NoRoute
from services.coordinator.engine import EngineLimits, GenParams, Handle
from tests.services.coordinator.fakes import FakeWorld, make_engine, reference

pytestmark = pytest.mark.anyio

TWO_CHAINS = {"a": (0, 2), "b": (2, 4), "c": (2, 4)}


async def collect(handle: Handle) -> list[int]:
    return [t async for t in handle.tokens()]


async def test_generates_max_tokens_and_frees_kv() -> None:
    world = FakeWorld()
    engine = make_engine(world, TWO_CHAINS)
    await engine.start()
    try:
        prompt = [1, 2, 3, 4]
        handle = engine.submit("r1", prompt, GenParams(max_tokens=12))
        tokens = await collect(handle)
        assert tokens == reference(prompt, 12)
        assert handle.finish_reason == "length"
        await asyncio.sleep(0.05)
        assert world.kv_used() == 0
        assert engine.fleet.kv.total_used() == 0
        assert not engine.running
    finally:
        await engine.stop()


async def test_eos_stops_and_releases() -> None:
    world = FakeWorld()
    engine = make_engine(world, TWO_CHAINS)
    await engine.start()
    try:
        prompt = [7, 7]
        expected = reference(prompt, 20)
        eos = expected[5]
        cut = expected.index(eos) + 1
        handle = engine.submit("r1", prompt, GenParams(max_tokens=20, eos_ids=frozenset({eos})))
        assert await collect(handle) == expected[:cut]
        assert handle.finish_reason == "stop"
        await asyncio.sleep(0.05)
        assert world.kv_used() == 0
    finally:
        await engine.stop()


async def test_many_concurrent_requests_all_correct_and_spread_over_chains() -> None:
    world = FakeWorld()
    engine = make_engine(world, TWO_CHAINS)
    await engine.start()
    try:
        prompts = [[i, i + 1, i + 2] for i in range(24)]
        handles = [engine.submit(f"r{i}", p, GenParams(max_tokens=8)) for i, p in enumerate(prompts)]
        outs = await asyncio.gather(*(collect(h) for h in handles))
        assert outs == [reference(p, 8) for p in prompts]
        text = engine.metrics.render().decode()
        assert 'brl_edge_requests_total{dst="b",src="a"}' in text
        assert 'brl_edge_requests_total{dst="c",src="a"}' in text
    finally:
        await engine.stop()


async def test_no_route_names_uncovered_layers() -> None:
    world = FakeWorld()
    engine = make_engine(world, {"a": (0, 2)})
    with pytest.raises(NoRoute) as info:
        engine.submit("r1", [1, 2], GenParams(max_tokens=4))
    assert "[2,4)" in str(info.value)
    assert info.value.uncovered == ((2, 4),)
    await engine.stop()


async def test_too_long_for_kv_is_invalid_input() -> None:
    world = FakeWorld()
    engine = make_engine(world, TWO_CHAINS, kv_tokens=50)
    with pytest.raises(InvalidInput) as info:
        engine.submit("r1", list(range(40)), GenParams(max_tokens=20))
    assert "max_tokens" in str(info.value)
    await engine.stop()


async def test_queue_bound_gives_capacity_exceeded_with_retry_after() -> None:
    world = FakeWorld()
    world.step_delay_s = 0.01
    limits = EngineLimits(max_waiting=2, max_running=1, tick_s=0.02)
    engine = make_engine(world, TWO_CHAINS, limits=limits)
    await engine.start()
    try:
        accepted = [engine.submit(f"r{i}", [i + 1], GenParams(max_tokens=3)) for i in range(3)]
        with pytest.raises(CapacityExceeded) as info:
            engine.submit("r9", [9], GenParams(max_tokens=3))
        assert info.value.retry_after_s is not None and info.value.retry_after_s >= 1
        outs = await asyncio.gather(*(collect(h) for h in accepted))
        assert outs == [reference([i + 1], 3) for i in range(3)]
    finally:
        await engine.stop()


async def test_cancel_frees_kv_on_every_hop() -> None:
    world = FakeWorld()
    world.step_delay_s = 0.005
    engine = make_engine(world, TWO_CHAINS)
    await engine.start()
    try:
        handle = engine.submit("r1", [1, 2, 3], GenParams(max_tokens=1000))
        got = []
        async for tok in handle.tokens():
            got.append(tok)
            if len(got) == 5:
                break
        assert world.kv_used() > 0
        handle.cancel()
        await asyncio.sleep(0.1)
        assert world.kv_used() == 0
        assert engine.fleet.kv.total_used() == 0
        assert handle.finish_reason == "cancelled"
    finally:
        await engine.stop()


async def test_worker_death_mid_generation_reroutes_without_loss() -> None:
    world = FakeWorld()
    world.step_delay_s = 0.002
    engine = make_engine(world, TWO_CHAINS)
    await engine.start()
    try:
        prompts = [[i, 2 * i + 1] for i in range(10)]
        handles = [engine.submit(f"r{i}", p, GenParams(max_tokens=30)) for i, p in enumerate(prompts)]

        async def kill_later() -> None:
            await asyncio.sleep(0.03)
            world.workers["fake:b"].alive = False

        outs, _ = await asyncio.gather(asyncio.gather(*(collect(h) for h in handles)), kill_later())
        assert outs == [reference(p, 30) for p in prompts]
        assert "b" not in engine.fleet.registry.names()
        assert engine.metrics.reroutes._value.get() >= 1
        # New requests still work over the surviving chain.
        h = engine.submit("late", [3, 3], GenParams(max_tokens=5))
        assert await collect(h) == reference([3, 3], 5)
    finally:
        await engine.stop()


async def test_losing_the_only_holder_fails_new_requests_fast_and_recovers_on_rejoin() -> None:
    world = FakeWorld()
    engine = make_engine(world, {"a": (0, 2), "b": (2, 4)})
    await engine.start()
    try:
        info_b = engine.fleet.registry.get("b")
        assert info_b is not None
        engine.fleet.registry.remove("b")
        with pytest.raises(NoRoute) as err:
            engine.submit("r1", [1], GenParams(max_tokens=2))
        assert "[2,4)" in str(err.value)
        engine.fleet.registry.register(info_b.info)
        h = engine.submit("r2", [1], GenParams(max_tokens=2))
        assert await collect(h) == reference([1], 2)
    finally:
        await engine.stop()
