"""Routes every job service has: liveness, readiness with the runner's load, and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from services.jobs.metrics import CONTENT_TYPE_LATEST, JobMetrics
from services.jobs.runner import JobRunner
from services.jobs.store import JobStore


def add_health_routes(
    router: APIRouter, kind: str, store: JobStore, runner: JobRunner, max_workers: int
) -> None:
    metrics = JobMetrics(kind, store, runner)

    @router.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/metrics", tags=["health"], response_class=Response)
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/readyz", tags=["health"])
    def readyz() -> dict[str, Any]:
        return {"status": "ok", "running": runner.running(), "max_workers": max_workers}
