"""gRPC handlers of a worker: a few lines per RPC (parse with wire, call the batcher, render)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from services.grpc_errors import status
from services.worker import wire
from services.worker.batcher import Batcher
from services.worker.loader import LayerLoader
from services.worker.records import WorkerInfo

InfoFn = Callable[[], WorkerInfo]


class WorkerServicer:
    def __init__(self, batcher: Batcher, info: InfoFn, loader: LayerLoader) -> None:
        self.batcher = batcher
        self.info = info
        self.loader = loader

    async def Forward(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        """Batches are handled concurrently (they join the same step queue); replies go out as they finish."""
        write_lock = asyncio.Lock()
        tasks: set[asyncio.Task[None]] = set()

        async def handle(msg: Any) -> None:
            received = time.perf_counter()
            batch = wire.batch_from_msg(msg)
            results = await self.batcher.submit(batch.segments)
            service_ms = (time.perf_counter() - received) * 1e3
            async with write_lock:
                with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
                    await context.write(wire.results_to_msg(batch.batch_id, results, service_ms))

        async for msg in requests:
            task = asyncio.get_running_loop().create_task(handle(msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def Info(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return wire.info_to_msg(self.info())

    async def Stats(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return wire.stats_to_msg(self.loader.stats(self.batcher.stats()))

    async def Release(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return wire.release_reply(self.batcher.release(wire.release_from_msg(request)))

    async def Load(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            report = await self.loader.load(wire.load_from_msg(request))
        except Exception as exc:  # typed errors through the one table; anything else is logged there
            await context.abort(*status(exc))
        return wire.load_reply(report)
