"""Plain records of the worker data path, shared by the client, the servicer and the batcher.

Only `wire.py` turns these into protobuf messages and back; everything else speaks these frozen types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# Per-request error codes, mirrored one to one by brl.worker.ErrorCode.
OK = "ok"
INVALID_ARGUMENT = "invalid_argument"
NOT_FOUND = "not_found"
FAILED_PRECONDITION = "failed_precondition"
RESOURCE_EXHAUSTED = "resource_exhausted"
UNAVAILABLE = "unavailable"
INTERNAL = "internal"
ABORTED = "aborted"
ERROR_CODES = (
    OK,
    INVALID_ARGUMENT,
    NOT_FOUND,
    FAILED_PRECONDITION,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    INTERNAL,
    ABORTED,
)


@dataclass(frozen=True)
class HopAddress:
    """One hop of a chain: the worker at `address` (host:port) runs layers [start, end)."""

    address: str
    start: int
    end: int


@dataclass(frozen=True)
class Sampling:
    """temperature 0 = greedy; top_p >= 1 (or 0) and top_k 0 switch those filters off."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None


GREEDY = Sampling()


@dataclass(frozen=True)
class WireTensor:
    """A dense row-major tensor as bytes; dtype is "float32", "float16" or "bfloat16"."""

    data: bytes
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Segment:
    """One request's share of one step on one hop (see protos/worker.proto for each field)."""

    request_id: str
    start_layer: int
    end_layer: int
    position: int
    num_tokens: int
    token_ids: tuple[int, ...] = ()
    hidden: WireTensor | None = None
    residual: WireTensor | None = None
    sampling: Sampling = GREEDY
    finish: bool = False
    abort: bool = False
    skip_sample: bool = False
    route: tuple[HopAddress, ...] = ()


@dataclass(frozen=True)
class TokenResult:
    """What a step returns for one request: a sampled token, nothing (skip_sample/abort), or an error."""

    request_id: str
    token_id: int | None = None
    logprob: float = 0.0
    code: str = OK
    error: str = ""
    failed_hop: str = ""

    @property
    def ok(self) -> bool:
        return self.code == OK


@dataclass(frozen=True)
class WorkerInfo:
    model: str
    num_layers: int
    start_layer: int
    end_layer: int
    hidden_size: int
    vocab_size: int
    activation_dtype: str
    backend: str
    name: str
    kv_capacity_tokens: int


@dataclass(frozen=True)
class WorkerStats:
    kv_used_tokens: int = 0
    kv_capacity_tokens: int = 0
    active_requests: int = 0
    queue_depth: int = 0
    steps: int = 0
    tokens_processed: int = 0
    step_ms_p50: float = 0.0
    step_ms_p99: float = 0.0
    step_ms_mean: float = 0.0
    batch_tokens_mean: float = 0.0
    downstream_ms_p50: float = 0.0
    downstream_ms_p99: float = 0.0
    link_ms_p50: float = 0.0
    link_ms_p99: float = 0.0
    serving: tuple[tuple[int, int], ...] = ()  # ranges new requests may use
    draining: tuple[tuple[int, int], ...] = ()  # old ranges finishing the requests they hold
    loading: bool = False
    loading_range: tuple[int, int] | None = None
    held_layers: int = 0
    load_s_per_layer: float = 0.0
    last_load_layers: int = 0
    last_load_s: float = 0.0


@dataclass(frozen=True)
class LoadOrder:
    """Ask a worker to serve another layer range (after a re-plan); see Load in protos/worker.proto."""

    start_layer: int
    end_layer: int
    model: str = ""
    backend: str = ""
    force: bool = False


# How a Load was carried out (LoadReport.mode).
LOAD_BESIDE = "beside"
LOAD_DRAINED_FIRST = "drained_first"
LOAD_REPLACED = "replaced"
LOAD_UNCHANGED = "unchanged"


@dataclass(frozen=True)
class LoadReport:
    """The answer to a Load: what the worker serves now and what it took to get there."""

    info: WorkerInfo
    mode: str
    layers_read: int = 0
    tensors_read: tuple[str, ...] = ()
    load_s: float = 0.0
    drain_s: float = 0.0
    draining: tuple[tuple[int, int], ...] = ()


@dataclass
class StepBatchIn:
    batch_id: int
    segments: list[Segment] = field(default_factory=list)


def error_result(request_id: str, code: str, message: str, hop: str = "") -> TokenResult:
    return TokenResult(request_id=request_id, code=code, error=message, failed_hop=hop)


def results_for(segments: Sequence[Segment], code: str, message: str, hop: str = "") -> list[TokenResult]:
    return [error_result(s.request_id, code, message, hop) for s in segments]
