"""Where a plan named by id comes from: the planner service over HTTP, or its SQLite file when both
services share a volume. Returns the plan JSON and the fleet/model fields it was planned for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from planner.errors import InvalidInput, Unavailable
from services.errors_table import Conflict, NotFound
from services.jobs.store import SUCCEEDED, JobStore
from services.simulator_service.settings import SimulatorSettings

FLEET_FIELDS = ("cluster", "cluster_text", "cluster_spec", "model", "hf_config", "model_name", "profiles")


def _from_job(
    job_id: str, status: str, request: Mapping[str, Any], result: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    if status != SUCCEEDED or not result or "plan" not in result:
        raise Conflict(f"plan {job_id} is {status}; only a succeeded plan can be simulated")
    fleet = {k: request[k] for k in FLEET_FIELDS if request.get(k) is not None}
    return dict(result["plan"]), fleet


def fetch_plan(settings: SimulatorSettings, plan_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if settings.planner_db:
        job = JobStore(settings.planner_db).get(plan_id, kind="plan")
        if job is None:
            raise NotFound("plan", plan_id)
        return _from_job(plan_id, job.status, job.request, job.result)
    if settings.planner_url:
        url = f"{settings.planner_url.rstrip('/')}/v1/plans/{plan_id}"
        headers = {"Authorization": f"Bearer {settings.planner_api_key}"} if settings.planner_api_key else {}
        try:
            response = httpx.get(url, headers=headers, timeout=10.0)
        except httpx.HTTPError as exc:
            raise Unavailable(f"planner service at {settings.planner_url} unreachable: {exc}") from None
        if response.status_code == 404:
            raise NotFound("plan", plan_id)
        if response.status_code != 200:
            raise Unavailable(f"planner service answered {response.status_code} for plan {plan_id}")
        job = response.json()
        return _from_job(plan_id, str(job.get("status")), job.get("request") or {}, job.get("result"))
    raise InvalidInput(
        "this service has no planner configured (BRL_SIMULATOR_PLANNER_URL or _PLANNER_DB); "
        "send the plan inline as `plan`",
        field="plan_id",
    )
