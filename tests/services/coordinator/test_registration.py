"""Control plane over real gRPC on loopback: a worker registers and heartbeats its real KV use, registers
again by itself after the coordinator restarts, and deregisters when it stops."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from planner.placement import LayerRange
from services.coordinator.registry import Registry
from services.worker.registration import WorkerInfo, keep_registered
from tests.services.coordinator.control_server import start_control, until

pytestmark = pytest.mark.anyio


@dataclass
class Stats:
    kv_used_tokens: int = 0
    kv_capacity_tokens: int = 1000
    queue_depth: int = 0


async def test_register_heartbeat_restart_deregister() -> None:
    reg1 = Registry(time.monotonic, expiry_s=5.0, num_layers=30)
    server, port = await start_control(reg1, "first")
    stats = Stats()
    info = WorkerInfo("w0", "127.0.0.1:1234", LayerRange(0, 10), "cpu", 1000, model="m", backend="torch")
    task = asyncio.create_task(keep_registered(f"127.0.0.1:{port}", info, lambda: stats, retry_s=0.05))
    try:
        await until(lambda: reg1.names() == ["w0"])
        w = reg1.get("w0")
        assert w is not None and w.info.layers == LayerRange(0, 10) and w.info.address == "127.0.0.1:1234"
        stats.kv_used_tokens = 321
        await until(lambda: (reg1.get("w0") or w).kv_used_tokens == 321)

        await server.stop(grace=None)  # the coordinator "crashes" and comes back empty, with a new id
        reg2 = Registry(time.monotonic, expiry_s=5.0, num_layers=30)
        server, _ = await start_control(reg2, "second", port)
        await until(lambda: reg2.names() == ["w0"])
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await until(lambda: reg2.names() == [])
    await server.stop(grace=None)


async def test_refused_registration_keeps_retrying_without_crashing() -> None:
    reg = Registry(time.monotonic, expiry_s=5.0, num_layers=4)
    server, port = await start_control(reg, "c")
    bad = WorkerInfo("w0", "127.0.0.1:1", LayerRange(0, 10), "cpu", 1000)  # beyond the model's 4 layers
    task = asyncio.create_task(keep_registered(f"127.0.0.1:{port}", bad, Stats, retry_s=0.05))
    await asyncio.sleep(0.3)
    assert not task.done() and reg.names() == []
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await server.stop(grace=None)
