"""The coordinator's view of the one error table (services/errors_table.py) and of its OpenAI-shaped HTTP
handler (services/http_errors.py): the names coordinator modules import, no mapping of its own."""

from __future__ import annotations

from services.errors_table import (
    ERROR_TABLE,
    INTERNAL,
    ErrorKind,
    ModelNotFound,
    NotFound,
    Unauthorized,
    kind_of,
)
from services.http_errors import error_body, error_headers, openai_error_body

# The coordinator's name for a /v1 call without the configured API key.
AuthenticationFailed = Unauthorized

__all__ = [
    "ERROR_TABLE",
    "INTERNAL",
    "AuthenticationFailed",
    "ErrorKind",
    "ModelNotFound",
    "NotFound",
    "error_body",
    "error_headers",
    "kind_of",
    "openai_error_body",
]
