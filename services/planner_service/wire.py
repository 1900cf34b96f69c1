"""The only module of the planner service that touches generated protobuf classes: proto <-> bodies/jobs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from planner.errors import InvalidInput
from protos import planner_pb2 as pb
from services.jobs.store import Job
from services.planner_service.bodies import EvaluationRequest, PlanRequest, ReplanRequest

DEFAULT_TIME_LIMIT_S = 60.0
DEFAULT_REPLAN_TIME_LIMIT_S = 10.0


def _json_field(text: str, field: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON: {exc.msg} (column {exc.colno})", field=field) from None


def inputs_dict(msg: pb.FleetAndModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("cluster", "cluster_text", "model", "model_name", "profiles"):
        value = getattr(msg, name)
        if value:
            out[name] = value
    if msg.cluster_spec_json:
        out["cluster_spec"] = _json_field(msg.cluster_spec_json, "inputs.cluster_spec_json")
    if msg.hf_config_json:
        out["hf_config"] = _json_field(msg.hf_config_json, "inputs.hf_config_json")
    return out


def plan_request(msg: pb.SubmitPlanRequest) -> PlanRequest:
    body: dict[str, Any] = inputs_dict(msg.inputs)
    body["method"] = msg.method or "milp"
    body["time_limit_s"] = msg.time_limit_s or DEFAULT_TIME_LIMIT_S
    body["seed"] = msg.seed
    if msg.label:
        body["label"] = msg.label
    if msg.solver:
        body["solver"] = msg.solver
    if msg.prune_k:
        body["prune_k"] = msg.prune_k
    return PlanRequest.model_validate(body)


def evaluation_request(msg: pb.EvaluateRequest) -> EvaluationRequest:
    body: dict[str, Any] = inputs_dict(msg.inputs)
    body["placement"] = {node: (r.start, r.end) for node, r in msg.placement.items()}
    if msg.HasField("partial"):  # absent: the default rule (planner.flow.choose_partial)
        body["partial"] = msg.partial
    body["save"] = msg.save
    if msg.label:
        body["label"] = msg.label
    return EvaluationRequest.model_validate(body)


def replan_request(msg: pb.SubmitReplanRequest) -> ReplanRequest:
    body: dict[str, Any] = {
        "plan": _json_field(msg.plan_json, "plan_json") if msg.plan_json else None,
        "lose": list(msg.lose),
        "join": list(msg.join),
        "slow": dict(msg.slow),
        "time_limit_s": msg.time_limit_s or DEFAULT_REPLAN_TIME_LIMIT_S,
        "simulate": msg.simulate,
        "seed": msg.seed,
    }
    for name in ("budget_layers", "min_gain"):
        if msg.HasField(name):
            body[name] = getattr(msg, name)
    if msg.label:
        body["label"] = msg.label
    if body["plan"] is None:
        raise InvalidInput("the plan in force is required (brl-plan/1 JSON)", field="plan_json")
    return ReplanRequest.model_validate(body)


def _progress(progress: Mapping[str, Any] | None) -> pb.Progress | None:
    if progress is None:
        return None
    out = pb.Progress(elapsed_s=float(progress.get("elapsed_s") or 0.0))
    for key in ("incumbent_tok_per_s", "bound_tok_per_s", "gap"):
        value = progress.get(key)
        if isinstance(value, int | float):
            setattr(out, key, float(value))
    extra = {
        k: v
        for k, v in progress.items()
        if k not in ("elapsed_s", "incumbent_tok_per_s", "bound_tok_per_s", "gap")
    }
    out.extra_json = json.dumps(extra)
    return out


def plan_job(job: Job, *, full: bool = True) -> pb.PlanJob:
    msg = pb.PlanJob(
        id=job.id,
        status=job.status,
        created_at=job.created_at,
        started_at=job.started_at or 0.0,
        finished_at=job.finished_at or 0.0,
        cancel_requested=job.cancel_requested,
    )
    progress = _progress(job.progress)
    if progress is not None:
        msg.progress.CopyFrom(progress)
    if job.error is not None:
        msg.error.CopyFrom(
            pb.JobError(
                type=str(job.error.get("type", "")),
                message=str(job.error.get("message", "")),
                field=str(job.error.get("field") or ""),
                error_id=str(job.error.get("error_id") or ""),
            )
        )
    if full:
        msg.request_json = json.dumps(dict(job.request))
        if job.result is not None and "plan" in job.result:
            msg.plan_json = json.dumps(job.result["plan"])
        if job.result is not None:
            msg.result_json = json.dumps(dict(job.result))
    return msg


def evaluate_response(result: Mapping[str, Any]) -> pb.EvaluateResponse:
    return pb.EvaluateResponse(
        max_flow_tok_per_s=float(result["max_flow_tok_per_s"]),
        bound_tok_per_s=float(result.get("bound_tok_per_s") or 0.0),
        has_full_chain=bool(result["has_full_chain"]),
        bottlenecks=[pb.Bottleneck(**b) for b in result["bottlenecks"]],
        plan_id=str(result.get("plan_id") or ""),
        plan_json=json.dumps(result.get("plan")),
        result_json=json.dumps(dict(result)),
    )
