"""REST routes of the simulator service: a few lines each — parse, call SimulatorService, render."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from services.jobs.http import JobList, JobView, api_key_checker, error_responses, job_view
from services.jobs.routes import add_health_routes
from services.simulator_service.bodies import SimulationRequest, SimulationSubmitted
from services.simulator_service.service import KIND, SimulatorService

JOB_ID = Path(pattern=r"^[0-9a-f]{32}$", description="job id (32 hex digits)")
PLOT = Path(pattern=r"^[a-z0-9_-]{1,50}$", description="plot name, e.g. throughput, latency_cdf, placement")


def build_router(service: SimulatorService) -> APIRouter:
    router = APIRouter()
    auth = [Depends(api_key_checker(service.settings.api_key))]

    add_health_routes(router, KIND, service.store, service.runner, service.settings.max_workers)

    @router.post(
        "/v1/simulations",
        tags=["simulations"],
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=auth,
        responses=error_responses(400, 401, 404, 409, 413, 422, 429, 503),
    )
    def submit_simulation(
        body: SimulationRequest, request: Request, response: Response
    ) -> SimulationSubmitted:
        """A dry run of a plan: by `plan_id` (from the planner service) or inline `plan`."""
        job = service.submit(body)
        url = str(request.url_for("get_simulation", job_id=job.id))
        response.headers["Location"] = url
        return SimulationSubmitted(id=job.id, status=job.status, url=url)

    @router.get("/v1/simulations", tags=["simulations"], responses=error_responses(400, 422))
    def list_simulations(
        status: Annotated[str | None, Query(max_length=20)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> JobList:
        jobs = service.list_jobs(status=status, limit=limit, offset=offset)
        return JobList(items=[job_view(j, full=False) for j in jobs], limit=limit, offset=offset)

    @router.get(
        "/v1/simulations/{job_id}",
        tags=["simulations"],
        name="get_simulation",
        responses=error_responses(404, 422),
    )
    def get_simulation(job_id: Annotated[str, JOB_ID]) -> JobView:
        return job_view(service.get(job_id))

    @router.get("/v1/simulations/{job_id}/plots", tags=["simulations"], responses=error_responses(404, 422))
    def list_plots(job_id: Annotated[str, JOB_ID], request: Request) -> dict[str, Any]:
        names = service.plot_names(job_id)
        return {
            "plots": [
                {"name": n, "url": str(request.url_for("get_plot", job_id=job_id, name=n))} for n in names
            ]
        }

    @router.get(
        "/v1/simulations/{job_id}/plots/{name}.png",
        tags=["simulations"],
        name="get_plot",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, **error_responses(404, 422)},
    )
    def get_plot(job_id: Annotated[str, JOB_ID], name: Annotated[str, PLOT]) -> Response:
        artifact = service.plot(job_id, name)
        return Response(content=artifact.data, media_type=artifact.content_type)

    @router.post(
        "/v1/simulations/{job_id}/cancel",
        tags=["simulations"],
        dependencies=auth,
        responses=error_responses(401, 404, 422),
    )
    def cancel_simulation(job_id: Annotated[str, JOB_ID]) -> JobView:
        return job_view(service.cancel(job_id))

    @router.delete(
        "/v1/simulations/{job_id}",
        tags=["simulations"],
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        dependencies=auth,
        responses=error_responses(401, 404, 409, 422),
    )
    def delete_simulation(job_id: Annotated[str, JOB_ID]) -> Response:
        """Remove a finished simulation and its plots. A queued or running one answers 409: cancel it first."""
        service.delete(job_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return router
