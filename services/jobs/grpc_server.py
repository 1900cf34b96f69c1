"""gRPC plumbing shared by the job services: a server with grpc.health.v1 and reflection, the API-key
check on mutating calls, and one decorator that answers errors through the one gRPC handler
(services/grpc_errors.py)."""

from __future__ import annotations

import functools
import hmac
import json
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import ValidationError

from planner.errors import InvalidInput
from services.errors_table import Unauthorized
from services.grpc_errors import abort
from services.jobs.store import Job

R = TypeVar("R")


def invalid_from_validation(exc: ValidationError, *, prefix: str = "") -> InvalidInput:
    """A pydantic error as InvalidInput naming the first bad field (the message lists up to five)."""
    errors = exc.errors()
    parts = []
    for e in errors[:5]:
        field = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{prefix}{field}: {e.get('msg', 'invalid')}" if field else str(e.get("msg", "invalid")))
    first = ".".join(str(p) for p in errors[0].get("loc", ())) if errors else ""
    # The message already names each field; `field` carries the first one for programs.
    exc_out = InvalidInput("; ".join(parts) or "invalid request")
    exc_out.field = (prefix + first) or None
    return exc_out


def check_api_key(context: grpc.ServicerContext, api_key: str | None) -> None:
    if api_key is None:
        return
    metadata = dict(context.invocation_metadata() or ())
    header = str(metadata.get("authorization", ""))
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise Unauthorized("missing or wrong API key: send metadata 'authorization: Bearer <BRL_API_KEY>'")


def rpc_errors(method: Callable[..., R]) -> Callable[..., R]:
    """Map exceptions of an RPC handler `(self, request, context)` to a gRPC status via the one table."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> R:
        try:
            return method(self, request, context)
        except ValidationError as exc:
            err: BaseException = invalid_from_validation(exc)
        except Exception as exc:
            err = exc
        abort(context, err)

    return wrapper


def watch_job(
    get: Callable[[], Job],
    render: Callable[[Job], R],
    context: grpc.ServicerContext,
    *,
    interval_s: float = 0.25,
) -> Iterator[R]:
    """Yield the rendered job now and whenever its status or progress changes, until it finishes or the
    client goes away (server-streaming RPCs)."""
    last: tuple[Any, ...] | None = None
    while context.is_active():
        job = get()
        key = (job.status, json.dumps(job.progress, sort_keys=True, default=str), job.cancel_requested)
        if key != last:
            last = key
            yield render(job)
        if not job.active:
            return
        time.sleep(interval_s)


def start_grpc_server(
    add: Callable[[grpc.Server], None],
    service_names: Sequence[str],
    *,
    host: str,
    port: int,
    max_workers: int = 32,
) -> tuple[grpc.Server, int]:
    """Build, bind and start a server; returns it with the bound port (port 0 picks a free one)."""
    server = grpc.server(ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"))
    add(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *service_names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    server.start()
    return server, bound
