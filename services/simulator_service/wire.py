"""The only module of the simulator service that touches generated protobuf classes."""

from __future__ import annotations

import json
from typing import Any

from planner.errors import InvalidInput
from protos import planner_pb2
from protos import simulator_pb2 as pb
from services.jobs.store import Artifact, Job
from services.planner_service.wire import _json_field, _progress, inputs_dict
from services.simulator_service.bodies import SimulationRequest


def simulation_request(msg: pb.SubmitSimulationRequest) -> SimulationRequest:
    body: dict[str, Any] = {}
    if msg.extra_json:
        extra = _json_field(msg.extra_json, "extra_json")
        if not isinstance(extra, dict):
            raise InvalidInput("expected a JSON object", field="extra_json")
        body.update(extra)
    if msg.HasField("inputs"):
        body.update(inputs_dict(msg.inputs))
    if msg.plan_json:
        body["plan"] = _json_field(msg.plan_json, "plan_json")
    for name in ("plan_id", "layout", "mode", "policy", "lengths", "arrivals", "label"):
        value = getattr(msg, name)
        if value:
            body[name] = value
    for name in ("duration_s", "warmup_s", "target_tok_per_s", "plots"):
        if msg.HasField(name):
            body[name] = getattr(msg, name)
    if msg.fail:
        body["fail"] = [{"node": f.node, "at_s": f.at_s} for f in msg.fail]
    if msg.replan:
        body["replan"] = True
    body["seed"] = msg.seed
    return SimulationRequest.model_validate(body)


def simulation_job(job: Job, *, full: bool = True) -> pb.SimulationJob:
    msg = pb.SimulationJob(
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
            planner_pb2.JobError(
                type=str(job.error.get("type", "")),
                message=str(job.error.get("message", "")),
                field=str(job.error.get("field") or ""),
                error_id=str(job.error.get("error_id") or ""),
            )
        )
    if job.result is not None:
        msg.plots.extend(job.result.get("plots") or [])
        msg.summary_json = json.dumps(job.result.get("summary"))
        if job.result.get("replan") is not None:
            msg.replan_json = json.dumps(job.result["replan"])
    if full:
        msg.request_json = json.dumps(dict(job.request))
        if job.result is not None:
            msg.result_json = json.dumps(job.result.get("result"))
    return msg


def plot(artifact: Artifact) -> pb.Plot:
    return pb.Plot(
        name=artifact.name.removesuffix(".png"), content_type=artifact.content_type, data=artifact.data
    )
