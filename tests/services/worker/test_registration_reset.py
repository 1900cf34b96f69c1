"""A worker that registers with a new coordinator (the old one crashed) frees the requests the old one left
behind, and only those; re-registering with the same coordinator after a blip frees nothing."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from planner.placement import LayerRange
from services.coordinator.registry import Registry
from services.worker.client import StepInput
from services.worker.main import _keep_registered
from services.worker.registration import CHANNEL_OPTIONS, WorkerInfo, keep_registered
from tests.services.coordinator.control_server import start_control, until
from tests.services.worker.conftest import TINY_LAYERS, chain_of, start_workers, stop_all

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class FakeShard:
    """What keep_registered sees of a worker: its stats, the request ids it holds, a release-all hook."""

    held: set[str] = field(default_factory=set)
    resets: list[frozenset[str]] = field(default_factory=list)
    queue_depth: int = 0
    kv_capacity_tokens: int = 1000

    @property
    def kv_used_tokens(self) -> int:
        return 10 * len(self.held)

    def request_ids(self) -> list[str]:
        return sorted(self.held)

    async def free(self, ids: frozenset[str]) -> None:
        self.resets.append(ids)
        self.held -= ids


def run_worker(port: int, shard: FakeShard) -> asyncio.Task[None]:
    info = WorkerInfo("w0", "127.0.0.1:1234", LayerRange(0, 10), "cpu", 1000)
    return asyncio.create_task(
        keep_registered(
            f"127.0.0.1:{port}",
            info,
            lambda: shard,
            retry_s=0.05,
            held_requests=shard.request_ids,
            on_new_coordinator=shard.free,
        )
    )


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_new_coordinator_frees_what_the_old_one_left() -> None:
    reg1 = Registry(time.monotonic, expiry_s=5.0, num_layers=30)
    server, port = await start_control(reg1, "first")
    shard = FakeShard(held={"old-a", "old-b"})
    task = run_worker(port, shard)
    try:
        await until(lambda: reg1.names() == ["w0"])
        await until(lambda: (reg1.get("w0") or reg1.get("none")).kv_used_tokens == 20)  # type: ignore[union-attr]
        assert shard.resets == []  # a first registration frees nothing

        await server.stop(grace=None)  # crash: the new incarnation has a new id and knows no request
        reg2 = Registry(time.monotonic, expiry_s=5.0, num_layers=30)
        server, _ = await start_control(reg2, "second", port)
        await until(lambda: reg2.names() == ["w0"])
        await until(lambda: shard.resets != [])
        assert shard.resets == [frozenset({"old-a", "old-b"})]
        assert shard.held == set()
        # The new coordinator's own requests are never touched afterwards.
        shard.held.add("new-a")
        await until(lambda: (reg2.get("w0") or reg2.get("none")).kv_used_tokens == 10)  # type: ignore[union-attr]
        await asyncio.sleep(0.3)
        assert shard.held == {"new-a"} and len(shard.resets) == 1
    finally:
        await stop(task)
        await server.stop(grace=None)


async def test_same_coordinator_after_a_blip_keeps_requests() -> None:
    reg = Registry(time.monotonic, expiry_s=5.0, num_layers=30)
    server, port = await start_control(reg, "same")
    shard = FakeShard(held={"live-a"})
    task = run_worker(port, shard)
    try:
        await until(lambda: reg.names() == ["w0"])
        await server.stop(grace=None)  # unreachable for a moment; it comes back with the same id and state
        await asyncio.sleep(0.3)  # a few heartbeats fail meanwhile
        server, _ = await start_control(reg, "same", port)
        before = (reg.get("w0") or reg.get("none")).registered_at_s  # type: ignore[union-attr]
        await until(lambda: (reg.get("w0") or reg.get("none")).registered_at_s > before)  # type: ignore[union-attr]
        await asyncio.sleep(0.2)
        assert shard.resets == [] and shard.held == {"live-a"}
    finally:
        await stop(task)
        await server.stop(grace=None)


async def test_dropped_by_the_coordinator_frees_what_it_held() -> None:
    """Declared lost (missed heartbeats), the worker's requests were re-routed elsewhere: free them."""
    reg = Registry(time.monotonic, expiry_s=5.0, num_layers=30)
    server, port = await start_control(reg, "c")
    shard = FakeShard(held={"moved-a"})
    task = run_worker(port, shard)
    try:
        await until(lambda: reg.names() == ["w0"])
        reg.remove("w0")
        await until(lambda: shard.resets == [frozenset({"moved-a"})])
        await until(lambda: reg.names() == ["w0"])
    finally:
        await stop(task)
        await server.stop(grace=None)


def test_reconnect_backoff_is_capped_at_two_seconds() -> None:
    opts = dict(CHANNEL_OPTIONS)
    assert opts["grpc.max_reconnect_backoff_ms"] <= 2000
    assert opts["grpc.initial_reconnect_backoff_ms"] <= 500


async def test_real_worker_frees_a_crashed_coordinators_kv(tiny_dir: Path) -> None:
    """`brl worker --coordinator`: KV held for a dead coordinator's requests goes back to 0 once the worker
    meets the new one; a request of the new coordinator started afterwards keeps its KV."""
    reg1 = Registry(time.monotonic, expiry_s=5.0, num_layers=TINY_LAYERS)
    server, port = await start_control(reg1, "first")
    (worker,) = await start_workers(tiny_dir, [(0, TINY_LAYERS)], coordinator=f"127.0.0.1:{port}", name="w0")
    stop_event = asyncio.Event()
    registration = asyncio.create_task(_keep_registered(worker, stop_event))
    chain = chain_of([worker])
    try:
        await until(lambda: reg1.names() == ["w0"])
        await chain.step([StepInput("old-1", [1, 2, 3, 4], 0), StepInput("old-2", [5, 6, 7], 0)])
        assert worker.batcher.backend.kv_used_tokens() > 0

        await server.stop(grace=None)
        reg2 = Registry(time.monotonic, expiry_s=5.0, num_layers=TINY_LAYERS)
        server, _ = await start_control(reg2, "second", port)
        await until(lambda: reg2.names() == ["w0"])
        await until(lambda: worker.batcher.backend.kv_used_tokens() == 0)
        await chain.step([StepInput("new-1", [1, 2], 0)])
        await asyncio.sleep(0.3)  # heartbeats go on; nothing more is freed
        assert worker.batcher.request_ids() == ["new-1"]
        assert worker.batcher.backend.kv_used_tokens() > 0
    finally:
        stop_event.set()
        await asyncio.wait_for(registration, timeout=5)
        await chain.close()
        await stop_all([worker])
        await server.stop(grace=None)
