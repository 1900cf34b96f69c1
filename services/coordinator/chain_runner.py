"""One runner per chain of workers: it batches the ready requests routed over that chain into steps (every
decode token, prompt chunks up to the token budget) and hands each step's results back to the engine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import grpc

from planner.errors import BrlError
from planner.routing import Chain, chain_nodes
from services.worker.client import HopAddress, StepInput
from services.worker.records import UNAVAILABLE, TokenResult, error_result

if TYPE_CHECKING:
    from services.coordinator.engine import Engine
    from services.coordinator.request import Request

ChainKey = tuple[tuple[str, str, int, int], ...]


class ChainLike(Protocol):
    """What the engine needs of services.worker.client.ChainClient (tests may pass a fake)."""

    async def step(self, items: Sequence[StepInput]) -> list[TokenResult]: ...

    async def abort(self, request_ids: Sequence[str]) -> None: ...


ChainFactory = Callable[[Sequence[HopAddress]], ChainLike]


def select(ready: list[Request], budget: int) -> list[tuple[Request, list[int], bool]]:
    """(request, tokens to send, is last chunk) for this step: every decode, prompts while budget lasts."""
    batch: list[tuple[Request, list[int], bool]] = []
    for r in ready:
        if len(r.pending) == 1 and r.cached:
            batch.append((r, r.pending[:1], True))
    left = budget
    for r in ready:
        if len(r.pending) == 1 and r.cached:
            continue
        if left <= 0:
            break
        chunk = r.pending[:left]
        left -= len(chunk)
        batch.append((r, chunk, len(chunk) == len(r.pending)))
    return batch


class ChainRunner:
    """Keeps stepping the requests routed over one chain: each step batches every ready request (decode
    tokens, and prompt chunks up to the token budget); up to `depth` steps (the pipeline depth, at most
    one per stage) are in flight at once so every stage has work and new prompts need not wait for a
    decode step to come back."""

    def __init__(self, engine: Engine, key: ChainKey, chain: Chain, client: ChainLike) -> None:
        self.engine = engine
        self.key = key
        self.chain = chain
        self.nodes = list(chain_nodes(chain))
        self.addresses = [k[1] for k in key]
        self.client = client
        # At most one step per stage: a step beyond that would only queue behind another at some worker
        # and run there as a step of its own, where one merged step costs about as much as either (a
        # one-worker chain at depth 2 ran its clients as two half batches taking turns).
        self.depth = min(engine.limits.pipeline_depth, len(self.nodes))
        self.requests: dict[str, Request] = {}
        self.inflight = 0
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"chain {'>'.join(self.nodes)}")

    def add(self, r: Request) -> None:
        r.runner = self
        self.requests[r.id] = r
        self.wake.set()

    def remove(self, r: Request) -> None:
        if self.requests.pop(r.id, None) is not None:
            r.runner = None
            self.wake.set()

    async def _run(self) -> None:
        limits = self.engine.limits
        try:
            while True:
                ready = [r for r in self.requests.values() if not r.in_flight]
                if ready and self.inflight < self.depth:
                    self._launch(select(ready, limits.max_batch_tokens))
                    continue
                if not self.requests and not self.inflight:
                    break
                self.wake.clear()
                await self.wake.wait()
        finally:
            self.engine._runner_done(self)

    def _launch(self, batch: list[tuple[Request, list[int], bool]]) -> None:
        items: list[StepInput] = []
        epochs: list[int] = []
        for r, tokens, last in batch:
            r.in_flight = True
            # The step that samples the final allowed token frees the KV on the way: no release round trip.
            final = last and len(r.generated) + 1 >= r.params.max_tokens
            items.append(
                StepInput(r.wire_id, tokens, r.cached, r.params.sampling, finish=final, skip_sample=not last)
            )
            epochs.append(r.epoch)
        self.inflight += 1
        self.engine._spawn(self._step([b[0] for b in batch], items, epochs))

    async def _step(self, reqs: list[Request], items: list[StepInput], epochs: list[int]) -> None:
        t0 = self.engine.clock()
        try:
            try:
                results = await self.client.step(items)
            except (grpc.RpcError, OSError, BrlError, RuntimeError) as exc:
                results = [error_result(i.request_id, UNAVAILABLE, f"step failed: {exc}") for i in items]
        finally:
            self.inflight -= 1
            self.wake.set()
        self.engine._on_step(self, reqs, items, results, epochs, self.engine.clock() - t0)
