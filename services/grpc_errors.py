"""The gRPC handler for BRL errors: status code, details and retry-after trailer from the one table
(services/errors_table.py). Sync servers call `abort`; asyncio servers await `context.abort(*status(exc))`."""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc

from services.errors_table import kind_of, log_server_error, public_message, retry_after_s

log = logging.getLogger(__name__)


def status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC code and details for `exc`; a server-side error is logged here and does not leak its text."""
    log_server_error(log, exc, "an rpc")
    return kind_of(exc).grpc_code, public_message(exc)


def trailing_metadata(exc: BaseException) -> tuple[tuple[str, str], ...]:
    seconds = retry_after_s(exc)
    return () if seconds is None else (("retry-after", str(seconds)),)


def abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    """End the RPC with `exc`'s status (context.abort raises)."""
    trailer = trailing_metadata(exc)
    if trailer:
        context.set_trailing_metadata(trailer)
    code, details = status(exc)
    context.abort(code, details)
    raise AssertionError("unreachable")  # context.abort always raises
