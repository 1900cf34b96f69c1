"""Stub workers for bench/coordinator.py: real gRPC servers on 127.0.0.1 that speak the worker protocol
(protos/worker.proto) and register with every coordinator replica like a real worker, but hold no model:
every step is answered at once with a fixed token, so the coordinator is the only thing doing work."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from planner.placement import LayerRange
from services.coordinator.registry import WorkerInfo
from services.worker import wire
from services.worker.records import OK, TokenResult, WorkerStats
from services.worker.records import WorkerInfo as ShardInfo
from services.worker.registration import keep_registered

# Not an end-of-sequence id of SmolLM2: requests run to max_tokens.
STUB_TOKEN_ID = 42
STUB_KV_TOKENS = 1_000_000


@dataclass(frozen=True)
class StubSpec:
    name: str
    start: int
    end: int


class StubWorker:
    """The Worker service answered from nothing. Only the first hop of a chain is ever called (it would
    forward to the rest): it answers for the whole chain, as if every later hop were instant too."""

    def __init__(self, spec: StubSpec, num_layers: int) -> None:
        self.spec = spec
        self.num_layers = num_layers
        self.steps = 0

    async def Forward(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for msg in requests:
            batch = wire.batch_from_msg(msg)
            self.steps += 1
            results = [
                TokenResult(s.request_id, None if (s.skip_sample or s.abort) else STUB_TOKEN_ID, 0.0, OK)
                for s in batch.segments
            ]
            yield wire.results_to_msg(batch.batch_id, results, 0.0)

    async def Info(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return wire.info_to_msg(
            ShardInfo(
                "stub",
                self.num_layers,
                self.spec.start,
                self.spec.end,
                0,
                0,
                "float32",
                "stub",
                self.spec.name,
                STUB_KV_TOKENS,
            )
        )

    async def Stats(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return wire.stats_to_msg(WorkerStats(kv_capacity_tokens=STUB_KV_TOKENS, steps=self.steps))

    async def Release(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return wire.release_reply(len(wire.release_from_msg(request)))

    async def Load(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "a stub worker holds no weights to load")


@dataclass
class Heartbeat:
    """What each heartbeat reports (services.worker.registration.HeartbeatStats): an empty cache. The class
    itself is the stats function: each heartbeat gets a fresh one."""

    kv_used_tokens: int = 0
    kv_capacity_tokens: int = STUB_KV_TOKENS
    queue_depth: int = 0


class StubFleet:
    """Start with `await start(coordinators)` (comma-separated gRPC addresses), stop with `await stop()`."""

    def __init__(self, specs: tuple[StubSpec, ...], num_layers: int, model: str) -> None:
        self.specs = specs
        self.num_layers = num_layers
        self.model = model
        self.servers: list[grpc.aio.Server] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.workers: list[StubWorker] = []

    async def start(self, coordinators: str) -> None:
        for spec in self.specs:
            worker = StubWorker(spec, self.num_layers)
            server = grpc.aio.server()
            wire.add_servicer(worker, server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            info = WorkerInfo(
                spec.name,
                f"127.0.0.1:{port}",
                LayerRange(spec.start, spec.end),
                "cpu",
                STUB_KV_TOKENS,
                model=self.model,
                backend="stub",
            )
            self.tasks.append(asyncio.create_task(keep_registered(coordinators, info, Heartbeat)))
            self.servers.append(server)
            self.workers.append(worker)

    def steps(self) -> int:
        return sum(w.steps for w in self.workers)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(s.stop(grace=0.2) for s in self.servers))
