"""A worker process: build the gRPC server (data path, health, reflection) around one shard, and serve.

`build_server(settings)` -> WorkerServer (server + port + batcher), used by tests in-process;
`serve(settings)` runs it until SIGINT/SIGTERM, registering with the coordinator when one is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.modelstore import ensure_model
from services.worker import wire
from services.worker.backends import Backend, ShardSpec, make_backend
from services.worker.batcher import Batcher, step_executor
from services.worker.client import CHANNEL_OPTIONS, Connections
from services.worker.loader import LayerLoader
from services.worker.records import LoadOrder, WorkerInfo
from services.worker.servicer import WorkerServicer
from services.worker.settings import WorkerSettings

log = logging.getLogger("brl.worker")


@dataclass
class WorkerServer:
    server: grpc.aio.Server
    port: int
    address: str
    batcher: Batcher
    connections: Connections
    settings: WorkerSettings
    health: health.aio.HealthServicer
    loader: LayerLoader | None = None

    def info(self) -> WorkerInfo:
        b = self.batcher.backend
        return WorkerInfo(
            model=b.spec.model,
            num_layers=b.shape.num_layers,
            start_layer=b.spec.start,
            end_layer=b.spec.end,
            hidden_size=b.shape.hidden_size,
            vocab_size=b.shape.vocab_size,
            activation_dtype=b.activation_dtype,
            backend=b.name,
            name=self.settings.name or f"worker-{self.port}",
            kv_capacity_tokens=b.kv_capacity_tokens,
        )

    async def stop(self, grace_s: float | None = 1.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        if self.loader is not None:
            await self.loader.close()
        await self.batcher.close()
        await self.connections.close()
        self.batcher.backend.close()


def _reachable_host(host: str) -> str:
    """Others cannot dial 0.0.0.0: a wildcard bind advertises this machine's own address instead."""
    if host not in ("0.0.0.0", "::", "[::]", ""):
        return host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def shard_spec(settings: WorkerSettings) -> ShardSpec:
    start, end = settings.layer_range
    return ShardSpec(
        model=settings.model,
        model_dir=ensure_model(settings.model),
        start=start,
        end=end,
        dtype=settings.dtype,
        kv_capacity_tokens=settings.kv_capacity_tokens,
        kv_cache_bytes=int(settings.kv_cache_gib * 2**30),
        max_batch_tokens=settings.max_batch_tokens,
    )


async def build_server(settings: WorkerSettings, *, backend: Backend | None = None) -> WorkerServer:
    """Loads the shard (unless given one), binds host:port (0 = any free port) and starts serving."""
    torch.set_num_threads(settings.threads)
    executor = step_executor(settings.threads)
    if backend is None:
        spec = shard_spec(settings)
        backend = await asyncio.get_running_loop().run_in_executor(
            executor, make_backend, settings.backend, spec
        )
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"cannot bind {settings.host}:{settings.port}")
    address = settings.advertise or f"{_reachable_host(settings.host)}:{port}"
    connections = Connections()
    batcher = Batcher(
        backend,
        connections=connections,
        address=address,
        max_batch_tokens=settings.max_batch_tokens,
        executor=executor,
        speed_factor=settings.speed_factor,
    )
    health_servicer = health.aio.HealthServicer()
    worker = WorkerServer(server, port, address, batcher, connections, settings, health_servicer)

    def rebuild(order: LoadOrder) -> Callable[[], Backend]:
        update = {"layers": f"{order.start_layer}:{order.end_layer}"}
        if order.model:
            update["model"] = order.model
        changed = settings.model_copy(update=update)
        name = order.backend or batcher.backend.name
        return lambda: make_backend(name, shard_spec(changed))

    worker.loader = LayerLoader(
        batcher, rebuild=rebuild, info=worker.info, max_loaded_layers=settings.max_loaded_layers
    )
    wire.add_servicer(WorkerServicer(batcher, worker.info, worker.loader), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (wire.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    await server.start()
    batcher.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(wire.SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    return worker


async def _keep_registered(worker: WorkerServer, stop: asyncio.Event) -> None:
    try:
        from planner.placement import LayerRange
        from services.worker.registration import IdleWorker, keep_registered
        from services.worker.registration import WorkerInfo as RegInfo
    except ImportError:  # the control plane is optional for a bare data-path worker
        log.warning("coordinator registration is not available in this build")
        return
    s = worker.settings

    def info() -> RegInfo | IdleWorker:
        # What a coordinator routes here: the serving range, which a live Load changes (a change makes
        # keep_registered register again with it); no range at all when the worker holds no layers.
        b = worker.batcher.backend
        if b.spec.start == b.spec.end:
            return IdleWorker(
                worker.info().name,
                worker.address,
                s.gpu_type,
                b.kv_capacity_tokens,
                s.model,
                b.name,
                s.speed_factor,
            )
        return RegInfo(
            name=worker.info().name,
            address=worker.address,
            layers=LayerRange(b.spec.start, b.spec.end),
            gpu_type=s.gpu_type,
            kv_capacity_tokens=b.kv_capacity_tokens,
            model=s.model,
            backend=b.name,
            speed_factor=s.speed_factor,
        )

    stats = cast(Any, worker.batcher.stats)  # WorkerStats has the heartbeat's fields (read-only)
    batcher = worker.batcher

    def free_stale(ids: frozenset[str]) -> None:
        # The former coordinator is gone: nobody will ever finish or release these requests.
        freed = batcher.release(sorted(ids))
        log.info("freed %d of %d requests left by a former coordinator", freed, len(ids))

    await keep_registered(
        s.coordinator or "",
        info,
        stats,
        stop=stop,
        held_requests=batcher.request_ids,
        on_new_coordinator=free_stale,
        request_tokens=batcher.cached_tokens,
    )


async def serve(settings: WorkerSettings, *, on_ready: Callable[[WorkerServer], None] | None = None) -> None:
    worker = await build_server(settings)
    if on_ready is not None:
        on_ready(worker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    registration = loop.create_task(_keep_registered(worker, stop)) if settings.coordinator else None
    await stop.wait()
    if registration is not None:
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(registration, timeout=2.0)
    await worker.stop()


def print_address(worker: WorkerServer) -> None:
    """The first stdout line is the bound address, so a parent process can read it."""
    sys.stdout.write(f"{worker.address}\n")
    sys.stdout.flush()
