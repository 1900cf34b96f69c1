"""The planner service's operations, shared by the REST routes and the gRPC servicer: submit, get, list,
cancel, fetch a finished plan, evaluate a placement. Inputs are checked here, before a job is queued, so a
bad request fails at once with a 4xx naming the field rather than as a failed job later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from planner.errors import InvalidInput
from services.errors_table import Conflict, NotFound, evaluating_user_placement
from services.jobs.runner import JobRunner
from services.jobs.store import STATUSES, SUCCEEDED, Job, JobStore, StoreLock
from services.planner_service.bodies import EvaluationRequest, PlanRequest
from services.planner_service.inputs import load_inputs
from services.planner_service.jobs import SOLVE_TARGET, WARM_MODULES, check_method, evaluate
from services.planner_service.settings import PlannerSettings

KIND = "plan"


class PlannerService:
    def __init__(self, settings: PlannerSettings, *, start_runner: bool = True) -> None:
        self.settings = settings
        self._lock = StoreLock(settings.db_path)
        self.store = JobStore(settings.db_path)
        # Jobs left active by a previous process were cut off: say so before anything new starts.
        self.interrupted = self.store.fail_interrupted()
        self.runner = JobRunner(
            self.store,
            max_workers=settings.max_workers,
            max_queued=settings.max_queued,
            cancel_grace_s=settings.cancel_grace_s,
            warm_modules=WARM_MODULES,
        )

    def close(self) -> None:
        self.runner.close()
        self._lock.release()

    def _check_fleet(self, nodes: int) -> None:
        if nodes > self.settings.max_nodes:
            raise InvalidInput(
                f"a fleet of {nodes} nodes is over this service's limit of {self.settings.max_nodes}",
                field="cluster",
            )

    def submit(self, body: PlanRequest) -> Job:
        if body.time_limit_s > self.settings.max_time_limit_s:
            raise InvalidInput(
                f"{body.time_limit_s:g} s is over this service's limit of "
                f"{self.settings.max_time_limit_s:g} s",
                field="time_limit_s",
            )
        check_method(body.method)
        request = body.model_dump(mode="json", exclude_none=True)
        inputs = load_inputs(request)
        self._check_fleet(len(inputs.cluster.nodes))
        hard = body.time_limit_s * self.settings.hard_limit_factor + self.settings.hard_limit_slack_s
        return self.runner.submit(
            KIND, SOLVE_TARGET, request, hard_limit_s=hard, expected_s=body.time_limit_s
        )

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id, kind=KIND)
        if job is None:
            raise NotFound("plan", job_id)
        return job

    def list_jobs(self, *, status: str | None, limit: int, offset: int) -> list[Job]:
        if status is not None and status not in STATUSES:
            raise InvalidInput(
                f"unknown status {status!r}; expected one of {', '.join(STATUSES)}", field="status"
            )
        if limit > self.settings.list_limit:
            raise InvalidInput(f"at most {self.settings.list_limit} per page", field="limit")
        return self.store.list_jobs(KIND, status=status, limit=limit, offset=offset)

    def cancel(self, job_id: str) -> Job:
        self.get(job_id)
        job = self.runner.cancel(job_id)
        if job is None:  # pragma: no cover - deleted in between; the store never deletes
            raise NotFound("plan", job_id)
        return job

    def plan(self, job_id: str) -> Mapping[str, Any]:
        """The plan JSON of a finished job (what the coordinator loads for a plan swap)."""
        job = self.get(job_id)
        if job.status != SUCCEEDED or job.result is None or "plan" not in job.result:
            raise Conflict(f"plan {job_id} is {job.status}; a plan is available once it has succeeded")
        return dict(job.result["plan"])

    def evaluate(self, body: EvaluationRequest) -> dict[str, Any]:
        request = body.model_dump(mode="json", exclude_none=True)
        inputs = load_inputs(request)
        self._check_fleet(len(inputs.cluster.nodes))
        with evaluating_user_placement():  # a placement that cannot route is the caller's to fix: 422
            result = evaluate(request, inputs)
        if body.save:
            job = self.store.create(KIND, {**request, "method": "user"})
            self.store.finish(
                job.id,
                SUCCEEDED,
                result={
                    "plan": result["plan"],
                    "profiles": inputs.profiles_name,
                    "nodes": len(inputs.cluster.nodes),
                    "num_layers": inputs.model.num_layers,
                },
            )
            result["plan_id"] = job.id
        return result
