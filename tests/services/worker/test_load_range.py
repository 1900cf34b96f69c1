"""Live Load on loopback workers: a worker changes layers while its old range keeps serving, requests in
flight are never dropped and stay token-exact with transformers, only the missing tensors are read, the
old range is freed once drained, and the coordinator learns the new range."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch

from planner.placement import LayerRange
from services.coordinator.registry import Registry
from services.worker import checkpoint, client
from services.worker.backends.torch_backend import TorchBackend
from services.worker.client import ChainClient, Connections, HopAddress, StepInput, generate
from services.worker.main import _keep_registered
from services.worker.records import LoadOrder, WorkerStats
from tests.services.coordinator.control_server import start_control
from tests.services.worker.conftest import TINY_LAYERS, chain_of, hf_greedy, start_workers, stop_all

NEW_TOKENS = 8
LAYER_TENSORS = (
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)


def layer_names(layers: range) -> set[str]:
    return {f"model.layers.{i}.{t}" for i in layers for t in LAYER_TENSORS}


class Reads:
    """Wraps the checkpoint reader's safe_open: records every tensor read, and holds reads at a gate
    (closed on request) so a test can act while a load is in progress."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        real = checkpoint.safe_open
        outer = self

        @contextmanager
        def recording_open(path: str, **kw: Any) -> Iterator[Any]:
            with real(path, **kw) as handle:
                yield _Handle(handle, outer)

        monkeypatch.setattr(checkpoint, "safe_open", recording_open)


class _Handle:
    def __init__(self, inner: Any, reads: Reads) -> None:
        self._inner = inner
        self._reads = reads

    def keys(self) -> Any:
        return self._inner.keys()

    def get_tensor(self, name: str) -> Any:
        assert self._reads.gate.wait(timeout=30), "the test never opened the gate"
        self._reads.names.append(name)
        return self._inner.get_tensor(name)


class Gen:
    """One request driven step by step on a chain (greedy): the prompt, then one token per step."""

    def __init__(self, request_id: str, prompt: Sequence[int], chain: ChainClient) -> None:
        self.request_id, self.prompt, self.chain = request_id, list(prompt), chain
        self.tokens: list[int] = []
        self.logprobs: list[float] = []
        self.position = 0

    async def step(self) -> None:
        ids = [self.tokens[-1]] if self.tokens else self.prompt
        last = len(self.tokens) == NEW_TOKENS - 1
        (r,) = await self.chain.step([StepInput(self.request_id, ids, self.position, finish=last)])
        assert r.ok and r.token_id is not None, r.error
        self.position += len(ids)
        self.tokens.append(r.token_id)
        self.logprobs.append(r.logprob)

    async def finish(self) -> list[int]:
        while len(self.tokens) < NEW_TOKENS:
            await self.step()
        return self.tokens


async def until(cond: Callable[[], Any], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def stats_of(address: str) -> WorkerStats:
    return await client.stats(address)


def test_a_chain_keeps_generating_while_a_worker_loads_more_layers(
    smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[0,15)->[15,30) serves while the second worker loads [10,30): requests started before, during and
    after the load, and on the new chain [0,10)->[10,30), all equal transformers' greedy generate."""
    from tests.services.worker.conftest import chat_prompt_ids

    prompts = chat_prompt_ids(smollm2_dir)[:4]
    expected = hf_greedy(smollm2_dir, prompts, NEW_TOKENS)
    reads = Reads(monkeypatch)

    async def run() -> list[list[int]]:
        a, b = await start_workers(smollm2_dir, [(0, 15), (15, 30)])
        conns = Connections()
        old = chain_of([a, b], conns)
        new = ChainClient([HopAddress(a.address, 0, 10), HopAddress(b.address, 10, 30)], connections=conns)
        try:
            before = Gen("before", prompts[0], old)
            for _ in range(3):
                await before.step()

            reads.names.clear()
            reads.gate.clear()
            load = asyncio.create_task(client.load(b.address, LoadOrder(start_layer=10, end_layer=30)))
            await until(lambda: _loading(b.address))
            s = await stats_of(b.address)
            assert (s.serving, s.loading_range, s.held_layers) == (((15, 30),), (10, 30), 15)
            during = Gen("during", prompts[1], old)
            for _ in range(2):
                await before.step()
                await during.step()
            # The new range is not ready yet: refused per request, retryable, naming the hop.
            (probe,) = await new.step([StepInput("probe", prompts[2], 0)])
            assert probe.code == "unavailable" and "loading" in probe.error
            assert probe.failed_hop == b.address
            assert await new.release(["probe"]) == 1  # the first hop had cached it
            assert not load.done()

            reads.gate.set()
            report = await load
            assert report.mode == "beside" and report.layers_read == 5
            assert (report.info.start_layer, report.info.end_layer) == (10, 30)
            # Only the five missing layers were read, tensor by tensor: not the embeddings, head, or 15..29.
            assert sorted(reads.names) == sorted(layer_names(range(10, 15)))
            assert sorted(report.tensors_read) == sorted(reads.names)
            s = await stats_of(b.address)
            assert (s.serving, s.draining, s.loading, s.held_layers) == (((10, 30),), (), False, 20)
            assert s.last_load_layers == 5 and s.load_s_per_layer > 0 and s.last_load_s > 0

            after = Gen("after", prompts[2], old)  # [15,30) is inside what b serves now
            await after.step()

            # The first worker moves to [0,10): nothing to read; [0,15) drains while its requests run.
            shrink = await client.load(a.address, LoadOrder(start_layer=0, end_layer=10))
            assert (shrink.mode, shrink.layers_read, shrink.draining) == ("beside", 0, ((0, 15),))
            (late,) = await old.step([StepInput("late", prompts[3], 0)])
            assert late.code == "unavailable" and "draining" in late.error and late.failed_hop == a.address
            fresh = Gen("fresh", prompts[3], new)
            tokens = [await g.finish() for g in (before, during, after, fresh)]

            async def drained() -> bool:
                return (await stats_of(a.address)).draining == ()

            await until(drained)
            backend = a.batcher.backend
            assert backend.held_layers() == frozenset(range(10))  # layers 10..14 of a are freed
            assert backend.kv_used_tokens() == 0 and b.batcher.backend.kv_used_tokens() == 0
            s = await stats_of(a.address)
            assert (s.serving, s.held_layers, s.active_requests) == (((0, 10),), 10, 0)
            # The new chain keeps serving batched requests after the old range is gone.
            again = await generate([new] * 2, prompts[:2], NEW_TOKENS, request_prefix="again")
            assert again == expected[:2]
            # Same tokens and, within fp32 rounding, the same log-probabilities as the request that ran
            # on the old chain through both loads (other splits, other batches).
            ref = Gen("ref", prompts[0], new)
            assert await ref.finish() == before.tokens
            torch.testing.assert_close(torch.tensor(ref.logprobs), torch.tensor(before.logprobs))
            return tokens
        finally:
            reads.gate.set()
            await conns.close()
            await stop_all([a, b])

    assert asyncio.run(run()) == expected


async def _loading(address: str) -> bool:
    return (await stats_of(address)).loading


PROMPTS = [[5, 17, 99, 3], [42, 7, 250, 1, 1, 9, 11]]


def test_a_load_over_the_layer_budget_drains_the_old_range_first(tiny_dir: Path) -> None:
    expected = hf_greedy(tiny_dir, PROMPTS, NEW_TOKENS)

    async def run() -> list[list[int]]:
        (w,) = await start_workers(tiny_dir, [(0, 3)], max_loaded_layers=3)
        head, tail = await start_workers(tiny_dir, [(0, 2), (3, 6)])
        conns = Connections()
        old = chain_of([w, tail], conns)
        try:
            running = Gen("running", PROMPTS[0], old)
            await running.step()
            await running.step()
            # [0,3) + [2,5) is 5 layers, over the budget of 3: the old range must drain first.
            load = asyncio.create_task(client.load(w.address, LoadOrder(start_layer=2, end_layer=5)))

            async def draining() -> bool:
                s = await stats_of(w.address)
                return s.draining == ((0, 3),) and s.serving == () and s.loading_range == (2, 5)

            await until(draining)
            (refused,) = await old.step([StepInput("new", PROMPTS[1], 0)])
            assert refused.code == "unavailable" and "draining" in refused.error
            await running.step()
            assert not load.done()  # still waiting for "running"
            first = await running.finish()
            report = await load
            assert report.mode == "drained_first" and report.layers_read == 2 and report.drain_s > 0
            backend = w.batcher.backend
            assert isinstance(backend, TorchBackend)
            assert backend.held_layers() == frozenset({2, 3, 4})
            assert backend.embed is None  # the first layers' embeddings went with them
            chain = ChainClient(
                [HopAddress(head.address, 0, 2), HopAddress(w.address, 2, 5), HopAddress(tail.address, 5, 6)],
                connections=conns,
            )
            second = await generate([chain], [PROMPTS[1]], NEW_TOKENS)
            return [first, *second]
        finally:
            await conns.close()
            await stop_all([w, head, tail])

    assert asyncio.run(run()) == expected


def test_force_releases_the_old_ranges_requests_instead_of_waiting(tiny_dir: Path) -> None:
    async def run() -> None:
        (w,) = await start_workers(tiny_dir, [(0, 3)], max_loaded_layers=3)
        tail = (await start_workers(tiny_dir, [(3, 6)]))[0]
        chain = chain_of([w, tail])
        try:
            held = Gen("held", PROMPTS[0], chain)
            await held.step()
            report = await client.load(w.address, LoadOrder(start_layer=3, end_layer=6, force=True))
            assert report.mode == "drained_first" and report.layers_read == 3
            assert w.batcher.request_ids() == [] and w.batcher.backend.held_layers() == frozenset({3, 4, 5})
            (gone,) = await chain.step([StepInput("held", [held.tokens[-1]], held.position)])
            assert gone.code == "failed_precondition"  # [0,3) is no longer held here
        finally:
            await chain.close()
            await stop_all([w, tail])

    asyncio.run(run())


def test_bad_loads_are_refused_with_a_clear_code(tiny_dir: Path) -> None:
    async def run() -> None:
        (w,) = await start_workers(tiny_dir, [(0, 3)], max_loaded_layers=4)
        try:
            cases = [
                (LoadOrder(start_layer=4, end_layer=9), grpc.StatusCode.INVALID_ARGUMENT, "end_layer"),
                (LoadOrder(start_layer=3, end_layer=3), grpc.StatusCode.INVALID_ARGUMENT, "layers [3,3)"),
                (LoadOrder(start_layer=0, end_layer=6), grpc.StatusCode.INVALID_ARGUMENT, "at most 4"),
            ]
            for order, code, text in cases:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await client.load(w.address, order)
                assert err.value.code() == code and text in (err.value.details() or ""), err.value
            same = await client.load(w.address, LoadOrder(start_layer=0, end_layer=3))
            assert same.mode == "unchanged" and same.layers_read == 0
            # A backend that builds its slice once refuses a live load and says what to do.
            w.batcher.backend.live_load = False  # type: ignore[misc]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.load(w.address, LoadOrder(start_layer=0, end_layer=4))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "restart this worker with --layers 0:4" in (err.value.details() or "")
        finally:
            await stop_all([w])

    asyncio.run(run())


def test_the_coordinator_learns_the_range_a_load_serves(tiny_dir: Path) -> None:
    async def run() -> None:
        registry = Registry(time.monotonic, expiry_s=5.0, num_layers=TINY_LAYERS)
        server, port = await start_control(registry, "c")
        (w,) = await start_workers(tiny_dir, [(0, 3)], coordinator=f"127.0.0.1:{port}", name="w0")
        stop = asyncio.Event()
        registration = asyncio.create_task(_keep_registered(w, stop))
        try:

            async def layers_are(expected: LayerRange) -> bool:
                state = registry.get("w0")
                return state is not None and state.info.layers == expected

            await until(lambda: layers_are(LayerRange(0, 3)))
            await client.load(w.address, LoadOrder(start_layer=3, end_layer=6))
            await until(lambda: layers_are(LayerRange(3, 6)))
        finally:
            stop.set()
            await asyncio.wait_for(registration, timeout=5)
            await stop_all([w])
            await server.stop(grace=None)

    asyncio.run(run())
