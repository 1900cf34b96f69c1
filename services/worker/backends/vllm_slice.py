"""One vLLM 0.32 model runner restricted to layers [start, end), driven directly (internal APIs, pinned).

We build each step's SchedulerOutput from our own batch, keep our own block table, and read the hidden
states (or the logits, on a last hop) the runner produces. The slice comes from two seams vLLM's pipeline
parallelism already has: `get_pp_indices` (which layers get built) and the PP group's first/last-rank
flags (embeddings on a first shard, final norm + LM head on a last one). Only the slice's checkpoint
tensors are read, by our own reader (services/worker/checkpoint.py), never vLLM's whole-file iterator.
A worker may hold two slices at once during a live Load (services/worker/backends/vllm_backend.py).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from planner.errors import CapacityExceeded
from services.worker.backends.base import ShardSpec, Work, WorkOut
from services.worker.checkpoint import load_tensors, shard_filter

# Activations, the sampler's scratch and the CUDA context on top of weights and KV.
_GPU_HEADROOM_BYTES = 2 * 2**30
# Model construction and weight loading patch module-level hooks of vLLM: one build at a time.
_BUILD_LOCK = threading.Lock()
log = logging.getLogger("brl.worker.vllm")


class SliceGroup:
    """Stands in for vLLM's PP group: a one-process group whose first/last flags follow the layer range.

    While the runner updates its per-request state we answer `is_last_rank = False`, so it takes new
    token ids from our SchedulerOutput (the path of a middle PP stage) instead of expecting its own sampler
    to have appended them; everywhere else the flags tell the truth about the slice."""

    def __init__(self, inner: Any, first: bool, last: bool) -> None:
        self._inner = inner
        self._first = first
        self._last = last
        self.pretend_middle = False

    @property
    def is_first_rank(self) -> bool:
        return self._first

    @property
    def is_last_rank(self) -> bool:
        return self._last and not self.pretend_middle

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class GroupSwitch:
    """Installed once as vLLM's PP group (a process global): answers for the slice group active in the
    calling thread. Two slices live side by side during a Load, one built in a loading thread while the
    other steps in the step thread, so the group each sees must be per thread."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._local = threading.local()

    @contextlib.contextmanager
    def use(self, group: SliceGroup) -> Iterator[None]:
        before = getattr(self._local, "group", None)
        self._local.group = group
        try:
            yield
        finally:
            self._local.group = before

    def __getattr__(self, name: str) -> Any:
        group = getattr(self._local, "group", None)
        return getattr(group if group is not None else self._inner, name)


@dataclass
class _Req:
    blocks: list[int] = field(default_factory=list)
    tokens: int = 0  # cached tokens (== the position of the next token)
    outputs: int = 0  # tokens the runner counts as outputs (everything after the first segment)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def engine_args(spec: ShardSpec, max_len: int, **extra: Any) -> Any:
    """vLLM's EngineArgs for one shard: eager, our own sampling and KV sizing, no tokenizer."""
    from vllm.engine.arg_utils import EngineArgs

    return EngineArgs(
        model=str(spec.model_dir),
        dtype=spec.dtype,  # type: ignore[arg-type]  # one of DTYPES, checked by the backend
        max_model_len=max_len,
        enforce_eager=True,
        seed=0,
        max_num_seqs=256,
        max_num_batched_tokens=max(spec.max_batch_tokens, max_len),
        kv_cache_memory_bytes=spec.kv_cache_bytes,
        skip_tokenizer_init=True,
        load_format="safetensors",
        enable_prefix_caching=False,
        disable_log_stats=True,
        # We sample ourselves; async scheduling (a GPU default) would feed the runner its own samples.
        async_scheduling=False,
        **extra,
    )


def warm_up(spec: ShardSpec, max_len: int) -> float:
    """What a first runner would pay once per process, paid now (a worker started with no layers, at
    start-up): importing vLLM's engine, config, platform, KV and worker modules (most of it: ~15 s on two
    busy CPU cores), resolving the model's architecture in a throw-away engine config, loading the general
    plugins and the platform's kernel overrides. Nothing is allocated on the device and no distributed group
    is made, so the first Load only builds its runner. Returns the seconds it took."""
    started = time.perf_counter()
    with _BUILD_LOCK:
        from vllm.platforms import current_platform
        from vllm.plugins import load_general_plugins
        from vllm.utils.import_utils import resolve_obj_by_qualname
        from vllm.v1.attention.backends.utils import resolve_kv_cache_layout  # noqa: F401 - imported for its cost
        from vllm.v1.core.kv_cache_utils import get_kv_cache_configs  # noqa: F401 - imported for its cost

        config = engine_args(spec, max_len).create_engine_config()
        load_general_plugins()
        current_platform.register_triton_kernel_overrides()
        resolve_obj_by_qualname(config.parallel_config.worker_cls)  # imports the worker and its model runner
    took_s = time.perf_counter() - started
    log.info("vLLM warmed up in %.2f s: the first Load builds only its runner", took_s)
    return took_s


def gpu_share(spec: ShardSpec) -> float:
    """The share of the GPU this shard asks vLLM for. vLLM refuses to start unless that share of the
    device is free, and its default (0.9) would let only one shard per GPU start; we size KV ourselves,
    so asking for the checkpoint, the KV budget and room for activations is enough."""
    _free, total = torch.cuda.mem_get_info()
    weights = sum(f.stat().st_size for f in spec.model_dir.glob("*.safetensors"))
    wanted = weights + spec.kv_cache_bytes + _GPU_HEADROOM_BYTES
    return min(0.9, max(0.01, wanted / total))


class VllmSlice:
    """One runner over layers [spec.start, spec.end) with its own KV pool. Built in any thread (the
    caller holds no lock); stepped in the step thread only."""

    def __init__(
        self, spec: ShardSpec, num_layers: int, max_len: int, dtype: torch.dtype, tied: bool
    ) -> None:
        self.spec = spec
        self.start, self.end = spec.start, spec.end
        self.num_layers = num_layers
        self.dtype = dtype
        self.tied = tied
        self.first = spec.start == 0
        self.last = spec.end == num_layers
        self.tensors_read: tuple[str, ...] = ()
        self.requests: dict[str, _Req] = {}
        self._finished: set[str] = set()
        self._order: list[str] = []  # request order of the runner's persistent batch, this step
        self._pending_inputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._intermediate: Any = None
        with _BUILD_LOCK:
            self._build(max_len)

    # --- construction --------------------------------------------------------------------------------

    def _build(self, max_len: int) -> None:
        from vllm.config import set_current_vllm_config
        from vllm.distributed import parallel_state
        from vllm.platforms import current_platform
        from vllm.plugins import load_general_plugins
        from vllm.utils.import_utils import resolve_obj_by_qualname
        from vllm.v1.attention.backends.utils import resolve_kv_cache_layout
        from vllm.v1.core.kv_cache_utils import get_kv_cache_configs

        spec = self.spec
        extra: dict[str, Any] = {}
        if current_platform.is_cuda_alike():
            extra["gpu_memory_utilization"] = gpu_share(spec)
        self.vllm_config = engine_args(spec, max_len, **extra).create_engine_config()
        self.block_size = int(self.vllm_config.cache_config.block_size)
        # What vLLM's worker wrapper does before building a worker (CPU fallbacks for Triton kernels).
        load_general_plugins()
        current_platform.register_triton_kernel_overrides()
        with set_current_vllm_config(self.vllm_config):
            # The platform's worker class: CPUWorker here, the CUDA Worker on a GPU node. A second worker in
            # the process finds the (one-process) distributed groups made by the first and reuses them.
            worker_cls = resolve_obj_by_qualname(self.vllm_config.parallel_config.worker_cls)
            worker = worker_cls(
                self.vllm_config,
                local_rank=0,
                rank=0,
                distributed_init_method=f"tcp://127.0.0.1:{_free_port()}",
                is_driver_worker=True,
            )
            worker.init_device()
            installed: Any = parallel_state._PP
            switch = installed if isinstance(installed, GroupSwitch) else GroupSwitch(installed)
            parallel_state._PP = switch  # type: ignore[assignment]
            self.switch = switch
            self.group = SliceGroup(switch._inner, self.first, self.last)
            with switch.use(self.group), self._only_layers():
                worker.load_model()
            self.worker = worker
            self.runner: Any = worker.model_runner
            self.device = torch.device(self.runner.device)
            # What vLLM's engine core does once for all workers, done here for this one shard.
            kv_spec = worker.get_kv_cache_spec()
            layout = resolve_kv_cache_layout(
                self.vllm_config, [worker.get_supported_kv_cache_layouts()], list(kv_spec.values())
            )
            worker.set_kv_cache_layout(layout.name)
            kv_config = get_kv_cache_configs(self.vllm_config, [kv_spec], [spec.kv_cache_bytes])[0]
            kv_config.kv_cache_layout = self.vllm_config.cache_config.kv_cache_layout
            with switch.use(self.group):
                worker.initialize_from_config(kv_config)
        # Block 0 is vLLM's null block; ours start at 1.
        self.num_blocks = int(kv_config.num_blocks)
        self.free_blocks = list(range(self.num_blocks - 1, 0, -1))
        if not self.first:
            # On CPU without compilation vLLM never makes the receive buffer of a non-first stage.
            self.runner.intermediate_tensors = self.runner.model.make_empty_intermediate_tensors(
                batch_size=self.runner.max_num_tokens, dtype=self.dtype, device=self.device
            )
        update = self.runner._update_states

        def update_as_middle_stage(scheduler_output: Any) -> Any:
            self.group.pretend_middle = True
            try:
                result = update(scheduler_output)
                self._order = list(self.runner.input_batch.req_ids)
                self._fill_intermediate()
                return result
            finally:
                self.group.pretend_middle = False

        self.runner._update_states = update_as_middle_stage

    @contextlib.contextmanager
    def _only_layers(self) -> Iterator[None]:
        """While the model loads: vLLM builds only [start, end) and is fed only that slice's tensors, read
        by name from the safetensors files (its own iterator would read every tensor of every file)."""
        from vllm.distributed import utils as dist_utils
        from vllm.model_executor.model_loader.default_loader import DefaultModelLoader

        start, end = self.start, self.end
        wanted = shard_filter(self.num_layers, start, end, tied=self.tied)
        spec, dtype, owner = self.spec, self.dtype, self

        def slice_weights(loader: Any, model_config: Any, model: Any) -> Iterator[tuple[str, torch.Tensor]]:
            tensors = load_tensors(spec.model_dir, wanted, dtype)
            owner.tensors_read = tuple(tensors)
            yield from tensors.items()

        original_indices = dist_utils.get_pp_indices
        original_weights = DefaultModelLoader.get_all_weights
        dist_utils.get_pp_indices = lambda num_layers, rank, size: (start, end)  # type: ignore[assignment]
        DefaultModelLoader.get_all_weights = slice_weights  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            dist_utils.get_pp_indices = original_indices
            DefaultModelLoader.get_all_weights = original_weights  # type: ignore[method-assign]

    # --- KV ------------------------------------------------------------------------------------------

    @property
    def kv_capacity_tokens(self) -> int:
        return (self.num_blocks - 1) * self.block_size

    def kv_used_tokens(self) -> int:
        # Whole blocks are what the pool really holds (vLLM allocates KV a block at a time).
        return sum(len(r.blocks) for r in self.requests.values()) * self.block_size

    def blocks_needed(self, request_id: str, total_tokens: int) -> int:
        req = self.requests.get(request_id)
        return max(0, -(-total_tokens // self.block_size) - (len(req.blocks) if req else 0))

    def free(self, request_id: str) -> bool:
        req = self.requests.pop(request_id, None)
        if req is None:
            return False
        self.free_blocks.extend(reversed(req.blocks))
        self._finished.add(request_id)
        return True

    # --- a step --------------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self, works: list[Work]) -> list[WorkOut]:
        from vllm.sampling_params import SamplingParams
        from vllm.sequence import IntermediateTensors
        from vllm.v1.core.sched.output import CachedRequestData, NewRequestData, SchedulerOutput

        needed = sum(self.blocks_needed(w.request_id, w.position + w.num_tokens) for w in works)
        if needed > len(self.free_blocks):
            # The batcher admits requests by kv_tokens_needed, so this guards the pool against a caller
            # that does not; nothing has been touched yet, so the step can be failed whole.
            raise CapacityExceeded(
                f"vLLM KV cache full: this step needs {needed} more blocks of "
                f"{self.block_size} tokens, {len(self.free_blocks)} are free"
            )
        new_reqs: list[Any] = []
        cached = CachedRequestData.make_empty()
        scheduled: dict[str, int] = {}
        for w in works:
            tokens = w.token_ids.tolist() if w.token_ids is not None else [0] * w.num_tokens
            req = self.requests.get(w.request_id)
            is_new = req is None
            if req is None:
                # A reused id stays in finished_req_ids: the runner drops the old state before adding this one.
                req = self.requests[w.request_id] = _Req()
            added = self._grow(req, w.position + w.num_tokens)
            if is_new:
                new_reqs.append(
                    NewRequestData(
                        req_id=w.request_id,
                        prompt_token_ids=tokens,
                        mm_features=[],
                        sampling_params=SamplingParams(temperature=0.0, max_tokens=1 << 20),
                        pooling_params=None,
                        block_ids=(list(req.blocks),),
                        num_computed_tokens=0,
                        lora_request=None,
                    )
                )
            else:
                cached.req_ids.append(w.request_id)
                cached.new_token_ids.append(tokens)
                cached.new_block_ids.append((added,) if added else None)
                cached.num_computed_tokens.append(w.position)
                cached.num_output_tokens.append(req.outputs)
                req.outputs += w.num_tokens
            scheduled[w.request_id] = w.num_tokens
            if w.hidden is not None:
                residual = w.residual if w.residual is not None else torch.zeros_like(w.hidden)
                self._pending_inputs[w.request_id] = (w.hidden.to(self.device), residual.to(self.device))
        output = SchedulerOutput(
            scheduled_new_reqs=new_reqs,
            scheduled_cached_reqs=cached,
            num_scheduled_tokens=scheduled,
            total_num_scheduled_tokens=sum(scheduled.values()),
            scheduled_spec_decode_tokens={},
            scheduled_encoder_inputs={},
            finished_req_ids=set(self._finished),
            free_encoder_mm_hashes=[],
        )
        self._finished.clear()
        # Filled in request order once the runner has placed the requests in its persistent batch.
        self._intermediate = None if self.first else IntermediateTensors({})
        with self.switch.use(self.group):
            result = self.runner.execute_model(output, self._intermediate)
        for w in works:
            self.requests[w.request_id].tokens = w.position + w.num_tokens
        return self._outputs(works, result)

    def _fill_intermediate(self) -> None:
        if self._intermediate is None:
            return
        pairs = [self._pending_inputs.pop(r) for r in self._order if r in self._pending_inputs]
        self._intermediate.tensors["hidden_states"] = torch.cat([p[0] for p in pairs])
        self._intermediate.tensors["residual"] = torch.cat([p[1] for p in pairs])

    def _outputs(self, works: list[Work], result: Any) -> list[WorkOut]:
        sizes = {w.request_id: w.num_tokens for w in works}
        offsets: dict[str, tuple[int, int]] = {}
        row = 0
        for request_id in self._order:
            if request_id in sizes:
                offsets[request_id] = (row, row + sizes[request_id])
                row += sizes[request_id]
        outs = []
        if self.last:
            state = self.runner.execute_model_state
            self.runner.execute_model_state = None  # we sample ourselves; vLLM's sampler never runs
            logits = state.logits.float()
            index = {r: i for i, r in enumerate(r for r in self._order if r in sizes)}
            for w in works:
                outs.append(WorkOut(logits=logits[index[w.request_id]].cpu() if w.want_logits else None))
            return outs
        hidden, residual = result.tensors["hidden_states"], result.tensors["residual"]
        for w in works:
            lo, hi = offsets[w.request_id]
            # Copies: the runner reuses its output buffers next step (.cpu() copies off a GPU anyway).
            outs.append(
                WorkOut(
                    hidden=hidden[lo:hi].to("cpu", copy=True), residual=residual[lo:hi].to("cpu", copy=True)
                )
            )
        return outs

    def _grow(self, req: _Req, total_tokens: int) -> list[int]:
        have = len(req.blocks)
        count = max(0, -(-total_tokens // self.block_size) - have)
        added = [self.free_blocks.pop() for _ in range(count)]
        req.blocks.extend(added)
        return added

    def close(self) -> None:
        """Drops the runner, its weights and its KV pool (the memory returns once nothing refers to it)."""
        with contextlib.suppress(Exception):
            self.runner.shutdown()
        self.requests.clear()
        self.runner = None
        self.worker = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
