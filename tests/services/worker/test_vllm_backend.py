"""The vllm backend (vLLM's model runner on a layer slice): token-exact chains, alone and mixed with torch
hops. Each vLLM worker is its own process (`brl worker --backend vllm`), started together once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from services.worker import client
from services.worker.client import ChainClient, Connections, HopAddress, StepInput, generate
from tests.services.worker.conftest import (
    TINY_LAYERS,
    chat_prompt_ids,
    hf_greedy,
    start_workers,
    stop_all,
)

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[3]
NEW_TOKENS = 32
# vLLM's CPU backend caches KV in blocks of 128 tokens; on the tiny model's [2,6) a block of fp32 KV is
# 4 layers x 2 (K, V) x 2 heads x 32 x 4 bytes x 128 = 256 KiB, so 1 MiB holds vLLM's null block + 3.
BLOCK_TOKENS = 128
CROWDED_KV_TOKENS = 3 * BLOCK_TOKENS
CROWDED_KV_GIB = str(2**20 / 2**30)


def _spawn(model: Path, layers: str, log: Path, *extra: str) -> subprocess.Popen[str]:
    """A vLLM worker process; `extra` flags come last, so they win over the defaults here."""
    cmd = [
        sys.executable,
        "-m",
        "services.cli.main",
        "worker",
        "--backend",
        "vllm",
        "--model",
        str(model),
        "--layers",
        layers,
        "--kv-cache-gib",
        "0.25",
        *extra,
    ]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)


@pytest.fixture(scope="module")
def vllm_workers(
    smollm2_dir: Path, tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """name -> address of five vLLM workers: SmolLM2 [0,7), [7,19), [19,30), the tiny model [2,6), and
    the tiny model [2,6) again with a pool of three KV blocks ("crowded")."""
    logs = tmp_path_factory.mktemp("vllm-logs")
    specs: dict[str, tuple[Path, str, tuple[str, ...]]] = {
        "a": (smollm2_dir, "0:7", ()),
        "b": (smollm2_dir, "7:19", ()),
        "c": (smollm2_dir, "19:30", ()),
        "tiny": (tiny_dir, f"2:{TINY_LAYERS}", ()),
        "crowded": (tiny_dir, f"2:{TINY_LAYERS}", ("--kv-cache-gib", CROWDED_KV_GIB)),
    }
    procs = {
        name: _spawn(model, layers, logs / f"{name}.log", *extra)
        for name, (model, layers, extra) in specs.items()
    }
    try:
        addresses = {}
        for name, proc in procs.items():
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if not line:
                proc.wait(timeout=30)
                pytest.fail(
                    f"vLLM worker {name} exited {proc.returncode}:\n"
                    f"{(logs / f'{name}.log').read_text()[-3000:]}"
                )
            addresses[name] = line
        yield addresses
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_three_vllm_workers_match_generate(vllm_workers: dict[str, str], smollm2_dir: Path) -> None:
    prompts = chat_prompt_ids(smollm2_dir)
    expected = hf_greedy(smollm2_dir, prompts, NEW_TOKENS)

    async def run() -> tuple[list[list[int]], list[list[int]]]:
        conns = Connections()
        vllm_chain = ChainClient(
            [
                HopAddress(vllm_workers["a"], 0, 7),
                HopAddress(vllm_workers["b"], 7, 19),
                HopAddress(vllm_workers["c"], 19, 30),
            ],
            connections=conns,
        )
        head, tail = await start_workers(smollm2_dir, [(0, 7), (19, 30)])
        # torch -> vllm -> torch: hidden + residual cross between backends.
        mixed = ChainClient(
            [
                HopAddress(head.address, 0, 7),
                HopAddress(vllm_workers["b"], 7, 19),
                HopAddress(tail.address, 19, 30),
            ],
            connections=conns,
        )
        try:
            alone = await generate([vllm_chain] * len(prompts), prompts, NEW_TOKENS, request_prefix="vllm")
            both = await generate(
                [mixed, vllm_chain, mixed, vllm_chain, mixed], prompts, NEW_TOKENS, request_prefix="mixed"
            )
            return alone, both
        finally:
            await conns.close()
            await stop_all([head, tail])

    alone, both = asyncio.run(run())
    assert alone == expected
    assert both == expected


def test_vllm_slice_of_a_tiny_random_llama(vllm_workers: dict[str, str], tiny_dir: Path) -> None:
    prompts = [[5, 17, 99, 3], [42, 7, 250, 1, 1, 9, 11], [8]]
    expected = hf_greedy(tiny_dir, prompts, 8)

    async def run() -> list[list[int]]:
        (head,) = await start_workers(tiny_dir, [(0, 2)])
        chain = ChainClient(
            [HopAddress(head.address, 0, 2), HopAddress(vllm_workers["tiny"], 2, TINY_LAYERS)]
        )
        try:
            return await generate([chain] * len(prompts), prompts, 8)
        finally:
            await chain.close()
            await stop_all([head])

    assert asyncio.run(run()) == expected


def test_a_kv_refusal_fails_only_the_refused_request(vllm_workers: dict[str, str], tiny_dir: Path) -> None:
    """266 tokens fit a 384-token pool, but in whole blocks the batch needs 2 + 2 + 1 of the 3 there are:
    the middle request is refused at the vLLM hop (code and address), the other two run in that same step
    and decode on, token for token as when run alone; the refused one left nothing behind and runs later."""
    gen = torch.Generator().manual_seed(3)
    prompts = {
        name: torch.randint(3, 256, (n,), generator=gen).tolist()
        for name, n in (("a", BLOCK_TOKENS + 1), ("b", BLOCK_TOKENS + 1), ("c", 8))
    }
    new_tokens = 8
    expected = dict(zip(prompts, hf_greedy(tiny_dir, list(prompts.values()), new_tokens), strict=True))
    crowded = vllm_workers["crowded"]

    async def run() -> None:
        (head,) = await start_workers(tiny_dir, [(0, 2)])
        chain = ChainClient([HopAddress(head.address, 0, 2), HopAddress(crowded, 2, TINY_LAYERS)])
        try:
            assert (await client.info(crowded)).kv_capacity_tokens == CROWDED_KV_TOKENS
            first = await chain.step([StepInput(name, p, 0) for name, p in prompts.items()])
            results = {r.request_id: r for r in first}
            refused = results.pop("b")
            assert refused.code == "resource_exhausted" and "KV cache full" in refused.error
            assert refused.failed_hop == crowded
            out: dict[str, list[int]] = {}
            for name, r in results.items():
                assert r.ok and r.token_id is not None
                out[name] = [r.token_id]
            assert (await client.stats(crowded)).kv_used_tokens == CROWDED_KV_TOKENS
            for step in range(1, new_tokens):
                items = [
                    StepInput(
                        name, [out[name][-1]], len(prompts[name]) + step - 1, finish=step == new_tokens - 1
                    )
                    for name in out
                ]
                for r in await chain.step(items):
                    assert r.ok and r.token_id is not None, r.error
                    out[r.request_id].append(r.token_id)
            assert out == {"a": expected["a"], "c": expected["c"]}
            assert (await client.stats(crowded)).kv_used_tokens == 0
            # Only the head cached the refused request; the vLLM hop starts it afresh from position 0.
            assert await chain.release(["b"]) == 1
            assert await generate([chain], [prompts["b"]], new_tokens, request_prefix="retry") == [
                expected["b"]
            ]
        finally:
            await chain.close()
            await stop_all([head])

    asyncio.run(run())


def test_vllm_worker_reports_its_shard(vllm_workers: dict[str, str]) -> None:
    async def run() -> None:
        info = await client.info(vllm_workers["b"])
        assert (info.backend, info.start_layer, info.end_layer, info.num_layers) == ("vllm", 7, 19, 30)
        assert info.kv_capacity_tokens > 0
        stats = await client.stats(vllm_workers["b"])
        assert stats.kv_used_tokens == 0  # every request above finished and freed its blocks

    asyncio.run(run())
