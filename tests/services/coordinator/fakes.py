"""An in-process stand-in for a fleet of workers, for engine tests that need no model: each fake worker
keeps per-request token caches like a real KV cache; the "model" is a deterministic function of the
whole sequence, so a request re-run from its prompt plus tokens so far continues exactly the same."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from planner.model import ModelSpec
from planner.placement import LayerRange
from services.coordinator.engine import Engine, EngineLimits
from services.coordinator.fleet import Fleet
from services.coordinator.metrics import Metrics
from services.coordinator.registry import Registry, WorkerInfo
from services.worker.client import HopAddress, StepInput
from services.worker.records import FAILED_PRECONDITION, UNAVAILABLE, TokenResult, error_result

VOCAB = 50


def next_token(seq: Sequence[int]) -> int:
    return (sum(seq) * 7 + len(seq) * 3) % VOCAB + 5


@dataclass
class FakeWorker:
    address: str
    alive: bool = True
    cache: dict[str, int] = field(default_factory=dict)  # wire id -> tokens cached


@dataclass
class FakeWorld:
    workers: dict[str, FakeWorker] = field(default_factory=dict)
    seqs: dict[str, list[int]] = field(default_factory=dict)
    step_delay_s: float = 0.001

    def add(self, address: str) -> FakeWorker:
        w = self.workers[address] = FakeWorker(address)
        return w

    def kv_used(self) -> int:
        return sum(len(w.cache) for w in self.workers.values() if w.alive)

    async def release(self, address: str, ids: Sequence[str]) -> None:
        w = self.workers.get(address)
        if w is not None and w.alive:
            for i in ids:
                w.cache.pop(i, None)

    async def probe(self, address: str) -> bool:
        w = self.workers.get(address)
        return w is not None and w.alive

    def chain(self, hops: Sequence[HopAddress]) -> FakeChain:
        return FakeChain(self, list(hops))


@dataclass
class FakeChain:
    world: FakeWorld
    hops: list[HopAddress]

    async def step(self, items: Sequence[StepInput]) -> list[TokenResult]:
        await asyncio.sleep(self.world.step_delay_s)
        out = []
        for item in items:
            out.append(self._one(item))
        return out

    def _one(self, item: StepInput) -> TokenResult:
        for hop in self.hops:
            w = self.world.workers[hop.address]
            if not w.alive:
                return error_result(item.request_id, UNAVAILABLE, f"{hop.address} is down", hop.address)
            if w.cache.get(item.request_id, 0) != item.position:
                return error_result(item.request_id, FAILED_PRECONDITION, "position mismatch", hop.address)
        for hop in self.hops:
            w = self.world.workers[hop.address]
            w.cache[item.request_id] = item.position + len(item.token_ids)
        seq = self.world.seqs.setdefault(item.request_id, [])
        del seq[item.position :]
        seq.extend(item.token_ids)
        if item.finish:
            for hop in self.hops:
                self.world.workers[hop.address].cache.pop(item.request_id, None)
        if item.skip_sample:
            return TokenResult(item.request_id)
        return TokenResult(item.request_id, token_id=next_token(seq))

    async def abort(self, request_ids: Sequence[str]) -> None:
        for hop in self.hops:
            w = self.world.workers[hop.address]
            if not w.alive:
                return
            for r in request_ids:
                w.cache.pop(r, None)


MODEL = ModelSpec(
    "fake",
    num_layers=4,
    hidden_size=64,
    num_heads=4,
    num_kv_heads=4,
    intermediate_size=128,
    vocab_size=VOCAB + 10,
)


def make_engine(
    world: FakeWorld,
    layouts: dict[str, tuple[int, int]],
    *,
    kv_tokens: int = 10_000,
    limits: EngineLimits | None = None,
    policy: str = "maxflow",
) -> Engine:
    registry = Registry(time.monotonic, expiry_s=60.0, num_layers=MODEL.num_layers)
    for name, (start, end) in layouts.items():
        address = f"fake:{name}"
        world.add(address)
        registry.register(WorkerInfo(name, address, LayerRange(start, end), "cpu", kv_tokens))
    fleet = Fleet(registry, MODEL, policy=policy)
    return Engine(
        fleet,
        Metrics("fake"),
        limits=limits or EngineLimits(tick_s=0.02),
        chain_factory=world.chain,
        release_fn=world.release,
        probe_fn=world.probe,
    )


def reference(prompt: list[int], n: int) -> list[int]:
    seq = list(prompt)
    out = []
    for _ in range(n):
        tok = next_token(seq)
        out.append(tok)
        seq.append(tok)
    return out
