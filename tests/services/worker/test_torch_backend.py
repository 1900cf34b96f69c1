"""The torch layer-slice runner against transformers on a tiny random Llama."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from planner.errors import InvalidInput
from services.worker.backends import ShardSpec, Work, make_backend
from services.worker.backends.torch_backend import TorchBackend
from tests.services.worker.conftest import TINY_LAYERS

# Logits of one request computed in batches of different shapes. fp32 has a unit roundoff of
# u = 2**-24 (6e-8); a GEMM kernel blocks its sums differently for different batch shapes, and
# reassociating a K-term sum moves it by about sqrt(K) * u relative (K <= 256 here: ~1e-6), compounded
# over 6 layers and the LM head. 1e-5 covers that with room (an AVX-512/MKL machine shows 4e-7 on
# logits of size ~0.7), while a real mix-up between requests moves logits by ~1e-1. Bit-equality is
# not something fp32 on CPU promises across shapes; the greedy token must still be the same.
ACROSS_SHAPES = 1e-5
# Different code paths for the same numbers (transformers' attention vs ours, attention over a cached
# prefix vs one pass): the softmax and the sums are computed in other orders and through other
# kernels, so allow 10x more; still far below the ~2e-2 gap between a tiny model's top two logits.
OTHER_PATH = 1e-4


def assert_same_numbers(actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    """Logits equal within `tol` (relative and absolute) and the same greedy token, exactly."""
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)
    assert int(actual.argmax()) == int(expected.argmax())


def _hf_logits(model_dir: Path, ids: list[int]) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1]


def _run_chain(shards: list[TorchBackend], request_id: str, ids: list[int]) -> torch.Tensor:
    hidden = None
    out = None
    for shard in shards:
        work = Work(
            request_id,
            shard.spec.start,
            shard.spec.end,
            0,
            len(ids),
            token_ids=torch.tensor(ids) if shard.spec.start == 0 else None,
            hidden=hidden,
            want_logits=shard.spec.end == TINY_LAYERS,
        )
        out = shard.step([work])[0]
        hidden = out.hidden
    assert out is not None and out.logits is not None
    return out.logits


@pytest.mark.parametrize("fixture", ["tiny_dir", "tiny_tied_dir"])
def test_sharded_chain_matches_transformers(fixture: str, request: pytest.FixtureRequest) -> None:
    model_dir = request.getfixturevalue(fixture)
    ids = [5, 17, 99, 3, 42, 7, 250]
    shards = [TorchBackend(ShardSpec("tiny", model_dir, a, b)) for a, b in [(0, 2), (2, 5), (5, 6)]]
    logits = _run_chain(shards, "r", ids)
    reference = _hf_logits(model_dir, ids)
    assert_same_numbers(logits, reference, OTHER_PATH)


def test_shard_loads_only_its_layers(tiny_dir: Path, tiny_tied_dir: Path) -> None:
    middle = TorchBackend(ShardSpec("tiny", tiny_dir, 2, 4))
    assert {n.split(".")[2] for n in middle.loaded_names} == {"2", "3"}
    assert middle.embed is None and middle.lm_head is None and middle.norm is None
    first = TorchBackend(ShardSpec("tiny", tiny_dir, 0, 1))
    assert "model.embed_tokens.weight" in first.loaded_names and first.lm_head is None
    last = TorchBackend(ShardSpec("tiny", tiny_dir, 5, 6))
    assert "lm_head.weight" in last.loaded_names and "model.embed_tokens.weight" not in last.loaded_names
    tied_last = TorchBackend(ShardSpec("tiny", tiny_tied_dir, 5, 6))
    # A tied head is the embedding matrix: the last shard reads it, but holds no input embedding role.
    assert "model.embed_tokens.weight" in tied_last.loaded_names and tied_last.embed is None


def test_batching_does_not_change_results(tiny_dir: Path) -> None:
    """A request's numbers must not depend on what it is batched with (ragged prompts and decodes)."""
    prompts = [[1, 2, 3], [9, 8, 7, 6, 5, 4], [100], [33, 44]]
    alone = []
    for i, ids in enumerate(prompts):
        shard = TorchBackend(ShardSpec("tiny", tiny_dir, 0, TINY_LAYERS))
        alone.append(
            shard.step(
                [Work(f"r{i}", 0, TINY_LAYERS, 0, len(ids), token_ids=torch.tensor(ids), want_logits=True)]
            )[0].logits
        )
    shard = TorchBackend(ShardSpec("tiny", tiny_dir, 0, TINY_LAYERS))
    works = [
        Work(f"r{i}", 0, TINY_LAYERS, 0, len(ids), token_ids=torch.tensor(ids), want_logits=True)
        for i, ids in enumerate(prompts)
    ]
    together = [o.logits for o in shard.step(works)]
    for a, b in zip(alone, together, strict=True):
        assert a is not None and b is not None
        assert_same_numbers(b, a, ACROSS_SHAPES)


def test_chunked_prefill_and_decode_match_one_pass(tiny_dir: Path) -> None:
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    whole = TorchBackend(ShardSpec("tiny", tiny_dir, 0, TINY_LAYERS))
    one_pass = whole.step([Work("a", 0, TINY_LAYERS, 0, 8, token_ids=torch.tensor(ids), want_logits=True)])[0]
    chunked = TorchBackend(ShardSpec("tiny", tiny_dir, 0, TINY_LAYERS))
    chunked.step([Work("a", 0, TINY_LAYERS, 0, 5, token_ids=torch.tensor(ids[:5]))])
    two = chunked.step([Work("a", 0, TINY_LAYERS, 5, 2, token_ids=torch.tensor(ids[5:7]))])
    assert two[0].logits is None
    last = chunked.step([Work("a", 0, TINY_LAYERS, 7, 1, token_ids=torch.tensor(ids[7:]), want_logits=True)])[
        0
    ]
    assert one_pass.logits is not None and last.logits is not None
    assert_same_numbers(last.logits, one_pass.logits, OTHER_PATH)


def test_overlapping_ranges_in_one_step(tiny_dir: Path) -> None:
    """One shard [2,6) serving a request on [2,6) and another on [4,6) (a chain that joins mid-shard)."""
    ids = [7, 7, 8, 9]
    head = TorchBackend(ShardSpec("tiny", tiny_dir, 0, 4))
    h = head.step([Work("x", 0, 4, 0, 4, token_ids=torch.tensor(ids))])[0].hidden
    h2 = head.step([Work("y", 0, 2, 0, 4, token_ids=torch.tensor(ids))])[0].hidden
    tail = TorchBackend(ShardSpec("tiny", tiny_dir, 2, 6))
    tail_a = TorchBackend(ShardSpec("tiny", tiny_dir, 4, 6))
    mixed = tail.step(
        [
            Work("x", 4, 6, 0, 4, hidden=h, want_logits=True),
            Work("y", 2, 6, 0, 4, hidden=h2, want_logits=True),
        ]
    )
    alone = tail_a.step([Work("x", 4, 6, 0, 4, hidden=h, want_logits=True)])[0]
    assert mixed[0].logits is not None and alone.logits is not None and mixed[1].logits is not None
    assert_same_numbers(mixed[0].logits, alone.logits, ACROSS_SHAPES)
    # Both requests saw the same tokens through the same layers: same next-token distribution.
    assert_same_numbers(mixed[1].logits, mixed[0].logits, OTHER_PATH)


def test_kv_freed_and_capacity_from_budget(tiny_dir: Path) -> None:
    shard = TorchBackend(ShardSpec("tiny", tiny_dir, 0, 3, kv_cache_bytes=3 * 2 * 2 * 32 * 4 * 100))
    assert shard.kv_capacity_tokens == 100
    shard.step([Work("a", 0, 3, 0, 10, token_ids=torch.arange(10))])
    assert shard.kv_used_tokens() == 10
    assert shard.free("a") is True
    assert shard.kv_used_tokens() == 0 and shard.free("a") is False


def test_bad_shards_refused(tiny_dir: Path) -> None:
    with pytest.raises(InvalidInput, match="outside"):
        TorchBackend(ShardSpec("tiny", tiny_dir, 4, 9))
    with pytest.raises(InvalidInput, match="backend"):
        make_backend("tensorrt", ShardSpec("tiny", tiny_dir, 0, 1))
