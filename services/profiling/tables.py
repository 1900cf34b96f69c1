"""Turn measured step times into the planner's profile: per-layer latency tables, KV capacity for each
layer count k, the most layers that fit, and the settings-json entry of one GPU type. Pure arithmetic.

Per-layer time. A step on a shard of k layers costs about `k * slope(batch) + intercept(batch)`; the slope
comes from timing 1 and m layers. The CSV holds what one layer costs on a node holding K layers (the
`--layers` the profile is made for): slope + intercept / K, so `K * csv(batch)` is the measured step time,
which is what the planner and the simulator multiply out. The intercept table is kept in the settings
entry (`step_overhead_ms`) for anyone who wants to model nodes holding far fewer layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from planner.errors import InvalidInput
from planner.model import ModelSpec
from planner.profile import LatencyTable
from services.profiling.measure import HeadCost, Measurement, Series

# Slopes below this (ms per layer) are measurement noise, not a real cost.
_MIN_SLOPE_MS = 1e-4


@dataclass(frozen=True)
class Split:
    """Per-layer slope and per-step intercept, in ms, for each batch point."""

    points: tuple[int, ...]
    slope_ms: tuple[float, ...]
    intercept_ms: tuple[float, ...]


def split(series: Series) -> Split:
    """Least squares through two layer counts is just the line between them; a negative intercept (noise
    on a busy machine) falls back to the plain average per layer."""
    slopes, intercepts = [], []
    m = series.layers
    for one, many in zip(series.one_layer_ms, series.many_layers_ms, strict=True):
        slope = (many - one) / (m - 1)
        intercept = one - slope
        if slope < _MIN_SLOPE_MS or intercept < 0:
            slope, intercept = max(_MIN_SLOPE_MS, many / m), 0.0
        slopes.append(slope)
        intercepts.append(intercept)
    return Split(series.points, tuple(slopes), tuple(intercepts))


def _running_max(values: Sequence[float]) -> list[float]:
    """More work never takes less time: a dip between batch points is noise from other tenants."""
    out: list[float] = []
    for v in values:
        out.append(max(v, out[-1]) if out else v)
    return out


def per_layer_table(s: Split, layers: int) -> LatencyTable:
    """Rows (0, 0), then (batch, ms for ONE layer on a node holding `layers` layers), non-decreasing."""
    if layers < 1:
        raise InvalidInput(f"layers must be >= 1, got {layers}", field="layers")
    ms = _running_max([sl + ic / layers for sl, ic in zip(s.slope_ms, s.intercept_ms, strict=True)])
    rows = [(0.0, 0.0), *((float(x), round(y, 4)) for x, y in zip(s.points, ms, strict=True))]
    return LatencyTable(tuple(rows))


@dataclass(frozen=True)
class Capacity:
    """KV token x layer entries for k = 1..max_layers, and the memory the profile assumes."""

    max_layers: int
    kv_entries: tuple[int, ...]
    memory_bytes: int


def fixed_pool_capacity(model: ModelSpec, max_layers: int, kv_cache_bytes: int) -> Capacity:
    """A worker that sets aside a fixed KV pool whatever it holds (our torch backend, `--kv-cache-gib`):
    the same token x layer entries for every k."""
    k_max = min(max_layers, model.num_layers)
    entries = kv_cache_bytes // model.kv_bytes_per_token_per_layer
    if entries < 1:
        raise InvalidInput("the KV pool holds no token", field="kv_cache_bytes")
    return Capacity(k_max, (int(entries),) * k_max, k_max * model.bytes_per_layer + kv_cache_bytes)


def memory_budget_capacity(
    model: ModelSpec, max_layers: int, memory_bytes: int, *, min_kv_tokens: int
) -> Capacity:
    """A GPU whose memory holds the weights of k layers and gives the rest to KV (vLLM's way): entries(k)
    = (memory - k x layer bytes - embeddings and LM head) / KV bytes per token per layer. The most layers
    is the largest k that still leaves `min_kv_tokens` tokens of KV on every layer it holds."""
    # Budget the embedding table and the LM head as if the node held both (first and last shard).
    ends = 2 * model.vocab_size * model.hidden_size * model.dtype_bytes
    per_entry = model.kv_bytes_per_token_per_layer
    entries = []
    for k in range(1, min(max_layers, model.num_layers) + 1):
        left = memory_bytes - k * model.bytes_per_layer - ends
        e = left // per_entry
        if e < k * min_kv_tokens:
            break
        entries.append(int(e))
    if not entries:
        raise InvalidInput(
            f"{memory_bytes} bytes do not hold one layer of {model.name} plus {min_kv_tokens} tokens of KV",
            field="memory",
        )
    return Capacity(len(entries), tuple(entries), memory_bytes)


def gpu_entry(
    m: Measurement,
    cap: Capacity,
    *,
    profile_dir: str,
    layers: int,
    prompt_max_requests: int,
    prompt_max_tokens: int,
    decode_max_tokens: int,
    nic_bytes_per_s: float | None = None,
    head: HeadCost | None = None,
    description: str = "",
) -> dict[str, Any]:
    """One `gpus.<type>` entry of settings.json (the keys planner.formats.profiles reads, plus how it was
    measured, so a profile can be traced back to its run)."""
    ks = range(1, cap.max_layers + 1)
    prompt, decode = split(m.prompt), split(m.decode)
    entry: dict[str, Any] = {
        "description": description,
        "max_num_layers": cap.max_layers,
        "vram_bytes": int(cap.memory_bytes),
        "kv_cache_capacity_token_layers": {str(k): cap.kv_entries[k - 1] for k in ks},
        "prompt_max_requests": prompt_max_requests,
        "prompt_max_tokens": prompt_max_tokens,
        "decode_max_tokens": {str(k): decode_max_tokens for k in ks},
        "profile_dir": profile_dir,
        "profiled_for_layers": layers,
        "step_overhead_ms": {
            "prompt": [[x, round(y, 4)] for x, y in zip(prompt.points, prompt.intercept_ms, strict=True)],
            "decode": [[x, round(y, 4)] for x, y in zip(decode.points, decode.intercept_ms, strict=True)],
        },
        "measured": {
            "backend": m.backend,
            "device": m.device,
            "threads": m.threads,
            "decode_context": m.decode_context,
            "repeats": m.repeats,
            "measure_layers": m.prompt.layers,
            **m.meta,
        },
    }
    if head is not None:
        # Paid by the node holding the last layer, per step, for the sequences it samples (not in the CSVs).
        entry["lm_head_ms"] = [[x, round(y, 4)] for x, y in zip(head.points, head.ms, strict=True)]
    if nic_bytes_per_s is not None:
        entry["nic_in_bytes_per_s"] = float(nic_bytes_per_s)
        entry["nic_out_bytes_per_s"] = float(nic_bytes_per_s)
    return entry


def model_entry(model: ModelSpec, token_size_bytes: int) -> dict[str, Any]:
    """The model-level keys of settings.json (sizes the throughput model and the flow graph need)."""
    return {
        "model": model.name,
        "num_layers": model.num_layers,
        "token_size_bytes": token_size_bytes,
        "activation_size_bytes_per_token": model.activation_bytes_per_token,
        "param_bytes_per_layer": model.bytes_per_layer,
    }
