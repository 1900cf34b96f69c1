"""The OpenAI API of a real local deployment (coordinator + 3 CPU workers on loopback, SmolLM2-135M),
driven by the official `openai` client; greedy text is checked against transformers on the same weights."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from services.cli.run import LocalDeployment

MODEL = "smollm2-135m"
API_KEY = "test-key-123"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    dep = LocalDeployment(http_port=0, api_key=API_KEY, workdir=tmp_path_factory.mktemp("deploy"))
    dep.start()
    try:
        yield dep
    finally:
        dep.stop()
    assert dep.alive() == []


@pytest.fixture(scope="module")
def client(deployment: LocalDeployment) -> openai.OpenAI:
    return openai.OpenAI(base_url=deployment.base_url, api_key=API_KEY, max_retries=0, timeout=120)


class Reference:
    """transformers' own greedy generation on the converted weights the workers load."""

    def __init__(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from services.modelstore.store import ensure_model

        path = ensure_model(MODEL)
        # One thread: the deployment's processes use the other core(s); oversubscribing is ~6x slower here.
        torch.set_num_threads(1)
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
        config = json.loads((Path(path) / "config.json").read_text())
        self.eos = config["eos_token_id"]

    def chat_ids(self, content: str) -> list[int]:
        text = self.tok.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        return list(self.tok.encode(text, add_special_tokens=False))

    def greedy(self, ids: list[int], max_new: int) -> tuple[str, int]:
        with self.torch.inference_mode():
            out = self.model.generate(
                self.torch.tensor([ids]),
                max_new_tokens=max_new,
                do_sample=False,
                eos_token_id=self.eos,
                pad_token_id=self.eos,
            )
        new = out[0, len(ids) :].tolist()
        return self.tok.decode(new, skip_special_tokens=True), len(new)


@pytest.fixture(scope="module")
def ref() -> Reference:
    return Reference()


def test_chat_greedy_matches_transformers_and_usage(client: openai.OpenAI, ref: Reference) -> None:
    question = "What is the capital of France?"
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=24, temperature=0
    )
    ids = ref.chat_ids(question)
    text, n = ref.greedy(ids, 24)
    assert r.choices[0].message.content == text
    assert r.usage is not None
    assert r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == n
    assert r.usage.total_tokens == len(ids) + n
    assert r.choices[0].finish_reason == ("length" if n == 24 else "stop")


def test_chat_stream_equals_plain_and_reports_usage(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "Name three colors."}]
    plain = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == plain.choices[0].message.content
    assert usage is not None and plain.usage is not None
    assert usage.completion_tokens == plain.usage.completion_tokens
    assert usage.prompt_tokens == plain.usage.prompt_tokens
    assert finish == plain.choices[0].finish_reason


def test_raw_sse_ends_with_done(deployment: LocalDeployment) -> None:
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 5, "temperature": 0, "stream": True}
    with httpx.stream(
        "POST",
        f"{deployment.base_url}/completions",
        json=body,
        timeout=60,
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in resp.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    assert all(ln.startswith("data: ") for ln in lines)


def test_completion_greedy_matches_transformers(client: openai.OpenAI, ref: Reference) -> None:
    prompt = "The three primary colors are"
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=16, temperature=0)
    ids = list(ref.tok.encode(prompt, add_special_tokens=False))
    text, n = ref.greedy(ids, 16)
    assert r.choices[0].text == text
    assert r.usage is not None and r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == n


def test_sixteen_concurrent_requests_all_correct(deployment: LocalDeployment, ref: Reference) -> None:
    questions = [f"Write the number {i} in words." for i in range(16)]
    aclient = openai.AsyncOpenAI(base_url=deployment.base_url, api_key=API_KEY, max_retries=0, timeout=300)

    async def one(q: str) -> str:
        r = await aclient.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": q}], max_tokens=8, temperature=0
        )
        return r.choices[0].message.content or ""

    async def all_of() -> list[str]:
        try:
            return await asyncio.gather(*(one(q) for q in questions))
        finally:
            await aclient.close()

    got = asyncio.run(all_of())
    want = [ref.greedy(ref.chat_ids(q), 8)[0] for q in questions]
    assert got == want


def test_stop_string_cuts_text(client: openai.OpenAI, ref: Reference) -> None:
    prompt = "The capital of France is"
    full, _ = ref.greedy(list(ref.tok.encode(prompt, add_special_tokens=False)), 12)
    word = full.split()[1] if len(full.split()) > 1 else full.split()[0]
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0, stop=[word])
    assert r.choices[0].text == full[: full.index(word)]
    assert r.choices[0].finish_reason == "stop"


def test_seeded_sampling_is_reproducible(client: openai.OpenAI) -> None:
    kw: Any = {
        "model": MODEL,
        "prompt": "My favourite animal is",
        "max_tokens": 6,
        "temperature": 0.9,
        "top_p": 0.9,
        "seed": 7,
    }
    a = client.completions.create(**kw).choices[0].text
    b = client.completions.create(**kw).choices[0].text
    assert a == b


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": 2}, "logprobs"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 100_000}, "max_tokens"),
        ({"temperature": 5}, "temperature"),
        ({"frobnicate": 1}, "frobnicate"),
        ({"prompt": [5] * 9000}, "prompt"),
    ],
)
def test_bad_options_are_400_in_openai_shape(
    deployment: LocalDeployment, extra: dict[str, Any], param: str
) -> None:
    body = {"model": MODEL, "prompt": "hi"} | extra
    r = httpx.post(
        f"{deployment.base_url}/completions",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert param in err["message"]
    assert err["param"] == param


def test_unknown_model_malformed_json_and_bad_chat(deployment: LocalDeployment) -> None:
    h = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    r = httpx.post(
        f"{deployment.base_url}/chat/completions",
        timeout=30,
        headers=h,
        json={"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 404 and "smollm2-135m" in r.json()["error"]["message"]
    r = httpx.post(f"{deployment.base_url}/chat/completions", timeout=30, headers=h, content=b"{not json")
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{deployment.base_url}/chat/completions", timeout=30, headers=h, json={"model": MODEL})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]


def test_api_key_is_required_on_v1_only(deployment: LocalDeployment) -> None:
    assert httpx.get(f"{deployment.base_url}/models", timeout=10).status_code == 401
    wrong = httpx.get(f"{deployment.base_url}/models", timeout=10, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=deployment.base_url, api_key="nope", max_retries=0).models.list()
    assert httpx.get(f"{deployment.root_url}/health", timeout=10).status_code == 200


def test_metrics_use_vllm_and_brl_names(deployment: LocalDeployment, client: openai.OpenAI) -> None:
    client.completions.create(model=MODEL, prompt="Hello", max_tokens=3, temperature=0)
    text = httpx.get(f"{deployment.root_url}/metrics", timeout=10).text
    for name in (
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:e2e_request_latency_seconds_count",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "brl_edge_requests_total",
        "brl_edge_tokens_total",
        "brl_fail_kv_total",
        "brl_workers_alive",
    ):
        assert name in text, name
    assert 'brl_edge_requests_total{dst="sink"' in text


def test_cancelled_stream_frees_kv_on_every_worker(deployment: LocalDeployment) -> None:
    body = {
        "model": MODEL,
        "prompt": "Tell me a long story about a dragon.",
        "max_tokens": 400,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
    }
    with httpx.stream(
        "POST",
        f"{deployment.base_url}/completions",
        json=body,
        timeout=60,
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as resp:
        for i, _ in enumerate(resp.iter_lines()):
            if i > 6:
                break
    fleet: dict[str, Any] = {}
    for _ in range(100):
        time.sleep(0.2)
        fleet = httpx.get(f"{deployment.root_url}/health", timeout=10).json()["fleet"]
        if all(w["kv_used_tokens"] == 0 for w in fleet.values()):
            break
    assert fleet and all(w["kv_used_tokens"] == 0 for w in fleet.values()), fleet


def test_request_log_has_routes(deployment: LocalDeployment, client: openai.OpenAI) -> None:
    client.completions.create(model=MODEL, prompt="Hi", max_tokens=2, temperature=0)
    rows: list[dict[str, Any]] = []
    for _ in range(50):
        path = deployment.log_dir / "requests.jsonl"
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
        if rows:
            break
        time.sleep(0.1)
    assert rows and all(r["route"] for r in rows if r["finish_reason"] in ("stop", "length"))
    nodes = {hop.split("[")[0] for r in rows if r["route"] for hop in r["route"]}
    assert nodes <= {"fast", "mid", "slow"}
