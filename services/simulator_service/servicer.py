"""gRPC servicer of the simulator service: each RPC parses with wire.py, calls SimulatorService, renders."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from protos import planner_pb2
from protos import simulator_pb2 as pb
from protos import simulator_pb2_grpc as pb_grpc
from services.jobs.grpc_server import check_api_key, rpc_errors, watch_job
from services.simulator_service import wire
from services.simulator_service.service import SimulatorService

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Simulator"].full_name


class SimulatorServicer(pb_grpc.SimulatorServicer):
    def __init__(self, service: SimulatorService) -> None:
        self.service = service

    def _auth(self, context: grpc.ServicerContext) -> None:
        check_api_key(context, self.service.settings.api_key)

    @rpc_errors
    def SubmitSimulation(
        self, request: pb.SubmitSimulationRequest, context: grpc.ServicerContext
    ) -> pb.SimulationJob:
        self._auth(context)
        return wire.simulation_job(self.service.submit(wire.simulation_request(request)))

    @rpc_errors
    def GetSimulation(self, request: planner_pb2.JobRef, context: grpc.ServicerContext) -> pb.SimulationJob:
        return wire.simulation_job(self.service.get(request.id))

    @rpc_errors
    def ListSimulations(
        self, request: pb.ListSimulationsRequest, context: grpc.ServicerContext
    ) -> pb.ListSimulationsResponse:
        jobs = self.service.list_jobs(
            status=request.status or None, limit=request.limit or 50, offset=request.offset
        )
        return pb.ListSimulationsResponse(items=[wire.simulation_job(j, full=False) for j in jobs])

    @rpc_errors
    def CancelSimulation(
        self, request: planner_pb2.JobRef, context: grpc.ServicerContext
    ) -> pb.SimulationJob:
        self._auth(context)
        return wire.simulation_job(self.service.cancel(request.id))

    @rpc_errors
    def DeleteSimulation(
        self, request: planner_pb2.JobRef, context: grpc.ServicerContext
    ) -> planner_pb2.Deleted:
        self._auth(context)
        self.service.delete(request.id)
        return planner_pb2.Deleted(id=request.id)

    @rpc_errors
    def WatchSimulation(
        self, request: planner_pb2.JobRef, context: grpc.ServicerContext
    ) -> Iterator[pb.SimulationJob]:
        self.service.get(request.id)  # NotFound now, before the stream starts
        return watch_job(lambda: self.service.get(request.id), wire.simulation_job, context)

    @rpc_errors
    def GetPlot(self, request: pb.PlotRef, context: grpc.ServicerContext) -> pb.Plot:
        return wire.plot(self.service.plot(request.id, request.name))


def add_to_server(service: SimulatorService, server: grpc.Server) -> None:
    pb_grpc.add_SimulatorServicer_to_server(SimulatorServicer(service), server)
