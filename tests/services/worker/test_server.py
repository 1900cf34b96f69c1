"""Workers on loopback (tiny random Llama): token-exact chains, per-request errors, health, reflection."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.worker import client
from services.worker.activations import to_wire
from services.worker.client import ChainClient, Connections, HopAddress, StepInput, generate
from services.worker.records import HopAddress as Hop
from services.worker.records import LoadOrder, Sampling, Segment, WireTensor
from tests.services.worker.conftest import TINY_LAYERS, chain_of, hf_greedy, start_workers, stop_all

PROMPTS = [[5, 17, 99, 3], [42, 7, 250, 1, 1, 9, 11], [8], [200, 201]]


def test_chain_of_three_matches_transformers_generate(tiny_dir: Path) -> None:
    expected = hf_greedy(tiny_dir, PROMPTS, 8)

    async def run() -> list[list[int]]:
        workers = await start_workers(tiny_dir, [(0, 2), (2, 5), (5, 6)])
        chain = chain_of(workers)
        try:
            tokens = await generate([chain] * len(PROMPTS), PROMPTS, 8)
            # finish=True on the last step freed every hop's KV.
            for w in workers:
                assert (await client.stats(w.address)).kv_used_tokens == 0
            return tokens
        finally:
            await chain.close()
            await stop_all(workers)

    assert asyncio.run(run()) == expected


def test_overlapping_chains_share_workers(tiny_dir: Path) -> None:
    """Requests on [0,2)->[2,5)->[5,6) and on [0,2)->[2,6) at once; a third joins [2,6) mid-shard."""
    expected = hf_greedy(tiny_dir, PROMPTS, 6)

    async def run() -> list[list[int]]:
        a, b, c, wide = await start_workers(tiny_dir, [(0, 2), (2, 5), (5, 6), (2, 6)])
        first = await start_workers(tiny_dir, [(0, 4)])
        conns = Connections()
        short = chain_of([a, b, c], conns)
        long = chain_of([a, wide], conns)
        # A hop may run part of what its worker holds: [0,4) runs [0,4), then the [2,6) worker runs [4,6).
        joined = ChainClient(
            [HopAddress(first[0].address, 0, 4), HopAddress(wide.address, 4, 6)], connections=conns
        )
        try:
            return await generate([short, long, joined, long], PROMPTS, 6)
        finally:
            await conns.close()
            await stop_all([a, b, c, wide, *first])

    assert asyncio.run(run()) == expected


def test_bad_segments_fail_alone_and_the_worker_keeps_serving(tiny_dir: Path) -> None:
    async def run() -> None:
        head, tail = await start_workers(tiny_dir, [(0, 3), (3, 6)])
        conns = Connections()
        stream = conns.stream(tail.address)
        try:
            good_hidden = to_wire(torch.zeros(2, 128))
            good = Segment("good", 3, 6, 0, 2, hidden=good_hidden)
            batch = [
                good,
                Segment("ghost", 3, 6, 7, 1, hidden=to_wire(torch.zeros(1, 128))),
                Segment("range", 0, 3, 0, 1, token_ids=(1,), route=(Hop(tail.address, 3, 6),)),
                Segment("narrow", 3, 6, 0, 2, hidden=to_wire(torch.zeros(2, 64))),
                Segment("bf16", 3, 6, 0, 2, hidden=WireTensor(b"\0" * 512, "bfloat16", (2, 128))),
            ]
            results = {r.request_id: r for r in await stream.send(batch)}
            assert results["good"].ok and results["good"].token_id is not None
            assert results["ghost"].code == "not_found" and "unknown request" in results["ghost"].error
            assert results["range"].code == "failed_precondition" and "[3,6)" in results["range"].error
            assert results["narrow"].code == "invalid_argument" and "shape" in results["narrow"].error
            assert results["bf16"].code == "invalid_argument" and "dtype" in results["bf16"].error
            assert all(r.failed_hop == tail.address for r in results.values() if not r.ok)
            # The good request goes on decoding; the refused ones left no state behind.
            more = await stream.send([Segment("good", 3, 6, 2, 1, hidden=to_wire(torch.zeros(1, 128)))])
            assert more[0].ok
            stats = await client.stats(tail.address, connections=conns)
            assert stats.active_requests == 1 and stats.kv_used_tokens == 3
        finally:
            await conns.close()
            await stop_all([head, tail])

    asyncio.run(run())


def test_unreachable_next_hop_names_it(tiny_dir: Path) -> None:
    async def run() -> None:
        (head,) = await start_workers(tiny_dir, [(0, 3)])
        dead = "127.0.0.1:1"  # nothing listens on port 1
        chain = ChainClient([HopAddress(head.address, 0, 3), HopAddress(dead, 3, 6)])
        try:
            (result,) = await chain.step([StepInput("r", [1, 2], 0)])
            assert result.code == "unavailable" and result.failed_hop == dead
            assert await chain.release(["r"]) == 1  # the head still held KV for it
        finally:
            await chain.close()
            await stop_all([head])

    asyncio.run(run())


def test_release_abort_and_stats(tiny_dir: Path) -> None:
    async def run() -> None:
        workers = await start_workers(tiny_dir, [(0, 3), (3, 6)], kv_capacity_tokens=10)
        chain = chain_of(workers)
        try:
            res = await chain.step([StepInput("a", [1, 2, 3], 0), StepInput("b", [4, 5], 0)])
            assert all(r.ok for r in res)
            s = await client.stats(workers[0].address)
            assert (s.kv_used_tokens, s.kv_capacity_tokens, s.active_requests) == (5, 10, 2)
            assert s.steps >= 1 and s.step_ms_p50 > 0 and s.link_ms_p50 > 0
            # Over capacity: refused with a clear error, others unaffected.
            (full,) = await chain.step([StepInput("c", list(range(6)), 0)])
            assert full.code == "resource_exhausted" and "KV cache full" in full.error
            await chain.abort(["a"])
            assert (await client.stats(workers[1].address)).kv_used_tokens == 2
            assert await chain.release(["b"]) == 2
            for w in workers:
                assert (await client.stats(w.address)).active_requests == 0
            info = await client.info(workers[1].address)
            assert (info.start_layer, info.end_layer, info.num_layers, info.hidden_size) == (
                3,
                6,
                TINY_LAYERS,
                128,
            )
            assert info.backend == "torch" and info.activation_dtype == "float32"
        finally:
            await chain.close()
            await stop_all(workers)

    asyncio.run(run())


def test_a_kv_refusal_fails_only_the_refused_request(tiny_dir: Path) -> None:
    """The torch twin of the vLLM test: 5 + 12 tokens overflow the tail's 16, so the middle request of the
    batch is refused there (code and address); the others run and decode as when run alone."""
    prompts = {"a": [5, 17, 99, 3, 8], "b": list(range(3, 15)), "c": [42, 7, 250]}
    new_tokens = 5  # a and c end holding 5 + 4 and 3 + 4 tokens: 16 of 16; b alone later 12 + 4
    expected = dict(zip(prompts, hf_greedy(tiny_dir, list(prompts.values()), new_tokens), strict=True))

    async def run() -> None:
        (head,) = await start_workers(tiny_dir, [(0, 3)])
        (tail,) = await start_workers(tiny_dir, [(3, 6)], kv_capacity_tokens=16)
        chain = chain_of([head, tail])
        try:
            results = {
                r.request_id: r for r in await chain.step([StepInput(n, p, 0) for n, p in prompts.items()])
            }
            refused = results.pop("b")
            assert refused.code == "resource_exhausted" and "KV cache full" in refused.error
            assert refused.failed_hop == tail.address
            out: dict[str, list[int]] = {}
            for name, r in results.items():
                assert r.ok and r.token_id is not None
                out[name] = [r.token_id]
            for step in range(1, new_tokens):
                last = step == new_tokens - 1
                items = [StepInput(n, [out[n][-1]], len(prompts[n]) + step - 1, finish=last) for n in out]
                for r in await chain.step(items):
                    assert r.ok and r.token_id is not None, r.error
                    out[r.request_id].append(r.token_id)
            assert out == {"a": expected["a"], "c": expected["c"]}
            assert await chain.release(["b"]) == 1  # only the head cached it
            assert await generate([chain], [prompts["b"]], new_tokens, request_prefix="retry") == [
                expected["b"]
            ]
        finally:
            await chain.close()
            await stop_all([head, tail])

    asyncio.run(run())


def test_load_switches_the_shard(tiny_dir: Path) -> None:
    async def run() -> None:
        (w,) = await start_workers(tiny_dir, [(0, 3)])
        try:
            report = await client.load(w.address, LoadOrder(start_layer=0, end_layer=6))
            assert (report.info.start_layer, report.info.end_layer) == (0, 6)
            assert report.mode == "beside" and report.layers_read == 3 and report.draining == ()
            chain = ChainClient([HopAddress(w.address, 0, 6)])
            (res,) = await chain.step([StepInput("r", [1, 2], 0)])
            assert res.ok
            # "r" runs [0,6): it keeps the old range draining until it ends, and a second Load must wait.
            shrink = await client.load(w.address, LoadOrder(start_layer=0, end_layer=2))
            assert shrink.layers_read == 0 and shrink.draining == ((0, 6),)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.load(w.address, LoadOrder(start_layer=0, end_layer=4))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "draining" in (err.value.details() or "")
            await chain.close()
        finally:
            await stop_all([w])

    asyncio.run(run())


def test_health_and_reflection(tiny_dir: Path) -> None:
    async def run() -> None:
        (w,) = await start_workers(tiny_dir, [(0, 6)])
        try:
            async with grpc.aio.insecure_channel(w.address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                for service in ("", "brl.worker.Worker"):
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
                refl = reflection_pb2_grpc.ServerReflectionStub(channel)
                call = refl.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")])
                )
                names = set()
                async for response in call:
                    names = {s.name for s in response.list_services_response.service}
                    break
                assert {"brl.worker.Worker", "grpc.health.v1.Health"} <= names
        finally:
            await stop_all([w])

    asyncio.run(run())


def test_client_reconnects_when_a_worker_comes_back(tiny_dir: Path) -> None:
    async def run() -> None:
        (w,) = await start_workers(tiny_dir, [(0, 6)])
        port = w.port
        chain = ChainClient([HopAddress(w.address, 0, 6)])
        try:
            assert (await chain.step([StepInput("a", [1], 0)]))[0].ok
            await w.stop(0)
            (lost,) = await chain.step([StepInput("b", [1], 0)])
            assert lost.code == "unavailable" and lost.failed_hop == w.address
            (w,) = await start_workers(tiny_dir, [(0, 6)], port=port)
            # gRPC may still be in its reconnect backoff for a moment: the next tries must get through.
            for attempt in range(50):
                (back,) = await chain.step([StepInput(f"c{attempt}", [1], 0)])
                if back.ok:
                    break
                assert back.code == "unavailable"
                await asyncio.sleep(0.2)
            assert back.ok
        finally:
            await chain.close()
            await stop_all([w])

    asyncio.run(run())


def test_seeded_sampling_is_reproducible_through_a_chain(tiny_dir: Path) -> None:
    async def run() -> list[list[list[int]]]:
        workers = await start_workers(tiny_dir, [(0, 3), (3, 6)])
        chain = chain_of(workers)
        try:
            runs = []
            for seed in (11, 11, 12):
                hot = Sampling(temperature=1.5, top_p=0.95, seed=seed)
                runs.append(
                    await generate([chain] * 2, PROMPTS[:2], 12, sampling=hot, request_prefix=f"s{len(runs)}")
                )
            return runs
        finally:
            await chain.close()
            await stop_all(workers)

    first, again, other = asyncio.run(run())
    assert first == again
    assert first != other


def test_bfloat16_shards_speak_bfloat16_on_the_wire(tiny_dir: Path) -> None:
    async def run() -> None:
        head, tail = await start_workers(tiny_dir, [(0, 3), (3, 6)], dtype="bfloat16")
        chain = chain_of([head, tail])
        conns = Connections()
        try:
            tokens = await generate([chain] * 2, PROMPTS[:2], 4)
            assert all(len(t) == 4 for t in tokens)
            (refused,) = await conns.stream(tail.address).send(
                [Segment("x", 3, 6, 0, 1, hidden=to_wire(torch.zeros(1, 128)))]
            )
            assert refused.code == "invalid_argument" and "'bfloat16'" in refused.error
            (accepted,) = await conns.stream(tail.address).send(
                [Segment("y", 3, 6, 0, 1, hidden=to_wire(torch.zeros(1, 128, dtype=torch.bfloat16)))]
            )
            assert accepted.ok
        finally:
            await conns.close()
            await chain.close()
            await stop_all([head, tail])

    asyncio.run(run())
