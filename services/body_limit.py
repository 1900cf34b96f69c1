"""A pure-ASGI guard on request bodies: every HTTP service (coordinator, planner, simulator) counts the bytes
actually received and answers 413, in the one error shape, once they pass the limit.

Why count rather than read Content-Length: a chunked body has none, and a header is the client's claim, not
what arrives. Why read the whole body before calling the app rather than count inside the app's `receive`:
FastAPI turns any exception raised while it reads a body into a 400, so the app itself could never answer 413;
reading first also means a route never starts work on a body that is then cut off. The JSON APIs behind this
read the whole body anyway, so buffering up to the limit costs them no memory they would not spend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from services.errors_table import BodyTooLarge
from services.http_errors import error_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 4_000_000


def too_large(max_body_bytes: int, declared: int | None = None) -> BodyTooLarge:
    said = f" (Content-Length {declared})" if declared is not None else ""
    return BodyTooLarge(f"request body is over the limit of {max_body_bytes} bytes{said}", field="body")


def declared_length(scope: Scope) -> int | None:
    """Content-Length as sent, or None when absent or not a plain number (the server rejects those)."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


class BodyLimit:
    """Wrap an ASGI app: HTTP requests whose body passes `max_body_bytes` get 413 and never reach the app."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be >= 1")
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            # Refused before a byte of it is read: the server closes the connection after the answer.
            await error_response(too_large(self.max_body_bytes, declared))(scope, receive, send)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away mid-body: nothing to answer
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_body_bytes:
                await error_response(too_large(self.max_body_bytes))(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the buffered body over once, then defers to the server's (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
