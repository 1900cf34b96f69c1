"""Build the simulator service (REST app + gRPC servicer over one SimulatorService) and serve it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from services.jobs import http
from services.jobs.serving import RunningServers, open_job_service, serve_job_service
from services.simulator_service import pages, servicer
from services.simulator_service.routes import build_router
from services.simulator_service.service import SimulatorService
from services.simulator_service.settings import ENV_PREFIX, SimulatorSettings

DESCRIPTION = """Dry-run a plan before rolling it out: submit a simulation (a plan by id or inline, mode, routing
policy, workload, duration, seed), poll it, read the metrics JSON and the PNG plots. The same engine as
`brl simulate`. Mutating calls need `Authorization: Bearer <BRL_API_KEY>` when the service has a key."""


def build_app(service: SimulatorService) -> FastAPI:
    app = FastAPI(title="BRL simulator service", version="1", description=DESCRIPTION)
    http.install(app, max_body_bytes=service.settings.max_body_bytes)
    app.include_router(build_router(service))
    pages.install(app, service)  # /ui: job pages, out of the OpenAPI schema
    return app


def settings_from(overrides: Mapping[str, Any] | None = None) -> SimulatorSettings:
    return SimulatorSettings.from_env(ENV_PREFIX, overrides)


def start(settings: SimulatorSettings) -> tuple[RunningServers, SimulatorService]:
    """Open the store (failing jobs a previous process left active), bind HTTP and gRPC; not yet serving HTTP."""
    service = SimulatorService(settings)
    servers = open_job_service(
        settings,
        build_app(service),
        add_grpc=lambda server: servicer.add_to_server(service, server),
        grpc_service_name=servicer.SERVICE_NAME,
        on_close=service.close,
        interrupted=service.interrupted,
        jobs_noun="simulation(s)",
    )
    return servers, service


def serve(settings: SimulatorSettings) -> int:
    servers, _ = start(settings)
    return serve_job_service(servers, settings, "simulator service")
