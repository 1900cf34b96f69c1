"""The vllm backend (vLLM's model runner on a layer slice): token-exact chains, alone and mixed with torch
hops. Each vLLM worker is its own process (`brl worker --backend vllm`), started together once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.worker.client import ChainClient, Connections, HopAddress, generate
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


def _spawn(model: Path, layers: str, log: Path) -> subprocess.Popen[str]:
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
    ]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)


@pytest.fixture(scope="module")
def vllm_workers(
    smollm2_dir: Path, tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """name -> address of four vLLM workers: SmolLM2 [0,7), [7,19), [19,30) and the tiny model [2,6)."""
    logs = tmp_path_factory.mktemp("vllm-logs")
    specs = {
        "a": (smollm2_dir, "0:7"),
        "b": (smollm2_dir, "7:19"),
        "c": (smollm2_dir, "19:30"),
        "tiny": (tiny_dir, f"2:{TINY_LAYERS}"),
    }
    procs = {name: _spawn(model, layers, logs / f"{name}.log") for name, (model, layers) in specs.items()}
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


def test_vllm_worker_reports_its_shard(vllm_workers: dict[str, str]) -> None:
    from services.worker import client

    async def run() -> None:
        info = await client.info(vllm_workers["b"])
        assert (info.backend, info.start_layer, info.end_layer, info.num_layers) == ("vllm", 7, 19, 30)
        assert info.kv_capacity_tokens > 0
        stats = await client.stats(vllm_workers["b"])
        assert stats.kv_used_tokens == 0  # every request above finished and freed its blocks

    asyncio.run(run())
