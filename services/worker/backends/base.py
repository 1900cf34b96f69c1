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
    """What a worker is asked to hold: layers [start, end) of the model in `model_dir` ([0, 0): none)."""

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

    def kv_tokens_needed(self, request_id: str, position: int, num_tokens: int) -> int:
        """Capacity (in the unit of `kv_capacity_tokens`) that caching tokens [position, position +
        num_tokens) of this request takes from the pool. The batcher admits a step's requests one by one
        against it, so a pool that would overflow refuses the request that does not fit, not the step.
        A token-granular pool needs exactly `num_tokens`; a block pool overrides this to round up."""
        return num_tokens

    @abc.abstractmethod
    def step(self, works: list[Work]) -> list[WorkOut]:
        """Runs one batched step; each request appears at most once and its position is checked."""

    @abc.abstractmethod
    def free(self, request_id: str) -> bool:
        """Drops a request's KV; True if it held any."""

    # --- live layer changes (Load) ----------------------------------------------------------------------
    # A backend that can change its layers while serving sets `live_load` and overrides the methods below;
    # the others keep their slice for life (a Load that changes the range is refused). A worker may hold
    # no layers at all (spec [0, 0)): it serves nothing until a Load gives it a range.
    live_load = False
    # True: a new range reuses the layers already in memory (torch); False: it reads all of its layers
    # again beside the old ones, which are freed whole (vLLM: weights belong to one runner).
    reuses_held_layers = True

    def held_layers(self) -> frozenset[int]:
        """Transformer layers whose weights are in memory now."""
        return frozenset(range(self.spec.start, self.spec.end))

    def held_layer_count(self) -> int:
        """Layer weights in memory, counting a layer held twice (by two runners) twice."""
        return len(self.held_layers())

    def read_layers(self, start: int, end: int, held: frozenset[str]) -> object:
        """Reads, from any thread and touching no serving state, what [start, end) needs and is not among
        `held` (checkpoint names); returns it staged for `install`."""
        raise NotImplementedError(f"the {self.name} backend cannot load layers while serving")

    def staged_names(self, staged: object) -> tuple[str, ...]:
        """Checkpoint names `read_layers` read into `staged`, in order."""
        raise NotImplementedError(f"the {self.name} backend cannot load layers while serving")

    def held_tensors(self) -> frozenset[str]:
        """Checkpoint names of the tensors in memory now."""
        raise NotImplementedError(f"the {self.name} backend cannot load layers while serving")

    def install(self, staged: object, start: int, end: int) -> None:
        """In the step thread: adds what `read_layers` staged; [start, end) becomes the range new requests
        use (the spec and the KV capacity follow it). Requests on other held layers keep running."""
        raise NotImplementedError(f"the {self.name} backend cannot load layers while serving")

    def requests_on_old_layers(self) -> int:
        """Requests holding KV in weights that a `keep_only` of the newest range would free. Only asked of
        a backend that does not reuse held layers (a layer-reusing one is judged by request spans)."""
        return 0

    def keep_only(self, spans: list[tuple[int, int]]) -> int:
        """In the step thread: frees the weights no range of `spans` needs (all of them for no span);
        returns the layers freed. With no span left the spec becomes [0, 0)."""
        raise NotImplementedError(f"the {self.name} backend cannot load layers while serving")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases engines, threads or files held by the backend."""
