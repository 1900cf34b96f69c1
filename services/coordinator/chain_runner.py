"""One runner per chain of workers: it batches the ready requests routed over that chain into steps (decode
steps of every ready decode token, prompt steps of prompt chunks up to the token budget) and hands each
step's results back to the engine."""

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

# The default pipeline depth: more than any chain has stages, so every chain keeps one step per stage in
# flight, as pipeline-parallel serving does (vLLM runs one micro-batch per pipeline stage). A fixed depth
# leaves the stages beyond it idle: at 2, a 10-stage chain was simulated 16% busy and served 54.3 decode
# tok/s against 59.7 at one step per stage (cluster10, bench/planner_cluster10.py); no fleet measured
# (README, "Steps and pipeline depth") served more than 1% less at one per stage than at 2.
ONE_PER_STAGE = 64


class ChainLike(Protocol):
    """What the engine needs of services.worker.client.ChainClient (tests may pass a fake)."""

    async def step(self, items: Sequence[StepInput]) -> list[TokenResult]: ...

    async def abort(self, request_ids: Sequence[str]) -> None: ...


ChainFactory = Callable[[Sequence[HopAddress]], ChainLike]
# (request, tokens to send, is last chunk of what it has pending)
Batch = list[tuple["Request", list[int], bool]]


def is_decode(r: Request) -> bool:
    """One token to send after a cached prompt: a decode (anything else is a prompt, or the rest of one)."""
    return len(r.pending) == 1 and r.cached > 0


def select(ready: list[Request], budget: int) -> tuple[Batch, Batch]:
    """The next decode step and the next prompt step from `ready`, each (request, tokens to send, is last
    chunk): every decode; prompts in arrival order, chunked, while the token budget lasts."""
    decodes: Batch = [(r, r.pending[:1], True) for r in ready if is_decode(r)]
    prompts: Batch = []
    left = budget
    for r in ready:
        if left <= 0:
            break
        if is_decode(r):
            continue
        chunk = r.pending[:left]
        left -= len(chunk)
        prompts.append((r, chunk, len(chunk) == len(r.pending)))
    return decodes, prompts


class ChainRunner:
    """Keeps stepping the requests routed over one chain. A decode step carries every ready decode token, a
    prompt step the ready prompts' chunks up to the token budget; each kind has up to `depth` steps (the
    pipeline depth, at most one per stage) in flight, so every stage has work. The kinds never share a
    step: a decode riding with a prompt pays the prompt's compute at every stage it crosses, and a prompt
    waiting for a decode step's slot delays its first token (simulated with chain steps, full offline
    runs: cluster24 swarm's layout 95.8 -> 125.0 decode tok/s, `serve`'s 3cluster24 plan 174.4 -> 203.0;
    simulator.chain_steps)."""

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
        # Steps in flight by kind: [decode steps, prompt steps].
        self.inflight = [0, 0]
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
                launched = False
                if ready and min(self.inflight) < self.depth:
                    for kind, batch in enumerate(select(ready, limits.max_batch_tokens)):
                        if batch and self.inflight[kind] < self.depth:
                            self._launch(kind, batch)
                            launched = True
                if launched:
                    continue
                if not self.requests and not any(self.inflight):
                    break
                self.wake.clear()
                await self.wake.wait()
        finally:
            self.engine._runner_done(self)

    def _launch(self, kind: int, batch: Batch) -> None:
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
        self.inflight[kind] += 1
        self.engine._spawn(self._step(kind, [b[0] for b in batch], items, epochs))

    async def _step(self, kind: int, reqs: list[Request], items: list[StepInput], epochs: list[int]) -> None:
        t0 = self.engine.clock()
        try:
            try:
                results = await self.client.step(items)
            except (grpc.RpcError, OSError, BrlError, RuntimeError) as exc:
                results = [error_result(i.request_id, UNAVAILABLE, f"step failed: {exc}") for i in items]
        finally:
            self.inflight[kind] -= 1
            self.wake.set()
        self.engine._on_step(self, reqs, items, results, epochs, self.engine.clock() - t0)
