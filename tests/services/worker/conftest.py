"""Fixtures for worker tests: a tiny random Llama on disk, the real SmolLM2 folder, in-process workers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from services.worker.client import ChainClient, Connections, HopAddress
from services.worker.main import WorkerServer, build_server
from services.worker.settings import WorkerSettings

TINY_LAYERS = 6

# Workers run one intra-op thread (the fast path here); with more, MKL splits rows between threads and a
# request's numbers would depend on its batch.
torch.set_num_threads(1)


def save_tiny_llama(path: Path, *, tied: bool = False, seed: int = 0) -> Path:
    """A random 6-layer Llama (head size 32, grouped KV heads), saved as fp32 safetensors."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config).float()
    model.save_pretrained(str(path), safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_tied_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-tied"), tied=True, seed=1)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from services.modelstore import ensure_smollm2

    return ensure_smollm2()


def hf_greedy(model_dir: Path, prompts: Sequence[Sequence[int]], new_tokens: int) -> list[list[int]]:
    """transformers' own generate(), one prompt at a time (no padding), greedy, never stopping early."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.generation_config.eos_token_id = None
    out = []
    for prompt in prompts:
        ids = torch.tensor([list(prompt)])
        # An explicit mask: otherwise generate() masks every token equal to pad_token_id.
        gen = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
        out.append(gen[0, ids.shape[1] :].tolist())
    return out


async def start_workers(
    model: str | Path, ranges: Sequence[tuple[int, int]], **settings: object
) -> list[WorkerServer]:
    return [
        await build_server(WorkerSettings(model=str(model), layers=f"{a}:{b}", **settings))  # type: ignore[arg-type]
        for a, b in ranges
    ]


def chain_of(workers: Sequence[WorkerServer], connections: Connections | None = None) -> ChainClient:
    hops = [HopAddress(w.address, w.batcher.backend.spec.start, w.batcher.backend.spec.end) for w in workers]
    return ChainClient(hops, connections=connections)


async def stop_all(workers: Sequence[WorkerServer]) -> None:
    for w in workers:
        await w.stop(0)


CHAT_PROMPTS = (
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "Tell me a short story about a robot.",
    "List three primary colors.",
    "What is 17 times 23?",
)


def chat_prompt_ids(model_dir: Path) -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return [
        list(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, return_dict=False
            )
        )
        for p in CHAT_PROMPTS
    ]
