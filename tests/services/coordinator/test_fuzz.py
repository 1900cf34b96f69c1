"""Fuzz the coordinator's HTTP API from its own OpenAPI document (tests/openapi_fuzz.py): no answer is a 5xx,
every answer is one the document describes.

What runs: the real app (routes, validation, errors, serving, engine, text streaming) with the real SmolLM2
tokenizer and chat template, over the in-process fake fleet of fakeserver.py covering every layer. A fleet
of real workers would spend the CI budget on matrix products of random prompts; the fake fleet answers in
milliseconds, so every request that names the real model reaches tokenizing, the engine and detokenizing,
and there is no "no live chain" 503 to excuse (tests/services/coordinator/test_api.py covers real workers).
Generated bodies are filled with the real model name and a small max_tokens now and then.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import strategies as st
from schemathesis import Case

from tests.openapi_fuzz import Draw, fuzz_service
from tests.services.coordinator.fakes import MODEL as FAKE_SPEC
from tests.services.coordinator.fakeserver import FakeServer, serve_fake

MODEL = "smollm2-135m"
KEY, ADMIN_KEY = "fuzz-key", "fuzz-admin-key"
ADMIN_OPS = ("GET /v1/admin/plan", "POST /v1/admin/plan", "GET /v1/admin/rollout")
MAX_EXAMPLES = 15
UNSUPPORTED = (
    "max_completion_tokens",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "echo",
    "best_of",
    "suffix",
    "tools",
    "tool_choice",
    "response_format",
    "stream_options",
)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    from services.coordinator.serving import Tokenizer
    from services.modelstore.store import ensure_model

    with serve_fake(
        {"w": (0, FAKE_SPEC.num_layers)},
        api_key=KEY,
        admin_api_key=ADMIN_KEY,
        tokenizer=Tokenizer(ensure_model(MODEL)),
        model_name=MODEL,
    ) as srv:
        yield srv


def fill(case: Case, draw: Draw[Any]) -> None:
    body = case.body
    if not isinstance(body, dict) or not draw(st.booleans()):
        return
    if "messages" in body or "prompt" in body:
        # Options BRL refuses by design (n > 1, logprobs, tools, ...) would stop every case at a 400.
        for name in UNSUPPORTED:
            body.pop(name, None)
        body["model"] = MODEL
        body["max_tokens"] = draw(st.integers(1, 4))
        if "prompt" in body:
            body["prompt"] = draw(
                st.one_of(
                    st.text(min_size=1, max_size=200),
                    st.lists(st.integers(0, 49151), min_size=1, max_size=20),
                )
            )


def test_fuzz_inference_routes_find_no_5xx_and_conform(server: FakeServer) -> None:
    seen = fuzz_service(
        server.root_url,
        headers={"Authorization": f"Bearer {KEY}"},
        fill=fill,
        max_examples=MAX_EXAMPLES,
        skip=ADMIN_OPS,
    )
    # The data went deep: real generations came back from both OpenAI routes.
    assert seen["POST /v1/completions"][200] > 0, seen
    assert seen["POST /v1/chat/completions"][200] > 0, seen
    assert all(status < 500 for counts in seen.values() for status in counts), seen


def test_fuzz_admin_routes_find_no_5xx_and_conform(server: FakeServer) -> None:
    others = [
        "GET /health",
        "GET /ready",
        "GET /metrics",
        "GET /v1/models",
        "POST /v1/completions",
        "POST /v1/chat/completions",
        "GET /v1/dashboard/state",  # fuzzed with the inference key above (the admin key opens it too)
    ]
    seen = fuzz_service(
        server.root_url,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        max_examples=MAX_EXAMPLES,
        skip=others,
    )
    assert set(seen) == set(ADMIN_OPS)
    assert seen["GET /v1/admin/plan"][200] > 0
    assert seen["POST /v1/admin/plan"][400] > 0
    assert all(status < 500 for counts in seen.values() for status in counts), seen
