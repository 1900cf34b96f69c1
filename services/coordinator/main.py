"""Build the coordinator (model, plan, registry, routing, engine, HTTP app, gRPC control server) and serve it.

`serve(settings)` runs until SIGINT/SIGTERM; it prints one line `COORDINATOR http=HOST:PORT grpc=HOST:PORT`
once both servers listen (what `brl run` waits for).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from planner import bundled
from planner.cluster import Cluster
from planner.errors import BrlError, InvalidInput
from planner.model import ModelSpec
from planner.plan import Plan
from planner.profile import ProfileSet
from protos import coordinator_pb2_grpc
from services.coordinator import planswap
from services.coordinator.engine import Engine, EngineLimits
from services.coordinator.eventlog import open_event_log
from services.coordinator.fleet import Fleet
from services.coordinator.leader import Leadership
from services.coordinator.metrics import Metrics
from services.coordinator.registry import Registry
from services.coordinator.routes import build_app
from services.coordinator.servicer import ControlServicer
from services.coordinator.serving import OpenAIServing, Tokenizer
from services.coordinator.settings import CoordinatorSettings

log = logging.getLogger("brl.coordinator")


@dataclass
class Coordinator:
    settings: CoordinatorSettings
    model: ModelSpec
    registry: Registry
    fleet: Fleet
    engine: Engine
    serving: OpenAIServing
    metrics: Metrics
    coordinator_id: str
    started_s: float
    plan_origin: dict[str, Any] = field(default_factory=dict)  # where the loaded plan came from
    controller: Any = None  # services.controller.controller.Controller with auto_replan
    leadership: Leadership | None = None  # replicas: who leads, and the plan sync (set by build)

    def is_leader(self) -> bool:
        """Whether this replica's rollout controller may act (always, alone): services/coordinator/leader.py."""
        return self.leadership is None or self.leadership.is_leader()

    def health(self) -> dict[str, Any]:
        self.fleet.rebuild()
        return {
            "status": "ok",
            "replica": self.coordinator_id,  # replica name + incarnation, as the workers know it
            "model": self.settings.model_name,
            "workers": self.registry.names(),
            "idle": sorted(
                self.registry.idle()
            ),  # registered, holding no layers: a controller may give them some
            "routable": self.fleet.routable,
            "reason": self.fleet.no_route_reason or None,
            "running": len(self.engine.running),
            "waiting": len(self.engine.waiting),
            "plan": self.fleet.plan.method,
            "replicas": None if self.leadership is None else self.leadership.status(),
            "fleet": {
                name: {
                    "address": w.info.address,
                    "layers": [w.info.layers.start, w.info.layers.end],
                    "gpu_type": w.info.gpu_type,
                    "kv_used_tokens": w.kv_used_tokens,
                    "kv_capacity_tokens": w.info.kv_capacity_tokens,
                    "queue_depth": w.queue_depth,
                }
                for name, w in sorted(self.registry.alive().items())
            },
        }

    def refresh_gauges(self) -> None:
        self.engine._update_gauges()


def load_model(settings: CoordinatorSettings) -> tuple[ModelSpec, Path]:
    from services.modelstore.store import ensure_model

    model_dir = settings.model_dir or ensure_model(settings.model)
    try:
        spec = bundled.model(settings.model)
    except BrlError:
        spec = bundled.model(str(model_dir))
    return spec, Path(model_dir)


def coordinator_session_id(replica_id: str | None) -> str:
    """`<replica>.<incarnation>`: what workers know this process by, and the middle of every request id it
    makes. The replica id names it to people; the random incarnation differs at every start, so a worker
    tells a restarted replica from the one it replaced, and no two processes ever make the same id."""
    replica = replica_id or socket.gethostname().split(".")[0] or "coordinator"
    return f"{replica}.{uuid.uuid4().hex[:8]}"


def build(settings: CoordinatorSettings, *, tokenizer: Tokenizer | None = None) -> Coordinator:
    """Everything but the network: raises planner.errors types on bad settings or files."""
    from planner.formats.plan_json import load_plan

    spec, model_dir = load_model(settings)
    if settings.plan and settings.plan_id:
        raise InvalidInput(
            "give a plan file or a plan id of the planner service, not both",
            source="coordinator settings (BRL_* / flags)",
            field="plan_id",
        )
    plan: Plan | None = load_plan(settings.plan) if settings.plan else None
    plan_origin: dict[str, Any] = {"source": "file", "path": str(settings.plan)} if settings.plan else {}
    if settings.plan_id:
        plan = planswap.fetch_at_start(settings.planner_url, settings.plan_id, settings.planner_api_key)
        plan_origin = {"source": "planner", "plan_id": settings.plan_id}
    # A named cluster wins; otherwise the fleet the plan embeds (None for plans older than that).
    cluster: Cluster | None = bundled.cluster(settings.cluster) if settings.cluster else None
    if cluster is None and plan is not None:
        cluster = plan.cluster
    profiles: ProfileSet | None
    try:
        profiles = bundled.profiles(spec)
    except BrlError:
        profiles = None
    expiry_s = settings.heartbeat_interval_s * settings.heartbeat_misses
    registry = Registry(time.monotonic, expiry_s=expiry_s, num_layers=spec.num_layers)
    fleet = Fleet(
        registry,
        spec,
        policy=settings.policy,
        dead_end=settings.dead_end,
        plan=plan,
        cluster=cluster,
        profiles=profiles,
        seed=settings.seed,
    )
    metrics = Metrics(settings.model_name)
    limits = EngineLimits(
        max_waiting=settings.max_waiting,
        max_running=settings.max_running,
        max_batch_tokens=settings.max_batch_tokens,
        pipeline_depth=settings.pipeline_depth,
        max_retries=settings.max_retries,
    )
    session_id = coordinator_session_id(settings.replica_id)
    engine = Engine(
        fleet,
        metrics,
        limits=limits,
        events=open_event_log(settings.log_dir),
        step_timeout_s=settings.step_timeout_s,
        session_id=session_id,
    )
    tok = tokenizer or Tokenizer(model_dir)
    aliases = {settings.model, spec.name, model_dir.name}
    serving = OpenAIServing(
        engine,
        tok,
        model_name=settings.model_name,
        aliases=sorted(aliases),
        default_max_tokens=settings.default_max_tokens,
        max_prompt_chars=settings.max_prompt_chars,
    )
    coord = Coordinator(
        settings,
        spec,
        registry,
        fleet,
        engine,
        serving,
        metrics,
        coordinator_id=session_id,
        started_s=time.time(),
        plan_origin=plan_origin,
    )
    coord.leadership = Leadership(coord)
    return coord


async def start_grpc(coord: Coordinator) -> tuple[grpc.aio.Server, int]:
    s = coord.settings
    server = grpc.aio.server()
    servicer = ControlServicer(
        coord.registry,
        coordinator_id=coord.coordinator_id,
        heartbeat_interval_s=s.heartbeat_interval_s,
        leadership=coord.leadership,
    )
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("brl.coordinator.Coordinator", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port(f"{s.host}:{s.grpc_port}")
    if port == 0:
        raise OSError(f"cannot listen for gRPC on {s.host}:{s.grpc_port}")
    await server.start()
    return server, port


def bind_http(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class DrainingServer(uvicorn.Server):
    """uvicorn, but on SIGTERM/SIGINT the engine first ends every request cleanly (error event + [DONE] on
    streams, 503 otherwise) and frees their KV on the workers; only then do connections close. Without it
    uvicorn would cut the streams at its graceful timeout and the workers would keep the KV."""

    def __init__(self, config: uvicorn.Config, engine: Engine) -> None:
        super().__init__(config)
        self.engine = engine

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.engine.drain()
        await super().shutdown(sockets=sockets)


async def serve(settings: CoordinatorSettings, *, coord: Coordinator | None = None) -> None:
    coord = coord or build(settings)
    sock = bind_http(settings.host, settings.http_port)
    http_port = sock.getsockname()[1]
    grpc_server, grpc_port = await start_grpc(coord)
    await coord.engine.start()
    if settings.auto_replan and coord.controller is None:
        from services.controller.controller import Controller

        coord.controller = Controller(coord).attach()
    if coord.leadership is not None:
        coord.leadership.start()
    config = uvicorn.Config(
        build_app(coord), log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=3
    )
    server = DrainingServer(config, coord.engine)
    print(f"COORDINATOR http={settings.host}:{http_port} grpc={settings.host}:{grpc_port}", flush=True)
    try:
        await server.serve(sockets=[sock])
    finally:
        if coord.controller is not None:
            await coord.controller.close()  # no rollout starts or continues while shutting down
        if coord.leadership is not None:
            await coord.leadership.close()
        await coord.engine.stop()
        await grpc_server.stop(grace=0.5)
        coord.serving.close()
        sock.close()


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run(settings: CoordinatorSettings) -> int:
    configure_logging()
    asyncio.run(serve(settings))
    return 0
