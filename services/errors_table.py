"""The one table from BRL's typed errors to HTTP status + OpenAI `error.type`/`code` and to gRPC codes.

The per-protocol handlers (services/http_errors.py, services/grpc_errors.py) look errors up here and nowhere
else. Where a service must answer differently for the same core error, it raises a different type: e.g. a
NoRoute while evaluating a placement the caller sent is the caller's to fix (UnroutablePlacement, 422),
while a NoRoute while serving is the fleet's state right now (503).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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

# --- Errors the services add to the core's ------------------------------------------------------------


class NotFound(BrlError):
    """A job, plan, artifact or URL path that this service does not have."""

    def __init__(self, kind: str, ident: str, *, message: str | None = None) -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(message or f"no {kind} with id {ident!r}")


class Conflict(BrlError):
    """The request is well formed but the resource's state forbids it (e.g. the plan job is not done)."""


class Unauthorized(BrlError):
    """Missing or wrong API key on a call that needs one."""


class MethodNotAllowed(BrlError):
    """An HTTP method the path does not accept."""


class ModelNotFound(UnknownName):
    """The `model` of an OpenAI request is not the one this deployment serves: 404, as OpenAI answers (a bad
    name elsewhere in a body is plain UnknownName, a 400 naming the field)."""


class InvalidBody(InvalidInput):
    """A request body that fails schema validation in the job services (FastAPI's 422 convention; the
    OpenAI-compatible coordinator answers the same failure as plain InvalidInput, 400, as OpenAI does)."""


class BodyTooLarge(InvalidInput):
    """A request body over the service's size limit."""


class InfeasiblePlacement(InfeasiblePlan):
    """The placement or plan the caller sent cannot work (the caller's to fix, 422), as opposed to the
    serving fleet's plan being infeasible right now (InfeasiblePlan, 503)."""


class UnroutablePlacement(InfeasiblePlacement):
    """No chain of the caller's placement covers every layer (NoRoute met while evaluating it)."""

    def __init__(self, message: str, *, uncovered: tuple[tuple[int, int], ...] = ()) -> None:
        self.uncovered = uncovered
        super().__init__(message)


@contextmanager
def evaluating_user_placement() -> Iterator[None]:
    """Wrap the evaluation of a placement/plan the request sent: NoRoute and InfeasiblePlan raised inside
    become UnroutablePlacement / InfeasiblePlacement, so they answer 422 instead of 503."""
    try:
        yield
    except NoRoute as exc:
        raise UnroutablePlacement(str(exc), uncovered=exc.uncovered) from exc
    except InfeasiblePlan as exc:
        if isinstance(exc, InfeasiblePlacement):
            raise
        raise InfeasiblePlacement(str(exc)) from exc


# --- The table ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorKind:
    http_status: int
    openai_type: str
    grpc_code: grpc.StatusCode
    code: str


# Most specific first: the first class the exception is an instance of wins.
ERROR_TABLE: tuple[tuple[type[BaseException], ErrorKind], ...] = (
    (
        Unauthorized,
        ErrorKind(401, "authentication_error", grpc.StatusCode.UNAUTHENTICATED, "invalid_api_key"),
    ),
    (ModelNotFound, ErrorKind(404, "invalid_request_error", grpc.StatusCode.NOT_FOUND, "not_found")),
    (NotFound, ErrorKind(404, "invalid_request_error", grpc.StatusCode.NOT_FOUND, "not_found")),
    (
        MethodNotAllowed,
        ErrorKind(405, "invalid_request_error", grpc.StatusCode.UNIMPLEMENTED, "method_not_allowed"),
    ),
    (Conflict, ErrorKind(409, "invalid_request_error", grpc.StatusCode.FAILED_PRECONDITION, "conflict")),
    (
        BodyTooLarge,
        ErrorKind(413, "invalid_request_error", grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
    ),
    (
        InvalidBody,
        ErrorKind(422, "invalid_request_error", grpc.StatusCode.INVALID_ARGUMENT, "validation_error"),
    ),
    (UnknownName, ErrorKind(400, "invalid_request_error", grpc.StatusCode.INVALID_ARGUMENT, "unknown_name")),
    (
        InvalidInput,
        ErrorKind(400, "invalid_request_error", grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
    ),
    (
        UnroutablePlacement,
        ErrorKind(422, "invalid_request_error", grpc.StatusCode.FAILED_PRECONDITION, "no_route"),
    ),
    (
        InfeasiblePlacement,
        ErrorKind(422, "invalid_request_error", grpc.StatusCode.FAILED_PRECONDITION, "infeasible_plan"),
    ),
    (
        CapacityExceeded,
        ErrorKind(429, "rate_limit_error", grpc.StatusCode.RESOURCE_EXHAUSTED, "capacity_exceeded"),
    ),
    (NoRoute, ErrorKind(503, "service_unavailable", grpc.StatusCode.UNAVAILABLE, "no_route")),
    (Unavailable, ErrorKind(503, "service_unavailable", grpc.StatusCode.UNAVAILABLE, "unavailable")),
    # The serving plan cannot work with the fleet as it is: retrying later (after a rollout) may succeed,
    # but a gRPC client should not retry blindly, hence FAILED_PRECONDITION rather than UNAVAILABLE.
    (
        InfeasiblePlan,
        ErrorKind(503, "service_unavailable", grpc.StatusCode.FAILED_PRECONDITION, "infeasible_plan"),
    ),
)
INTERNAL = ErrorKind(500, "server_error", grpc.StatusCode.INTERNAL, "internal_error")
# What a client reads for a 5xx, by error code: the exception's own text (addresses, a dependency's reply,
# a traceback's message) goes to the log under the error id instead. An unknown code reads as internal.
GENERIC_5XX = {
    "no_route": "no live chain of workers can serve the model right now; retry later",
    "unavailable": "the service cannot complete this request right now; retry later",
    "infeasible_plan": "the serving plan cannot run on the live fleet right now; retry later",
    "internal_error": "internal error",
}


def error_id(exc: BaseException) -> str:
    """A short random id for `exc`, made once and kept on it, so the client's message and the log line that
    holds the traceback carry the same id."""
    existing = getattr(exc, "brl_error_id", None)
    if isinstance(existing, str):
        return existing
    new = uuid.uuid4().hex[:16]
    try:
        exc.brl_error_id = new  # type: ignore[attr-defined]
    except AttributeError:  # an exception type without __dict__: the id is fresh each call
        pass
    return new


def kind_of(exc: BaseException) -> ErrorKind:
    for cls, kind in ERROR_TABLE:
        if isinstance(exc, cls):
            return kind
    return INTERNAL


def printable(text: str) -> str:
    """`text` with lone surrogates escaped: they cannot be encoded as UTF-8, so a message quoting a client's
    broken string would otherwise fail while being sent (a 500 for a 4xx mistake)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def public_message(exc: BaseException) -> str:
    """What a client may read. A 4xx keeps its own text: it is about the client's request and names the field
    to fix. A 5xx reads as a generic message per code plus the error id; its text can
    hold internal addresses or a dependency's reply, so the handlers log it under that id."""
    kind = kind_of(exc)
    # `public_text = True` on an error class: its text is fixed wording that tells the client what to do.
    if kind.http_status < 500 or getattr(exc, "public_text", False) is True:
        return printable(str(exc))
    generic = GENERIC_5XX.get(kind.code, GENERIC_5XX["internal_error"])
    return f"{generic} (error id {error_id(exc)})"


def log_server_error(log: logging.Logger, exc: BaseException, where: str) -> None:
    """Log a 5xx's real reason under its error id (with the traceback for internal errors)."""
    kind = kind_of(exc)
    if kind is INTERNAL:
        log.error("error %s on %s: %s: %s", error_id(exc), where, type(exc).__name__, exc, exc_info=exc)
    elif kind.http_status >= 500:
        log.warning("error %s on %s (%s): %s", error_id(exc), where, kind.code, exc)


def retry_after_s(exc: BaseException) -> int | None:
    """Whole seconds to wait before retrying (at least 1, rounded up), for errors that say to retry."""
    if not isinstance(exc, CapacityExceeded):
        return None
    seconds = exc.retry_after_s if exc.retry_after_s is not None else 1.0
    return max(1, math.ceil(seconds))
