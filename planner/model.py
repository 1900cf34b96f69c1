"""The model being served, as the planner sees it: sizes that follow from a Hugging Face config.json."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planner.errors import InvalidInput

DTYPE_BYTES = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "fp32": 4,
    "fp16": 2,
    "bf16": 2,
    "float8": 1,
    "int8": 1,
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    dtype_bytes: int = 2
    # Bytes of one token id on the wire to/from the coordinator (the paper uses 2).
    token_bytes: int = 2
    # When set, overrides the parameter count derived from the shapes (the paper rounds LLaMA-2 70B to 1.53 GB).
    layer_bytes_override: int | None = None
    # When set, overrides hidden_size * dtype_bytes (bundled models take the paper's figure).
    activation_bytes_override: int | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def bytes_per_layer(self) -> int:
        if self.layer_bytes_override is not None:
            return self.layer_bytes_override
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        attention = 2 * h * h + 2 * h * kv
        mlp = 3 * h * self.intermediate_size
        norms = 2 * h
        return (attention + mlp + norms) * self.dtype_bytes

    @property
    def activation_bytes_per_token(self) -> int:
        """Hidden state of one token crossing a hop (the paper counts the hidden state only)."""
        if self.activation_bytes_override is not None:
            return self.activation_bytes_override
        return self.hidden_size * self.dtype_bytes

    @property
    def kv_bytes_per_token_per_layer(self) -> int:
        return 2 * self.num_kv_heads * self.head_dim * self.dtype_bytes


def model_from_hf_config(
    config: Mapping[str, Any],
    *,
    name: str,
    source: str = "config.json",
    layer_bytes_override: int | None = None,
    activation_bytes_override: int | None = None,
) -> ModelSpec:
    """Build a ModelSpec from the fields of a Hugging Face Llama-family config.json."""

    def need_int(field: str, default: int | None = None) -> int:
        value = config.get(field, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InvalidInput(f"expected a positive integer, got {value!r}", source=source, field=field)
        return value

    hidden = need_int("hidden_size")
    heads = need_int("num_attention_heads")
    if hidden % heads:
        raise InvalidInput(
            f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}",
            source=source,
            field="num_attention_heads",
        )
    kv_heads = need_int("num_key_value_heads", heads)
    if heads % kv_heads:
        raise InvalidInput(
            f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}",
            source=source,
            field="num_key_value_heads",
        )
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "float16")
    if dtype not in DTYPE_BYTES:
        raise InvalidInput(
            f"unknown dtype {dtype!r}; expected one of {sorted(DTYPE_BYTES)}",
            source=source,
            field="torch_dtype",
        )
    return ModelSpec(
        name=name,
        num_layers=need_int("num_hidden_layers"),
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=kv_heads,
        intermediate_size=need_int("intermediate_size"),
        vocab_size=need_int("vocab_size"),
        dtype_bytes=DTYPE_BYTES[dtype],
        layer_bytes_override=layer_bytes_override,
        activation_bytes_override=activation_bytes_override,
    )
