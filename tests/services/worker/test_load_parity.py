"""A shard that got its layers by a live Load is the same shard as one started with them: the same
tensors (dtype, shape, strides, values), each owned by torch's allocator rather than a view of the
memory-mapped checkpoint, the same numbers out of a step, and steps run at the configured thread count."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from services.worker import client
from services.worker.backends import ShardSpec, Work
from services.worker.backends.torch_backend import TorchBackend
from services.worker.client import ChainClient, HopAddress, generate
from services.worker.records import LoadOrder
from tests.services.worker.conftest import TINY_LAYERS, start_workers, stop_all


def _spec(model_dir: Path, start: int, end: int, dtype: str) -> ShardSpec:
    return ShardSpec(model="tiny", model_dir=model_dir, start=start, end=end, dtype=dtype)


def _loaded(model_dir: Path, start: int, end: int, dtype: str, *, held: tuple[int, int]) -> TorchBackend:
    """Started with `held` (possibly empty), then given [start, end) the way the worker's loader does."""
    backend = TorchBackend(_spec(model_dir, *held, dtype))
    staged = backend.read_layers(start, end, backend.held_tensors())
    backend.install(staged, start, end)
    return backend


def _owned(t: torch.Tensor) -> bool:
    """Allocated by torch and holding nothing else: not a view of a file's bytes (those storages are
    not resizable) nor a slice of a larger buffer."""
    storage = t.untyped_storage()
    return storage.resizable() and storage.nbytes() == t.numel() * t.element_size() and t.is_contiguous()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("held", [(0, 0), (4, 5)])
@pytest.mark.parametrize("tied", [False, True])
def test_loaded_tensors_are_those_of_a_started_shard(
    tiny_dir: Path, tiny_tied_dir: Path, dtype: str, held: tuple[int, int], tied: bool
) -> None:
    model_dir = tiny_tied_dir if tied else tiny_dir
    started = TorchBackend(_spec(model_dir, 0, TINY_LAYERS, dtype))
    loaded = _loaded(model_dir, 0, TINY_LAYERS, dtype, held=held)
    assert loaded.loaded_names == started.loaded_names
    for name in started.loaded_names:
        a, b = started.tensors[name], loaded.tensors[name]
        assert (b.dtype, b.shape, b.stride()) == (a.dtype, a.shape, a.stride()), name
        assert _owned(a) and _owned(b), name
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)  # copies of the same file's bytes
    assert loaded.held_layers() == started.held_layers()
    assert loaded.kv_capacity_tokens == started.kv_capacity_tokens
    # The blocks and head the steps use are the loaded tensors themselves, not stale copies.
    for i, block in loaded.blocks.items():
        assert block.gate.data_ptr() == loaded.tensors[f"model.layers.{i}.mlp.gate_proj.weight"].data_ptr()
    assert loaded.lm_head is not None and loaded.embed is not None


def test_a_loaded_shard_steps_to_the_same_numbers(tiny_tied_dir: Path) -> None:
    started = TorchBackend(_spec(tiny_tied_dir, 0, TINY_LAYERS, "float32"))
    loaded = _loaded(tiny_tied_dir, 0, TINY_LAYERS, "float32", held=(0, 0))
    prompt = torch.tensor([5, 17, 3, 99, 42, 7])
    for backend in (started, loaded):
        backend.step([Work("r", 0, TINY_LAYERS, 0, len(prompt), token_ids=prompt, want_logits=True)])
    decode = [Work("r", 0, TINY_LAYERS, len(prompt), 1, token_ids=torch.tensor([11]), want_logits=True)]
    a, b = started.step(decode)[0].logits, loaded.step(decode)[0].logits
    assert a is not None and b is not None
    # Same tensors, same kernels, same shapes: the same numbers (fp32 rounding tolerance) and the same token.
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert int(a.argmax()) == int(b.argmax())


def test_a_worker_loaded_by_load_runs_like_one_started_with_the_range(tiny_dir: Path) -> None:
    """Real workers: one started with the range, one started empty and Loaded. Steps of both run in a
    thread at the configured intra-op thread count (2 here, so not the 1 the test process runs at), and
    greedy tokens are the same."""
    threads = 2
    prompts = [[1, 20, 30, 40], [1, 9, 8]]

    async def run() -> tuple[list[int], list[list[list[int]]], list[bool]]:
        started, empty = await start_workers(tiny_dir, [(0, TINY_LAYERS), (0, 0)], threads=threads)
        try:
            report = await client.load(empty.address, LoadOrder(start_layer=0, end_layer=TINY_LAYERS))
            assert report.layers_read == TINY_LAYERS
            counts = [await w.batcher.in_step_thread(torch.get_num_threads) for w in (started, empty)]
            owned = [
                all(_owned(t) for t in w.batcher.backend.tensors.values())  # type: ignore[attr-defined]
                for w in (started, empty)
            ]
            tokens = []
            for w in (started, empty):
                chain = ChainClient([HopAddress(w.address, 0, TINY_LAYERS)])
                try:
                    tokens.append(await generate([chain] * len(prompts), prompts, 5, request_prefix="p"))
                finally:
                    await chain.close()
            return counts, tokens, owned
        finally:
            await stop_all([started, empty])
            torch.set_num_threads(1)  # build_server set this process's own count; the others expect 1

    counts, tokens, owned = asyncio.run(run())
    assert counts == [threads, threads]
    assert owned == [True, True]
    assert tokens[1] == tokens[0]
