"""Timing the real torch backend on a tiny random Llama: every point measured, positive, layers apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.errors import InvalidInput
from services.profiling.measure import MeasureConfig, load_measuring_backend, measure_backend, measuring_shard
from services.worker.backends.base import ShardSpec


def test_measuring_shard_skips_embedding_and_head_when_it_can() -> None:
    assert measuring_shard(30, 4) == (1, 5)
    assert measuring_shard(6, 4) == (1, 5)
    assert measuring_shard(4, 4) == (0, 4)  # no room: the first shard it is
    assert measuring_shard(3, 8) == (0, 3)


def test_measure_backend_times_every_point(tiny_model: Path) -> None:
    cfg = MeasureConfig(prompt_tokens=(8, 32), decode_batches=(1, 3), decode_context=20, repeats=2)
    spec = ShardSpec("tiny", tiny_model, 1, 5, kv_capacity_tokens=4096)
    backend = load_measuring_backend("torch", spec, cfg)
    m = measure_backend(backend, cfg)
    assert m.prompt.points == (8, 32) and m.decode.points == (1, 3)
    assert m.prompt.layers == m.decode.layers == 4
    for series in (m.prompt, m.decode):
        assert all(x > 0 for x in series.one_layer_ms + series.many_layers_ms)
    assert m.backend == "torch" and m.device == "cpu" and m.decode_context == 20
    # Everything the measurement cached was freed again.
    assert backend.kv_used_tokens() == 0


def test_measure_config_rejects_nonsense() -> None:
    with pytest.raises(InvalidInput):
        MeasureConfig(prompt_tokens=())
    with pytest.raises(InvalidInput):
        MeasureConfig(measure_layers=1)


def test_measure_head_on_the_last_layer(tiny_model: Path) -> None:
    from services.profiling.measure import measure_head

    cfg = MeasureConfig(repeats=1)
    last = load_measuring_backend("torch", ShardSpec("tiny", tiny_model, 5, 6, kv_capacity_tokens=256), cfg)
    head = measure_head(last, (1, 4), 2)
    assert head.points == (1, 4) and len(head.ms) == 2 and all(ms >= 0 for ms in head.ms)
    assert list(head.ms) == sorted(head.ms)  # more sequences never cost less
    assert last.kv_used_tokens() == 0
    middle = load_measuring_backend("torch", ShardSpec("tiny", tiny_model, 1, 3, kv_capacity_tokens=256), cfg)
    with pytest.raises(InvalidInput):
        measure_head(middle, (1,), 1)
