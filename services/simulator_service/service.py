"""The simulator service's operations, shared by REST and gRPC: submit (a dry run of a plan is one call),
get, list, cancel, plots. A submitted request is made self-contained — the plan JSON and the fleet it was
planned for are copied in — so a stored simulation can be re-run and understood without the planner."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from planner.errors import InvalidInput, UnknownName
from planner.formats.plan_json import plan_from_dict
from services.errors_table import NotFound, evaluating_user_placement
from services.jobs.service import JobService
from services.jobs.store import Artifact, Job
from services.planner_service.inputs import load_inputs
from services.simulator_service.bodies import SimulationRequest
from services.simulator_service.jobs import SIMULATE_TARGET, WARM_MODULES, sim_config
from services.simulator_service.plans import FLEET_FIELDS, fetch_plan, plan_fleet
from services.simulator_service.settings import SimulatorSettings

KIND = "simulation"


def _check_names(body: SimulationRequest) -> None:
    from planner.routing.registry import policy_names
    from simulator.workload import ARRIVAL_FILES, LENGTH_FILES

    if body.policy not in policy_names():
        raise UnknownName("routing policy", body.policy, policy_names(), field="policy")
    if body.lengths is not None and body.lengths not in LENGTH_FILES:
        raise UnknownName("length distribution", body.lengths, list(LENGTH_FILES), field="lengths")
    if body.arrivals is not None and body.arrivals not in ARRIVAL_FILES:
        raise UnknownName("arrival trace", body.arrivals, list(ARRIVAL_FILES), field="arrivals")


class SimulatorService(JobService):
    kind = KIND

    def __init__(self, settings: SimulatorSettings) -> None:
        super().__init__(settings, warm_modules=WARM_MODULES)
        self.settings: SimulatorSettings = settings

    def prepare(self, body: SimulationRequest) -> dict[str, Any]:
        """Check everything that can be checked quickly and return the self-contained job request."""
        _check_names(body)
        duration = body.duration_s
        if duration is not None and duration > self.settings.max_duration_s:
            raise InvalidInput(
                f"{duration:g} s is over this service's limit of {self.settings.max_duration_s:g} s",
                field="duration_s",
            )
        if body.plan_id is not None:
            plan_json, fleet = fetch_plan(self.settings, body.plan_id)
        elif body.layout is not None:
            plan_json, fleet = self._layout_plan(body), {}
        else:
            plan_json, fleet = dict(body.plan or {}), {}
        plan = plan_from_dict(plan_json, source="plan")
        explicit = body.model_dump(mode="json", include=set(FLEET_FIELDS), exclude_none=True)
        if any(k in explicit for k in ("cluster", "cluster_text", "cluster_spec")):
            fleet = {k: v for k, v in fleet.items() if k not in ("cluster", "cluster_text", "cluster_spec")}
        if any(k in explicit for k in ("model", "hf_config")):
            fleet = {
                k: v for k, v in fleet.items() if k not in ("model", "hf_config", "model_name", "profiles")
            }
        fleet.update(explicit)
        # An inline plan embeds its fleet and model (older ones name bundled ones), unless the request overrides.
        own = plan_fleet(plan)
        if not {"cluster", "cluster_text", "cluster_spec"} & fleet.keys():
            fleet.update({k: v for k, v in own.items() if k.startswith("cluster")})
        if not {"model", "hf_config"} & fleet.keys():
            fleet.update({k: v for k, v in own.items() if not k.startswith("cluster")})
        inputs = load_inputs(fleet)
        if len(inputs.cluster.nodes) > self.settings.max_nodes:
            raise InvalidInput(
                f"a fleet of {len(inputs.cluster.nodes)} nodes is over this service's limit of "
                f"{self.settings.max_nodes}",
                field="cluster",
            )
        if plan.placement.num_layers != inputs.model.num_layers:
            raise InvalidInput(
                f"the plan has {plan.placement.num_layers} layers but model {inputs.model.name!r} "
                f"has {inputs.model.num_layers}",
                field="plan.num_layers",
            )
        for node in plan.placement.ranges:
            if not inputs.cluster.has_node(node):
                raise InvalidInput(
                    f"the plan places node {node!r}, which cluster {inputs.cluster.name!r} lacks",
                    field=f"plan.placement.{node}",
                )
        placed = plan.placement.ranges
        for name, per_node in (("throttle", body.throttle), ("step_overhead_s", body.step_overhead_s)):
            for node in per_node or {}:
                if node not in placed:
                    raise InvalidInput(f"no node {node!r} in the plan", field=f"{name}.{node}")
        for i, host in enumerate(body.hosts or []):
            for node in host.nodes:
                if node not in placed:
                    raise InvalidInput(f"no node {node!r} in the plan", field=f"hosts.{i}.nodes")
        for i, failure in enumerate(body.fail or []):
            if failure.node not in placed:
                raise UnknownName(
                    "node of the plan", failure.node, sorted(placed), source="request", field=f"fail.{i}.node"
                )
        config = body.model_dump(mode="json", exclude_none=True, exclude={"plan", *FLEET_FIELDS})
        return {**config, **fleet, "plan": plan_json}

    def _layout_plan(self, body: SimulationRequest) -> dict[str, Any]:
        """A published layout as a plan, the way `brl simulate --placement` builds it."""
        from planner import bundled
        from planner.formats.plan_json import plan_to_dict
        from simulator.inputs import plan_for_placement

        inputs = load_inputs(body.model_dump(mode="json", include=set(FLEET_FIELDS), exclude_none=True))
        try:
            placement = bundled.layout(str(body.layout), str(body.cluster), str(body.model))
        except InvalidInput as exc:
            raise InvalidInput(exc.detail, field="layout") from None
        plan, _ = plan_for_placement(
            inputs.cluster, inputs.model, inputs.profiles, placement, method=str(body.layout)
        )
        return plan_to_dict(plan)

    def submit(self, body: SimulationRequest) -> Job:
        # Checks of the plan the caller sent: one that cannot route is theirs to fix (422), not a 503.
        with evaluating_user_placement():
            request = self.prepare(body)
            with tempfile.TemporaryDirectory(prefix="brl-check-") as tmp:
                config = sim_config(request, Path(tmp)).resolved()  # warm-up/duration conflicts now, a 4xx
        for i, (_, at_s) in enumerate(config.failures):
            if config.duration_s is not None and at_s >= config.duration_s:
                raise InvalidInput(
                    f"a failure at {at_s:g} s is past the run's {config.duration_s:g} s",
                    field=f"fail.{i}.at_s",
                )
        return self.runner.submit(KIND, SIMULATE_TARGET, request, hard_limit_s=self.settings.max_wall_s)

    def plot_names(self, job_id: str) -> list[str]:
        self.get(job_id)
        return [n.removesuffix(".png") for n in self.store.artifact_names(job_id) if n.endswith(".png")]

    def plot(self, job_id: str, name: str) -> Artifact:
        self.get(job_id)
        artifact = self.store.artifact(job_id, f"{name}.png")
        if artifact is None:
            raise NotFound("plot", f"{job_id}/{name}.png")
        return artifact
