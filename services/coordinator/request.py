"""One request as the coordinator's engine tracks it (prompt, tokens so far, chain, attempt), its generation
parameters, and the Handle a caller holds to read its tokens or cancel it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from planner.routing import Chain, RouteRequest
from services.worker.records import Sampling

if TYPE_CHECKING:
    from services.coordinator.chain_runner import ChainRunner
    from services.coordinator.engine import Engine


@dataclass(frozen=True)
class GenParams:
    max_tokens: int
    sampling: Sampling = Sampling()
    eos_ids: frozenset[int] = frozenset()
    ignore_eos: bool = False


@dataclass(frozen=True)
class Finished:
    reason: str


@dataclass(eq=False)
class Request:
    id: str
    prompt: list[int]
    params: GenParams
    arrival_s: float
    out: asyncio.Queue[int | Finished | BaseException] = field(default_factory=asyncio.Queue)
    generated: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    cached: int = 0
    chain: Chain | None = None
    runner: ChainRunner | None = None
    epoch: int = 0
    in_flight: bool = False
    done: bool = False
    retries: int = 0
    queued_at_s: float = 0.0
    first_token_s: float | None = None
    last_token_s: float | None = None
    finish_reason: str | None = None
    routes: list[list[str]] = field(default_factory=list)

    @property
    def wire_id(self) -> str:
        """Id on the wire: a fresh one per attempt, so state left on an old chain never meets a retry."""
        return self.id if self.epoch == 0 else f"{self.id}.{self.epoch}"

    def route_request(self) -> RouteRequest:
        already = len(self.generated)
        return RouteRequest(self.id, len(self.prompt) + already, max(0, self.params.max_tokens - already))

    def log_record(self, now: float, error: str | None = None) -> dict[str, Any]:
        """The request log's line for this request as it ends (see services.coordinator.eventlog)."""
        out = len(self.generated)
        decode_s = (
            (self.last_token_s - self.first_token_s) / (out - 1)
            if (out > 1 and self.first_token_s is not None and self.last_token_s is not None)
            else None
        )
        return {
            "id": self.id,
            "arrival": round(self.arrival_s, 6),
            "wall": round(time.time(), 6),
            "input_len": len(self.prompt),
            "output_len": out,
            "route": self.routes[-1] if self.routes else None,
            "routes": len(self.routes),
            "retries": self.retries,
            "finish_reason": self.finish_reason,
            "error": error,
            "ttft_s": None if self.first_token_s is None else round(self.first_token_s - self.arrival_s, 6),
            "decode_latency_s": None if decode_s is None else round(decode_s, 6),
            "e2e_s": round(now - self.arrival_s, 6),
        }


class Handle:
    """What a caller holds for one request: iterate its token ids, read usage, cancel it."""

    def __init__(self, engine: Engine, request: Request) -> None:
        self._engine = engine
        self._r = request

    @property
    def request_id(self) -> str:
        return self._r.id

    @property
    def prompt_tokens(self) -> int:
        return len(self._r.prompt)

    @property
    def completion_tokens(self) -> int:
        return len(self._r.generated)

    @property
    def finish_reason(self) -> str | None:
        return self._r.finish_reason

    async def tokens(self) -> AsyncIterator[int]:
        while True:
            event = await self._r.out.get()
            if isinstance(event, Finished):
                return
            if isinstance(event, BaseException):
                raise event
            yield event

    def cancel(self, reason: str = "cancelled") -> None:
        self._engine.cancel(self._r, reason)
