"""HTTP routes of the coordinator (thin: parse, call serving, render); errors go through the one HTTP
handler (services/http_errors.py), with what a client may read decided in services/coordinator/errors.py.
The OpenAI routes take the API key; `/v1/admin/*` exists only when an admin key is set, and takes only it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from planner.errors import InvalidInput
from services.bearer import bearer_matches
from services.body_limit import BodyLimit
from services.coordinator import dashboard, planswap
from services.coordinator import openai_models as om
from services.coordinator.errors import AuthenticationFailed, printable
from services.coordinator.metrics import CONTENT_TYPE
from services.coordinator.openai_models import LONE_SURROGATE
from services.http_errors import install_error_handlers

if TYPE_CHECKING:
    from services.coordinator.main import Coordinator

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# Documented for every route, so that clients (and the schema fuzzer) know the one error shape.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": om.ErrorResponse, "description": why}
    for status, why in (
        (400, "malformed body or a value out of range (param names the field)"),
        (401, "missing or wrong API key"),
        (404, "unknown model, plan id or path"),
        (409, "the planner job has no plan to load"),
        (413, "request body over the size limit"),
        (422, "a plan that cannot work"),
        (429, "queue full; retry after Retry-After seconds"),
        (500, "internal error (generic message and an error id; details in the log)"),
        (503, "no live chain or shutting down (generic message and an error id)"),
    )
}
STREAM_OR_JSON: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream=true"}
}


def build_app(coord: Coordinator) -> FastAPI:
    app = FastAPI(title="BRL coordinator", version="0.1.0", docs_url=None, redoc_url=None)
    install_errors(app)
    app.add_middleware(BodyLimit, max_body_bytes=coord.settings.max_body_bytes)

    async def require_key(request: Request) -> None:
        key = coord.settings.api_key
        if key and not bearer_matches(request, key):
            raise AuthenticationFailed(
                "missing or wrong API key: send the header `Authorization: Bearer <key>`"
            )

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)], responses=ERRORS)

    @v1.get("/models", response_model=om.ModelList)
    async def models() -> om.ModelList:
        return coord.serving.models()

    @v1.post("/completions", response_model=om.CompletionResponse, responses=STREAM_OR_JSON)
    async def completions(body: om.CompletionRequest, request: Request) -> Response:
        return render(await coord.serving.completion(body, request.is_disconnected))

    @v1.post("/chat/completions", response_model=om.ChatCompletionResponse, responses=STREAM_OR_JSON)
    async def chat(body: om.ChatCompletionRequest, request: Request) -> Response:
        return render(await coord.serving.chat(body, request.is_disconnected))

    app.include_router(v1)
    if coord.settings.admin_api_key:
        # Without an admin key the admin routes are not registered at all: a 404 like any unknown path,
        # and absent from /openapi.json. A 401/403 would tell a scanner that an admin API is there.
        app.include_router(admin_router(coord, coord.settings.admin_api_key))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        # Liveness: the process answers. Whether requests can be served is /ready.
        return coord.health()

    @app.get("/ready", responses={503: {"description": "not ready: no live chain covers the model"}})
    async def ready() -> JSONResponse:
        body = coord.health()
        return JSONResponse(body, status_code=200 if body["routable"] else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        coord.refresh_gauges()
        return Response(coord.metrics.render(), media_type=CONTENT_TYPE)

    # GET /dashboard (the page) and GET /v1/dashboard/state (its data: the API or admin key when set).
    dashboard.mount(app, coord, ERRORS)
    return app


def admin_router(coord: Coordinator, admin_key: str) -> APIRouter:
    """`/v1/admin/*`: its own key only; the inference key does not open it (settings refuse equal keys)."""

    async def require_admin_key(request: Request) -> None:
        if not bearer_matches(request, admin_key):
            raise AuthenticationFailed(
                "missing or wrong admin API key: send `Authorization: Bearer <admin key>` (BRL_ADMIN_API_KEY)"
            )

    admin = APIRouter(prefix="/v1/admin", dependencies=[Depends(require_admin_key)], responses=ERRORS)

    @admin.get("/plan")
    async def plan_status() -> dict[str, Any]:
        return planswap.status(coord)

    @admin.post("/plan")
    async def plan_swap(body: planswap.PlanSwapBody) -> dict[str, Any]:
        # In-flight requests finish on their chains; new ones route by the new plan.
        return await planswap.swap(coord, body)

    @admin.get("/rollout")
    async def rollout_status() -> dict[str, Any]:
        # The last live rollout's stage times and moves (BRL_AUTO_REPLAN); disabled: {"enabled": false}.
        if coord.controller is None:
            return {"enabled": False, "rollouts": 0, "last": None}
        status: dict[str, Any] = coord.controller.status()
        return status

    return admin


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
    param = printable(".".join(loc)) or None
    if first.get("type") == LONE_SURROGATE:
        ctx: Any = first.get("ctx") or {}
        param = str(ctx.get("field", "")) or None
        message = str(first.get("msg"))
    elif first.get("type") == "json_invalid":
        message = f"the body is not valid JSON ({first.get('msg')}); send a JSON object"
    elif first.get("type") == "extra_forbidden":
        message = f"unrecognized request argument: {param}"
    elif first.get("type") == "missing":
        message = f"missing required field: {param}"
    else:
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    # The message is complete as is; `field` only fills `param` (InvalidInput would prefix it).
    err = InvalidInput(printable(message))
    err.field = param
    return err
