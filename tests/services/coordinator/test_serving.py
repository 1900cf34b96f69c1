"""Bounded work per request in OpenAI serving: prompts are capped in characters before any tokenizing, and
tokenizing and the chat template run on worker threads, never on the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import httpx

from services.coordinator.serving import CHARS_PER_TOKEN_BOUND
from tests.services.coordinator.fakeserver import FakeTokenizer, serve_fake


class RecordingTokenizer(FakeTokenizer):
    """Notes the thread of every tokenizer call, whether an event loop runs in that thread, and how many
    characters it was handed."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.on_a_loop: list[bool] = []
        self.chars: list[int] = []

    def _note(self) -> None:
        self.threads.append(threading.current_thread().name)
        try:
            asyncio.get_running_loop()
            self.on_a_loop.append(True)
        except RuntimeError:
            self.on_a_loop.append(False)

    def encode(self, text: str) -> list[int]:
        self._note()
        self.chars.append(len(text))
        return super().encode(text)

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        self._note()
        return super().chat_prompt(messages)

    def decode(self, ids: Sequence[int]) -> str:
        return super().decode(ids)


def test_prompts_over_the_cap_are_refused_before_tokenizing() -> None:
    tok = RecordingTokenizer()
    with serve_fake({"a": (0, 4)}, tokenizer=tok, max_prompt_chars=100) as srv:
        r = httpx.post(f"{srv.base_url}/completions", json={"model": "fake", "prompt": "x" * 101}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
        assert (
            "100" in r.json()["error"]["message"] and "BRL_MAX_PROMPT_CHARS" in r.json()["error"]["message"]
        )
        messages = [{"role": "user", "content": "x" * 60}, {"role": "assistant", "content": "y" * 41}]
        r = httpx.post(
            f"{srv.base_url}/chat/completions", json={"model": "fake", "messages": messages}, timeout=30
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
        assert tok.chars == [] and tok.threads == []  # nothing was tokenized
        ok = httpx.post(
            f"{srv.base_url}/completions",
            json={"model": "fake", "prompt": "x" * 100, "max_tokens": 2},
            timeout=30,
        )
        assert ok.status_code == 200 and tok.chars == [100]


def test_default_cap_is_the_context_times_a_chars_per_token_bound() -> None:
    with serve_fake({"a": (0, 4)}) as srv:
        assert srv.coordinator.serving.max_prompt_chars == FakeTokenizer.max_model_len * CHARS_PER_TOKEN_BOUND


def test_tokenizing_and_the_chat_template_run_off_the_event_loop() -> None:
    tok = RecordingTokenizer()
    with serve_fake({"a": (0, 4)}, tokenizer=tok) as srv:
        r = httpx.post(
            f"{srv.base_url}/completions",
            json={"model": "fake", "prompt": "hello", "max_tokens": 2},
            timeout=30,
        )
        assert r.status_code == 200
        chat = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert httpx.post(f"{srv.base_url}/chat/completions", json=chat, timeout=30).status_code == 200
    assert len(tok.threads) == 3  # encode; chat_prompt, which encodes the rendered template
    assert all(name.startswith("brl-tokenize") for name in tok.threads), tok.threads
    assert tok.on_a_loop == [False, False, False]  # no event loop runs in the threads that tokenized
