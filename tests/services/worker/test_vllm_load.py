"""Live Load on a vLLM worker process: a second runner for the new range is built beside the old one while
requests stream through it, both stay token-exact with transformers, only the new range's tensors are
read, the old runner is closed once drained, and the worker can unload everything and load again."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from safetensors import safe_open

from services.worker import client
from services.worker.checkpoint import shard_filter
from services.worker.client import ChainClient, Connections, HopAddress, generate
from services.worker.records import LoadOrder
from tests.services.worker.conftest import chat_prompt_ids, hf_greedy, start_workers, stop_all
from tests.services.worker.test_load_range import NEW_TOKENS, Gen, until

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def vllm_worker(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A vLLM worker process on SmolLM2 [15,30)."""
    log = tmp_path_factory.mktemp("vllm-load") / "worker.log"
    cmd = [sys.executable, "-m", "services.cli.main", "worker", "--backend", "vllm"]
    cmd += ["--model", str(smollm2_dir), "--layers", "15:30", "--kv-cache-gib", "0.25"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        if not address:
            proc.wait(timeout=30)
            pytest.fail(f"vLLM worker exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        yield address
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wanted_names(model_dir: Path, start: int, end: int) -> set[str]:
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as handle:
        names = set(handle.keys())
    wanted = shard_filter(30, start, end, tied=True)  # SmolLM2 ties its head to the embeddings
    return {n for n in names if wanted(n)}


def test_a_vllm_worker_loads_a_new_range_while_a_request_streams(vllm_worker: str, smollm2_dir: Path) -> None:
    prompts = chat_prompt_ids(smollm2_dir)[:3]
    expected = hf_greedy(smollm2_dir, prompts, NEW_TOKENS)

    async def run() -> list[list[int]]:
        a15, a10 = await start_workers(smollm2_dir, [(0, 15), (0, 10)])
        conns = Connections()
        old = ChainClient(
            [HopAddress(a15.address, 0, 15), HopAddress(vllm_worker, 15, 30)], connections=conns
        )
        new = ChainClient(
            [HopAddress(a10.address, 0, 10), HopAddress(vllm_worker, 10, 30)], connections=conns
        )
        try:
            before = Gen("before", prompts[0], old)
            await before.step()
            load = asyncio.create_task(client.load(vllm_worker, LoadOrder(start_layer=10, end_layer=30)))
            # The old runner keeps stepping while the new one is built and reads its weights.
            steps_during_load = 0
            while not load.done() and len(before.tokens) < NEW_TOKENS - 1:
                await before.step()
                steps_during_load += 1
            report = await load
            assert report.mode == "beside" and report.layers_read == 20
            assert (report.info.start_layer, report.info.end_layer) == (10, 30)
            # Our reader fed vLLM exactly the new range's tensors (vLLM's whole-file iterator never ran).
            assert set(report.tensors_read) == _wanted_names(smollm2_dir, 10, 30)
            assert report.draining == ((15, 30),)  # "before" still runs on the old runner
            # The build ran beside the step thread: the old chain went on stepping meanwhile (a build in
            # the step thread would have held the first step until the load was done).
            assert steps_during_load >= 2
            s = await client.stats(vllm_worker)
            assert s.serving == ((10, 30),) and s.last_load_layers == 20
            assert s.load_s_per_layer > 0 and s.last_load_s >= s.load_s_per_layer * 20 * 0.99
            fresh = Gen("fresh", prompts[1], new)
            tokens = [await before.finish(), await fresh.finish()]

            async def drained() -> bool:
                return (await client.stats(vllm_worker)).draining == ()

            await until(drained, timeout_s=60)
            s = await client.stats(vllm_worker)
            assert (s.held_layers, s.active_requests, s.kv_used_tokens) == (20, 0, 0)
            # Unload everything: the worker holds nothing and refuses; then a third runner in the process.
            gone = await client.load(vllm_worker, LoadOrder(start_layer=0, end_layer=0))
            assert gone.mode == "unloaded" and (gone.info.start_layer, gone.info.end_layer) == (0, 0)
            s = await client.stats(vllm_worker)
            assert (s.serving, s.held_layers, s.kv_capacity_tokens) == ((), 0, 0)
            back = await client.load(vllm_worker, LoadOrder(start_layer=10, end_layer=30))
            assert back.mode == "beside" and back.layers_read == 20
            again = await generate([new], [prompts[2]], NEW_TOKENS, request_prefix="again")
            return [*tokens, *again]
        finally:
            await conns.close()
            await stop_all([a15, a10])

    assert asyncio.run(run()) == expected


def test_an_empty_vllm_worker_warms_up_before_it_registers_and_then_loads(
    smollm2_dir: Path, tmp_path: Path
) -> None:
    """Started without --layers: vLLM's one-time start-up is paid before the address line (so the first
    Load builds only its runner); the worker holds nothing until a Load, then serves token-exact."""
    log = tmp_path / "worker.log"
    cmd = [sys.executable, "-m", "services.cli.main", "worker", "--backend", "vllm"]
    cmd += ["--model", str(smollm2_dir), "--kv-cache-gib", "0.25"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    prompts = chat_prompt_ids(smollm2_dir)[:1]

    async def run(address: str) -> list[list[int]]:
        s = await client.stats(address)
        assert (s.serving, s.held_layers) == ((), 0)
        report = await client.load(address, LoadOrder(start_layer=0, end_layer=30))
        assert report.mode == "beside" and report.layers_read == 30
        conns = Connections()
        try:
            chain = ChainClient([HopAddress(address, 0, 30)], connections=conns)
            return await generate([chain], prompts, NEW_TOKENS, request_prefix="empty")
        finally:
            await conns.close()

    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address, log.read_text()[-3000:]
        assert "vLLM warmed up" in log.read_text()  # before the address line, not in the first Load
        assert asyncio.run(run(address)) == hf_greedy(smollm2_dir, prompts, NEW_TOKENS)
    finally:
        _stop(proc)
