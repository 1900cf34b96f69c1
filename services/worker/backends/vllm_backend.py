"""The vllm backend: vLLM 0.32's model runner on a layer slice (services/worker/backends/vllm_slice.py),
one or, during a live Load, two slices in one process.

A vLLM runner cannot grow or shrink its layers, so a Load builds a second runner for the new range in a
loading thread while the old one keeps stepping, then routes new requests to it; the old runner keeps the
requests it holds and is closed (weights and KV pool freed) once they end. vLLM's process-wide state is
shared: the one-process distributed groups are made by the first runner and reused; its PP group is a
per-thread switch (vllm_slice.GroupSwitch), so each runner sees its own first/last flags.
"""

from __future__ import annotations

import dataclasses
import os

from planner.errors import InvalidInput
from services.worker.backends.base import DTYPES, Backend, ShardSpec, Work, WorkOut
from services.worker.backends.vllm_slice import VllmSlice, gpu_share, warm_up
from services.worker.checkpoint import model_shape, read_config

VLLM_VERSION = "0.32.0"
_gpu_share = gpu_share  # the name tests and older callers use


class VllmBackend(Backend):
    name = "vllm"
    live_load = True
    # Weights live inside a runner built for one range: a new range reads all its layers again.
    reuses_held_layers = False

    def __init__(self, spec: ShardSpec) -> None:
        config = read_config(spec.model_dir)
        shape = model_shape(config, str(spec.model_dir / "config.json"))
        super().__init__(spec, shape)
        empty = spec.start == spec.end == 0
        if not empty and not 0 <= spec.start < spec.end <= shape.num_layers:
            raise InvalidInput(
                f"layers [{spec.start},{spec.end}) are outside the model's {shape.num_layers} layers",
                field="layers",
            )
        if spec.dtype not in DTYPES:
            raise InvalidInput(f"dtype {spec.dtype!r}; expected one of {sorted(DTYPES)}", field="dtype")
        # vLLM logs to stdout by default; a worker's stdout carries only its address line.
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # We drive the V1 model runner's internals. On CPU vLLM picks it anyway (V2 needs Triton); on a
        # GPU it would pick V2, so the GPU takes the same path as the one the CPU tests prove.
        os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"
        import vllm

        if vllm.__version__ != VLLM_VERSION:
            raise InvalidInput(
                f"the vllm backend is written against vLLM {VLLM_VERSION}, found {vllm.__version__}",
                field="backend",
            )
        self.dtype = DTYPES[spec.dtype]
        self.tied = bool(config.get("tie_word_embeddings", False))
        self.max_len = min(self.shape.max_positions, 4096)  # the longest request vLLM must fit in its cache
        self.shape = dataclasses.replace(self.shape, max_positions=self.max_len)
        # Newest last: the last slice takes new requests, the others only finish the ones they hold.
        self.slices: list[VllmSlice] = []
        self._empty_kv_tokens = 0
        if not empty:
            self.slices.append(self._new_slice(spec.start, spec.end))
        else:  # vLLM's one-time start-up now, not in the first Load (a controller is waiting on that)
            warm_up(spec, self.max_len)

    def _new_slice(self, start: int, end: int) -> VllmSlice:
        spec = dataclasses.replace(self.spec, start=start, end=end)
        try:
            return VllmSlice(spec, self.shape.num_layers, self.max_len, self.dtype, self.tied)
        except ValueError as exc:  # vLLM's config checks (KV budget, max length, dtype) speak ValueError
            raise InvalidInput(f"vLLM refused this shard: {exc}", field="backend") from exc

    # --- which slice a request runs in ---------------------------------------------------------------

    def _slice_of(self, request_id: str) -> VllmSlice | None:
        """The slice holding the request's KV, else the newest (where new requests go)."""
        for s in self.slices:
            if request_id in s.requests:
                return s
        return self.slices[-1] if self.slices else None

    # --- Backend interface ---------------------------------------------------------------------------

    @property
    def kv_capacity_tokens(self) -> int:
        return sum(s.kv_capacity_tokens for s in self.slices)

    def kv_used_tokens(self) -> int:
        return sum(s.kv_used_tokens() for s in self.slices)

    def kv_tokens_needed(self, request_id: str, position: int, num_tokens: int) -> int:
        # The blocks this step would add, in tokens: a new request of 17 tokens takes a whole block, a
        # decode token that lands in the request's last, partly filled block takes nothing. A request whose
        # own slice is full asks for more than the whole capacity, so the batcher refuses it alone even
        # when another slice has room.
        s = self._slice_of(request_id)
        if s is None:
            return self.kv_capacity_tokens + 1
        blocks = s.blocks_needed(request_id, position + num_tokens)
        if blocks > len(s.free_blocks):
            return self.kv_capacity_tokens + 1
        return blocks * s.block_size

    def free(self, request_id: str) -> bool:
        return any(s.free(request_id) for s in self.slices)

    def step(self, works: list[Work]) -> list[WorkOut]:
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(works):
            s = self._slice_of(w.request_id)
            if s is None:
                raise InvalidInput("this worker holds no layers", field="start_layer")
            groups.setdefault(id(s), []).append(i)
        outs: list[WorkOut | None] = [None] * len(works)
        for s in self.slices:
            picked = groups.get(id(s))
            if picked:
                for i, out in zip(picked, s.step([works[i] for i in picked]), strict=True):
                    outs[i] = out
        return [o if o is not None else WorkOut() for o in outs]

    # --- live layer changes (Load) --------------------------------------------------------------------

    def held_layers(self) -> frozenset[int]:
        return frozenset(i for s in self.slices for i in range(s.start, s.end))

    def held_layer_count(self) -> int:
        return sum(s.end - s.start for s in self.slices)

    def held_tensors(self) -> frozenset[str]:
        return frozenset(n for s in self.slices for n in s.tensors_read)

    def read_layers(self, start: int, end: int, held: frozenset[str]) -> VllmSlice:  # type: ignore[override]
        """Builds a whole runner for [start, end) in the calling (loading) thread; the slices serving
        meanwhile are not touched. Every tensor of the range is read: runners share no weights."""
        return self._new_slice(start, end)

    def install(self, staged: object, start: int, end: int) -> None:
        if not isinstance(staged, VllmSlice):
            raise TypeError(f"expected a built vLLM slice, got {type(staged).__name__}")
        self.slices.append(staged)
        self.spec = dataclasses.replace(self.spec, start=start, end=end)

    def staged_names(self, staged: object) -> tuple[str, ...]:
        return staged.tensors_read if isinstance(staged, VllmSlice) else ()

    def requests_on_old_layers(self) -> int:
        return sum(len(s.requests) for s in self.slices[:-1])

    def keep_only(self, spans: list[tuple[int, int]]) -> int:
        """Keeps the newest slice whose range is one of `spans` and closes the others (a runner's layers go
        together, and an older runner inside the new range holds copies of layers the new one has)."""
        keep = next((s for s in reversed(self.slices) if (s.start, s.end) in spans), None)
        kept = [s for s in self.slices if s is keep]
        dropped = [s for s in self.slices if s is not keep]
        self.slices = kept
        for s in dropped:
            for request_id in list(s.requests):
                s.free(request_id)
            s.close()
        if not kept:
            self.spec = dataclasses.replace(self.spec, start=0, end=0)
        return sum(s.end - s.start for s in dropped)

    def close(self) -> None:
        for s in self.slices:
            s.close()
        self.slices = []
