"""A directed network link: one message in serialisation at a time (FIFO), each taking bytes / bandwidth,
then the link latency in flight. Serialisation and propagation pipeline, as in the paper's simulator."""

from __future__ import annotations

import math

from planner.errors import InvalidInput


class SimLink:
    """`send(t, nbytes)` returns the arrival time. Messages are handed over in time order, so the link's
    FIFO can be computed in closed form: start = max(t, free_at), free_at = start + nbytes / bandwidth,
    arrival = free_at + latency. `bytes_per_token` is what one token of a request costs on this hop."""

    __slots__ = (
        "src",
        "dst",
        "bandwidth_bytes_per_s",
        "latency_s",
        "bytes_per_token",
        "s_per_token",
        "free_at",
    )

    def __init__(
        self, src: str, dst: str, bandwidth_bytes_per_s: float, latency_s: float, bytes_per_token: float
    ) -> None:
        if not bandwidth_bytes_per_s > 0 or not math.isfinite(bandwidth_bytes_per_s):
            raise InvalidInput(f"link {src}->{dst}: bandwidth must be > 0, got {bandwidth_bytes_per_s}")
        self.src = src
        self.dst = dst
        self.bandwidth_bytes_per_s = bandwidth_bytes_per_s
        self.latency_s = latency_s
        self.bytes_per_token = bytes_per_token
        # Seconds on the wire per token; SimWorker inlines `send` on its hot path with this.
        self.s_per_token = bytes_per_token / bandwidth_bytes_per_s
        self.free_at = 0.0

    def send(self, now: float, tokens: int) -> float:
        start = self.free_at if self.free_at > now else now
        self.free_at = start + tokens * self.s_per_token
        return self.free_at + self.latency_s
