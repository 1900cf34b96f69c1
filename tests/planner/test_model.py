"""ModelSpec sizes follow from a Hugging Face config.json."""

from __future__ import annotations

import pytest

from planner import bundled
from planner.errors import InvalidInput
from planner.model import model_from_hf_config

LLAMA2_70B = {
    "hidden_size": 8192,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "num_hidden_layers": 80,
    "intermediate_size": 28672,
    "vocab_size": 32000,
    "torch_dtype": "float16",
}


def test_llama2_70b_sizes_from_config() -> None:
    spec = model_from_hf_config(LLAMA2_70B, name="70b")
    assert spec.head_dim == 128
    # 2 (K and V) * 8 KV heads * 128 dims * 2 bytes
    assert spec.kv_bytes_per_token_per_layer == 2 * 8 * 128 * 2 == 4096
    assert spec.activation_bytes_per_token == 8192 * 2
    h, kv = 8192, 8 * 128
    assert spec.bytes_per_layer == (2 * h * h + 2 * h * kv + 3 * h * 28672 + 2 * h) * 2
    # about 1.7 GB of parameters per layer in fp16
    assert 1.6e9 < spec.bytes_per_layer < 1.8e9


def test_overrides_take_the_papers_figures() -> None:
    spec = model_from_hf_config(
        LLAMA2_70B, name="70b", layer_bytes_override=1_530_000_000, activation_bytes_override=12345
    )
    assert spec.bytes_per_layer == 1_530_000_000
    assert spec.activation_bytes_per_token == 12345


def test_kv_heads_default_to_heads_and_dtype_sets_bytes() -> None:
    config = {k: v for k, v in LLAMA2_70B.items() if k != "num_key_value_heads"} | {"torch_dtype": "float32"}
    spec = model_from_hf_config(config, name="mha")
    assert spec.num_kv_heads == 64
    assert spec.dtype_bytes == 4
    assert spec.kv_bytes_per_token_per_layer == 2 * 64 * 128 * 4


def test_bundled_models() -> None:
    m70 = bundled.model("llama2-70b")
    assert (m70.num_layers, m70.bytes_per_layer, m70.activation_bytes_per_token) == (80, 1_530_000_000, 16384)
    m30 = bundled.model("llama1-30b")
    assert (m30.num_layers, m30.bytes_per_layer, m30.activation_bytes_per_token) == (60, 1_000_000_000, 13312)
    small = bundled.model("smollm2-135m")
    assert (small.num_layers, small.hidden_size, small.num_kv_heads, small.head_dim) == (30, 576, 3, 64)
    assert small.kv_bytes_per_token_per_layer == 2 * 3 * 64 * 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hidden_size": -1}, "hidden_size"),
        ({"num_hidden_layers": "80"}, "num_hidden_layers"),
        ({"num_key_value_heads": 7}, "num_key_value_heads"),
        ({"num_attention_heads": 63}, "num_attention_heads"),
        ({"torch_dtype": "float13"}, "torch_dtype"),
    ],
)
def test_bad_config_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        model_from_hf_config(LLAMA2_70B | change, name="bad", source="cfg.json")
    assert err.value.field == field
    assert err.value.source == "cfg.json"
    assert "cfg.json" in str(err.value)


def test_missing_field_is_named() -> None:
    config = {k: v for k, v in LLAMA2_70B.items() if k != "vocab_size"}
    with pytest.raises(InvalidInput, match="vocab_size"):
        model_from_hf_config(config, name="bad")
