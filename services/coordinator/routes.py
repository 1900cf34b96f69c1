"""HTTP routes of the coordinator (thin: parse, call serving, render); errors go through the one HTTP
handler (services/http_errors.py)."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from planner.errors import InvalidInput
from services.coordinator import openai_models as om
from services.coordinator import planswap
from services.coordinator.errors import AuthenticationFailed
from services.coordinator.metrics import CONTENT_TYPE
from services.http_errors import install_error_handlers

if TYPE_CHECKING:
    from services.coordinator.main import Coordinator

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def build_app(coord: Coordinator) -> FastAPI:
    app = FastAPI(title="BRL coordinator", version="0.1.0", docs_url=None, redoc_url=None)
    install_errors(app)

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


def install_errors(app: FastAPI) -> None:
    install_error_handlers(
        app, invalid_body=invalid_body, routes_hint="; see /v1/models, /v1/completions, /v1/chat/completions"
    )


def invalid_body(exc: RequestValidationError) -> InvalidInput:
    """A body that fails the OpenAI schema, named the way OpenAI names it (400, `param` = the field)."""
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
    # The message is complete as is; `field` only fills `param` (InvalidInput would prefix it).
    err = InvalidInput(message)
    err.field = param
    return err
