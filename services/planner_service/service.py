"""The planner service's operations, shared by the REST routes and the gRPC servicer: submit, get, list,
cancel, fetch a finished plan, evaluate a placement, re-plan after a fleet change (jobs of kind "replan"). Inputs are checked here, before a job is queued, so a
bad request fails at once with a 4xx naming the field rather than as a failed job later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from planner.errors import InvalidInput
from services.errors_table import Conflict, evaluating_user_placement
from services.jobs.service import JobService
from services.jobs.store import SUCCEEDED, Job
from services.planner_service.bodies import EvaluationRequest, PlanRequest, ReplanRequest
from services.planner_service.inputs import load_inputs
from services.planner_service.jobs import SOLVE_TARGET, WARM_MODULES, check_method, evaluate
from services.planner_service.replans import REPLAN_TARGET, load_request
from services.planner_service.settings import PlannerSettings

KIND = "plan"
REPLAN = "replan"


class PlannerService(JobService):
    kind = KIND
    extra_kinds = (REPLAN,)

    def __init__(self, settings: PlannerSettings) -> None:
        super().__init__(settings, warm_modules=WARM_MODULES)
        self.settings: PlannerSettings = settings

    def _check_fleet(self, nodes: int) -> None:
        if nodes > self.settings.max_nodes:
            raise InvalidInput(
                f"a fleet of {nodes} nodes is over this service's limit of {self.settings.max_nodes}",
                field="cluster",
            )

    def submit(self, body: PlanRequest) -> Job:
        self._check_time_limit(body.time_limit_s)
        check_method(body.method)
        request = body.model_dump(mode="json", exclude_none=True)
        inputs = load_inputs(request)
        self._check_fleet(len(inputs.cluster.nodes))
        hard = body.time_limit_s * self.settings.hard_limit_factor + self.settings.hard_limit_slack_s
        return self.runner.submit(
            KIND, SOLVE_TARGET, request, hard_limit_s=hard, expected_s=body.time_limit_s
        )

    def _check_time_limit(self, time_limit_s: float) -> None:
        if time_limit_s > self.settings.max_time_limit_s:
            raise InvalidInput(
                f"{time_limit_s:g} s is over this service's limit of {self.settings.max_time_limit_s:g} s",
                field="time_limit_s",
            )

    def submit_replan(self, body: ReplanRequest) -> Job:
        """Queue a re-plan; the plan, its fleet and the change are checked first (400 naming the field)."""
        self._check_time_limit(body.time_limit_s)
        request = body.model_dump(mode="json", exclude_none=True)
        inputs = load_request(request)
        self._check_fleet(len(inputs.cluster.nodes) + len(inputs.change.joined))
        hard = body.time_limit_s * self.settings.hard_limit_factor + self.settings.hard_limit_slack_s
        return self.runner.submit(
            REPLAN, REPLAN_TARGET, request, hard_limit_s=hard, expected_s=body.time_limit_s
        )

    def plan(self, job_id: str) -> Mapping[str, Any]:
        """The plan JSON of a finished plan or re-plan job (what the coordinator loads for a plan swap)."""
        found = self.store.get(job_id)
        job = self.get(job_id, kind=REPLAN if found is not None and found.kind == REPLAN else KIND)
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
