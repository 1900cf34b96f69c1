"""The one table from BRL's named errors to HTTP status + OpenAI `error.type` and to gRPC codes.

Every HTTP error body the coordinator sends is built here, in OpenAI's shape:
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import grpc

from planner.errors import (
    BrlError,
    CapacityExceeded,
    InfeasiblePlan,
    InvalidInput,
    NoRoute,
    Unavailable,
    UnknownName,
)
from services import http_errors


class AuthenticationFailed(BrlError):
    """A /v1 route was called without the configured API key."""


class NotFound(BrlError):
    """A path or object the API does not have."""


@dataclass(frozen=True)
class ErrorKind:
    http_status: int
    openai_type: str
    grpc_code: grpc.StatusCode
    code: str | None = None


# Most specific first: the first entry the exception is an instance of wins.
ERROR_TABLE: tuple[tuple[type[BaseException], ErrorKind], ...] = (
    (
        AuthenticationFailed,
        ErrorKind(401, "authentication_error", grpc.StatusCode.UNAUTHENTICATED, "invalid_api_key"),
    ),
    (UnknownName, ErrorKind(404, "invalid_request_error", grpc.StatusCode.NOT_FOUND, "not_found")),
    (NotFound, ErrorKind(404, "invalid_request_error", grpc.StatusCode.NOT_FOUND, "not_found")),
    # From the planner service (plan swap): an unknown plan id, a plan job that has not succeeded yet.
    (http_errors.NotFound, ErrorKind(404, "invalid_request_error", grpc.StatusCode.NOT_FOUND, "not_found")),
    (
        http_errors.Conflict,
        ErrorKind(409, "invalid_request_error", grpc.StatusCode.FAILED_PRECONDITION, "conflict"),
    ),
    (InvalidInput, ErrorKind(400, "invalid_request_error", grpc.StatusCode.INVALID_ARGUMENT, None)),
    (CapacityExceeded, ErrorKind(429, "rate_limit_error", grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded")),
    (NoRoute, ErrorKind(503, "service_unavailable", grpc.StatusCode.UNAVAILABLE, "no_route")),
    (Unavailable, ErrorKind(503, "service_unavailable", grpc.StatusCode.UNAVAILABLE, "unavailable")),
    (
        InfeasiblePlan,
        ErrorKind(503, "service_unavailable", grpc.StatusCode.FAILED_PRECONDITION, "infeasible_plan"),
    ),
)
INTERNAL = ErrorKind(500, "server_error", grpc.StatusCode.INTERNAL, "internal_error")


def kind_of(exc: BaseException) -> ErrorKind:
    for cls, kind in ERROR_TABLE:
        if isinstance(exc, cls):
            return kind
    return INTERNAL


def openai_error_body(message: str, kind: ErrorKind, *, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind.openai_type, "param": param, "code": kind.code}}


def error_body(exc: BaseException) -> dict[str, Any]:
    kind = kind_of(exc)
    if kind is INTERNAL:
        # Never leak a traceback or internals to clients; the server log has them.
        return openai_error_body("internal error; see the coordinator log", kind)
    param = exc.field if isinstance(exc, InvalidInput) else None
    return openai_error_body(str(exc), kind, param=param)


def error_headers(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, CapacityExceeded):
        retry = exc.retry_after_s if exc.retry_after_s is not None else 1.0
        return {"Retry-After": str(max(1, math.ceil(retry)))}
    return {}
