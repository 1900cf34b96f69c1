"""Worker side of the control plane: register with the coordinator, heartbeat real KV use, and register
again by itself whenever the coordinator restarts or was unreachable. Deregisters on clean shutdown."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import grpc

from protos import coordinator_pb2_grpc as pb_grpc
from services.coordinator import wire
from services.coordinator.registry import WorkerInfo

__all__ = ["HeartbeatStats", "WorkerInfo", "keep_registered"]

log = logging.getLogger("brl.worker.registration")
RPC_TIMEOUT_S = 2.0
# gRPC's default reconnect backoff grows to 120 s: after a long coordinator outage a worker would come back
# minutes late. Capped at 2 s, workers re-register within ~2 s of the coordinator returning.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


class HeartbeatStats(Protocol):
    """What a heartbeat reports; the worker's own stats object has these attributes."""

    kv_used_tokens: int
    kv_capacity_tokens: int
    queue_depth: int


StatsFn = Callable[[], HeartbeatStats | Awaitable[HeartbeatStats]]
InfoFn = Callable[[], WorkerInfo]
HeldFn = Callable[[], Iterable[str]]
ResetFn = Callable[[frozenset[str]], Any]


async def _stats(stats_fn: StatsFn) -> HeartbeatStats:
    value = stats_fn()
    if inspect.isawaitable(value):
        return await value
    return value


async def keep_registered(
    coordinator_addr: str,
    info: WorkerInfo | InfoFn,
    stats_fn: StatsFn,
    *,
    retry_s: float = 0.5,
    stop: asyncio.Event | None = None,
    held_requests: HeldFn | None = None,
    on_new_coordinator: ResetFn | None = None,
) -> None:
    """Runs until cancelled (or `stop` is set). Start it with asyncio.create_task next to the worker server.

    `info` says what this worker serves (name, address, layers, GPU type, KV capacity in tokens); given as
    a function, it is read before every heartbeat, and a change (a live Load moved the serving range)
    registers the worker again with the new value;
    `stats_fn()` (sync or async) returns an object with kv_used_tokens, kv_capacity_tokens, queue_depth.

    Requests of a coordinator that crashed (or that dropped this worker) can never finish: when the worker
    registers again with a coordinator of another id, or after it was told it is unknown,
    `on_new_coordinator(ids)` (sync or async) must free them. `ids` are those `held_requests()` returned
    just before the Register call, so nothing the new coordinator routes here after it is touched.
    """
    channel = grpc.aio.insecure_channel(coordinator_addr, options=CHANNEL_OPTIONS)
    stub = pb_grpc.CoordinatorStub(channel)
    coordinator_id: str | None = None
    last_id: str | None = None  # the coordinator this worker served before, across re-registrations
    dropped = False  # the coordinator said it does not know this worker: it gave up its requests here
    interval_s = retry_s
    current: InfoFn = info if callable(info) else (lambda: info)
    registered: WorkerInfo | None = None
    try:
        while stop is None or not stop.is_set():
            try:
                now = current()
                if coordinator_id is not None and now != registered:
                    coordinator_id = None  # same coordinator: registering again keeps its requests here
                if coordinator_id is None:
                    info_now = registered = now
                    held = frozenset(held_requests()) if held_requests is not None else frozenset()
                    reply = await stub.Register(wire.register_request(info_now), timeout=RPC_TIMEOUT_S)
                    coordinator_id, interval_s = reply.coordinator_id, reply.heartbeat_interval_s or retry_s
                    stale = last_id is not None and (dropped or last_id != coordinator_id)
                    last_id, dropped = coordinator_id, False
                    if stale and on_new_coordinator is not None:
                        log.info("%s frees %d requests of a former coordinator", now.name, len(held))
                        done = on_new_coordinator(held)
                        if inspect.isawaitable(done):
                            await done
                    log.info(
                        "registered %s (%s, layers %s) with coordinator %s",
                        now.name,
                        now.address,
                        now.layers,
                        coordinator_addr,
                    )
                else:
                    s = await _stats(stats_fn)
                    hb = wire.heartbeat_request(
                        now.name,
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
                            now.name,
                        )
                        coordinator_id, dropped = None, True
                        continue
                    interval_s = answer.heartbeat_interval_s or interval_s
                await _sleep(interval_s, stop)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
                    log.error(
                        "coordinator %s refused %s: %s", coordinator_addr, current().name, exc.details()
                    )
                elif coordinator_id is not None:
                    log.warning("lost coordinator %s (%s); will register again", coordinator_addr, exc.code())
                coordinator_id = None
                await _sleep(retry_s, stop)
    finally:
        if coordinator_id is not None:
            try:
                await stub.Deregister(wire.deregister_request(current().name), timeout=0.5)
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
