"""The interface every execution backend implements: run a validated, flattened step on a layer slice.

The batcher decides what runs (which requests, how many tokens) and samples; a backend only computes,
holds the per-request KV cache of its layers, and frees it on demand.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ShardSpec:
    """What a worker is asked to hold: layers [start, end) of the model in `model_dir`."""

    model: str  # the name it was asked for (short name or folder), reported back as-is
    model_dir: Path
    start: int
    end: int
    dtype: str = "float32"
    kv_capacity_tokens: int | None = None  # None: from kv_cache_bytes
    kv_cache_bytes: int = 512 * 1024 * 1024
    max_batch_tokens: int = 4096


@dataclass(frozen=True)
class ModelShape:
    """The sizes every backend reads from config.json and the batcher validates against."""

    num_layers: int
    hidden_size: int
    vocab_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_positions: int


@dataclass
class Work:
    """One request's part of one step, already validated against the backend's shape and state."""

    request_id: str
    start_layer: int
    end_layer: int
    position: int
    num_tokens: int
    token_ids: torch.Tensor | None = None  # [n] int64, when start_layer == 0
    hidden: torch.Tensor | None = None  # [n, hidden], when start_layer > 0
    residual: torch.Tensor | None = None  # [n, hidden] or None (the stream is hidden + residual)
    want_logits: bool = False  # last layer of the model: return the logits of the final token


@dataclass
class WorkOut:
    hidden: torch.Tensor | None = None  # [n, hidden] after end_layer (when end_layer < num_layers)
    residual: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # [vocab] float32 of the final token (when want_logits)


class Backend(abc.ABC):
    """A layer slice of one model with per-request KV. Methods are called from one thread at a time."""

    name: str = ""

    def __init__(self, spec: ShardSpec, shape: ModelShape) -> None:
        self.spec = spec
        self.shape = shape

    @property
    def activation_dtype(self) -> str:
        return self.spec.dtype

    @property
    @abc.abstractmethod
    def kv_capacity_tokens(self) -> int:
        """Tokens of KV this worker can hold for all its layers."""

    @abc.abstractmethod
    def kv_used_tokens(self) -> int: ...

    @abc.abstractmethod
    def step(self, works: list[Work]) -> list[WorkOut]:
        """Runs one batched step; each request appears at most once and its position is checked."""

    @abc.abstractmethod
    def free(self, request_id: str) -> bool:
        """Drops a request's KV; True if it held any."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases engines, threads or files held by the backend."""
