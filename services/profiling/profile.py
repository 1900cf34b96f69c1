"""One profiling run end to end: load the measuring shard with the worker's own backend, time it, derive
the tables and KV capacity, and save the folder. `brl profile` and bench/fidelity.py both call this."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from planner import bundled
from planner.errors import InvalidInput
from planner.model import DTYPE_BYTES, ModelSpec
from planner.profile import LatencyTable
from services.profiling.measure import (
    HeadCost,
    MeasureConfig,
    Measurement,
    load_measuring_backend,
    measure_backend,
    measure_head,
    measuring_shard,
)
from services.profiling.save import save_profile
from services.profiling.tables import (
    Capacity,
    fixed_pool_capacity,
    gpu_entry,
    memory_budget_capacity,
    model_entry,
    per_layer_table,
    split,
)
from services.worker.backends.base import ShardSpec

# The torch worker's default KV pool (WorkerSettings.kv_cache_gib): what a CPU node really sets aside.
DEFAULT_KV_CACHE_GIB = 0.5


@dataclass(frozen=True)
class ProfileRequest:
    model: str  # bundled name or a Hugging Face folder
    backend: str
    layers: int  # K: the layer count the tables are made for and the most a node may hold
    out_dir: Path
    gpu_type: str = "cpu"
    dtype: str = "float32"
    measure: MeasureConfig = MeasureConfig()
    kv_cache_gib: float | None = None  # a fixed KV pool (the torch worker's way)
    memory_gib: float | None = None  # a memory budget shared by weights and KV (the vLLM way)
    min_kv_tokens: int = 2048
    prompt_max_requests: int = 1
    prompt_max_tokens: int | None = None  # default: the largest measured prompt
    decode_max_tokens: int | None = None  # default: the largest measured decode batch
    nic_bytes_per_s: float | None = None

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise InvalidInput(f"--layers must be >= 1, got {self.layers}", field="layers")
        if self.dtype not in DTYPE_BYTES:
            raise InvalidInput(f"dtype {self.dtype!r}; expected one of {sorted(DTYPE_BYTES)}", field="dtype")
        if self.kv_cache_gib is not None and self.memory_gib is not None:
            raise InvalidInput("give either --kv-cache-gib or --memory-gib, not both", field="memory")


@dataclass(frozen=True)
class ProfileOutcome:
    folder: Path
    gpu_type: str
    prompt: LatencyTable
    decode: LatencyTable
    capacity: Capacity
    measurement: Measurement
    head: HeadCost


def runtime_model(name: str, dtype: str) -> ModelSpec:
    """The model as the backend runs it: sizes at the dtype it computes in (bundled figures may assume
    another dtype, e.g. SmolLM2's config says bfloat16 while the CPU worker runs float32)."""
    spec = bundled.model(name)
    return dataclasses.replace(
        spec, dtype_bytes=DTYPE_BYTES[dtype], layer_bytes_override=None, activation_bytes_override=None
    )


def _capacity(req: ProfileRequest, model: ModelSpec) -> Capacity:
    if req.memory_gib is not None:
        return memory_budget_capacity(
            model, req.layers, int(req.memory_gib * 2**30), min_kv_tokens=req.min_kv_tokens
        )
    if req.kv_cache_gib is not None or req.backend == "torch":
        gib = req.kv_cache_gib if req.kv_cache_gib is not None else DEFAULT_KV_CACHE_GIB
        return fixed_pool_capacity(model, req.layers, int(gib * 2**30))
    import torch  # a GPU backend without a budget: the device's memory, as vLLM would take it

    if not torch.cuda.is_available():
        raise InvalidInput("no GPU found: give --memory-gib or --kv-cache-gib", field="memory")
    total = torch.cuda.get_device_properties(0).total_memory
    return memory_budget_capacity(model, req.layers, int(total * 0.9), min_kv_tokens=req.min_kv_tokens)


def measure_head_of(backend_name: str, spec: ShardSpec, num_layers: int, cfg: MeasureConfig) -> HeadCost:
    """The LM head's cost per decode batch, on a one-layer shard holding the model's last layer."""
    last = dataclasses.replace(spec, start=num_layers - 1, end=num_layers)
    backend = load_measuring_backend(backend_name, last, cfg)
    try:
        return measure_head(backend, cfg.decode_batches, cfg.repeats)
    finally:
        backend.close()


def run_profile(req: ProfileRequest) -> ProfileOutcome:
    from services.modelstore import ensure_model

    model_dir = ensure_model(req.model)
    # Folders are named by their own config; bundled names resolve to the packaged config.
    model = runtime_model(req.model if "/" not in req.model else str(model_dir), req.dtype)
    capacity = _capacity(req, model)  # fail on a bad budget before loading anything
    start, end = measuring_shard(model.num_layers, req.measure.measure_layers)
    if end - start < 2:
        raise InvalidInput(f"{model.name} has too few layers to profile ({model.num_layers})", field="model")
    cfg = req.measure
    tokens_needed = max(max(cfg.prompt_tokens), cfg.decode_context + 64) * max(cfg.decode_batches)
    spec = ShardSpec(
        model=req.model,
        model_dir=model_dir,
        start=start,
        end=end,
        dtype=req.dtype,
        kv_capacity_tokens=tokens_needed + max(cfg.prompt_tokens) * 2,
        max_batch_tokens=max(max(cfg.prompt_tokens), max(cfg.decode_batches)),
    )
    backend = load_measuring_backend(req.backend, spec, cfg)
    try:
        m = measure_backend(backend, cfg)
    finally:
        backend.close()
    head = measure_head_of(req.backend, spec, model.num_layers, cfg)
    k = min(req.layers, model.num_layers)
    prompt = per_layer_table(split(m.prompt), k)
    decode = per_layer_table(split(m.decode), k)
    profile_dir = req.gpu_type.lower()
    entry = gpu_entry(
        m,
        capacity,
        profile_dir=profile_dir,
        layers=k,
        prompt_max_requests=req.prompt_max_requests,
        prompt_max_tokens=req.prompt_max_tokens or max(cfg.prompt_tokens),
        decode_max_tokens=req.decode_max_tokens or max(cfg.decode_batches),
        nic_bytes_per_s=req.nic_bytes_per_s,
        head=head,
        description=f"{model.name} {req.dtype}, {req.backend} backend on {m.device}, {m.threads} thread(s), "
        f"measured by brl profile for nodes holding {k} layers",
    )
    folder = save_profile(
        req.out_dir, req.gpu_type, model_entry(model, model.token_bytes), entry, prompt, decode
    )
    return ProfileOutcome(folder, req.gpu_type, prompt, decode, capacity, m, head)
