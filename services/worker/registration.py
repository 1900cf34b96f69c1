"""Worker side of the control plane: register with the coordinator, heartbeat real KV use, and register
again by itself whenever the coordinator restarts or was unreachable. Deregisters on clean shutdown."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import grpc

from protos import coordinator_pb2_grpc as pb_grpc
from services.coordinator import wire
from services.coordinator.registry import WorkerInfo

__all__ = ["HeartbeatStats", "WorkerInfo", "keep_registered"]

log = logging.getLogger("brl.worker.registration")
RPC_TIMEOUT_S = 2.0


class HeartbeatStats(Protocol):
    """What a heartbeat reports; the worker's own stats object has these attributes."""

    kv_used_tokens: int
    kv_capacity_tokens: int
    queue_depth: int


StatsFn = Callable[[], HeartbeatStats | Awaitable[HeartbeatStats]]


async def _stats(stats_fn: StatsFn) -> HeartbeatStats:
    value = stats_fn()
    if inspect.isawaitable(value):
        return await value
    return value


async def keep_registered(
    coordinator_addr: str,
    info: WorkerInfo,
    stats_fn: StatsFn,
    *,
    retry_s: float = 0.5,
    stop: asyncio.Event | None = None,
) -> None:
    """Runs until cancelled (or `stop` is set). Start it with asyncio.create_task next to the worker server.

    `info` says what this worker serves (name, address, layers, GPU type, KV capacity in tokens);
    `stats_fn()` (sync or async) returns an object with kv_used_tokens, kv_capacity_tokens, queue_depth.
    """
    channel = grpc.aio.insecure_channel(coordinator_addr)
    stub = pb_grpc.CoordinatorStub(channel)
    coordinator_id: str | None = None
    interval_s = retry_s
    try:
        while stop is None or not stop.is_set():
            try:
                if coordinator_id is None:
                    reply = await stub.Register(wire.register_request(info), timeout=RPC_TIMEOUT_S)
                    coordinator_id, interval_s = reply.coordinator_id, reply.heartbeat_interval_s or retry_s
                    log.info(
                        "registered %s (%s, layers %s) with coordinator %s",
                        info.name,
                        info.address,
                        info.layers,
                        coordinator_addr,
                    )
                else:
                    s = await _stats(stats_fn)
                    hb = wire.heartbeat_request(
                        info.name,
                        coordinator_id,
                        kv_used_tokens=int(s.kv_used_tokens),
                        kv_capacity_tokens=int(s.kv_capacity_tokens),
                        queue_depth=int(s.queue_depth),
                    )
                    answer = await stub.Heartbeat(hb, timeout=RPC_TIMEOUT_S)
                    if not answer.known:
                        log.info(
                            "coordinator %s does not know %s (restarted?): registering again",
                            coordinator_addr,
                            info.name,
                        )
                        coordinator_id = None
                        continue
                    interval_s = answer.heartbeat_interval_s or interval_s
                await _sleep(interval_s, stop)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
                    log.error("coordinator %s refused %s: %s", coordinator_addr, info.name, exc.details())
                elif coordinator_id is not None:
                    log.warning("lost coordinator %s (%s); will register again", coordinator_addr, exc.code())
                coordinator_id = None
                await _sleep(retry_s, stop)
    finally:
        if coordinator_id is not None:
            try:
                await stub.Deregister(wire.deregister_request(info.name), timeout=0.5)
            except (grpc.aio.AioRpcError, asyncio.CancelledError):
                pass
        await channel.close()


async def _sleep(seconds: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
