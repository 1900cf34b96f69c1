"""The coordinator's view of the one error table (services/errors_table.py) and of its OpenAI-shaped HTTP
handler (services/http_errors.py), plus what a client may read of a server-side failure.

A 5xx answer carries a generic message per error code and an error id (services/errors_table.py); the real
reason (worker addresses, a worker's or the planner's own reply, layer gaps) goes to the log under that id.
4xx answers keep their message: it is about the client's own request, and says how to fix it.
"""

from __future__ import annotations

import logging
from typing import Any

from planner.errors import Unavailable
from services.errors_table import (
    ERROR_TABLE,
    INTERNAL,
    ErrorKind,
    ModelNotFound,
    NotFound,
    Unauthorized,
    kind_of,
    log_server_error,
    printable,
)
from services.http_errors import error_body, error_headers, openai_error_body

# The coordinator's name for a /v1 call without the configured API key.
AuthenticationFailed = Unauthorized

log = logging.getLogger("brl.coordinator.errors")


class ShuttingDown(Unavailable):
    """The coordinator is draining: its message is fixed text and tells the client what to do, so it is
    shown as is (the one 5xx that is)."""

    public_text = True


def public_body(exc: BaseException) -> dict[str, Any]:
    """The error body a client gets for `exc` (an HTTP answer or a stream's last event); a 5xx's detail is
    logged under the id its generic message carries."""
    log_server_error(log, exc, "the coordinator")
    return error_body(exc)


__all__ = [
    "ERROR_TABLE",
    "INTERNAL",
    "AuthenticationFailed",
    "ErrorKind",
    "ModelNotFound",
    "NotFound",
    "ShuttingDown",
    "error_body",
    "error_headers",
    "kind_of",
    "openai_error_body",
    "printable",
    "public_body",
]
