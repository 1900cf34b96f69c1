"""gRPC control plane of the coordinator: workers register, heartbeat and deregister."""

from __future__ import annotations

import grpc

from planner.errors import BrlError
from protos import coordinator_pb2 as pb
from protos import coordinator_pb2_grpc as pb_grpc
from services.coordinator import wire
from services.coordinator.registry import Registry
from services.grpc_errors import status


class ControlServicer(pb_grpc.CoordinatorServicer):
    def __init__(self, registry: Registry, *, coordinator_id: str, heartbeat_interval_s: float) -> None:
        self.registry = registry
        self.coordinator_id = coordinator_id
        self.interval_s = heartbeat_interval_s

    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterReply:
        try:
            self.registry.register(wire.worker_info_from_pb(request.worker))
        except BrlError as exc:
            await context.abort(*status(exc))
        return wire.register_reply(
            accepted=True, interval_s=self.interval_s, coordinator_id=self.coordinator_id
        )

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatReply:
        # A heartbeat for another coordinator incarnation means this one restarted: make the worker re-register.
        known = request.coordinator_id == self.coordinator_id and self.registry.heartbeat(
            request.name,
            kv_used_tokens=request.kv_used_tokens,
            kv_capacity_tokens=request.kv_capacity_tokens,
            queue_depth=request.queue_depth,
        )
        return wire.heartbeat_reply(known=known, interval_s=self.interval_s)

    async def Deregister(
        self, request: pb.DeregisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeregisterReply:
        self.registry.remove(request.name)
        return wire.deregister_reply()
