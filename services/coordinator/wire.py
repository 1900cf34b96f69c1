"""The only coordinator module that touches generated protobuf classes: messages <-> registry records."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from planner.errors import InvalidInput
from planner.placement import LayerRange
from protos import coordinator_pb2 as pb
from services.coordinator.registry import IdleWorker, WorkerInfo


def worker_info_from_pb(msg: pb.WorkerInfo) -> WorkerInfo | IdleWorker:
    if not msg.name:
        raise InvalidInput("worker name is empty", source="Register", field="name")
    if not msg.address:
        raise InvalidInput(f"worker {msg.name!r}: address is empty", source="Register", field="address")
    if msg.layer_start == msg.layer_end == 0:  # the empty range: holds no layers, waits for a Load
        return IdleWorker(
            msg.name,
            msg.address,
            msg.gpu_type or "cpu",
            int(msg.kv_capacity_tokens),
            msg.model,
            msg.backend,
            msg.speed_factor or 1.0,
        )
    return WorkerInfo(
        name=msg.name,
        address=msg.address,
        layers=LayerRange(msg.layer_start, msg.layer_end),
        gpu_type=msg.gpu_type or "cpu",
        kv_capacity_tokens=int(msg.kv_capacity_tokens),
        model=msg.model,
        backend=msg.backend,
        speed_factor=msg.speed_factor or 1.0,
    )


def worker_info_to_pb(info: WorkerInfo | IdleWorker) -> pb.WorkerInfo:
    return pb.WorkerInfo(
        name=info.name,
        address=info.address,
        layer_start=0 if info.layers is None else info.layers.start,
        layer_end=0 if info.layers is None else info.layers.end,
        gpu_type=info.gpu_type,
        kv_capacity_tokens=info.kv_capacity_tokens,
        model=info.model,
        backend=info.backend,
        speed_factor=info.speed_factor,
    )


def replicas_to_pb(replicas: Mapping[str, str]) -> list[pb.ReplicaSeen]:
    """coordinator id -> gRPC address, as a worker reports the replicas it sees."""
    return [pb.ReplicaSeen(coordinator_id=c, address=a) for c, a in sorted(replicas.items())]


def replicas_from_pb(seen: Iterable[pb.ReplicaSeen]) -> dict[str, str]:
    return {r.coordinator_id: r.address for r in seen if r.coordinator_id and r.address}


def register_request(
    info: WorkerInfo | IdleWorker, replicas: Mapping[str, str] | None = None
) -> pb.RegisterRequest:
    return pb.RegisterRequest(worker=worker_info_to_pb(info), replicas=replicas_to_pb(replicas or {}))


def register_reply(
    *, accepted: bool, interval_s: float, coordinator_id: str, message: str = ""
) -> pb.RegisterReply:
    return pb.RegisterReply(
        accepted=accepted, heartbeat_interval_s=interval_s, coordinator_id=coordinator_id, message=message
    )


def heartbeat_request(
    name: str,
    coordinator_id: str,
    *,
    kv_used_tokens: int,
    kv_capacity_tokens: int,
    queue_depth: int,
    replicas: Mapping[str, str] | None = None,
) -> pb.HeartbeatRequest:
    return pb.HeartbeatRequest(
        name=name,
        coordinator_id=coordinator_id,
        kv_used_tokens=kv_used_tokens,
        kv_capacity_tokens=kv_capacity_tokens,
        queue_depth=queue_depth,
        replicas=replicas_to_pb(replicas or {}),
    )


def heartbeat_reply(*, known: bool, interval_s: float) -> pb.HeartbeatReply:
    return pb.HeartbeatReply(known=known, heartbeat_interval_s=interval_s)


def deregister_request(name: str) -> pb.DeregisterRequest:
    return pb.DeregisterRequest(name=name)


def deregister_reply() -> pb.DeregisterReply:
    return pb.DeregisterReply()


def get_plan_request(version: int, author: str, asker: str) -> pb.GetPlanRequest:
    return pb.GetPlanRequest(known_version=version, known_author=author, asker=asker)


def get_plan_reply(
    *, coordinator_id: str, leader: bool, version: int, author: str, plan_json: str, origin_json: str
) -> pb.GetPlanReply:
    return pb.GetPlanReply(
        coordinator_id=coordinator_id,
        leader=leader,
        version=version,
        author=author,
        plan_json=plan_json,
        origin_json=origin_json,
    )
