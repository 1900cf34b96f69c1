"""gRPC control plane of the coordinator: workers register, heartbeat and deregister (telling it which
coordinator replicas they see); peer replicas ask it for its plan (services/coordinator/leader.py)."""

from __future__ import annotations

import grpc

from planner.errors import BrlError
from protos import coordinator_pb2 as pb
from protos import coordinator_pb2_grpc as pb_grpc
from services.coordinator import wire
from services.coordinator.leader import Leadership
from services.coordinator.registry import Registry
from services.grpc_errors import status


class ControlServicer(pb_grpc.CoordinatorServicer):
    def __init__(
        self,
        registry: Registry,
        *,
        coordinator_id: str,
        heartbeat_interval_s: float,
        leadership: Leadership | None = None,
    ) -> None:
        self.registry = registry
        self.leadership = leadership
        self.coordinator_id = coordinator_id
        self.interval_s = heartbeat_interval_s

    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterReply:
        try:
            info = wire.worker_info_from_pb(request.worker)
            self.registry.register(info)
        except BrlError as exc:
            await context.abort(*status(exc))
        if self.leadership is not None:
            self.leadership.worker_reported(info.name, wire.replicas_from_pb(request.replicas), info.layers)
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
        if known and self.leadership is not None:
            self.leadership.worker_reported(request.name, wire.replicas_from_pb(request.replicas))
        return wire.heartbeat_reply(known=known, interval_s=self.interval_s)

    async def Deregister(
        self, request: pb.DeregisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeregisterReply:
        self.registry.remove(request.name)
        if self.leadership is not None:
            self.leadership.worker_left(request.name)
        return wire.deregister_reply()

    async def GetPlan(self, request: pb.GetPlanRequest, context: grpc.aio.ServicerContext) -> pb.GetPlanReply:
        if self.leadership is None:  # built without replica support (tests): only the plan given at start
            return wire.get_plan_reply(
                coordinator_id=self.coordinator_id,
                leader=True,
                version=0,
                author="",
                plan_json="",
                origin_json="",
            )
        return self.leadership.answer(request)
