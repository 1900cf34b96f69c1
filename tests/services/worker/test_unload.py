"""A worker with no layers: started without a range it registers as idle and serves nothing until a Load
gives it one; a Load of the empty range [0,0) drains it and frees every layer, and the coordinator sees
it idle again. Real loopback workers and a real coordinator control-plane server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from planner.placement import LayerRange
from services.coordinator.registry import Registry
from services.worker import client
from services.worker.checkpoint import layer_of
from services.worker.client import ChainClient, Connections, HopAddress, StepInput, generate
from services.worker.main import _keep_registered
from services.worker.records import LoadOrder
from tests.services.coordinator.control_server import start_control
from tests.services.worker.conftest import TINY_LAYERS, hf_greedy, start_workers, stop_all
from tests.services.worker.test_load_range import NEW_TOKENS, Gen, Reads, layer_names, until

PROMPTS = [[5, 17, 99, 3], [42, 7, 250, 1, 1, 9, 11]]


def test_an_empty_worker_registers_idle_loads_a_range_and_unloads_it(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = hf_greedy(tiny_dir, PROMPTS, NEW_TOKENS)
    reads = Reads(monkeypatch)

    async def run() -> list[list[int]]:
        registry = Registry(time.monotonic, expiry_s=5.0, num_layers=TINY_LAYERS)
        server, port = await start_control(registry, "c")
        (head,) = await start_workers(tiny_dir, [(0, 3)])
        (w,) = await start_workers(tiny_dir, [(0, 0)], coordinator=f"127.0.0.1:{port}", name="spare")
        stop = asyncio.Event()
        registration = asyncio.create_task(_keep_registered(w, stop))
        conns = Connections()
        chain = ChainClient([HopAddress(head.address, 0, 3), HopAddress(w.address, 3, 6)], connections=conns)
        try:

            async def idle() -> bool:
                return "spare" in registry.idle() and registry.get("spare") is None

            await until(idle)
            info = await client.info(w.address)
            assert (info.start_layer, info.end_layer, info.kv_capacity_tokens) == (0, 0, 0)
            s = await client.stats(w.address)
            assert (s.serving, s.held_layers, s.kv_capacity_tokens) == ((), 0, 0)
            (refused,) = await chain.step([StepInput("early", PROMPTS[0], 0)])
            assert refused.code == "failed_precondition" and refused.failed_hop == w.address
            assert await chain.release(["early"]) == 1  # the head had cached it

            reads.names.clear()
            report = await client.load(w.address, LoadOrder(start_layer=3, end_layer=6))
            assert report.mode == "beside" and report.layers_read == 3
            # Only the range's tensors were read: its layers, the final norm and the LM head.
            assert sorted(reads.names) == sorted(
                layer_names(range(3, 6)) | {"model.norm.weight", "lm_head.weight"}
            )
            assert {layer_of(n) for n in report.tensors_read} == {3, 4, 5, None}

            async def serving() -> bool:
                state = registry.get("spare")
                return state is not None and state.info.layers == LayerRange(3, 6) and not registry.idle()

            await until(serving)
            s = await client.stats(w.address)
            assert s.last_load_layers == 3 and s.load_s_per_layer > 0

            running = Gen("running", PROMPTS[0], chain)
            await running.step()
            unload = asyncio.create_task(client.load(w.address, LoadOrder(start_layer=0, end_layer=0)))

            async def draining() -> bool:
                s = await client.stats(w.address)
                return s.serving == () and s.draining == ((3, 6),)

            await until(draining)
            (late,) = await chain.step([StepInput("late", PROMPTS[1], 0)])
            assert late.code == "unavailable" and "draining" in late.error
            assert await chain.release(["late"]) == 1
            first = await running.finish()  # the request that started before the unload ends normally
            gone = await unload
            assert gone.mode == "unloaded" and (gone.info.start_layer, gone.info.end_layer) == (0, 0)
            assert gone.drain_s > 0
            assert w.batcher.backend.held_layers() == frozenset() and w.batcher.backend.kv_used_tokens() == 0
            s = await client.stats(w.address)
            assert (s.serving, s.draining, s.held_layers, s.kv_capacity_tokens) == ((), (), 0, 0)
            await until(idle)
            again = await client.load(w.address, LoadOrder(start_layer=0, end_layer=0))
            assert again.mode == "unchanged"

            # And back to serving: the chain generates exactly as before.
            await client.load(w.address, LoadOrder(start_layer=3, end_layer=6))
            second = await generate([chain], [PROMPTS[1]], NEW_TOKENS)
            return [first, *second]
        finally:
            stop.set()
            await asyncio.wait_for(registration, timeout=5)
            await conns.close()
            await stop_all([head, w])
            await server.stop(grace=None)

    assert asyncio.run(run()) == expected


def test_force_unloads_at_once_releasing_the_running_requests(tiny_dir: Path) -> None:
    async def run() -> None:
        (head, w) = await start_workers(tiny_dir, [(0, 3), (3, 6)])
        chain = ChainClient([HopAddress(head.address, 0, 3), HopAddress(w.address, 3, 6)])
        try:
            held = Gen("held", PROMPTS[0], chain)
            await held.step()
            report = await client.load(w.address, LoadOrder(start_layer=0, end_layer=0, force=True))
            assert report.mode == "unloaded"
            assert w.batcher.request_ids() == [] and w.batcher.backend.held_layers() == frozenset()
            (gone,) = await chain.step([StepInput("held", [held.tokens[-1]], held.position)])
            assert gone.code == "failed_precondition" and gone.failed_hop == w.address
        finally:
            await chain.close()
            await stop_all([head, w])

    asyncio.run(run())
