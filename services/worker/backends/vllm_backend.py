"""vLLM's model runner restricted to a layer slice (pinned to vLLM 0.32: internal APIs).

The runner is driven directly, one process per shard, without vLLM's engine or scheduler: we build each
step's SchedulerOutput from our own batch, keep our own block table, and read the hidden states (or the
logits, on a last hop) it produces. The slice comes from two seams vLLM's pipeline parallelism already
has: `get_pp_indices` (which layers get built and loaded) and the PP group's first/last-rank flags
(embeddings on a first shard, final norm + LM head on a last one).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from planner.errors import CapacityExceeded, InvalidInput
from services.worker.backends.base import DTYPES, Backend, ShardSpec, Work, WorkOut
from services.worker.checkpoint import model_shape, read_config

VLLM_VERSION = "0.32.0"
# Activations, the sampler's scratch and the CUDA context on top of weights and KV.
_GPU_HEADROOM_BYTES = 2 * 2**30


class _SliceGroup:
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


@dataclass
class _Req:
    blocks: list[int] = field(default_factory=list)
    tokens: int = 0  # cached tokens (== the position of the next token)
    outputs: int = 0  # tokens the runner counts as outputs (everything after the first segment)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gpu_share(spec: ShardSpec) -> float:
    """The share of the GPU this shard asks vLLM for. vLLM refuses to start unless that share of the
    device is free, and its default (0.9) would let only one shard per GPU start; we size KV ourselves,
    so asking for the checkpoint, the KV budget and room for activations is enough."""
    _free, total = torch.cuda.mem_get_info()
    weights = sum(f.stat().st_size for f in spec.model_dir.glob("*.safetensors"))
    wanted = weights + spec.kv_cache_bytes + _GPU_HEADROOM_BYTES
    return min(0.9, max(0.01, wanted / total))


class VllmBackend(Backend):
    name = "vllm"
    # vLLM keeps process-wide state (distributed groups, the PP group we replace): one runner per process.
    _built_in_process = False

    def __init__(self, spec: ShardSpec) -> None:
        config = read_config(spec.model_dir)
        shape = model_shape(config, str(spec.model_dir / "config.json"))
        super().__init__(spec, shape)
        if not 0 <= spec.start < spec.end <= shape.num_layers:
            raise InvalidInput(
                f"layers [{spec.start},{spec.end}) are outside the model's {shape.num_layers} layers",
                field="layers",
            )
        if spec.dtype not in DTYPES:
            raise InvalidInput(f"dtype {spec.dtype!r}; expected one of {sorted(DTYPES)}", field="dtype")
        if VllmBackend._built_in_process:
            raise InvalidInput(
                "the vllm backend can be built once per process; restart the worker to change its shard",
                field="backend",
            )
        VllmBackend._built_in_process = True
        # vLLM logs to stdout by default; a worker's stdout carries only its address line.
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        import vllm

        if vllm.__version__ != VLLM_VERSION:
            raise InvalidInput(
                f"the vllm backend is written against vLLM {VLLM_VERSION}, found {vllm.__version__}",
                field="backend",
            )
        self.dtype = DTYPES[spec.dtype]
        self.first = spec.start == 0
        self.last = spec.end == shape.num_layers
        self._requests: dict[str, _Req] = {}
        self._finished: set[str] = set()
        self._order: list[str] = []  # request order of the runner's persistent batch, this step
        self._pending_inputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._intermediate: Any = None
        try:
            self._build()
        except ValueError as exc:  # vLLM's config checks (KV budget, max length, dtype) speak ValueError
            raise InvalidInput(f"vLLM refused this shard: {exc}", field="backend") from exc

    # --- construction --------------------------------------------------------------------------------

    def _build(self) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # We drive the V1 model runner's internals. On CPU vLLM picks it anyway (V2 needs Triton); on a
        # GPU it would pick V2, so the GPU takes the same path as the one the CPU tests prove.
        os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"
        from vllm.config import set_current_vllm_config
        from vllm.distributed import parallel_state
        from vllm.engine.arg_utils import EngineArgs
        from vllm.platforms import current_platform
        from vllm.plugins import load_general_plugins
        from vllm.utils.import_utils import resolve_obj_by_qualname
        from vllm.v1.attention.backends.utils import resolve_kv_cache_layout
        from vllm.v1.core.kv_cache_utils import get_kv_cache_configs

        spec = self.spec
        max_len = min(self.shape.max_positions, 4096)  # the longest request vLLM must fit in its cache
        extra: dict[str, Any] = {}
        if current_platform.is_cuda_alike():
            extra["gpu_memory_utilization"] = _gpu_share(spec)
        args = EngineArgs(
            model=str(spec.model_dir),
            dtype=spec.dtype,  # type: ignore[arg-type]  # one of DTYPES, checked above
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
        self.vllm_config = args.create_engine_config()
        self.shape = dataclasses.replace(self.shape, max_positions=max_len)
        self.block_size = int(self.vllm_config.cache_config.block_size)
        # What vLLM's worker wrapper does before building a worker (CPU fallbacks for Triton kernels).
        load_general_plugins()
        current_platform.register_triton_kernel_overrides()
        with set_current_vllm_config(self.vllm_config):
            # The platform's worker class: CPUWorker here, the CUDA Worker on a GPU node.
            worker_cls = resolve_obj_by_qualname(self.vllm_config.parallel_config.worker_cls)
            worker = worker_cls(
                self.vllm_config,
                local_rank=0,
                rank=0,
                distributed_init_method=f"tcp://127.0.0.1:{_free_port()}",
                is_driver_worker=True,
            )
            worker.init_device()
            self.group = _SliceGroup(parallel_state._PP, self.first, self.last)
            parallel_state._PP = self.group  # type: ignore[assignment]
            with self._only_layers(spec.start, spec.end):
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
            worker.initialize_from_config(kv_config)
        # Block 0 is vLLM's null block; ours start at 1.
        self.num_blocks = int(kv_config.num_blocks)
        self._free_blocks = list(range(self.num_blocks - 1, 0, -1))
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
    def _only_layers(self, start: int, end: int) -> Iterator[None]:
        from vllm.distributed import utils as dist_utils

        original = dist_utils.get_pp_indices
        dist_utils.get_pp_indices = lambda num_layers, rank, size: (start, end)  # type: ignore[assignment]
        try:
            yield
        finally:
            dist_utils.get_pp_indices = original

    # --- Backend interface ---------------------------------------------------------------------------

    @property
    def kv_capacity_tokens(self) -> int:
        return (self.num_blocks - 1) * self.block_size

    def kv_used_tokens(self) -> int:
        # Whole blocks are what the pool really holds (vLLM allocates KV a block at a time).
        return sum(len(r.blocks) for r in self._requests.values()) * self.block_size

    def kv_tokens_needed(self, request_id: str, position: int, num_tokens: int) -> int:
        # The blocks this step would add, in tokens: a new request of 17 tokens takes a whole block,
        # a decode token that lands in the request's last, partly filled block takes nothing.
        return self._blocks_needed(self._requests.get(request_id), position + num_tokens) * self.block_size

    def free(self, request_id: str) -> bool:
        req = self._requests.pop(request_id, None)
        if req is None:
            return False
        self._free_blocks.extend(reversed(req.blocks))
        self._finished.add(request_id)
        return True

    @torch.inference_mode()
    def step(self, works: list[Work]) -> list[WorkOut]:
        from vllm.sampling_params import SamplingParams
        from vllm.sequence import IntermediateTensors
        from vllm.v1.core.sched.output import CachedRequestData, NewRequestData, SchedulerOutput

        needed = sum(
            self._blocks_needed(self._requests.get(w.request_id), w.position + w.num_tokens) for w in works
        )
        if needed > len(self._free_blocks):
            # The batcher admits requests by kv_tokens_needed, so this guards the pool against a caller
            # that does not; nothing has been touched yet, so the step can be failed whole.
            raise CapacityExceeded(
                f"vLLM KV cache full: this step needs {needed} more blocks of "
                f"{self.block_size} tokens, {len(self._free_blocks)} are free"
            )
        new_reqs: list[Any] = []
        cached = CachedRequestData.make_empty()
        scheduled: dict[str, int] = {}
        for w in works:
            tokens = w.token_ids.tolist() if w.token_ids is not None else [0] * w.num_tokens
            req = self._requests.get(w.request_id)
            is_new = req is None
            if req is None:
                # A reused id stays in finished_req_ids: the runner drops the old state before adding this one.
                req = self._requests[w.request_id] = _Req()
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
        result = self.runner.execute_model(output, self._intermediate)
        for w in works:
            self._requests[w.request_id].tokens = w.position + w.num_tokens
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

    def _blocks_needed(self, req: _Req | None, total_tokens: int) -> int:
        return max(0, -(-total_tokens // self.block_size) - (len(req.blocks) if req else 0))

    def _grow(self, req: _Req, total_tokens: int) -> list[int]:
        added = [self._free_blocks.pop() for _ in range(self._blocks_needed(req, total_tokens))]
        req.blocks.extend(added)
        return added

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.runner.shutdown()
