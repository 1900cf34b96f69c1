"""The few named errors the core raises; services map them to HTTP/gRPC status in one table."""

from __future__ import annotations


class BrlError(Exception):
    """Base of every error BRL raises on purpose."""


class InvalidInput(BrlError):
    """Input that does not meet its contract: names the source (file or body), the field or line, and
    what was expected, so a user can fix it without reading code."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None) -> None:
        self.source = source
        self.field = field
        self.detail = message
        where = ", ".join(p for p in (source, field) if p)
        super().__init__(f"{where}: {message}" if where else message)


class UnknownName(InvalidInput):
    """A registry key, bundled name or node name that does not exist; the message lists valid ones."""

    def __init__(
        self,
        kind: str,
        name: str,
        valid: list[str] | tuple[str, ...],
        *,
        source: str | None = None,
        field: str | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.valid = tuple(valid)
        super().__init__(
            f"unknown {kind} {name!r}; expected one of: {', '.join(sorted(self.valid))}",
            source=source,
            field=field,
        )


class InfeasiblePlan(BrlError):
    """No placement or chain can cover all layers with the given fleet."""


class CapacityExceeded(BrlError):
    """A queue, KV cache or limit is full; the caller may retry later."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class NoRoute(BrlError):
    """No chain of live workers covers layers [0, L) (names the uncovered layers when known)."""

    def __init__(self, message: str, *, uncovered: tuple[tuple[int, int], ...] = ()) -> None:
        self.uncovered = uncovered
        super().__init__(message)


class Unavailable(BrlError):
    """A dependency (worker, solver, service) cannot be reached right now."""
