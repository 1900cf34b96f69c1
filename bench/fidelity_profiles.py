"""bench/fidelity.py's measurement of this machine: the torch backend's prompt/decode timings of a few
SmolLM2 layers and its LM head (brl profile's code), cut into one Helix-format profile per GPU type of a plan.
Also used by bench/replan_predict.py."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from planner.formats.profiles import load_profile_dir
from planner.model import ModelSpec
from planner.placement import LayerRange
from planner.profile import ProfileSet

if TYPE_CHECKING:  # the measuring code imports torch: only where a measurement runs
    from services.profiling.measure import HeadCost, Measurement, Series

MODEL = "smollm2-135m"


def measure_profiles(
    out_dir: Path, *, quick: bool, placement: dict[str, tuple[str, LayerRange]]
) -> ProfileSet:
    """One measurement of the torch backend (brl profile's code), written as one profile per GPU type of the
    plan with the tables for the layers its node holds, unthrottled (the simulator applies the throttle),
    and the LM head (the simulator charges it where a node holds the last layer)."""
    return write_profiles(out_dir, measure_torch(quick=quick), placement)


@dataclass(frozen=True)
class Measured:
    """One measurement of the torch backend and its LM head, not yet cut into per-GPU-type tables."""

    measurement: Measurement
    head: HeadCost
    model: ModelSpec  # as the runtime loads it (float32)
    # The share of a core the measuring thread had (its CPU time over the wall time of the timed steps):
    # 1 on an idle machine; other runnable work on a busy one stretched every timing by 1 / share.
    core_share: float = 1.0


def measure_torch(*, quick: bool, decode_context: int | None = None) -> Measured:
    """Prompt and decode timings of a few layers of SmolLM2 on this machine's torch backend, and the head;
    decode steps at `decode_context` cached tokens per sequence (64; quick 32): the workload's context."""
    from services.modelstore import ensure_model
    from services.profiling.measure import (
        MeasureConfig,
        load_measuring_backend,
        measure_backend,
        measuring_shard,
    )
    from services.profiling.profile import measure_head_of, runtime_model
    from services.worker.backends.base import ShardSpec

    cfg = (
        MeasureConfig(prompt_tokens=(8, 32, 64), decode_batches=(1, 2, 4), decode_context=32, repeats=2)
        if quick
        else MeasureConfig(
            prompt_tokens=(8, 16, 32, 64, 128, 256),
            decode_batches=(1, 2, 4, 8, 16),
            decode_context=64,
            repeats=3,
        )
    )
    if decode_context is not None:
        cfg = dataclasses.replace(cfg, decode_context=decode_context)
    model = runtime_model(MODEL, "float32")
    start, end = measuring_shard(model.num_layers, cfg.measure_layers)
    spec = ShardSpec(MODEL, ensure_model(MODEL), start, end, kv_capacity_tokens=1 << 16)
    backend = load_measuring_backend("torch", spec, cfg)
    try:
        # torch runs one intra-op thread, this one: what it got of a core is its CPU time over the wall time.
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        m = measure_backend(backend, cfg)
        share = (time.thread_time() - cpu0) / max(1e-9, time.perf_counter() - wall0)
    finally:
        backend.close()
    head = measure_head_of("torch", spec, model.num_layers, cfg)
    return Measured(m, head, model, core_share=min(1.0, max(1e-3, share)))


def measure_torch_typical(*, rounds: int, quick: bool, decode_context: int | None = None) -> Measured:
    """`rounds` measurements (measure_torch), each brought back to a core of its own by the share its
    thread had, and per point the median of them, so that one disturbed round does not set the tables: on
    shared cores one few-second measurement differs from the next by up to a quarter with no competitor
    counted (a decode step of 28 layers timed at 10.2-22.8 ms in nine runs a minute apart). The drift over
    minutes stays (medians of five rounds still differed by 1.25x between runs): a prediction of a later
    window is calibrated on a measured one (tests/services/controller/test_join_throughput.py)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    each = [
        scaled(m, m.core_share)
        for m in (measure_torch(quick=quick, decode_context=decode_context) for _ in range(rounds))
    ]
    return median_of(each)


def median_of(measured: list[Measured]) -> Measured:
    """Per point, the median of timings of one configuration (same points, same model), share 1."""
    first = measured[0]

    def med(values: list[tuple[float, ...]]) -> tuple[float, ...]:
        return tuple(statistics.median(col) for col in zip(*values, strict=True))

    def series(pick: Callable[[Measurement], Series]) -> Series:
        return dataclasses.replace(
            pick(first.measurement),
            one_layer_ms=med([pick(m.measurement).one_layer_ms for m in measured]),
            many_layers_ms=med([pick(m.measurement).many_layers_ms for m in measured]),
        )

    inner = dataclasses.replace(
        first.measurement, prompt=series(lambda m: m.prompt), decode=series(lambda m: m.decode)
    )
    head = dataclasses.replace(first.head, ms=med([m.head.ms for m in measured]))
    return dataclasses.replace(first, measurement=inner, head=head, core_share=1.0)


def scaled(measured: Measured, factor: float) -> Measured:
    """`measured` with every timing (prompt, decode, LM head) times `factor`: e.g. as a core of its own
    would have timed it, when the measuring thread had `factor` of a core."""
    m = measured.measurement

    def series(s: Series) -> Series:
        return dataclasses.replace(
            s,
            one_layer_ms=tuple(x * factor for x in s.one_layer_ms),
            many_layers_ms=tuple(x * factor for x in s.many_layers_ms),
        )

    head = dataclasses.replace(measured.head, ms=tuple(x * factor for x in measured.head.ms))
    inner = dataclasses.replace(m, prompt=series(m.prompt), decode=series(m.decode))
    return dataclasses.replace(measured, measurement=inner, head=head)


def write_profiles(
    out_dir: Path, measured: Measured, placement: dict[str, tuple[str, LayerRange]]
) -> ProfileSet:
    """`measured` as one profile per GPU type of `placement`, each with the per-layer tables of a node
    holding that node's number of layers (a step's fixed cost is shared by the layers it runs)."""
    from services.profiling.save import save_profile
    from services.profiling.tables import fixed_pool_capacity, gpu_entry, model_entry, per_layer_table, split

    m, model = measured.measurement, measured.model
    for gpu_type, layers in placement.values():
        k = layers.size
        prompt, decode = (per_layer_table(split(s), k) for s in (m.prompt, m.decode))
        entry = gpu_entry(
            m,
            fixed_pool_capacity(model, model.num_layers, 2**29),
            profile_dir=gpu_type,
            layers=k,
            prompt_max_requests=64,
            prompt_max_tokens=2048,
            decode_max_tokens=256,
            nic_bytes_per_s=1e9,
            head=measured.head,
            description="bench/fidelity",
        )
        save_profile(out_dir, gpu_type, model_entry(model, model.token_bytes), entry, prompt, decode)
    return load_profile_dir(out_dir, model_name=MODEL)
