"""REST routes of the planner service: a few lines each — parse, call PlannerService, render."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from services.jobs.http import JobList, JobView, api_key_checker, error_responses, job_view
from services.jobs.routes import add_health_routes
from services.planner_service.bodies import (
    EvaluationRequest,
    EvaluationResult,
    PlanRequest,
    PlanSubmitted,
    ReplanRequest,
)
from services.planner_service.jobs import method_names
from services.planner_service.service import KIND, REPLAN, PlannerService

JOB_ID = Path(pattern=r"^[0-9a-f]{32}$", description="job id (32 hex digits)")


def build_router(service: PlannerService) -> APIRouter:
    router = APIRouter()
    auth = [Depends(api_key_checker(service.settings.api_key))]

    add_health_routes(router, KIND, service.store, service.runner, service.settings.max_workers)

    @router.get("/v1/methods", tags=["plans"])
    def methods() -> dict[str, list[str]]:
        return {"methods": list(method_names())}

    @router.post(
        "/v1/plans",
        tags=["plans"],
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=auth,
        responses=error_responses(400, 401, 413, 422, 429),
    )
    def submit_plan(body: PlanRequest, request: Request, response: Response) -> PlanSubmitted:
        job = service.submit(body)
        url = str(request.url_for("get_plan", job_id=job.id))
        response.headers["Location"] = url
        return PlanSubmitted(id=job.id, status=job.status, url=url)

    @router.get("/v1/plans", tags=["plans"], responses=error_responses(400, 422))
    def list_plans(
        status: Annotated[str | None, Query(max_length=20)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> JobList:
        jobs = service.list_jobs(status=status, limit=limit, offset=offset)
        return JobList(items=[job_view(j, full=False) for j in jobs], limit=limit, offset=offset)

    @router.get("/v1/plans/{job_id}", tags=["plans"], name="get_plan", responses=error_responses(404, 422))
    def get_plan(job_id: Annotated[str, JOB_ID]) -> JobView:
        return job_view(service.get(job_id))

    @router.get("/v1/plans/{job_id}/plan", tags=["plans"], responses=error_responses(404, 409, 422))
    def get_plan_json(job_id: Annotated[str, JOB_ID]) -> dict[str, Any]:
        """The bare plan JSON (brl-plan/1) of a succeeded job: what `brl` and the coordinator load."""
        return dict(service.plan(job_id))

    @router.post(
        "/v1/plans/{job_id}/cancel",
        tags=["plans"],
        dependencies=auth,
        responses=error_responses(401, 404, 422),
    )
    def cancel_plan(job_id: Annotated[str, JOB_ID]) -> JobView:
        return job_view(service.cancel(job_id))

    @router.delete(
        "/v1/plans/{job_id}",
        tags=["plans"],
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        dependencies=auth,
        responses=error_responses(401, 404, 409, 422),
    )
    def delete_plan(job_id: Annotated[str, JOB_ID]) -> Response:
        """Remove a finished plan job. A queued or running one answers 409: cancel it first (POST .../cancel)."""
        service.delete(job_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.post(
        "/v1/evaluations",
        tags=["evaluations"],
        dependencies=auth,
        responses=error_responses(400, 401, 413, 422),
    )
    def evaluate(body: EvaluationRequest) -> EvaluationResult:
        """Max-flow, bounds and bottlenecks of a given placement; with `save`, also stored as a plan."""
        return EvaluationResult.model_validate(service.evaluate(body))

    add_replan_routes(router, service, auth)
    return router


def add_replan_routes(router: APIRouter, service: PlannerService, auth: list[Any]) -> None:
    """`/v1/replans`: re-planning jobs, with the same verbs as `/v1/plans`."""

    @router.post(
        "/v1/replans",
        tags=["replans"],
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=auth,
        responses=error_responses(400, 401, 413, 422, 429),
    )
    def submit_replan(body: ReplanRequest, request: Request, response: Response) -> PlanSubmitted:
        """Re-plan a plan after nodes are lost, join or slow down (as `brl replan`). The result holds the
        new plan (it embeds the new fleet), the moves, layers and bytes to load, the transition time,
        max-flow before and after, and with `simulate` the simulated decode tok/s before and after."""
        job = service.submit_replan(body)
        url = str(request.url_for("get_replan", job_id=job.id))
        response.headers["Location"] = url
        return PlanSubmitted(id=job.id, status=job.status, url=url)

    @router.get("/v1/replans", tags=["replans"], responses=error_responses(400, 422))
    def list_replans(
        status: Annotated[str | None, Query(max_length=20)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> JobList:
        jobs = service.list_jobs(status=status, limit=limit, offset=offset, kind=REPLAN)
        return JobList(items=[job_view(j, full=False) for j in jobs], limit=limit, offset=offset)

    @router.get(
        "/v1/replans/{job_id}", tags=["replans"], name="get_replan", responses=error_responses(404, 422)
    )
    def get_replan(job_id: Annotated[str, JOB_ID]) -> JobView:
        return job_view(service.get(job_id, kind=REPLAN))

    @router.get("/v1/replans/{job_id}/plan", tags=["replans"], responses=error_responses(404, 409, 422))
    def get_replan_json(job_id: Annotated[str, JOB_ID]) -> dict[str, Any]:
        """The new plan JSON (brl-plan/1) of a succeeded re-plan (also at /v1/plans/{id}/plan)."""
        service.get(job_id, kind=REPLAN)
        return dict(service.plan(job_id))

    @router.post(
        "/v1/replans/{job_id}/cancel",
        tags=["replans"],
        dependencies=auth,
        responses=error_responses(401, 404, 422),
    )
    def cancel_replan(job_id: Annotated[str, JOB_ID]) -> JobView:
        return job_view(service.cancel(job_id, kind=REPLAN))

    @router.delete(
        "/v1/replans/{job_id}",
        tags=["replans"],
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        dependencies=auth,
        responses=error_responses(401, 404, 409, 422),
    )
    def delete_replan(job_id: Annotated[str, JOB_ID]) -> Response:
        """Remove a finished re-plan job; a queued or running one answers 409 (cancel it first)."""
        service.delete(job_id, kind=REPLAN)
        return Response(status_code=status.HTTP_204_NO_CONTENT)
