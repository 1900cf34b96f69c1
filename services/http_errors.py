"""The one table that maps BRL errors to HTTP status + OpenAI-style `error.type` and to gRPC codes.

Used by the planner and simulator services (REST and gRPC alike); a handler per protocol looks errors up
here, so no route builds an error body by hand. Most specific classes come first in the table.
"""

from __future__ import annotations

from collections.abc import Mapping
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


class NotFound(BrlError):
    """A job, plan or artifact id that does not exist (in this service's store)."""

    def __init__(self, kind: str, ident: str) -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(f"no {kind} with id {ident!r}")


class Conflict(BrlError):
    """The request is well formed but the resource's state forbids it (e.g. the plan job is not done)."""


class Unauthorized(BrlError):
    """Missing or wrong API key on a mutating call."""


@dataclass(frozen=True)
class ErrorMapping:
    http_status: int
    error_type: str
    code: str
    grpc_code: grpc.StatusCode


ERROR_TABLE: tuple[tuple[type[BaseException], ErrorMapping], ...] = (
    (
        Unauthorized,
        ErrorMapping(401, "authentication_error", "invalid_api_key", grpc.StatusCode.UNAUTHENTICATED),
    ),
    (NotFound, ErrorMapping(404, "not_found_error", "not_found", grpc.StatusCode.NOT_FOUND)),
    (Conflict, ErrorMapping(409, "invalid_request_error", "conflict", grpc.StatusCode.FAILED_PRECONDITION)),
    (
        UnknownName,
        ErrorMapping(400, "invalid_request_error", "unknown_name", grpc.StatusCode.INVALID_ARGUMENT),
    ),
    (
        InvalidInput,
        ErrorMapping(400, "invalid_request_error", "invalid_input", grpc.StatusCode.INVALID_ARGUMENT),
    ),
    (
        InfeasiblePlan,
        ErrorMapping(422, "invalid_request_error", "infeasible_plan", grpc.StatusCode.FAILED_PRECONDITION),
    ),
    (NoRoute, ErrorMapping(422, "invalid_request_error", "no_route", grpc.StatusCode.FAILED_PRECONDITION)),
    (
        CapacityExceeded,
        ErrorMapping(429, "rate_limit_error", "capacity_exceeded", grpc.StatusCode.RESOURCE_EXHAUSTED),
    ),
    (Unavailable, ErrorMapping(503, "server_error", "unavailable", grpc.StatusCode.UNAVAILABLE)),
)
INTERNAL = ErrorMapping(500, "server_error", "internal_error", grpc.StatusCode.INTERNAL)
# Pydantic's request validation: the field is named in the message, like InvalidInput's.
VALIDATION = ErrorMapping(422, "invalid_request_error", "validation_error", grpc.StatusCode.INVALID_ARGUMENT)


def mapping_for(exc: BaseException) -> ErrorMapping:
    for cls, mapping in ERROR_TABLE:
        if isinstance(exc, cls):
            return mapping
    return INTERNAL


def error_body(exc: BaseException, mapping: ErrorMapping | None = None) -> dict[str, Any]:
    """OpenAI-style `{"error": {...}}`; internal errors do not leak their text."""
    mapping = mapping or mapping_for(exc)
    message = str(exc) if mapping is not INTERNAL else "internal error; see the service log"
    return {
        "error": {
            "message": message,
            "type": mapping.error_type,
            "code": mapping.code,
            "param": getattr(exc, "field", None),
        }
    }


def retry_after_header(exc: BaseException) -> Mapping[str, str]:
    seconds = getattr(exc, "retry_after_s", None)
    if seconds is None:
        return {}
    return {"Retry-After": str(max(1, int(round(float(seconds)))))}
