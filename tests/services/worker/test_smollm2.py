"""The real model: SmolLM2-135M-Instruct split over three loopback workers is token-exact with
transformers' single-process generate() on the same fp32 weights (5 prompts x 32 tokens, batched)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.worker.client import Connections, generate
from tests.services.worker.conftest import chain_of, chat_prompt_ids, hf_greedy, start_workers, stop_all

NEW_TOKENS = 32


def test_three_workers_and_overlapping_chains_match_generate(smollm2_dir: Path) -> None:
    prompts = chat_prompt_ids(smollm2_dir)
    expected = hf_greedy(smollm2_dir, prompts, NEW_TOKENS)

    async def run() -> tuple[list[list[int]], list[list[int]]]:
        a, b, c, wide = await start_workers(smollm2_dir, [(0, 7), (7, 19), (19, 30), (7, 30)])
        conns = Connections()
        three = chain_of([a, b, c], conns)
        two = chain_of([a, wide], conns)
        try:
            batched = await generate([three] * len(prompts), prompts, NEW_TOKENS, request_prefix="three")
            mixed = await generate(
                [three, two, three, two, three], prompts, NEW_TOKENS, request_prefix="mixed"
            )
            return batched, mixed
        finally:
            await conns.close()
            await stop_all([a, b, c, wide])

    batched, mixed = asyncio.run(run())
    assert batched == expected
    assert mixed == expected
    assert len({tuple(t) for t in expected}) == len(prompts)  # the prompts really differ
