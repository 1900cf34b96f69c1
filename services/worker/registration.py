"""Worker side of the control plane: register with every coordinator replica, heartbeat real KV use, and
register again by itself whenever a replica restarts or was unreachable. Deregisters on clean shutdown.

Several replicas (`--coordinator a:50050,b:50050`, or `dns:NAME:PORT` for a headless Service whose
name resolves to every replica pod) each get one session; services/worker/leases.py splits the KV cache
between the live sessions and frees the requests of a replica whose heartbeats stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

import grpc

from protos import coordinator_pb2_grpc as pb_grpc
from services.coordinator import wire
from services.coordinator.registry import IdleWorker, WorkerInfo
from services.worker.coordinators import parse_coordinators, resolve_all
from services.worker.leases import SESSION_EXPIRY_S, Leases

__all__ = ["HeartbeatStats", "IdleWorker", "WorkerInfo", "keep_registered", "parse_coordinators"]

log = logging.getLogger("brl.worker.registration")
RPC_TIMEOUT_S = 2.0
# gRPC's default reconnect backoff grows to 120 s: after a long coordinator outage a worker would come back
# minutes late. Capped at 2 s, workers re-register within ~2 s of the coordinator returning.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
# A headless Service lists replica pods as they come and go: looked up again this often.
RESOLVE_EVERY_S = 2.0
# Expired sessions are looked for this often: a dead replica's KV is back within expiry + this.
REAP_EVERY_S = 0.25


class HeartbeatStats(Protocol):
    """What a heartbeat reports; the worker's own stats object has these attributes."""

    kv_used_tokens: int
    kv_capacity_tokens: int
    queue_depth: int


StatsFn = Callable[[], HeartbeatStats | Awaitable[HeartbeatStats]]
InfoFn = Callable[[], WorkerInfo | IdleWorker]  # IdleWorker: holds no layers yet
HeldFn = Callable[[], Iterable[str]]
ResetFn = Callable[[frozenset[str]], Any]
TokensFn = Callable[[], Mapping[str, int]]


async def _stats(stats_fn: StatsFn) -> HeartbeatStats:
    value = stats_fn()
    if inspect.isawaitable(value):
        return await value
    return value


async def _call(fn: ResetFn, ids: frozenset[str]) -> None:
    done = fn(ids)
    if inspect.isawaitable(done):
        await done


async def keep_registered(
    coordinator_addr: str,
    info: WorkerInfo | IdleWorker | InfoFn,
    stats_fn: StatsFn,
    *,
    retry_s: float = 0.5,
    stop: asyncio.Event | None = None,
    held_requests: HeldFn | None = None,
    on_new_coordinator: ResetFn | None = None,
    request_tokens: TokensFn | None = None,
    session_expiry_s: float = SESSION_EXPIRY_S,
) -> None:
    """Runs until cancelled (or `stop` is set). Start it with asyncio.create_task next to the worker server.

    `coordinator_addr`: one HOST:PORT, a comma-separated list of them (one per coordinator replica), or
    `dns:NAME:PORT` (every address NAME resolves to, looked up again every few seconds).
    `info` says what this worker serves (name, address, layers, GPU type, KV capacity in tokens); given as
    a function, it is read before every heartbeat, and a change (a live Load moved the serving range)
    registers the worker again with the new value;
    `stats_fn()` (sync or async) returns an object with kv_used_tokens, kv_capacity_tokens, queue_depth.
    `request_tokens()` (request id -> KV tokens held) lets each replica hear only its own use; without it
    every replica hears the worker's total.

    Requests of a coordinator that crashed (or that dropped this worker) can never finish: when the worker
    registers again with a coordinator of another id, after it was told it is unknown, or when a replica
    has not answered for `session_expiry_s`, `on_new_coordinator(ids)` (sync or async) must free them.
    `ids` come from `held_requests()` (read before the Register call, so nothing the new coordinator
    routes here after it is touched): those of the lost replica and those no live replica owns.
    """
    statics, dns = parse_coordinators(coordinator_addr)
    leases = Leases(time.monotonic, expiry_s=session_expiry_s)
    current: InfoFn = info if callable(info) else (lambda: info)
    sessions: dict[str, asyncio.Task[None]] = {}

    def start(addr: str) -> None:
        sessions[addr] = asyncio.create_task(
            _session(
                addr,
                leases,
                current,
                stats_fn,
                retry_s=retry_s,
                stop=stop,
                held_requests=held_requests,
                on_new_coordinator=on_new_coordinator,
                request_tokens=request_tokens,
            ),
            name=f"registration {addr}",
        )

    for addr in statics:
        start(addr)
    next_resolve = 0.0
    try:
        while stop is None or not stop.is_set():
            if dns is not None and time.monotonic() >= next_resolve:
                next_resolve = time.monotonic() + RESOLVE_EVERY_S
                found = set(await resolve_all(dns))
                for addr in sorted(found - set(sessions)):
                    log.info("coordinator replica %s appeared", addr)
                    start(addr)
                # A replica gone from the Service: stop calling it; its lease expires like a silent one's.
                for addr in sorted(set(sessions) - found):
                    if found:  # a failed lookup is no proof every replica left
                        sessions.pop(addr).cancel()
            for task in sessions.values():
                failed = task.exception() if task.done() and not task.cancelled() else None
                if failed is not None:
                    raise failed  # a bug, not a network error (those are retried): surface it
            await _reap(leases, held_requests, on_new_coordinator)
            await _sleep(REAP_EVERY_S, stop)
        # Stopped: every session deregisters by itself.
        if sessions:
            await asyncio.wait(list(sessions.values()), timeout=1.0)
    finally:
        for task in sessions.values():
            task.cancel()
        await asyncio.gather(*sessions.values(), return_exceptions=True)


async def _reap(leases: Leases, held_requests: HeldFn | None, on_lost: ResetFn | None) -> None:
    """Frees the requests of every replica whose session just expired; its share returns to the others
    with their next heartbeat."""
    for gone in leases.expire():
        log.warning(
            "coordinator %s (%s) silent for %.1f s: its session here expired",
            gone.address,
            gone.coordinator_id,
            leases.expiry_s,
        )
        if held_requests is None or on_lost is None:
            continue
        ids = frozenset(leases.orphans(gone.coordinator_id, held_requests()))
        if ids:
            log.info("freeing %d requests of expired coordinator %s", len(ids), gone.coordinator_id)
            await _call(on_lost, ids)


async def _session(
    coordinator_addr: str,
    leases: Leases,
    current: InfoFn,
    stats_fn: StatsFn,
    *,
    retry_s: float,
    stop: asyncio.Event | None,
    held_requests: HeldFn | None,
    on_new_coordinator: ResetFn | None,
    request_tokens: TokensFn | None,
) -> None:
    """One replica: register, heartbeat this replica's share and use, register again when needed."""
    channel = grpc.aio.insecure_channel(coordinator_addr, options=CHANNEL_OPTIONS)
    stub = pb_grpc.CoordinatorStub(channel)
    coordinator_id: str | None = None
    last_id: str | None = None  # the coordinator this worker served before, across re-registrations
    dropped = False  # the coordinator said it does not know this worker: it gave up its requests here
    interval_s = retry_s
    registered: WorkerInfo | IdleWorker | None = None
    try:
        while stop is None or not stop.is_set():
            try:
                now = current()
                if coordinator_id is not None and now != registered:
                    coordinator_id = None  # same coordinator: registering again keeps its requests here
                if coordinator_id is None:
                    registered = now
                    held = frozenset(held_requests()) if held_requests is not None else frozenset()
                    share = replace(now, kv_capacity_tokens=_share(leases, now, coordinator_addr))
                    reply = await stub.Register(
                        wire.register_request(share, leases.seen()), timeout=RPC_TIMEOUT_S
                    )
                    coordinator_id, interval_s = reply.coordinator_id, reply.heartbeat_interval_s or retry_s
                    leases.opened(coordinator_addr, coordinator_id, interval_s)
                    stale = last_id is not None and (dropped or last_id != coordinator_id)
                    if stale and last_id is not None and on_new_coordinator is not None:
                        ids = frozenset(leases.orphans(last_id, held))
                        log.info("%s frees %d requests of a former coordinator", now.name, len(ids))
                        if ids:
                            await _call(on_new_coordinator, ids)
                    last_id, dropped = coordinator_id, False
                    log.info(
                        "registered %s (%s, layers %s) with coordinator %s (%s)",
                        now.name,
                        now.address,
                        now.layers,
                        coordinator_addr,
                        coordinator_id,
                    )
                else:
                    s = await _stats(stats_fn)
                    used = int(s.kv_used_tokens)
                    if request_tokens is not None:
                        used = leases.used_by(coordinator_id, request_tokens())
                    hb = wire.heartbeat_request(
                        now.name,
                        coordinator_id,
                        kv_used_tokens=used,
                        kv_capacity_tokens=leases.share_tokens(int(s.kv_capacity_tokens), coordinator_addr),
                        queue_depth=int(s.queue_depth),
                        replicas=leases.seen(),
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
                    if not leases.renewed(coordinator_addr):
                        log.info("session with %s had expired: registering again", coordinator_addr)
                        coordinator_id = None
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
                leases.failed(coordinator_addr)
                coordinator_id = None
                await _sleep(retry_s, stop)
    finally:
        if coordinator_id is not None:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
                await stub.Deregister(wire.deregister_request(current().name), timeout=0.5)
        await channel.close()


def _share(leases: Leases, info: WorkerInfo | IdleWorker, address: str) -> int:
    return leases.share_tokens(int(info.kv_capacity_tokens), address)


async def _sleep(seconds: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
