"""gRPC servicer of the planner service: each RPC parses with wire.py, calls PlannerService, renders."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from protos import planner_pb2 as pb
from protos import planner_pb2_grpc as pb_grpc
from services.jobs.grpc_server import check_api_key, rpc_errors, watch_job
from services.planner_service import wire
from services.planner_service.service import REPLAN, PlannerService

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Planner"].full_name


class PlannerServicer(pb_grpc.PlannerServicer):
    def __init__(self, service: PlannerService) -> None:
        self.service = service

    def _auth(self, context: grpc.ServicerContext) -> None:
        check_api_key(context, self.service.settings.api_key)

    @rpc_errors
    def SubmitPlan(self, request: pb.SubmitPlanRequest, context: grpc.ServicerContext) -> pb.PlanJob:
        self._auth(context)
        return wire.plan_job(self.service.submit(wire.plan_request(request)))

    @rpc_errors
    def GetPlan(self, request: pb.JobRef, context: grpc.ServicerContext) -> pb.PlanJob:
        return wire.plan_job(self.service.get(request.id))

    @rpc_errors
    def ListPlans(self, request: pb.ListPlansRequest, context: grpc.ServicerContext) -> pb.ListPlansResponse:
        jobs = self.service.list_jobs(
            status=request.status or None, limit=request.limit or 50, offset=request.offset
        )
        return pb.ListPlansResponse(items=[wire.plan_job(j, full=False) for j in jobs])

    @rpc_errors
    def CancelPlan(self, request: pb.JobRef, context: grpc.ServicerContext) -> pb.PlanJob:
        self._auth(context)
        return wire.plan_job(self.service.cancel(request.id))

    @rpc_errors
    def DeletePlan(self, request: pb.JobRef, context: grpc.ServicerContext) -> pb.Deleted:
        self._auth(context)
        self.service.delete(request.id)
        return pb.Deleted(id=request.id)

    @rpc_errors
    def WatchPlan(self, request: pb.JobRef, context: grpc.ServicerContext) -> Iterator[pb.PlanJob]:
        self.service.get(request.id)  # NotFound now, before the stream starts
        return watch_job(lambda: self.service.get(request.id), wire.plan_job, context)

    @rpc_errors
    def Evaluate(self, request: pb.EvaluateRequest, context: grpc.ServicerContext) -> pb.EvaluateResponse:
        self._auth(context)
        return wire.evaluate_response(self.service.evaluate(wire.evaluation_request(request)))

    @rpc_errors
    def SubmitReplan(self, request: pb.SubmitReplanRequest, context: grpc.ServicerContext) -> pb.PlanJob:
        self._auth(context)
        return wire.plan_job(self.service.submit_replan(wire.replan_request(request)))

    @rpc_errors
    def GetReplan(self, request: pb.JobRef, context: grpc.ServicerContext) -> pb.PlanJob:
        return wire.plan_job(self.service.get(request.id, kind=REPLAN))

    @rpc_errors
    def ListReplans(
        self, request: pb.ListPlansRequest, context: grpc.ServicerContext
    ) -> pb.ListPlansResponse:
        jobs = self.service.list_jobs(
            status=request.status or None, limit=request.limit or 50, offset=request.offset, kind=REPLAN
        )
        return pb.ListPlansResponse(items=[wire.plan_job(j, full=False) for j in jobs])

    @rpc_errors
    def CancelReplan(self, request: pb.JobRef, context: grpc.ServicerContext) -> pb.PlanJob:
        self._auth(context)
        return wire.plan_job(self.service.cancel(request.id, kind=REPLAN))

    @rpc_errors
    def DeleteReplan(self, request: pb.JobRef, context: grpc.ServicerContext) -> pb.Deleted:
        self._auth(context)
        self.service.delete(request.id, kind=REPLAN)
        return pb.Deleted(id=request.id)

    @rpc_errors
    def WatchReplan(self, request: pb.JobRef, context: grpc.ServicerContext) -> Iterator[pb.PlanJob]:
        self.service.get(request.id, kind=REPLAN)  # NotFound now, before the stream starts
        return watch_job(lambda: self.service.get(request.id, kind=REPLAN), wire.plan_job, context)


def add_to_server(service: PlannerService, server: grpc.Server) -> None:
    pb_grpc.add_PlannerServicer_to_server(PlannerServicer(service), server)
