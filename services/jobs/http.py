"""FastAPI plumbing shared by the job services: API-key check, the one error handler, body-size limit,
and the JSON view of a job. Routes stay a few lines each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from services.bearer import bearer_matches
from services.body_limit import BodyLimit
from services.errors_table import InvalidBody, Unauthorized
from services.http_errors import install_error_handlers
from services.jobs.store import Job


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


_ERROR_TEXT = {
    400: "invalid input (the message and `param` name the field)",
    401: "missing or wrong API key",
    404: "no such id",
    409: "the job is not in a state that allows this (e.g. DELETE of a queued or running job)",
    413: "request body too large",
    422: "request fails validation (the message names the field), or the placement sent cannot route",
    429: "too many active jobs; retry after the Retry-After header's seconds",
    503: "a service this call needs (e.g. the planner) cannot be reached",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error codes a route can answer, all with the one error body."""
    return {code: {"model": ErrorResponse, "description": _ERROR_TEXT[code]} for code in codes}


class JobProgress(BaseModel):
    """Latest progress a job reported. Solvers fill incumbent/bound/gap; simulations fill their own keys."""

    elapsed_s: float | None = None
    incumbent_tok_per_s: float | None = None
    bound_tok_per_s: float | None = None
    gap: float | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class JobError(BaseModel):
    type: str
    message: str
    field: str | None = None
    error_id: str | None = Field(None, description="set on internal failures: the id of the log entry")


class JobView(BaseModel):
    id: str
    kind: str
    status: str = Field(description="queued | running | succeeded | failed | cancelled")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    cancel_requested: bool = False
    label: str | None = None
    method: str | None = Field(None, description="placement method (plan jobs)")
    progress: JobProgress | None = None
    error: JobError | None = None
    request: dict[str, Any] | None = None
    result: dict[str, Any] | None = None


class JobList(BaseModel):
    items: list[JobView]
    limit: int
    offset: int


PROGRESS_KEYS = ("elapsed_s", "incumbent_tok_per_s", "bound_tok_per_s", "gap")


def progress_view(progress: dict[str, Any] | None) -> JobProgress | None:
    if progress is None:
        return None
    known = {k: progress[k] for k in PROGRESS_KEYS if isinstance(progress.get(k), int | float)}
    extra = {k: v for k, v in progress.items() if k not in PROGRESS_KEYS}
    return JobProgress(**known, extra=extra)


def job_view(job: Job, *, full: bool = True) -> JobView:
    """`full` adds the request and the result (a list shows neither, to stay small)."""
    error = None
    if job.error is not None:
        error = JobError(
            type=str(job.error.get("type", "Error")),
            message=str(job.error.get("message", "")),
            field=job.error.get("field"),
            error_id=job.error.get("error_id"),
        )
    return JobView(
        id=job.id,
        kind=job.kind,
        status=job.status,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        cancel_requested=job.cancel_requested,
        label=job.request.get("label"),
        method=job.request.get("method"),
        progress=progress_view(dict(job.progress) if job.progress is not None else None),
        error=error,
        request=dict(job.request) if full else None,
        result=dict(job.result) if (full and job.result is not None) else None,
    )


def api_key_checker(api_key: str | None) -> Callable[[Request], None]:
    """A dependency for mutating routes: `Authorization: Bearer <key>` must match when a key is set."""

    def check(request: Request) -> None:
        if api_key is None:
            return
        if not bearer_matches(request, api_key):
            raise Unauthorized("missing or wrong API key: send 'Authorization: Bearer <BRL_API_KEY>'")

    return check


def _field_of(loc: tuple[Any, ...]) -> str:
    """`("body", "placement", "n0", 1)` -> "placement.n0.1"; a whole-body error (bad JSON) -> "body"."""
    rest = loc[1:] if loc and loc[0] == "body" else loc
    if not rest or (loc and loc[0] == "body" and isinstance(rest[0], int)):
        return "body"
    return ".".join(str(p) for p in rest)


def invalid_body(exc: RequestValidationError) -> InvalidBody:
    """A body failing its schema: the message names each bad field (up to five), `param` the first."""
    errors = exc.errors()
    parts = [f"{_field_of(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in errors[:5]]
    err = InvalidBody("; ".join(parts) or "invalid request")
    # The message already names each field; `field` only fills `param` (InvalidInput would prefix it).
    err.field = _field_of(tuple(errors[0].get("loc", ()))) if errors else None
    return err


def install(app: FastAPI, *, max_body_bytes: int) -> None:
    """Error handlers (the one HTTP handler, services.http_errors) and the body limit on the bytes received
    (services.body_limit: chunked bodies and wrong Content-Length headers included)."""
    install_error_handlers(app, invalid_body=invalid_body)
    app.add_middleware(BodyLimit, max_body_bytes=max_body_bytes)
