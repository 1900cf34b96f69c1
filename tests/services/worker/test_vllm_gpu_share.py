"""The GPU share a vLLM shard asks for: enough for its weights, KV and activations, so several shards
start on one GPU (vLLM's default, 0.9, lets only the first one start). Needs neither vLLM nor a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.worker.backends.base import ShardSpec
from services.worker.backends.vllm_backend import _gpu_share

GIB = 2**30


def test_a_shard_asks_for_its_weights_kv_and_headroom(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 2**20)
    (tmp_path / "config.json").write_text("{}")  # not weights: not counted
    spec = ShardSpec("m", tmp_path, 0, 1, kv_cache_bytes=GIB)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (10 * GIB, 140 * GIB))
    assert _gpu_share(spec) == pytest.approx((2**20 + GIB + 2 * GIB) / (140 * GIB), rel=1e-12)
    # Four such shards fit where vLLM's default would have admitted one.
    assert 4 * _gpu_share(spec) < 0.9


def test_the_share_is_capped_at_vllms_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 2**20)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (GIB, GIB))
    assert _gpu_share(ShardSpec("m", tmp_path, 0, 1, kv_cache_bytes=GIB)) == 0.9
