"""OpenAI API bodies (pydantic): requests as clients send them, responses and stream chunks as we send.

Options BRL does not implement are accepted by the schema so that `unsupported()` can name them in a
clear 400, rather than silently ignoring them or failing with a generic validation message.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from planner.errors import InvalidInput

MAX_STOP_STRINGS = 4
# Held-back text is matched against every stop string on every token: a bound keeps that work small.
MAX_STOP_CHARS = 256
LONE_SURROGATE = "lone_surrogate"


def lone_surrogate_at(value: Any, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where in a parsed JSON value (keys included) a string holds a lone UTF-16 surrogate, or None.

    JSON may escape them ("\\ud800") and Python keeps them, but they are not text: a tokenizer rejects them
    and UTF-8 cannot encode them, so a body holding one is refused up front with its location."""
    if isinstance(value, str):
        return path if any("\ud800" <= c <= "\udfff" for c in value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and lone_surrogate_at(key, ()) is not None:
                return (*path, "<key>")
            found = lone_surrogate_at(item, (*path, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = lone_surrogate_at(item, (*path, i))
            if found is not None:
                return found
    return None


class StrictBody(BaseModel):
    """A request body: unknown fields are refused, and so are strings that are not valid Unicode."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        where = lone_surrogate_at(data)
        if where is not None:
            field = ".".join(str(p) for p in where) or "body"
            raise PydanticCustomError(
                LONE_SURROGATE,
                "{field}: holds a lone UTF-16 surrogate (e.g. \\ud800), which is not text; send valid Unicode",
                {"field": field},
            )
        return data


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    continuous_usage_stats: bool = False


class _SamplingBody(StrictBody):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    logprobs: Any = None
    user: str | None = None
    # vLLM extension, handy for load tests: keep generating past EOS up to max_tokens.
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if len(value) > MAX_STOP_STRINGS:
                raise ValueError(f"at most {MAX_STOP_STRINGS} stop sequences are allowed, got {len(value)}")
            if any(not s for s in value):
                raise ValueError("stop sequences must be non-empty strings")
        for s in [value] if isinstance(value, str) else value or []:
            if len(s) > MAX_STOP_CHARS:
                raise ValueError(
                    f"a stop sequence may have at most {MAX_STOP_CHARS} characters, got {len(s)}"
                )
        return value

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        if isinstance(self.stop, str):
            return (self.stop,) if self.stop else ()
        return tuple(self.stop)

    def unsupported(self) -> list[tuple[str, str]]:
        """(field, why) for every option set to something BRL cannot do."""
        out: list[tuple[str, str]] = []
        if self.n != 1:
            out.append(("n", f"n={self.n} is not supported; send n=1 (or several requests)"))
        if self.presence_penalty:
            out.append(("presence_penalty", "presence_penalty is not supported; leave it unset or 0"))
        if self.frequency_penalty:
            out.append(("frequency_penalty", "frequency_penalty is not supported; leave it unset or 0"))
        if self.logit_bias:
            out.append(("logit_bias", "logit_bias is not supported; leave it unset"))
        if self.logprobs not in (None, False, 0):
            out.append(("logprobs", "logprobs are not supported; leave logprobs unset"))
        if self.stream_options is not None and not self.stream:
            out.append(("stream_options", "stream_options is only allowed with stream=true"))
        return out


class CompletionRequest(_SamplingBody):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    best_of: int | None = Field(None, ge=1)
    suffix: str | None = None

    def unsupported(self) -> list[tuple[str, str]]:
        out = super().unsupported()
        if self.echo:
            out.append(("echo", "echo is not supported; leave it false"))
        if self.best_of not in (None, 1):
            out.append(("best_of", "best_of > 1 is not supported"))
        if self.suffix:
            out.append(("suffix", "suffix (insertion) is not supported"))
        if isinstance(self.prompt, list) and self.prompt and not isinstance(self.prompt[0], int):
            if len(self.prompt) != 1:
                out.append(("prompt", f"a batch of {len(self.prompt)} prompts is not supported; send one"))
        return out

    def single_prompt(self) -> str | list[int]:
        """The one prompt, as text or token ids."""
        p = self.prompt
        if isinstance(p, list) and p and not isinstance(p[0], int):
            p = p[0]  # type: ignore[assignment]
        if isinstance(p, list):
            if not p:
                raise InvalidInput(
                    "prompt is empty; send at least one token", source="request", field="prompt"
                )
            return [int(t) for t in p]  # type: ignore[arg-type]
        if not p:
            raise InvalidInput("prompt is empty; send some text", source="request", field="prompt")
        return p


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_SamplingBody):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    def unsupported(self) -> list[tuple[str, str]]:
        out = super().unsupported()
        if self.top_logprobs:
            out.append(("top_logprobs", "top_logprobs is not supported"))
        if self.tools:
            out.append(("tools", "tool calling is not supported; leave tools unset"))
        if self.tool_choice not in (None, "none"):
            out.append(("tool_choice", "tool_choice is not supported"))
        if self.response_format and self.response_format.get("type", "text") != "text":
            out.append(("response_format", 'only response_format {"type": "text"} is supported'))
        return out

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


# ---- responses -------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str


class ErrorResponse(BaseModel):
    """Every error the coordinator answers (OpenAI's shape); 5xx messages are generic, with an error id."""

    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now_s() -> int:
    return int(time.time())


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: str | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "brl"
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
