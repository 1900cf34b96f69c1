"""Continuous batching with a scripted backend: who shares a step, in what order, and what fails alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import torch

from planner.errors import CapacityExceeded
from services.worker.backends.base import Backend, ModelShape, ShardSpec, Work, WorkOut
from services.worker.batcher import Batcher
from services.worker.client import Connections
from services.worker.records import Segment

SHAPE = ModelShape(
    num_layers=2, hidden_size=4, vocab_size=8, num_heads=1, num_kv_heads=1, head_dim=4, max_positions=64
)


class ScriptedBackend(Backend):
    """Holds all layers; the next token is always (last input token + 1) % vocab; records every step."""

    name = "scripted"

    def __init__(self, capacity: int = 100, fail_with: Exception | None = None) -> None:
        super().__init__(ShardSpec("m", Path("."), 0, 2), SHAPE)
        self.capacity = capacity
        self.fail_with = fail_with
        self.steps: list[list[tuple[str, int]]] = []
        self.tokens: dict[str, int] = {}

    @property
    def kv_capacity_tokens(self) -> int:
        return self.capacity

    def kv_used_tokens(self) -> int:
        return sum(self.tokens.values())

    def step(self, works: list[Work]) -> list[WorkOut]:
        if self.fail_with is not None:
            raise self.fail_with
        self.steps.append([(w.request_id, w.num_tokens) for w in works])
        outs = []
        for w in works:
            self.tokens[w.request_id] = w.position + w.num_tokens
            assert w.token_ids is not None
            logits = torch.zeros(SHAPE.vocab_size)
            logits[(int(w.token_ids[-1]) + 1) % SHAPE.vocab_size] = 1.0
            outs.append(WorkOut(logits=logits))
        return outs

    def free(self, request_id: str) -> bool:
        return self.tokens.pop(request_id, None) is not None


def _seg(request_id: str, tokens: list[int], position: int = 0) -> Segment:
    return Segment(request_id, 0, 2, position, len(tokens), token_ids=tuple(tokens))


async def _with_batcher(backend: Backend, body, **kw):  # type: ignore[no-untyped-def]
    batcher = Batcher(backend, connections=Connections(), address="me:1", **kw)
    batcher.start()
    try:
        return await body(batcher)
    finally:
        await batcher.close()


def test_requests_from_separate_streams_share_a_step() -> None:
    backend = ScriptedBackend()

    async def body(b: Batcher) -> None:
        first, second = await asyncio.gather(b.submit([_seg("a", [1, 2])]), b.submit([_seg("b", [5])]))
        assert (first[0].token_id, second[0].token_id) == (3, 6)

    asyncio.run(_with_batcher(backend, body))
    assert backend.steps == [[("a", 2), ("b", 1)]]


def test_one_segment_per_request_per_step_in_order() -> None:
    backend = ScriptedBackend()

    async def body(b: Batcher) -> None:
        res = await b.submit([_seg("a", [1, 2, 3]), _seg("a", [4], position=3), _seg("b", [7])])
        assert [r.token_id for r in res] == [4, 5, 0]

    asyncio.run(_with_batcher(backend, body))
    assert backend.steps == [[("a", 3), ("b", 1)], [("a", 1)]]


def test_token_budget_splits_steps() -> None:
    backend = ScriptedBackend()

    async def body(b: Batcher) -> None:
        await b.submit([_seg("a", [1, 1, 1]), _seg("b", [1, 1, 1]), _seg("c", [1])])

    asyncio.run(_with_batcher(backend, body, max_batch_tokens=4))
    assert backend.steps == [[("a", 3), ("c", 1)], [("b", 3)]]


def test_backend_pool_full_answers_resource_exhausted_and_forgets_new_requests() -> None:
    backend = ScriptedBackend(fail_with=CapacityExceeded("blocks gone"))

    async def body(b: Batcher) -> None:
        (res,) = await b.submit([_seg("a", [1])])
        assert res.code == "resource_exhausted" and "blocks gone" in res.error
        assert b.active_requests == 0
        backend.fail_with = None
        (again,) = await b.submit([_seg("a", [1])])  # position 0 is accepted: nothing was kept
        assert again.ok

    asyncio.run(_with_batcher(backend, body))


class BlockBackend(ScriptedBackend):
    """KV in whole blocks of 4 tokens, like vLLM's pool; its step fails whole if the pool overflows."""

    BLOCK = 4

    def kv_used_tokens(self) -> int:
        return sum(-(-n // self.BLOCK) for n in self.tokens.values()) * self.BLOCK

    def kv_tokens_needed(self, request_id: str, position: int, num_tokens: int) -> int:
        held = -(-self.tokens.get(request_id, 0) // self.BLOCK)
        return max(0, -(-(position + num_tokens) // self.BLOCK) - held) * self.BLOCK

    def step(self, works: list[Work]) -> list[WorkOut]:
        added = sum(self.kv_tokens_needed(w.request_id, w.position, w.num_tokens) for w in works)
        if self.kv_used_tokens() + added > self.capacity:
            raise CapacityExceeded("the step overflowed the pool")
        return super().step(works)


def test_a_full_block_pool_refuses_only_the_request_that_does_not_fit() -> None:
    # 5 + 5 + 1 tokens fit 12 tokens, but in blocks of 4 they need 2 + 2 + 1 of the 3 there are.
    backend = BlockBackend(capacity=12)

    async def body(b: Batcher) -> None:
        res = await b.submit([_seg("a", [1] * 5), _seg("b", [2] * 5), _seg("c", [3])])
        assert [r.code for r in res] == ["ok", "resource_exhausted", "ok"]
        assert "KV cache full: 8 of 12 tokens in use, 8 more requested" in res[1].error
        assert res[1].failed_hop == "me:1" and (res[0].token_id, res[2].token_id) == (2, 4)
        # Decode tokens land in a's second block, which has room: nothing more is needed.
        (more,) = await b.submit([_seg("a", [6], position=5)])
        assert more.ok and backend.kv_used_tokens() == 12

    asyncio.run(_with_batcher(backend, body))
    assert backend.steps == [[("a", 5), ("c", 1)], [("a", 1)]]


def test_a_backend_bug_fails_the_step_not_the_worker() -> None:
    backend = ScriptedBackend(fail_with=RuntimeError("boom"))

    async def body(b: Batcher) -> None:
        (res,) = await b.submit([_seg("a", [1])])
        assert res.code == "internal" and "boom" in res.error
        backend.fail_with = None
        (ok,) = await b.submit([_seg("z", [1])])
        assert ok.token_id == 2

    asyncio.run(_with_batcher(backend, body))


class TimedBackend(ScriptedBackend):
    """Records how long each step's compute really took."""

    def __init__(self) -> None:
        super().__init__()
        self.compute_s: list[float] = []

    def step(self, works: list[Work]) -> list[WorkOut]:
        import time

        started = time.perf_counter()
        time.sleep(0.01)
        out = super().step(works)
        self.compute_s.append(time.perf_counter() - started)
        return out


def test_a_declared_slow_worker_stretches_each_step_by_its_speed_factor() -> None:
    backend = TimedBackend()

    async def body(b: Batcher) -> None:
        await b.submit([_seg("a", [1, 2])])
        await b.submit([_seg("a", [3], position=2)])

    batcher_holder: list[Batcher] = []

    async def run() -> None:
        batcher = Batcher(backend, connections=Connections(), address="me:1", speed_factor=0.25)
        batcher_holder.append(batcher)
        batcher.start()
        try:
            await body(batcher)
        finally:
            await batcher.close()

    asyncio.run(run())
    step_ms = list(batcher_holder[0].timings.step_ms)
    assert len(step_ms) == 2 == len(backend.compute_s)
    # asyncio.sleep never returns early, so a step lasts at least compute / 0.25.
    for measured_ms, compute_s in zip(step_ms, backend.compute_s, strict=True):
        assert measured_ms >= 0.99 * compute_s * 1e3 / 0.25


def test_speed_factor_must_be_positive() -> None:
    import pytest

    with pytest.raises(ValueError, match="speed_factor"):
        Batcher(ScriptedBackend(), connections=Connections(), address="me:1", speed_factor=0)
