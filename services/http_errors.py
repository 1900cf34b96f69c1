"""The HTTP handler for BRL errors: OpenAI-shaped bodies `{"error": {"message", "type", "param", "code"}}`,
statuses and Retry-After from the one table (services/errors_table.py), and the FastAPI exception handlers
that every HTTP service installs. No route builds an error body by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from planner.errors import BrlError, InvalidInput
from services.errors_table import (
    Conflict,
    ErrorKind,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
    kind_of,
    log_server_error,
    printable,
    public_message,
    retry_after_s,
)

# Re-exported: modules and tests import these from here.
__all__ = [
    "Conflict",
    "NotFound",
    "Unauthorized",
    "error_body",
    "error_headers",
    "error_response",
    "install_error_handlers",
    "openai_error_body",
]

log = logging.getLogger(__name__)


def openai_error_body(message: str, kind: ErrorKind, *, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind.openai_type, "param": param, "code": kind.code}}


def error_body(exc: BaseException) -> dict[str, Any]:
    """The body for `exc` (also sent as the last event of a stream); internal errors do not leak text."""
    field = getattr(exc, "field", None)
    param = printable(field) if isinstance(field, str) else field
    return openai_error_body(public_message(exc), kind_of(exc), param=param)


def error_headers(exc: BaseException) -> dict[str, str]:
    seconds = retry_after_s(exc)
    return {} if seconds is None else {"Retry-After": str(seconds)}


def error_response(exc: BaseException, *, where: str = "a request") -> JSONResponse:
    log_server_error(log, exc, where)
    return JSONResponse(error_body(exc), status_code=kind_of(exc).http_status, headers=error_headers(exc))


def _from_http_exception(request: Request, exc: StarletteHTTPException, routes_hint: str) -> BrlError:
    """Starlette's own errors (no such path, wrong method) as typed errors, so they go through the table."""
    what = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        return NotFound("route", what, message=f"no route {what}{routes_hint}")
    if exc.status_code == 405:
        return MethodNotAllowed(f"method not allowed: {what}")
    return InvalidInput(str(exc.detail))


def install_error_handlers(
    app: FastAPI,
    *,
    invalid_body: Callable[[RequestValidationError], InvalidInput],
    routes_hint: str = "",
) -> None:
    """Answer every error of `app` through the table. `invalid_body` turns a schema-validation failure into
    the service's typed error (its type picks the status); `routes_hint` ends the message of an unknown path."""

    @app.exception_handler(RequestValidationError)
    async def on_invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(invalid_body(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = _from_http_exception(request, exc, routes_hint)
        # A status the table has no row for (another of Starlette's 4xx) keeps Starlette's status.
        status = kind_of(err).http_status if exc.status_code in (404, 405) else exc.status_code
        headers = {**error_headers(err), **(exc.headers or {})}
        return JSONResponse(error_body(err), status_code=status, headers=headers)

    @app.exception_handler(BrlError)
    async def on_brl_error(request: Request, exc: BrlError) -> JSONResponse:
        return error_response(exc, where=f"{request.method} {request.url.path}")

    # Anything else reaches Starlette's server-error middleware, which sends this response and then
    # re-raises, so the server logs the traceback too.
    @app.exception_handler(Exception)
    async def on_internal(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc, where=f"{request.method} {request.url.path}")
