"""The only coordinator module that touches generated protobuf classes: messages <-> registry records."""

from __future__ import annotations

from planner.errors import InvalidInput
from planner.placement import LayerRange
from protos import coordinator_pb2 as pb
from services.coordinator.registry import WorkerInfo


def worker_info_from_pb(msg: pb.WorkerInfo) -> WorkerInfo:
    if not msg.name:
        raise InvalidInput("worker name is empty", source="Register", field="name")
    if not msg.address:
        raise InvalidInput(f"worker {msg.name!r}: address is empty", source="Register", field="address")
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


def worker_info_to_pb(info: WorkerInfo) -> pb.WorkerInfo:
    return pb.WorkerInfo(
        name=info.name,
        address=info.address,
        layer_start=info.layers.start,
        layer_end=info.layers.end,
        gpu_type=info.gpu_type,
        kv_capacity_tokens=info.kv_capacity_tokens,
        model=info.model,
        backend=info.backend,
        speed_factor=info.speed_factor,
    )


def register_request(info: WorkerInfo) -> pb.RegisterRequest:
    return pb.RegisterRequest(worker=worker_info_to_pb(info))


def register_reply(
    *, accepted: bool, interval_s: float, coordinator_id: str, message: str = ""
) -> pb.RegisterReply:
    return pb.RegisterReply(
        accepted=accepted, heartbeat_interval_s=interval_s, coordinator_id=coordinator_id, message=message
    )


def heartbeat_request(
    name: str, coordinator_id: str, *, kv_used_tokens: int, kv_capacity_tokens: int, queue_depth: int
) -> pb.HeartbeatRequest:
    return pb.HeartbeatRequest(
        name=name,
        coordinator_id=coordinator_id,
        kv_used_tokens=kv_used_tokens,
        kv_capacity_tokens=kv_capacity_tokens,
        queue_depth=queue_depth,
    )


def heartbeat_reply(*, known: bool, interval_s: float) -> pb.HeartbeatReply:
    return pb.HeartbeatReply(known=known, heartbeat_interval_s=interval_s)


def deregister_request(name: str) -> pb.DeregisterRequest:
    return pb.DeregisterRequest(name=name)


def deregister_reply() -> pb.DeregisterReply:
    return pb.DeregisterReply()
