"""The one check of an `Authorization: Bearer <key>` header, shared by every HTTP service (constant-time)."""

from __future__ import annotations

import hmac

from starlette.requests import Request


def bearer_matches(request: Request, key: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())
