"""Build the simulator service (REST app + gRPC servicer over one SimulatorService) and serve it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from services.jobs import http
from services.jobs.serving import GrpcSpec, RunningServers
from services.simulator_service import servicer
from services.simulator_service.routes import build_router
from services.simulator_service.service import SimulatorService
from services.simulator_service.settings import ENV_PREFIX, SimulatorSettings

log = logging.getLogger(__name__)

DESCRIPTION = """Dry-run a plan before rolling it out: submit a simulation (a plan by id or inline, mode, routing
policy, workload, duration, seed), poll it, read the metrics JSON and the PNG plots. The same engine as
`brl simulate`. Mutating calls need `Authorization: Bearer <BRL_API_KEY>` when the service has a key."""


def build_app(service: SimulatorService) -> FastAPI:
    app = FastAPI(title="BRL simulator service", version="1", description=DESCRIPTION)
    http.install(app, max_body_bytes=service.settings.max_body_bytes)
    app.include_router(build_router(service))
    return app


def settings_from(overrides: Mapping[str, Any] | None = None) -> SimulatorSettings:
    return SimulatorSettings.from_env(ENV_PREFIX, overrides)


def start(settings: SimulatorSettings) -> tuple[RunningServers, SimulatorService]:
    """Open the store (failing jobs a previous process left active), bind HTTP and gRPC; not yet serving HTTP."""
    service = SimulatorService(settings)
    if service.interrupted:
        log.warning("marked %d interrupted simulation(s) failed", len(service.interrupted))
    if settings.api_key is None:
        log.warning("no BRL_API_KEY set: mutating calls are open to anyone who can reach %s", settings.host)
    grpc_spec = None
    if settings.grpc_port is not None:
        grpc_spec = GrpcSpec(
            lambda server: servicer.add_to_server(service, server),
            [servicer.SERVICE_NAME],
            settings.grpc_port,
        )
    try:
        servers = RunningServers(
            build_app(service),
            host=settings.host,
            port=settings.port,
            grpc_spec=grpc_spec,
            on_close=service.close,
        )
    except Exception:
        service.close()
        raise
    return servers, service


def serve(settings: SimulatorSettings) -> int:
    servers, _ = start(settings)
    grpc_text = f", gRPC on port {servers.grpc_port}" if servers.grpc_port is not None else ""
    print(f"simulator service on {servers.base_url}{grpc_text} (store {settings.db_path})", flush=True)
    servers.run_foreground()
    return 0
