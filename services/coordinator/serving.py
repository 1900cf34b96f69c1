"""OpenAI semantics on top of the engine: tokenize (chat template), check limits, generate, detokenize with
stop strings, and render plain responses or server-sent-event streams (ending with `data: [DONE]`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from planner.errors import BrlError, InvalidInput
from services.coordinator import openai_models as om
from services.coordinator.engine import Engine, GenParams, Handle
from services.coordinator.errors import ModelNotFound, public_body
from services.coordinator.textstream import TextStream
from services.worker.records import Sampling

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
DISCONNECT_POLL_S = 0.5
# Default prompt cap = context length x this. English runs ~4 characters per token; 16 leaves room for
# code, long words and whitespace runs, so a prompt that fits the context is practically never refused,
# while a megabyte of text is refused before any tokenizing work. BRL_MAX_PROMPT_CHARS overrides it.
CHARS_PER_TOKEN_BOUND = 16
# Tokenizing and chat templates run here, not on the event loop; a small pool so a flood of long prompts
# queues up instead of taking every thread.
TOKENIZER_THREADS = 2
T = TypeVar("T")


class Tokenizer:
    """The model's tokenizer and chat template, from the folder the model store prepared."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoTokenizer  # heavy import, only when serving

        self.model_dir = model_dir
        self._tok = AutoTokenizer.from_pretrained(str(model_dir))
        config = json.loads((model_dir / "config.json").read_text())
        self.max_model_len = int(config.get("max_position_embeddings") or 2048)
        self.vocab_size = int(config.get("vocab_size") or len(self._tok))
        eos: set[int] = set()
        for source in (config.get("eos_token_id"), self._tok.eos_token_id):
            eos.update(source if isinstance(source, list) else [source] if source is not None else [])
        gen = model_dir / "generation_config.json"
        if gen.exists():
            value = json.loads(gen.read_text()).get("eos_token_id")
            eos.update(value if isinstance(value, list) else [value] if value is not None else [])
        self.eos_ids = frozenset(int(e) for e in eos)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=True))

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        text = self._tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.encode(str(text))


@dataclass
class Started:
    """A request the engine accepted, with its first token already in hand (errors before it are HTTP errors)."""

    handle: Handle
    text: TextStream
    tokens: AsyncIterator[int]
    first: int | None


class OpenAIServing:
    def __init__(
        self,
        engine: Engine,
        tokenizer: Tokenizer,
        *,
        model_name: str,
        aliases: Sequence[str] = (),
        default_max_tokens: int = 256,
        max_prompt_chars: int | None = None,
    ) -> None:
        self.engine = engine
        self.tok = tokenizer
        self.model_name = model_name
        self.aliases = {model_name, *aliases}
        self.default_max_tokens = default_max_tokens
        self.max_prompt_chars = max_prompt_chars or tokenizer.max_model_len * CHARS_PER_TOKEN_BOUND
        self._pool = ThreadPoolExecutor(TOKENIZER_THREADS, thread_name_prefix="brl-tokenize")

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _cap_prompt(self, chars: int, field: str) -> None:
        """Refuse a text prompt beyond the character cap before tokenizing it (bounded work per request)."""
        if chars > self.max_prompt_chars:
            raise InvalidInput(
                f"the prompt has {chars} characters; this server accepts at most {self.max_prompt_chars} "
                f"(BRL_MAX_PROMPT_CHARS); shorten it",
                source="request",
                field=field,
            )

    # -- shared --------------------------------------------------------------------------------------
    def _check(self, body: om.CompletionRequest | om.ChatCompletionRequest) -> None:
        if body.model not in self.aliases:
            raise ModelNotFound("model", body.model, [self.model_name], source="request", field="model")
        bad = body.unsupported()
        if bad:
            field, why = bad[0]
            raise InvalidInput(why, source="request", field=field)

    def _limits(self, prompt: list[int], max_tokens: int | None, default: int) -> int:
        ctx = self.tok.max_model_len
        if len(prompt) >= ctx:
            raise InvalidInput(
                f"the prompt has {len(prompt)} tokens but the model's context is {ctx} tokens; "
                f"shorten the prompt",
                source="request",
                field="prompt",
            )
        room = ctx - len(prompt)
        if max_tokens is None:
            return min(default, room)
        if max_tokens > room:
            raise InvalidInput(
                f"max_tokens={max_tokens} plus the prompt's {len(prompt)} tokens exceeds the "
                f"model's context of {ctx} tokens; set max_tokens <= {room}",
                source="request",
                field="max_tokens",
            )
        return max_tokens

    def _params(self, body: om.CompletionRequest | om.ChatCompletionRequest, max_tokens: int) -> GenParams:
        temperature = 1.0 if body.temperature is None else body.temperature
        top_p = 1.0 if body.top_p is None else body.top_p
        return GenParams(
            max_tokens=max_tokens,
            sampling=Sampling(temperature=temperature, top_p=top_p, seed=body.seed),
            eos_ids=self.tok.eos_ids,
            ignore_eos=body.ignore_eos,
        )

    async def _start(
        self, prompt: list[int], params: GenParams, stop: tuple[str, ...], prefix: str
    ) -> Started:
        bad = [t for t in prompt if not 0 <= t < self.tok.vocab_size]
        if bad:
            raise InvalidInput(
                f"token id {bad[0]} is outside the vocabulary [0, {self.tok.vocab_size})",
                source="request",
                field="prompt",
            )
        handle = self.engine.submit(self.engine.new_id(prefix), prompt, params)
        tokens = handle.tokens()
        try:
            first: int | None = await anext(tokens)
        except StopAsyncIteration:
            first = None
        except BaseException:
            handle.cancel("abort")
            raise
        return Started(handle, TextStream(self.tok.decode, stop), tokens, first)

    async def _pieces(self, s: Started) -> AsyncIterator[str]:
        """Text deltas until the end; a matched stop string ends generation (and frees the KV)."""
        ids: list[int] = [] if s.first is None else [s.first]
        try:
            while True:
                for tok in ids:
                    piece = s.text.feed(tok)
                    if piece:
                        yield piece
                    if s.text.stopped:
                        s.handle.cancel("stop")
                        return
                try:
                    ids = [await anext(s.tokens)]
                except StopAsyncIteration:
                    break
            tail = s.text.flush()
            if tail:
                yield tail
        finally:
            if s.handle.finish_reason is None:
                s.handle.cancel("abort")  # the consumer went away: free the KV on every hop

    @staticmethod
    def _finish_reason(s: Started) -> str:
        reason = s.handle.finish_reason or "stop"
        return "length" if reason == "length" else "stop"

    async def _collect(self, s: Started, is_disconnected: Callable[[], Awaitable[bool]] | None) -> str:
        async def watch() -> None:
            while is_disconnected is not None:
                await asyncio.sleep(DISCONNECT_POLL_S)
                if await is_disconnected():
                    s.handle.cancel("abort")
                    return

        watcher = asyncio.create_task(watch())
        try:
            return "".join([p async for p in self._pieces(s)])
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    # -- /v1/completions -----------------------------------------------------------------------------
    async def completion(
        self, body: om.CompletionRequest, is_disconnected: Callable[[], Awaitable[bool]] | None = None
    ) -> om.CompletionResponse | AsyncIterator[str]:
        self._check(body)
        p = body.single_prompt()
        if isinstance(p, str):
            self._cap_prompt(len(p), "prompt")
            prompt = await self._off_loop(self.tok.encode, p)
        else:
            prompt = p
        if not prompt:
            raise InvalidInput(
                "the prompt encodes to zero tokens; send some text", source="request", field="prompt"
            )
        max_tokens = self._limits(prompt, body.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS)
        s = await self._start(prompt, self._params(body, max_tokens), body.stop_strings(), "cmpl")
        rid, created = om.new_id("cmpl"), om.now_s()
        if body.stream:
            return self._stream_completion(s, rid, created, body)
        text = await self._collect(s, is_disconnected)
        return om.CompletionResponse(
            id=rid,
            created=created,
            model=self.model_name,
            choices=[om.CompletionChoice(text=text, finish_reason=self._finish_reason(s))],
            usage=om.usage(len(prompt), s.handle.completion_tokens),
        )

    async def _stream_completion(
        self, s: Started, rid: str, created: int, body: om.CompletionRequest
    ) -> AsyncIterator[str]:
        def chunk(text: str, finish: str | None) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": self.model_name,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
            }

        try:
            async for piece in self._pieces(s):
                yield sse(chunk(piece, None))
            yield sse(chunk("", self._finish_reason(s)))
            if body.stream_options and body.stream_options.include_usage:
                yield sse(
                    {
                        "id": rid,
                        "object": "text_completion",
                        "created": created,
                        "model": self.model_name,
                        "choices": [],
                        "usage": self._usage(s).model_dump(),
                    }
                )
        except BrlError as exc:
            yield sse(public_body(exc))
        yield "data: [DONE]\n\n"

    # -- /v1/chat/completions ------------------------------------------------------------------------
    async def chat(
        self, body: om.ChatCompletionRequest, is_disconnected: Callable[[], Awaitable[bool]] | None = None
    ) -> om.ChatCompletionResponse | AsyncIterator[str]:
        self._check(body)
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
        self._cap_prompt(sum(len(m["content"]) for m in messages), "messages")
        try:
            prompt = await self._off_loop(self.tok.chat_prompt, messages)
        except Exception as exc:  # a template that rejects the conversation (e.g. roles out of order)
            raise InvalidInput(
                f"the chat template rejected the messages: {exc}", source="request", field="messages"
            ) from None
        max_tokens = self._limits(prompt, body.token_limit(), self.default_max_tokens)
        s = await self._start(prompt, self._params(body, max_tokens), body.stop_strings(), "chatcmpl")
        rid, created = om.new_id("chatcmpl"), om.now_s()
        if body.stream:
            return self._stream_chat(s, rid, created, body)
        text = await self._collect(s, is_disconnected)
        return om.ChatCompletionResponse(
            id=rid,
            created=created,
            model=self.model_name,
            choices=[
                om.ChatChoice(message=om.AssistantMessage(content=text), finish_reason=self._finish_reason(s))
            ],
            usage=self._usage(s),
        )

    async def _stream_chat(
        self, s: Started, rid: str, created: int, body: om.ChatCompletionRequest
    ) -> AsyncIterator[str]:
        def chunk(delta: om.ChatDelta, finish: str | None) -> dict[str, Any]:
            c = om.ChatCompletionChunk(
                id=rid,
                created=created,
                model=self.model_name,
                choices=[om.ChatChunkChoice(delta=delta, finish_reason=finish)],
            )
            return c.model_dump(exclude={"usage"})

        try:
            yield sse(chunk(om.ChatDelta(role="assistant", content=""), None))
            async for piece in self._pieces(s):
                yield sse(chunk(om.ChatDelta(content=piece), None))
            yield sse(chunk(om.ChatDelta(), self._finish_reason(s)))
            if body.stream_options and body.stream_options.include_usage:
                final = om.ChatCompletionChunk(
                    id=rid, created=created, model=self.model_name, choices=[], usage=self._usage(s)
                )
                yield sse(final.model_dump())
        except BrlError as exc:
            yield sse(public_body(exc))
        yield "data: [DONE]\n\n"

    @staticmethod
    def _usage(s: Started) -> om.Usage:
        return om.usage(s.handle.prompt_tokens, s.handle.completion_tokens)

    def models(self) -> om.ModelList:
        return om.ModelList(
            data=[om.ModelCard(id=self.model_name, created=om.now_s(), max_model_len=self.tok.max_model_len)]
        )


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
