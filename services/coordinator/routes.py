"""HTTP routes of the coordinator (thin: parse, call serving, render) and the one HTTP error handler."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from planner.errors import BrlError, InvalidInput
from services.coordinator import openai_models as om
from services.coordinator import planswap
from services.coordinator.errors import (
    INTERNAL,
    AuthenticationFailed,
    ErrorKind,
    NotFound,
    error_body,
    error_headers,
    kind_of,
    openai_error_body,
)
from services.coordinator.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from services.coordinator.main import Coordinator

log = logging.getLogger("brl.coordinator.http")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def build_app(coord: Coordinator) -> FastAPI:
    app = FastAPI(title="BRL coordinator", version="0.1.0", docs_url=None, redoc_url=None)
    install_error_handlers(app)

    async def require_key(request: Request) -> None:
        key = coord.settings.api_key
        if not key:
            return
        got = request.headers.get("authorization", "")
        scheme, _, token = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise AuthenticationFailed(
                "missing or wrong API key: send the header `Authorization: Bearer <key>`"
            )

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])

    @v1.get("/models")
    async def models() -> dict[str, Any]:
        return coord.serving.models().model_dump()

    @v1.post("/completions", response_model=None)
    async def completions(body: om.CompletionRequest, request: Request) -> Response:
        return render(await coord.serving.completion(body, request.is_disconnected))

    @v1.post("/chat/completions", response_model=None)
    async def chat(body: om.ChatCompletionRequest, request: Request) -> Response:
        return render(await coord.serving.chat(body, request.is_disconnected))

    @v1.get("/admin/plan")
    async def plan_status() -> dict[str, Any]:
        return planswap.status(coord)

    @v1.post("/admin/plan")
    async def plan_swap(body: planswap.PlanSwapBody) -> dict[str, Any]:
        # In-flight requests finish on their chains; new ones route by the new plan.
        return await planswap.swap(coord, body)

    app.include_router(v1)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        # Liveness: the process answers. Whether requests can be served is /ready.
        return coord.health()

    @app.get("/ready")
    async def ready() -> JSONResponse:
        body = coord.health()
        return JSONResponse(body, status_code=200 if body["routable"] else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        coord.refresh_gauges()
        return Response(coord.metrics.render(), media_type=CONTENT_TYPE)

    return app


def render(result: Any) -> Response:
    if isinstance(result, AsyncIterator):
        return StreamingResponse(result, media_type="text/event-stream", headers=SSE_HEADERS)
    return JSONResponse(result.model_dump())


def _json_error(
    status_kind: ErrorKind, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status_kind.http_status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BrlError)
    async def brl_error(request: Request, exc: BrlError) -> JSONResponse:
        return _json_error(kind_of(exc), error_body(exc), error_headers(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            message = f"the body is not valid JSON ({first.get('msg')}); send a JSON object"
        elif first.get("type") == "extra_forbidden":
            message = f"unrecognized request argument: {param}"
        elif first.get("type") == "missing":
            message = f"missing required field: {param}"
        else:
            message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        kind = kind_of(InvalidInput(message))
        return _json_error(kind, openai_error_body(message, kind, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err: BrlError = NotFound(
                f"no route {request.method} {request.url.path}; see /v1/models, "
                "/v1/completions, /v1/chat/completions"
            )
            return _json_error(kind_of(err), error_body(err))
        kind = ErrorKind(exc.status_code, "invalid_request_error", INTERNAL.grpc_code, None)
        return _json_error(kind, openai_error_body(str(exc.detail), kind))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _json_error(INTERNAL, error_body(exc))
