"""Read a Hugging Face Llama-family folder: its shape from config.json, and only the tensors a shard needs.

Sharded checkpoints (model.safetensors.index.json) are read file by file, and files holding none of the
wanted tensors are never opened, so a worker's memory and start-up scale with the layers it holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from planner.errors import InvalidInput
from services.worker.backends.base import ModelShape

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise InvalidInput(
            "no config.json in the model folder", source=str(model_dir), field="model"
        ) from exc


def model_shape(config: dict[str, Any], source: str = "config.json") -> ModelShape:
    archs = config.get("architectures") or ["LlamaForCausalLM"]
    if not any(a in SUPPORTED_ARCHITECTURES for a in archs):
        raise InvalidInput(
            f"architecture {archs} is not a Llama-family model; expected one of "
            f"{', '.join(SUPPORTED_ARCHITECTURES)}",
            source=source,
            field="architectures",
        )
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    return ModelShape(
        num_layers=int(config["num_hidden_layers"]),
        hidden_size=hidden,
        vocab_size=int(config["vocab_size"]),
        num_heads=heads,
        num_kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or hidden // heads),
        max_positions=int(config.get("max_position_embeddings") or 2048),
    )


def rope_theta(config: dict[str, Any]) -> float:
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    kind = params.get("rope_type") or params.get("type") or "default"
    if kind != "default":
        raise InvalidInput(
            f"rope type {kind!r} is not supported by the torch backend (only 'default')",
            field="rope_parameters",
        )
    return float(params.get("rope_theta") or config.get("rope_theta") or 10000.0)


def layer_of(name: str) -> int | None:
    """The transformer layer a checkpoint name belongs to (None for embeddings, final norm, LM head)."""
    match = _LAYER.match(name)
    return int(match.group(1)) if match else None


def shard_filter(num_layers: int, start: int, end: int, *, tied: bool) -> Callable[[str], bool]:
    """Which checkpoint names layers [start, end) need: their blocks, plus embeddings on a first shard and
    the final norm + LM head on a last one (the embeddings again when the head is tied to them)."""
    first, last = start == 0, end == num_layers

    def wanted(name: str) -> bool:
        match = _LAYER.match(name)
        if match:
            return start <= int(match.group(1)) < end
        if name == "model.embed_tokens.weight":
            return first or (last and tied)
        if name in ("model.norm.weight", "lm_head.weight"):
            return last
        return False

    return wanted


def load_tensors(
    model_dir: Path, wanted: Callable[[str], bool], dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        files: dict[str, list[str]] = {}
        for name, file in weight_map.items():
            if wanted(name):
                files.setdefault(file, []).append(name)
    else:
        single = model_dir / "model.safetensors"
        if not single.exists():
            raise InvalidInput(
                "no model.safetensors (or index) in the model folder", source=str(model_dir), field="model"
            )
        files = {single.name: []}
    out: dict[str, torch.Tensor] = {}
    for file, names in files.items():
        with safe_open(str(model_dir / file), framework="pt") as handle:
            for name in names or [n for n in handle.keys() if wanted(n)]:  # noqa: SIM118 - not a dict
                # A tensor of the file's own dtype would stay a lazy view of the memory-mapped file and be
                # read from disk by page faults inside the first steps: copy it now, in the loading thread.
                out[name] = handle.get_tensor(name).to(dtype, copy=True)
    return out
