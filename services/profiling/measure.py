"""Time the worker's real execution backend on this machine: prompt steps against batch tokens and decode
steps against batch size (with a realistic cached context), each at two layer counts so the per-layer
cost and the fixed per-step cost (rotary tables, concatenation, Python) come apart.

This module does I/O (clock, model files); turning the timings into a profile is `services.profiling.tables`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from planner.errors import InvalidInput
from services.worker.backends.base import DTYPES, Backend, ShardSpec, Work
from services.worker.backends.registry import make_backend

DEFAULT_PROMPT_TOKENS = (16, 32, 64, 128, 256, 512)
DEFAULT_DECODE_BATCHES = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class Series:
    """Median step milliseconds per batch point, at 1 layer and at `layers` layers of one shard."""

    points: tuple[int, ...]
    one_layer_ms: tuple[float, ...]
    many_layers_ms: tuple[float, ...]
    layers: int


@dataclass(frozen=True)
class Measurement:
    prompt: Series
    decode: Series
    decode_context: int
    repeats: int
    backend: str
    device: str
    threads: int
    meta: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class MeasureConfig:
    prompt_tokens: Sequence[int] = DEFAULT_PROMPT_TOKENS
    decode_batches: Sequence[int] = DEFAULT_DECODE_BATCHES
    # Cached tokens per sequence when decoding: the attention cost grows with it, so profile at the
    # context the workload will have (the paper profiles decode at realistic lengths too).
    decode_context: int = 512
    # Layers of the measuring shard; 1 and this many give the per-layer slope and the per-step intercept.
    measure_layers: int = 4
    repeats: int = 3
    threads: int = 1

    def __post_init__(self) -> None:
        if not self.prompt_tokens or min(self.prompt_tokens) < 1:
            raise InvalidInput("prompt token points must be >= 1", field="prompt_tokens")
        if not self.decode_batches or min(self.decode_batches) < 1:
            raise InvalidInput("decode batch points must be >= 1", field="decode_batches")
        if self.decode_context < 1 or self.measure_layers < 2 or self.repeats < 1 or self.threads < 1:
            raise InvalidInput(
                "decode context >= 1, measure layers >= 2, repeats >= 1 and threads >= 1 are required",
                field="measure",
            )


def measuring_shard(num_layers: int, measure_layers: int) -> tuple[int, int]:
    """Layers to load: from layer 1 when the model has room, so neither the embedding lookup (first shard)
    nor the LM head (last shard) is charged to the per-layer cost."""
    k = min(measure_layers, num_layers)
    start = 1 if num_layers - 1 >= k else 0
    return start, start + k


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class _Timer:
    """Runs steps on one backend, naming requests uniquely and tracking their cached positions."""

    def __init__(self, backend: Backend, device: str, clock: Callable[[], float]) -> None:
        self.backend = backend
        self.device = device
        self.clock = clock
        self.start = backend.spec.start
        self.positions: dict[str, int] = {}
        self._next = 0
        self._gen = torch.Generator().manual_seed(0)

    def new_id(self) -> str:
        self._next += 1
        return f"profile-{self._next}"

    def _hidden(self, n: int) -> torch.Tensor:
        h = torch.randn(n, self.backend.shape.hidden_size, generator=self._gen) * 0.1
        return h.to(DTYPES[self.backend.activation_dtype])

    def work(self, rid: str, n: int, layers: int) -> Work:
        pos = self.positions.get(rid, 0)
        end = self.start + layers
        if self.start == 0:
            ids = torch.randint(0, self.backend.shape.vocab_size, (n,), generator=self._gen)
            return Work(rid, self.start, end, pos, n, token_ids=ids)
        return Work(rid, self.start, end, pos, n, hidden=self._hidden(n))

    def run(self, works: list[Work]) -> float:
        _sync(self.device)
        t0 = self.clock()
        self.backend.step(works)
        _sync(self.device)
        elapsed_ms = (self.clock() - t0) * 1e3
        for w in works:
            self.positions[w.request_id] = w.position + w.num_tokens
        return elapsed_ms

    def free(self, rids: Sequence[str]) -> None:
        for rid in rids:
            self.backend.free(rid)
            self.positions.pop(rid, None)


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def _prompt_ms(t: _Timer, tokens: int, layers: int, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        rid = t.new_id()
        samples.append(t.run([t.work(rid, tokens, layers)]))
        t.free([rid])
    return _median(samples)


def _prefill(t: _Timer, rids: Sequence[str], context: int, layers: int, chunk_tokens: int) -> None:
    """Give each sequence `context` cached tokens on all measured layers, a few sequences per step."""
    per_step = max(1, chunk_tokens // context)
    for i in range(0, len(rids), per_step):
        t.run([t.work(rid, context, layers) for rid in rids[i : i + per_step]])


def _decode_ms(t: _Timer, rids: Sequence[str], layers: int, repeats: int) -> float:
    return _median([t.run([t.work(rid, 1, layers) for rid in rids]) for _ in range(repeats)])


def measure_backend(
    backend: Backend, config: MeasureConfig, *, clock: Callable[[], float] | None = None
) -> Measurement:
    """Times `backend` (a loaded shard of at least 2 layers) for every prompt and decode point."""
    clock = clock or time.perf_counter
    spec = backend.spec
    layers = spec.end - spec.start
    if layers < 2:
        raise InvalidInput("the measuring shard needs at least 2 layers", field="layers")
    # vLLM runs on the GPU (its steps are asynchronous until synchronised); our torch backend on the CPU.
    device = "cuda" if backend.name == "vllm" else str(getattr(backend, "device", "cpu"))
    t = _Timer(backend, device, clock)
    # Warm-up: first calls allocate and pick kernels.
    for n in (min(config.prompt_tokens), 1):
        for k in (1, layers):
            rid = t.new_id()
            t.run([t.work(rid, n, k)])
            t.free([rid])
    prompt_one = tuple(_prompt_ms(t, n, 1, config.repeats) for n in config.prompt_tokens)
    prompt_many = tuple(_prompt_ms(t, n, layers, config.repeats) for n in config.prompt_tokens)
    # One set of sequences per layer count: a request keeps the layer range its cache was made for.
    biggest = max(config.decode_batches)
    chunk = max(2048, config.decode_context)
    rids_one = [t.new_id() for _ in range(biggest)]
    rids_many = [t.new_id() for _ in range(biggest)]
    _prefill(t, rids_one, config.decode_context, 1, chunk)
    _prefill(t, rids_many, config.decode_context, layers, chunk)
    decode_one = []
    decode_many = []
    for b in config.decode_batches:
        # Alternate the two layer counts per point so slow drift (other tenants) hits both alike.
        decode_one.append(_decode_ms(t, rids_one[:b], 1, config.repeats))
        decode_many.append(_decode_ms(t, rids_many[:b], layers, config.repeats))
    t.free(rids_one + rids_many)
    return Measurement(
        prompt=Series(tuple(config.prompt_tokens), prompt_one, prompt_many, layers),
        decode=Series(tuple(config.decode_batches), tuple(decode_one), tuple(decode_many), layers),
        decode_context=config.decode_context,
        repeats=config.repeats,
        backend=backend.name,
        device=device,
        threads=torch.get_num_threads(),
        meta={"torch": torch.__version__, "shard": [spec.start, spec.end]},
    )


def load_measuring_backend(backend_name: str, spec: ShardSpec, config: MeasureConfig) -> Backend:
    """The worker's own backend (the registry `brl worker --backend` uses) on the measuring shard."""
    torch.set_num_threads(config.threads)
    return make_backend(backend_name, spec)


@dataclass(frozen=True)
class HeadCost:
    """What the last hop adds per step: final norm + LM head (+ the logits copy) for `batch` sequences, ms.
    The per-layer tables leave it out on purpose (the measuring shard stops before the last layer); the
    node holding the model's last layer pays it on every step."""

    points: tuple[int, ...]
    ms: tuple[float, ...]


def measure_head(
    backend: Backend, batches: Sequence[int], repeats: int, *, clock: Callable[[], float] | None = None
) -> HeadCost:
    """On a shard ending at the model's last layer: one-token steps with and without logits, per batch."""
    clock = clock or time.perf_counter
    if backend.spec.end != backend.shape.num_layers:
        raise InvalidInput("the head is measured on a shard that ends at the last layer", field="layers")
    device = "cuda" if backend.name == "vllm" else "cpu"
    t = _Timer(backend, device, clock)
    layers = backend.spec.end - backend.spec.start

    def step_ms(b: int, logits: bool) -> float:
        rids = [t.new_id() for _ in range(b)]
        works = [t.work(r, 1, layers) for r in rids]
        for w in works:
            w.want_logits = logits
        ms = t.run(works)
        t.free(rids)
        return ms

    step_ms(1, True)  # warm-up
    out: list[float] = []
    for b in batches:
        with_head = _median([step_ms(b, True) for _ in range(repeats)])
        without = _median([step_ms(b, False) for _ in range(repeats)])
        # Never less than a smaller batch: a dip is noise from other tenants (as in the per-layer tables).
        out.append(max(0.0, with_head - without, *out[-1:]))
    return HeadCost(tuple(batches), tuple(out))
