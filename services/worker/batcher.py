"""Continuous batching on one worker: segments from every stream join one queue; one step at a time.

Each step takes the oldest segments (one per request, up to a token budget), runs them through the
backend in a worker thread, samples on the last hop, and hands hidden states to the next hops without
waiting for them, so the next step starts while downstream hops compute (pipelining across requests).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from planner.errors import CapacityExceeded
from services.errors_table import Conflict
from services.worker import sampling
from services.worker.activations import from_wire, to_wire
from services.worker.backends.base import Backend, Work
from services.worker.client import Connections
from services.worker.ranges import Ranges, Span, admit
from services.worker.records import (
    ABORTED,
    INTERNAL,
    OK,
    RESOURCE_EXHAUSTED,
    Segment,
    TokenResult,
    WireTensor,
    WorkerStats,
    error_result,
)
from services.worker.validate import Cached, check_segment

log = logging.getLogger("brl.worker.batcher")


@dataclass
class _Request:
    cached: Cached
    sampling: sampling.Sampling
    generator: torch.Generator | None


@dataclass
class _Item:
    segment: Segment
    future: asyncio.Future[TokenResult]


@dataclass
class _Ready:
    """A picked item with its prepared work; filled with the step's outputs."""

    item: _Item
    work: Work
    request: _Request
    result: TokenResult | None = None
    hidden: WireTensor | None = None  # after the step, for the next hop
    residual: WireTensor | None = None


@dataclass
class _Timings:
    step_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2048))
    batch_tokens: deque[int] = field(default_factory=lambda: deque(maxlen=2048))
    downstream_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2048))
    steps: int = 0
    tokens: int = 0


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def step_executor(threads: int = 1) -> ThreadPoolExecutor:
    """The one thread every backend call runs in. vLLM's CPU attention checks that its OpenMP thread
    count at run time equals the one it saw when built, and OpenMP settings are per thread, so the
    backend is built in this thread too."""
    return ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="brl-step", initializer=torch.set_num_threads, initargs=(threads,)
    )


class Batcher:
    def __init__(
        self,
        backend: Backend,
        *,
        connections: Connections,
        address: str,
        max_batch_tokens: int = 4096,
        max_batch_requests: int = 256,
        executor: ThreadPoolExecutor | None = None,
        speed_factor: float = 1.0,
    ) -> None:
        if not speed_factor > 0:
            raise ValueError(f"speed_factor must be > 0, got {speed_factor}")
        self.backend = backend
        # A declared speed below 1 makes this worker stand in for a slower GPU on the same CPU (the local
        # "virtual heterogeneous" fleet): each step is stretched to compute_time / speed_factor by holding
        # the step loop, so batching and queueing behave as on the slower device.
        self.speed_factor = speed_factor
        self.connections = connections
        self.address = address
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_requests = max_batch_requests
        self._queue: deque[_Item] = deque()
        self._requests: dict[str, _Request] = {}
        self._wake = asyncio.Event()
        self._executor = executor or step_executor()
        self._in_step = False
        self._deferred_free: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self.timings = _Timings()
        # Which ranges take which requests; a live Load (services/worker/loader.py) moves them.
        self.ranges = Ranges(serving=(backend.spec.start, backend.spec.end))

    # --- public ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, segments: Sequence[Segment]) -> list[TokenResult]:
        loop = asyncio.get_running_loop()
        items = [_Item(s, loop.create_future()) for s in segments]
        self._queue.extend(items)
        self._wake.set()
        return list(await asyncio.gather(*(i.future for i in items)))

    def release(self, request_ids: Sequence[str]) -> int:
        """Frees KV now (or right after the running step) and fails their queued segments as ABORTED."""
        ids = set(request_ids)
        kept: deque[_Item] = deque()
        for item in self._queue:
            if item.segment.request_id in ids and not item.segment.abort:
                self._resolve(
                    item, error_result(item.segment.request_id, ABORTED, "request released", self.address)
                )
            else:
                kept.append(item)
        self._queue = kept
        return sum(self._free(r) for r in ids)

    def stats(self) -> WorkerStats:
        t = self.timings
        steps = list(t.step_ms)
        links = [x for s in self.connections.streams() for x in s.link_ms]
        return WorkerStats(
            kv_used_tokens=self.backend.kv_used_tokens(),
            kv_capacity_tokens=self.backend.kv_capacity_tokens,
            active_requests=len(self._requests),
            queue_depth=len(self._queue),
            steps=t.steps,
            tokens_processed=t.tokens,
            step_ms_p50=_pct(steps, 0.5),
            step_ms_p99=_pct(steps, 0.99),
            step_ms_mean=sum(steps) / len(steps) if steps else 0.0,
            batch_tokens_mean=sum(t.batch_tokens) / len(t.batch_tokens) if t.batch_tokens else 0.0,
            downstream_ms_p50=_pct(t.downstream_ms, 0.5),
            downstream_ms_p99=_pct(t.downstream_ms, 0.99),
            link_ms_p50=_pct(links, 0.5),
            link_ms_p99=_pct(links, 0.99),
        )

    @property
    def active_requests(self) -> int:
        return len(self._requests)

    def request_ids(self) -> list[str]:
        """Every request this worker holds KV for or has a queued segment of (to free them all at once)."""
        queued = [i.segment.request_id for i in self._queue if not i.segment.abort]
        return list(dict.fromkeys([*self._requests, *queued]))

    def cached_tokens(self) -> dict[str, int]:
        """Tokens cached per request (what each coordinator replica is told its requests use here)."""
        return {rid: r.cached.next_position for rid, r in self._requests.items()}

    def active_spans(self) -> list[Span]:
        """The layer range of every request this worker holds state for."""
        return [(r.cached.start_layer, r.cached.end_layer) for r in self._requests.values()]

    async def in_step_thread(self, fn: Callable[[], Any]) -> Any:
        """Runs `fn` in the thread the steps run in, between two steps (backend state changes go here)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def replace_backend(self, build: Callable[[], Backend], *, force: bool) -> None:
        """Swaps the whole shard (another model or backend); refused while requests are cached unless forced."""
        if self._requests and not force:
            raise Conflict(f"{len(self._requests)} requests are active; drain them or force")
        self.release(list(self._requests))
        new = await self.in_step_thread(build)
        old, self.backend = self.backend, new
        self.ranges = Ranges(serving=(new.spec.start, new.spec.end))
        old.close()

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        self.release([i.segment.request_id for i in self._queue])
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- the step loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                ready = self._pick()
                if not ready:
                    continue
                started = time.perf_counter()
                self._in_step = True
                try:
                    await loop.run_in_executor(self._executor, self._compute, ready)
                except CapacityExceeded as exc:  # a backend's last-resort guard; admission should prevent it
                    for r in ready:
                        self._forget(r.item.segment)
                        r.result = error_result(
                            r.item.segment.request_id, RESOURCE_EXHAUSTED, str(exc), self.address
                        )
                except Exception as exc:  # a backend bug must not take the worker down
                    log.exception("step failed")
                    for r in ready:
                        r.result = error_result(
                            r.item.segment.request_id, INTERNAL, f"step failed: {exc}", self.address
                        )
                finally:
                    self._in_step = False
                    for request_id in self._deferred_free:
                        self._free(request_id)
                    self._deferred_free.clear()
                if self.speed_factor < 1.0:
                    await asyncio.sleep((time.perf_counter() - started) * (1.0 / self.speed_factor - 1.0))
                self.timings.step_ms.append((time.perf_counter() - started) * 1e3)
                self.timings.batch_tokens.append(sum(r.work.num_tokens for r in ready))
                self.timings.steps += 1
                self.timings.tokens += sum(r.work.num_tokens for r in ready)
                self._dispatch(ready)

    def _pick(self) -> list[_Ready]:
        """Oldest first, one segment per request per step, within the token budget; refusals answered."""
        ready: list[_Ready] = []
        taken: set[str] = set()
        budget = self.max_batch_tokens
        used = self.backend.kv_used_tokens()
        capacity = self.backend.kv_capacity_tokens
        shape = self.backend.shape
        kept: deque[_Item] = deque()
        while self._queue:
            item = self._queue.popleft()
            seg = item.segment
            if seg.request_id in taken or (ready and seg.num_tokens > budget):
                kept.append(item)
                continue
            if seg.abort:
                self._free(seg.request_id)
                self._forward_abort(item)
                continue
            known = self._requests.get(seg.request_id)
            held, refusal = admit(self.ranges, seg.start_layer, seg.end_layer, known=known is not None)
            refusal = refusal or check_segment(
                seg, shape, held, self.backend.activation_dtype, known.cached if known else None
            )
            if refusal is not None:
                self._resolve(item, error_result(seg.request_id, refusal.code, refusal.message, self.address))
                continue
            # Counted in the backend's own unit (whole blocks for vLLM), so the requests admitted here
            # always fit in the step: a full pool refuses the one request that does not fit, here.
            need = self.backend.kv_tokens_needed(seg.request_id, seg.position, seg.num_tokens)
            if used + need > capacity:
                full = f"KV cache full: {used} of {capacity} tokens in use, {need} more requested"
                self._resolve(item, error_result(seg.request_id, RESOURCE_EXHAUSTED, full, self.address))
                continue
            if known is None:
                known = _Request(
                    Cached(seg.start_layer, seg.end_layer, 0),
                    seg.sampling,
                    sampling.make_generator(seg.sampling),
                )
                self._requests[seg.request_id] = known
            known.cached = Cached(seg.start_layer, seg.end_layer, seg.position + seg.num_tokens)
            work = Work(
                request_id=seg.request_id,
                start_layer=seg.start_layer,
                end_layer=seg.end_layer,
                position=seg.position,
                num_tokens=seg.num_tokens,
                token_ids=torch.tensor(seg.token_ids, dtype=torch.long) if seg.start_layer == 0 else None,
                hidden=from_wire(seg.hidden) if seg.start_layer > 0 and seg.hidden else None,
                residual=from_wire(seg.residual) if seg.start_layer > 0 and seg.residual else None,
                want_logits=seg.end_layer == shape.num_layers and not seg.skip_sample,
            )
            ready.append(_Ready(item, work, known))
            taken.add(seg.request_id)
            budget -= seg.num_tokens
            used += need
            if budget <= 0 or len(ready) >= self.max_batch_requests:
                break
        kept.extend(self._queue)
        self._queue = kept
        return ready

    def _compute(self, ready: list[_Ready]) -> None:
        """In the step thread: run the backend, sample, and serialise what goes to the next hops."""
        outs = self.backend.step([r.work for r in ready])
        for r, out in zip(ready, outs, strict=True):
            seg = r.item.segment
            if r.work.want_logits and out.logits is not None:
                token, logprob = sampling.sample(out.logits, r.request.sampling, r.request.generator)
                r.result = TokenResult(seg.request_id, token_id=token, logprob=logprob)
            elif seg.end_layer == self.backend.shape.num_layers:
                r.result = TokenResult(seg.request_id)
            else:
                r.hidden = to_wire(out.hidden) if out.hidden is not None else None
                r.residual = to_wire(out.residual) if out.residual is not None else None

    def _dispatch(self, ready: list[_Ready]) -> None:
        onward: dict[str, list[tuple[_Item, Segment]]] = {}
        for r in ready:
            seg = r.item.segment
            if seg.finish:
                self._free(seg.request_id)
            if r.result is not None:
                self._resolve(r.item, r.result)
                continue
            nxt = seg.route[0]
            onward.setdefault(nxt.address, []).append(
                (
                    r.item,
                    Segment(
                        request_id=seg.request_id,
                        start_layer=nxt.start,
                        end_layer=nxt.end,
                        position=seg.position,
                        num_tokens=seg.num_tokens,
                        hidden=r.hidden,
                        residual=r.residual,
                        sampling=seg.sampling,
                        finish=seg.finish,
                        skip_sample=seg.skip_sample,
                        route=seg.route[1:],
                    ),
                )
            )
        for address, pairs in onward.items():
            self._spawn(self._forward(address, pairs))

    def _forward_abort(self, item: _Item) -> None:
        seg = item.segment
        if not seg.route:
            self._resolve(item, TokenResult(seg.request_id))
            return
        nxt = seg.route[0]
        onward = Segment(
            request_id=seg.request_id,
            start_layer=nxt.start,
            end_layer=nxt.end,
            position=0,
            num_tokens=0,
            abort=True,
            route=seg.route[1:],
        )
        self._spawn(self._forward(nxt.address, [(item, onward)]))

    async def _forward(self, address: str, pairs: list[tuple[_Item, Segment]]) -> None:
        started = time.perf_counter()
        results = await self.connections.stream(address).send([s for _, s in pairs])
        self.timings.downstream_ms.append((time.perf_counter() - started) * 1e3)
        by_id = {r.request_id: r for r in results}
        for item, seg in pairs:
            result = by_id.get(seg.request_id) or error_result(seg.request_id, INTERNAL, "no result", address)
            if result.code != OK:
                log.debug(
                    "request %s failed downstream at %s: %s", seg.request_id, result.failed_hop, result.error
                )
            self._resolve(item, result)

    # --- helpers -----------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, seg: Segment) -> None:
        """Undo what picking a segment recorded (the step never ran): a new request leaves no trace."""
        known = self._requests.get(seg.request_id)
        if known is None:
            return
        if seg.position == 0:
            self._requests.pop(seg.request_id, None)
        else:
            known.cached = Cached(seg.start_layer, seg.end_layer, seg.position)

    def _free(self, request_id: str) -> bool:
        if self._in_step:
            self._deferred_free.add(request_id)
            return request_id in self._requests
        self._requests.pop(request_id, None)
        return self.backend.free(request_id)

    @staticmethod
    def _resolve(item: _Item, result: TokenResult) -> None:
        if not item.future.done():
            item.future.set_result(result)
