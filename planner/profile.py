"""How fast one GPU type runs one transformer layer of one model, and how much it can hold."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from planner.errors import InvalidInput


@dataclass(frozen=True)
class LatencyTable:
    """Rows of (batch size, milliseconds for ONE layer), sorted by batch size; lookups interpolate linearly
    and extrapolate from the last two rows beyond the end (the paper's profiles stop at the batch limit)."""

    points: tuple[tuple[float, float], ...]
    # Batch sizes alone, kept once: the simulator looks latencies up for every batch it runs.
    _xs: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.points) < 2:
            raise InvalidInput(f"a latency table needs at least 2 rows, got {len(self.points)}")
        xs = tuple(x for x, _ in self.points)
        if any(b <= a for a, b in zip(xs, xs[1:], strict=False)):
            raise InvalidInput("latency table batch sizes must be strictly increasing")
        if any(x < 0 or ms < 0 for x, ms in self.points):
            raise InvalidInput("latency table rows must be non-negative")
        object.__setattr__(self, "_xs", xs)

    def ms(self, batch: float) -> float:
        xs = self._xs
        i = bisect.bisect_left(xs, batch)
        if i < len(xs) and xs[i] == batch:
            return self.points[i][1]
        i = min(max(i, 1), len(xs) - 1)
        (x0, y0), (x1, y1) = self.points[i - 1], self.points[i]
        return max(0.0, y0 + (y1 - y0) * (batch - x0) / (x1 - x0))

    def seconds(self, batch: float) -> float:
        return self.ms(batch) / 1000.0


@dataclass(frozen=True)
class GpuProfile:
    """One (model, GPU type) pair: VRAM, the most layers it may hold, per-layer latency tables, KV capacity
    for each layer count k (token x layer entries), and the batching limits the paper uses."""

    gpu_type: str
    model_name: str
    vram_bytes: int
    max_layers: int
    prompt: LatencyTable
    decode: LatencyTable
    # kv_capacity[k-1] = token x layer KV entries available when holding k layers.
    kv_capacity: tuple[int, ...]
    prompt_max_requests: int = 1
    prompt_max_tokens: int = 2048
    # decode_max_tokens[k-1] = most sequences decoding at once when holding k layers.
    decode_max_tokens: tuple[int, ...] = ()
    nic_in_bytes_per_s: float = 10e9
    nic_out_bytes_per_s: float = 10e9
    extra: Mapping[str, object] = field(default_factory=dict)
    # Milliseconds of the LM head (logits + sampling) against sequences sampled in one step, paid by the
    # node holding the last layer (not per layer). The paper's profiles fold it away (None); a measured
    # profile of a small model cannot: SmolLM2's head costs about eight of its 30 layers.
    lm_head: LatencyTable | None = None

    def __post_init__(self) -> None:
        if self.max_layers < 1:
            raise InvalidInput(
                f"max_layers must be >= 1, got {self.max_layers}", field=f"{self.gpu_type}.max_layers"
            )
        if len(self.kv_capacity) < self.max_layers:
            raise InvalidInput(
                f"kv_capacity needs {self.max_layers} entries (k=1..max_layers), got {len(self.kv_capacity)}",
                field=f"{self.gpu_type}.kv_capacity",
            )

    def check_k(self, k: int) -> None:
        if not 1 <= k <= self.max_layers:
            raise InvalidInput(
                f"{self.gpu_type} holds 1..{self.max_layers} layers of {self.model_name}, asked {k}"
            )

    def kv_capacity_for(self, k: int) -> int:
        self.check_k(k)
        return self.kv_capacity[k - 1]

    def decode_max_for(self, k: int) -> int:
        self.check_k(k)
        if not self.decode_max_tokens:
            return 256
        return self.decode_max_tokens[min(k, len(self.decode_max_tokens)) - 1]

    def prompt_s_per_layer(self, tokens: float) -> float:
        return self.prompt.seconds(tokens)

    def decode_s_per_layer(self, sequences: float) -> float:
        return self.decode.seconds(sequences)

    @property
    def lone_decode_batch(self) -> int:
        """The batch a lone decode is priced at. The paper's decode tables start at (0,0) then bs=2 and it
        prices a lone decode at bs=2; a table that measured bs=1 (`brl profile` does) is read as it stands."""
        return 1 if any(x == 1 for x, _ in self.decode.points) else 2


@dataclass(frozen=True)
class ProfileSet:
    """Profiles of one model on every GPU type of a fleet, keyed by GPU type name. `throughput_settings`
    holds the model-level entries of the same settings file that the throughput model reads (typical layer
    tables, initial normalised perf): carried here so every caller gets one tp table for one profile set."""

    model_name: str
    by_gpu: Mapping[str, GpuProfile]
    throughput_settings: Mapping[str, Any] = field(default_factory=dict)

    def get(self, gpu_type: str) -> GpuProfile:
        try:
            return self.by_gpu[gpu_type]
        except KeyError:
            from planner.errors import UnknownName

            raise UnknownName("GPU type", gpu_type, list(self.by_gpu)) from None

    def types(self) -> Sequence[str]:
        return tuple(self.by_gpu)
