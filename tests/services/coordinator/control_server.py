"""The coordinator's control plane alone, for registration tests: a real gRPC server on 127.0.0.1 with the
ControlServicer over a given registry (fast heartbeats), and a poll for what it should come to see."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc

from protos import coordinator_pb2_grpc
from services.coordinator.registry import Registry
from services.coordinator.servicer import ControlServicer


async def start_control(
    registry: Registry, coordinator_id: str, port: int = 0
) -> tuple[grpc.aio.Server, int]:
    """Serves the control plane as coordinator `coordinator_id` on `port` (0: a free one; a port given
    again is a restarted coordinator the workers find again); returns the server and its port."""
    server = grpc.aio.server()
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(
        ControlServicer(registry, coordinator_id=coordinator_id, heartbeat_interval_s=0.05), server
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


async def until(cond: Callable[[], Any], timeout_s: float = 10.0) -> float:
    """Polls `cond` until it holds; returns the seconds it took, fails the test after `timeout_s`."""
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout_s, "condition not met in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0
