"""Where a plan's fleet comes from. A plan named by id: the planner service over HTTP, or its SQLite file
when both services share a volume (the plan JSON and the fleet/model fields it was planned for). An inline
plan: the fleet and model it embeds (`plan_fleet`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx

from planner.cluster import Cluster
from planner.errors import InvalidInput, Unavailable, UnknownName
from planner.formats.cluster_schema import NAME_PATTERN
from planner.model import ModelSpec
from planner.plan import Plan
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


def plan_fleet(plan: Plan) -> dict[str, Any]:
    """The fleet fields (as a request gives them) of the fleet and model an inline plan embeds, so the job
    rebuilds them with the same loaders and checks as any request. Older plans embed neither: their names
    are then taken as bundled names."""
    fleet: dict[str, Any] = {}
    if plan.cluster is None:
        fleet["cluster"] = plan.cluster_name
    else:
        from planner.formats.cluster_yaml import cluster_to_dict

        _check_embedded(plan.cluster)
        try:
            fleet["cluster_spec"] = cluster_to_dict(plan.cluster)
        except InvalidInput as exc:
            raise InvalidInput(exc.detail, field="plan.cluster") from None
    from planner import bundled

    if plan.model is None or plan.model_name in bundled.model_names():
        fleet["model"] = plan.model_name
    else:
        fleet["hf_config"] = hf_config_of(plan.model)
        fleet["model_name"] = plan.model_name
        fleet["profiles"] = plan.profiles_name or plan.model_name
    if plan.profiles_name is not None and plan.profiles_name != plan.model_name:
        fleet["profiles"] = plan.profiles_name
    return fleet


def _check_embedded(cluster: Cluster) -> None:
    """What the cluster loaders would refuse, named by the plan's own fields rather than the cluster spec
    the fleet is handed on as: names they accept and GPU types this service has profiles or entries for."""
    from planner import bundled

    if not re.match(NAME_PATTERN, cluster.coordinator_region):
        raise InvalidInput(_NAME_RULE, field="plan.cluster.coordinator_region")
    known = set(bundled.known_gpu_types())
    for i, node in enumerate(cluster.nodes):
        for attr in ("name", "region", "gpu_type"):
            if not re.match(NAME_PATTERN, getattr(node, attr)):
                raise InvalidInput(_NAME_RULE, field=f"plan.cluster.nodes.{i}.{attr}")
        if node.gpu_type not in known:
            raise UnknownName(
                "GPU type", node.gpu_type, sorted(known), field=f"plan.cluster.nodes.{i}.gpu_type"
            )


_NAME_RULE = "letters, digits and _ . + - only, starting with a letter or digit"
_DTYPE_OF_BYTES = {4: "float32", 2: "float16", 1: "int8"}


def hf_config_of(model: ModelSpec) -> dict[str, Any]:
    """The Hugging Face config fields that rebuild `model` (sizes only: the bundled models' paper overrides
    of layer and activation bytes exist only for bundled names, which travel by name)."""
    if model.dtype_bytes not in _DTYPE_OF_BYTES:
        raise InvalidInput(f"no dtype of {model.dtype_bytes} bytes", field="plan.model.dtype_bytes")
    return {
        "num_hidden_layers": model.num_layers,
        "hidden_size": model.hidden_size,
        "num_attention_heads": model.num_heads,
        "num_key_value_heads": model.num_kv_heads,
        "intermediate_size": model.intermediate_size,
        "vocab_size": model.vocab_size,
        "torch_dtype": _DTYPE_OF_BYTES[model.dtype_bytes],
    }
