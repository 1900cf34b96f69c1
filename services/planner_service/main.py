"""Build the planner service (REST app + gRPC servicer over one PlannerService) and serve it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from services.jobs import http
from services.jobs.serving import RunningServers, open_job_service, serve_job_service
from services.planner_service import pages, servicer
from services.planner_service.routes import build_router
from services.planner_service.service import PlannerService
from services.planner_service.settings import ENV_PREFIX, PlannerSettings

DESCRIPTION = """Plan a fleet: submit a placement job (cluster + model + method + time limit), poll its progress
(incumbent, bound, gap), fetch the plan; evaluate a placement of your own (max-flow, bounds, bottlenecks);
re-plan a plan after nodes are lost, join or slow down (few layers moved; optionally judged by the simulator).
Mutating calls need `Authorization: Bearer <BRL_API_KEY>` when the service has a key."""


def build_app(service: PlannerService) -> FastAPI:
    app = FastAPI(title="BRL planner service", version="1", description=DESCRIPTION)
    http.install(app, max_body_bytes=service.settings.max_body_bytes)
    app.include_router(build_router(service))
    pages.install(app, service)  # /ui: job pages, out of the OpenAPI schema
    return app


def settings_from(overrides: Mapping[str, Any] | None = None) -> PlannerSettings:
    return PlannerSettings.from_env(ENV_PREFIX, overrides)


def start(settings: PlannerSettings) -> tuple[RunningServers, PlannerService]:
    """Open the store (failing jobs a previous process left active), bind HTTP and gRPC; not yet serving HTTP."""
    service = PlannerService(settings)
    servers = open_job_service(
        settings,
        build_app(service),
        add_grpc=lambda server: servicer.add_to_server(service, server),
        grpc_service_name=servicer.SERVICE_NAME,
        on_close=service.close,
        interrupted=service.interrupted,
        jobs_noun="plan job(s)",
    )
    return servers, service


def serve(settings: PlannerSettings) -> int:
    servers, _ = start(settings)
    return serve_job_service(servers, settings, "planner service")
