"""The only module that touches the generated brl.worker protobuf classes: records <-> messages.

Decoding never trusts the peer: shapes, dtypes and enum values are checked where the record is used
(services/worker/validate.py); here a message becomes a record field by field.
"""

from __future__ import annotations

from typing import Any

import grpc

from protos import worker_pb2, worker_pb2_grpc
from services.worker.records import (
    ERROR_CODES,
    HopAddress,
    LoadOrder,
    LoadReport,
    Sampling,
    Segment,
    StepBatchIn,
    TokenResult,
    WireTensor,
    WorkerInfo,
    WorkerStats,
)

SERVICE_NAME = worker_pb2.DESCRIPTOR.services_by_name["Worker"].full_name

StepBatchMessage = worker_pb2.StepBatch
StepResultsMessage = worker_pb2.StepResults


def make_stub(channel: grpc.aio.Channel) -> Any:
    return worker_pb2_grpc.WorkerStub(channel)


def add_servicer(servicer: Any, server: grpc.aio.Server) -> None:
    """Registers any object with the Worker RPC methods (Forward, Info, Stats, Release, Load)."""
    worker_pb2_grpc.add_WorkerServicer_to_server(servicer, server)


# --- tensors, sampling, hops -------------------------------------------------------------------------


def _tensor_to_msg(t: WireTensor | None) -> worker_pb2.Tensor | None:
    if t is None:
        return None
    return worker_pb2.Tensor(data=t.data, dtype=t.dtype, shape=list(t.shape))


def _tensor_from_msg(msg: worker_pb2.Tensor) -> WireTensor:
    return WireTensor(data=bytes(msg.data), dtype=msg.dtype, shape=tuple(int(d) for d in msg.shape))


def _sampling_to_msg(s: Sampling) -> worker_pb2.SamplingParams:
    msg = worker_pb2.SamplingParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
    if s.seed is not None:
        msg.seed = s.seed
    return msg


def _sampling_from_msg(msg: worker_pb2.SamplingParams) -> Sampling:
    return Sampling(
        temperature=float(msg.temperature),
        top_p=float(msg.top_p) or 1.0,
        top_k=int(msg.top_k),
        seed=int(msg.seed) if msg.HasField("seed") else None,
    )


# --- segments and batches ----------------------------------------------------------------------------


def segment_to_msg(s: Segment) -> worker_pb2.Segment:
    msg = worker_pb2.Segment(
        request_id=s.request_id,
        start_layer=s.start_layer,
        end_layer=s.end_layer,
        position=s.position,
        num_tokens=s.num_tokens,
        token_ids=list(s.token_ids),
        sampling=_sampling_to_msg(s.sampling),
        finish=s.finish,
        abort=s.abort,
        skip_sample=s.skip_sample,
        route=[worker_pb2.Hop(address=h.address, start_layer=h.start, end_layer=h.end) for h in s.route],
    )
    if s.hidden is not None:
        msg.hidden.CopyFrom(_tensor_to_msg(s.hidden))
    if s.residual is not None:
        msg.residual.CopyFrom(_tensor_to_msg(s.residual))
    return msg


def segment_from_msg(msg: worker_pb2.Segment) -> Segment:
    return Segment(
        request_id=msg.request_id,
        start_layer=int(msg.start_layer),
        end_layer=int(msg.end_layer),
        position=int(msg.position),
        num_tokens=int(msg.num_tokens),
        token_ids=tuple(msg.token_ids),
        hidden=_tensor_from_msg(msg.hidden) if msg.HasField("hidden") else None,
        residual=_tensor_from_msg(msg.residual) if msg.HasField("residual") else None,
        sampling=_sampling_from_msg(msg.sampling),
        finish=msg.finish,
        abort=msg.abort,
        skip_sample=msg.skip_sample,
        route=tuple(HopAddress(h.address, int(h.start_layer), int(h.end_layer)) for h in msg.route),
    )


def batch_to_msg(batch_id: int, segments: list[Segment]) -> worker_pb2.StepBatch:
    return worker_pb2.StepBatch(batch_id=batch_id, segments=[segment_to_msg(s) for s in segments])


def batch_from_msg(msg: worker_pb2.StepBatch) -> StepBatchIn:
    return StepBatchIn(batch_id=int(msg.batch_id), segments=[segment_from_msg(s) for s in msg.segments])


def result_to_msg(r: TokenResult) -> worker_pb2.Result:
    return worker_pb2.Result(
        request_id=r.request_id,
        has_token=r.token_id is not None,
        token_id=r.token_id or 0,
        logprob=r.logprob,
        code=(r.code if r.code in ERROR_CODES else "internal").upper(),
        error=r.error,
        failed_hop=r.failed_hop,
    )


def result_from_msg(msg: worker_pb2.Result) -> TokenResult:
    code = ERROR_CODES[msg.code] if 0 <= msg.code < len(ERROR_CODES) else "internal"
    return TokenResult(
        request_id=msg.request_id,
        token_id=int(msg.token_id) if msg.has_token else None,
        logprob=float(msg.logprob),
        code=code,
        error=msg.error,
        failed_hop=msg.failed_hop,
    )


def results_to_msg(
    batch_id: int, results: list[TokenResult], service_ms: float = 0.0
) -> worker_pb2.StepResults:
    return worker_pb2.StepResults(
        batch_id=batch_id, results=[result_to_msg(r) for r in results], service_ms=service_ms
    )


def results_from_msg(msg: worker_pb2.StepResults) -> tuple[int, list[TokenResult], float]:
    """(batch_id, results, service_ms)."""
    return int(msg.batch_id), [result_from_msg(r) for r in msg.results], float(msg.service_ms)


# --- unary calls ---------------------------------------------------------------------------------------


def info_request() -> worker_pb2.InfoRequest:
    return worker_pb2.InfoRequest()


def stats_request() -> worker_pb2.StatsRequest:
    return worker_pb2.StatsRequest()


def info_to_msg(i: WorkerInfo) -> worker_pb2.WorkerInfo:
    return worker_pb2.WorkerInfo(
        model=i.model,
        num_layers=i.num_layers,
        start_layer=i.start_layer,
        end_layer=i.end_layer,
        hidden_size=i.hidden_size,
        vocab_size=i.vocab_size,
        activation_dtype=i.activation_dtype,
        backend=i.backend,
        name=i.name,
        kv_capacity_tokens=i.kv_capacity_tokens,
    )


def info_from_msg(m: worker_pb2.WorkerInfo) -> WorkerInfo:
    return WorkerInfo(
        model=m.model,
        num_layers=m.num_layers,
        start_layer=m.start_layer,
        end_layer=m.end_layer,
        hidden_size=m.hidden_size,
        vocab_size=m.vocab_size,
        activation_dtype=m.activation_dtype,
        backend=m.backend,
        name=m.name,
        kv_capacity_tokens=int(m.kv_capacity_tokens),
    )


def _range_msg(r: tuple[int, int]) -> worker_pb2.LayerRange:
    return worker_pb2.LayerRange(start_layer=r[0], end_layer=r[1])


def _range(m: worker_pb2.LayerRange) -> tuple[int, int]:
    return int(m.start_layer), int(m.end_layer)


_RANGE_FIELDS = ("serving", "draining", "loading_range")


def stats_to_msg(s: WorkerStats) -> worker_pb2.WorkerStats:
    plain = {k: v for k, v in s.__dict__.items() if k not in _RANGE_FIELDS}
    msg = worker_pb2.WorkerStats(
        **plain,
        serving=[_range_msg(r) for r in s.serving],
        draining=[_range_msg(r) for r in s.draining],
    )
    if s.loading_range is not None:
        msg.loading_range.CopyFrom(_range_msg(s.loading_range))
    return msg


def stats_from_msg(m: worker_pb2.WorkerStats) -> WorkerStats:
    plain = {n: getattr(m, n) for n in WorkerStats.__dataclass_fields__ if n not in _RANGE_FIELDS}
    return WorkerStats(
        **plain,
        serving=tuple(_range(r) for r in m.serving),
        draining=tuple(_range(r) for r in m.draining),
        loading_range=_range(m.loading_range) if m.HasField("loading_range") else None,
    )


def release_to_msg(request_ids: list[str]) -> worker_pb2.ReleaseRequest:
    return worker_pb2.ReleaseRequest(request_ids=request_ids)


def release_from_msg(m: worker_pb2.ReleaseRequest) -> list[str]:
    return list(m.request_ids)


def release_reply(released: int) -> worker_pb2.ReleaseReply:
    return worker_pb2.ReleaseReply(released=released)


def released_from_reply(m: worker_pb2.ReleaseReply) -> int:
    return int(m.released)


def load_to_msg(o: LoadOrder) -> worker_pb2.LoadRequest:
    return worker_pb2.LoadRequest(
        model=o.model, start_layer=o.start_layer, end_layer=o.end_layer, backend=o.backend, force=o.force
    )


def load_from_msg(m: worker_pb2.LoadRequest) -> LoadOrder:
    return LoadOrder(
        start_layer=m.start_layer, end_layer=m.end_layer, model=m.model, backend=m.backend, force=m.force
    )


def load_reply(r: LoadReport) -> worker_pb2.LoadReply:
    return worker_pb2.LoadReply(
        info=info_to_msg(r.info),
        mode=r.mode,
        layers_read=r.layers_read,
        tensors_read=list(r.tensors_read),
        load_s=r.load_s,
        drain_s=r.drain_s,
        draining=[_range_msg(d) for d in r.draining],
    )


def load_report_from_msg(m: worker_pb2.LoadReply) -> LoadReport:
    return LoadReport(
        info=info_from_msg(m.info),
        mode=m.mode,
        layers_read=int(m.layers_read),
        tensors_read=tuple(m.tensors_read),
        load_s=float(m.load_s),
        drain_s=float(m.drain_s),
        draining=tuple(_range(d) for d in m.draining),
    )
