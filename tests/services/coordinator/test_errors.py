"""One table maps every named error to HTTP status, OpenAI error type and gRPC code."""

from __future__ import annotations

import grpc

from planner.errors import CapacityExceeded, InfeasiblePlan, InvalidInput, NoRoute, Unavailable, UnknownName
from services.coordinator.errors import (
    AuthenticationFailed,
    ModelNotFound,
    error_body,
    error_headers,
    kind_of,
)


def test_table() -> None:
    cases = [
        (
            InvalidInput("bad", field="max_tokens"),
            400,
            "invalid_request_error",
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        # OpenAI answers an unknown model with 404; a bad name elsewhere in a body is a 400 naming the field.
        (ModelNotFound("model", "x", ["y"]), 404, "invalid_request_error", grpc.StatusCode.NOT_FOUND),
        (
            UnknownName("routing policy", "x", ["y"]),
            400,
            "invalid_request_error",
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            CapacityExceeded("full", retry_after_s=2.2),
            429,
            "rate_limit_error",
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
        (NoRoute("none"), 503, "service_unavailable", grpc.StatusCode.UNAVAILABLE),
        (Unavailable("down"), 503, "service_unavailable", grpc.StatusCode.UNAVAILABLE),
        (InfeasiblePlan("no"), 503, "service_unavailable", grpc.StatusCode.FAILED_PRECONDITION),
        (AuthenticationFailed("key"), 401, "authentication_error", grpc.StatusCode.UNAUTHENTICATED),
        (RuntimeError("boom"), 500, "server_error", grpc.StatusCode.INTERNAL),
    ]
    for exc, status, kind, code in cases:
        k = kind_of(exc)
        assert (k.http_status, k.openai_type, k.grpc_code) == (status, kind, code), exc


def test_body_shape_param_and_retry_after() -> None:
    body = error_body(InvalidInput("must be >= 1", source="request", field="max_tokens"))
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["param"] == "max_tokens"
    assert "must be >= 1" in body["error"]["message"]
    assert error_headers(CapacityExceeded("full", retry_after_s=2.2)) == {"Retry-After": "3"}
    assert error_headers(InvalidInput("x")) == {}
    assert "boom" not in error_body(RuntimeError("boom"))["error"]["message"]
