"""The coordinator's request engine: admission (bounded queue, Fail-KV waits), one runner per chain that
drives prompt and decode steps through the workers, token streams out, and recovery after worker loss
(re-route from the prompt plus the tokens so far, so a client sees a pause, never a lost request)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from planner.errors import BrlError, CapacityExceeded, InvalidInput, NoRoute, Unavailable
from planner.routing import Chain, RouteRequest, chain_nodes
from services.coordinator.eventlog import EventLog
from services.coordinator.fleet import Fleet
from services.coordinator.metrics import Metrics
from services.worker.client import Connections, HopAddress, StepInput
from services.worker.records import INVALID_ARGUMENT, UNAVAILABLE, Sampling, TokenResult, error_result

log = logging.getLogger("brl.coordinator.engine")

ChainKey = tuple[tuple[str, str, int, int], ...]


class ChainLike(Protocol):
    """What the engine needs of services.worker.client.ChainClient (tests may pass a fake)."""

    async def step(self, items: Sequence[StepInput]) -> list[TokenResult]: ...

    async def abort(self, request_ids: Sequence[str]) -> None: ...


ChainFactory = Callable[[Sequence[HopAddress]], ChainLike]
ReleaseFn = Callable[[str, Sequence[str]], Awaitable[None]]
ProbeFn = Callable[[str], Awaitable[bool]]


@dataclass(frozen=True)
class EngineLimits:
    max_waiting: int = 256
    max_running: int = 256
    max_batch_tokens: int = 2048
    pipeline_depth: int = 2
    max_retries: int = 3
    queue_timeout_s: float = 60.0
    tick_s: float = 0.25


@dataclass(frozen=True)
class GenParams:
    max_tokens: int
    sampling: Sampling = Sampling()
    eos_ids: frozenset[int] = frozenset()
    ignore_eos: bool = False


@dataclass(frozen=True)
class Finished:
    reason: str


@dataclass(eq=False)
class Request:
    id: str
    prompt: list[int]
    params: GenParams
    arrival_s: float
    out: asyncio.Queue[int | Finished | BaseException] = field(default_factory=asyncio.Queue)
    generated: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    cached: int = 0
    chain: Chain | None = None
    runner: ChainRunner | None = None
    epoch: int = 0
    in_flight: bool = False
    done: bool = False
    retries: int = 0
    queued_at_s: float = 0.0
    first_token_s: float | None = None
    last_token_s: float | None = None
    finish_reason: str | None = None
    routes: list[list[str]] = field(default_factory=list)

    @property
    def wire_id(self) -> str:
        """Id on the wire: a fresh one per attempt, so state left on an old chain never meets a retry."""
        return self.id if self.epoch == 0 else f"{self.id}.{self.epoch}"

    def route_request(self) -> RouteRequest:
        already = len(self.generated)
        return RouteRequest(self.id, len(self.prompt) + already, max(0, self.params.max_tokens - already))


class Handle:
    """What a caller holds for one request: iterate its token ids, read usage, cancel it."""

    def __init__(self, engine: Engine, request: Request) -> None:
        self._engine = engine
        self._r = request

    @property
    def request_id(self) -> str:
        return self._r.id

    @property
    def prompt_tokens(self) -> int:
        return len(self._r.prompt)

    @property
    def completion_tokens(self) -> int:
        return len(self._r.generated)

    @property
    def finish_reason(self) -> str | None:
        return self._r.finish_reason

    async def tokens(self) -> AsyncIterator[int]:
        while True:
            event = await self._r.out.get()
            if isinstance(event, Finished):
                return
            if isinstance(event, BaseException):
                raise event
            yield event

    def cancel(self, reason: str = "cancelled") -> None:
        self._engine.cancel(self._r, reason)


class ChainRunner:
    """Keeps stepping the requests routed over one chain: each step batches every ready request (decode
    tokens, and prompt chunks up to the token budget); up to `depth` steps are in flight at once so new
    prompts need not wait for a decode step to come back."""

    def __init__(self, engine: Engine, key: ChainKey, chain: Chain, client: ChainLike) -> None:
        self.engine = engine
        self.key = key
        self.chain = chain
        self.nodes = list(chain_nodes(chain))
        self.addresses = [k[1] for k in key]
        self.client = client
        self.requests: dict[str, Request] = {}
        self.inflight = 0
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"chain {'>'.join(self.nodes)}")

    def add(self, r: Request) -> None:
        r.runner = self
        self.requests[r.id] = r
        self.wake.set()

    def remove(self, r: Request) -> None:
        if self.requests.pop(r.id, None) is not None:
            r.runner = None
            self.wake.set()

    async def _run(self) -> None:
        limits = self.engine.limits
        try:
            while True:
                ready = [r for r in self.requests.values() if not r.in_flight]
                if ready and self.inflight < limits.pipeline_depth:
                    self._launch(self._select(ready, limits.max_batch_tokens))
                    continue
                if not self.requests and not self.inflight:
                    break
                self.wake.clear()
                await self.wake.wait()
        finally:
            self.engine._runner_done(self)

    @staticmethod
    def _select(ready: list[Request], budget: int) -> list[tuple[Request, list[int], bool]]:
        """(request, tokens to send, is last chunk) for this step: every decode, prompts while budget lasts."""
        batch: list[tuple[Request, list[int], bool]] = []
        for r in ready:
            if len(r.pending) == 1 and r.cached:
                batch.append((r, r.pending[:1], True))
        left = budget
        for r in ready:
            if len(r.pending) == 1 and r.cached:
                continue
            if left <= 0:
                break
            chunk = r.pending[:left]
            left -= len(chunk)
            batch.append((r, chunk, len(chunk) == len(r.pending)))
        return batch

    def _launch(self, batch: list[tuple[Request, list[int], bool]]) -> None:
        items: list[StepInput] = []
        epochs: list[int] = []
        for r, tokens, last in batch:
            r.in_flight = True
            # The step that samples the final allowed token frees the KV on the way: no release round trip.
            final = last and len(r.generated) + 1 >= r.params.max_tokens
            items.append(
                StepInput(r.wire_id, tokens, r.cached, r.params.sampling, finish=final, skip_sample=not last)
            )
            epochs.append(r.epoch)
        self.inflight += 1
        self.engine._spawn(self._step([b[0] for b in batch], items, epochs))

    async def _step(self, reqs: list[Request], items: list[StepInput], epochs: list[int]) -> None:
        t0 = self.engine.clock()
        try:
            try:
                results = await self.client.step(items)
            except (grpc.RpcError, OSError, BrlError, RuntimeError) as exc:
                results = [error_result(i.request_id, UNAVAILABLE, f"step failed: {exc}") for i in items]
        finally:
            self.inflight -= 1
            self.wake.set()
        self.engine._on_step(self, reqs, items, results, epochs, self.engine.clock() - t0)


class Engine:
    def __init__(
        self,
        fleet: Fleet,
        metrics: Metrics,
        *,
        limits: EngineLimits | None = None,
        events: EventLog | None = None,
        chain_factory: ChainFactory | None = None,
        release_fn: ReleaseFn | None = None,
        probe_fn: ProbeFn | None = None,
        clock: Callable[[], float] = time.monotonic,
        step_timeout_s: float = 30.0,
    ) -> None:
        self.fleet = fleet
        self.metrics = metrics
        self.limits = limits or EngineLimits()
        self.events = events or EventLog()
        self.clock = clock
        self.connections = Connections()
        self.step_timeout_s = step_timeout_s
        self._chain_factory = chain_factory or self._grpc_chain
        self._release_fn = release_fn or self._grpc_release
        self._probe_fn = probe_fn or self._grpc_probe
        self.waiting: deque[Request] = deque()
        self.running: dict[str, Request] = {}
        self.runners: dict[ChainKey, ChainRunner] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._ids = itertools.count()
        # Ids differ between coordinator incarnations: a worker that frees the requests of a crashed
        # predecessor must never meet the same id from its successor.
        self._incarnation = uuid.uuid4().hex[:8]
        self._ewma_e2e_s = 1.0
        self._closed = False
        fleet.registry.subscribe(self._on_fleet_change)

    # -- life cycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick_loop(), name="engine ticker")

    async def stop(self) -> None:
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
        gone = Unavailable("the coordinator is shutting down; retry against another coordinator or later")
        for r in [*self.waiting, *self.running.values()]:
            self._fail(r, gone)
        for runner in list(self.runners.values()):
            runner.task.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, *(r.task for r in self.runners.values()), return_exceptions=True)
        await self.connections.close()
        self.events.close()

    async def drain(self, timeout_s: float = 3.0) -> int:
        """Graceful stop, before the HTTP server closes: refuse new requests, end every running and waiting
        one with Unavailable (streams send an error event and [DONE], plain requests get 503) and abort them
        on their chains so no worker keeps their KV. Returns how many requests were ended."""
        self._closed = True
        gone = Unavailable("the coordinator is shutting down; retry against another coordinator or later")
        on_chains: dict[ChainKey, tuple[ChainLike, list[str]]] = {}
        ended = [*self.waiting, *self.running.values()]
        for r in ended:
            runner = r.runner
            if runner is not None:
                on_chains.setdefault(runner.key, (runner.client, []))[1].append(r.wire_id)
            self._fail(r, gone)
        if on_chains:
            log.info(
                "shutting down: ended %d requests, freeing their KV on %d chains", len(ended), len(on_chains)
            )
            aborts = [self._abort_quietly(client, ids) for client, ids in on_chains.values()]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*aborts), timeout=timeout_s)
        return len(ended)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # Background tasks are fire-and-forget: a failure would otherwise vanish without a trace.
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    # -- default transport: the worker gRPC client ---------------------------------------------------------
    def _grpc_chain(self, hops: Sequence[HopAddress]) -> ChainLike:
        from services.worker.client import ChainClient

        return ChainClient(list(hops), connections=self.connections, timeout_s=self.step_timeout_s)

    async def _grpc_release(self, address: str, request_ids: Sequence[str]) -> None:
        from services.worker import wire

        with contextlib.suppress(grpc.RpcError):
            await self.connections.stub(address).Release(wire.release_to_msg(list(request_ids)), timeout=2.0)

    async def _grpc_probe(self, address: str) -> bool:
        from services.worker.client import stats

        try:
            await stats(address, connections=self.connections, timeout_s=1.0)
            return True
        except (grpc.RpcError, grpc.aio.UsageError, OSError, RuntimeError):
            return False

    # -- admission -----------------------------------------------------------------------------------
    def new_id(self, prefix: str = "req") -> str:
        return f"{prefix}-{self._incarnation}-{next(self._ids)}"

    def submit(self, request_id: str, prompt: list[int], params: GenParams) -> Handle:
        """Admit a request or queue it; raises NoRoute (503), InvalidInput (400), CapacityExceeded (429)."""
        if self._closed:
            raise Unavailable("the coordinator is shutting down")
        self.fleet.rebuild()
        if not self.fleet.routable:
            self.metrics.rejected.labels("no_route").inc()
            raise NoRoute(self.fleet.no_route_reason, uncovered=self.fleet.uncovered())
        r = Request(request_id, list(prompt), params, arrival_s=self.clock(), pending=list(prompt))
        why = self.fleet.never_fits(r.route_request())
        if why is not None:
            self.metrics.rejected.labels("too_long").inc()
            raise InvalidInput(why, source="request", field="max_tokens")
        if not self.waiting and self._try_start(r):
            return Handle(self, r)
        if len(self.waiting) >= self.limits.max_waiting:
            self.metrics.rejected.labels("queue_full").inc()
            raise CapacityExceeded(
                f"the fleet is full: {len(self.running)} requests running and {len(self.waiting)} waiting "
                f"(limit {self.limits.max_waiting}); retry later",
                retry_after_s=self.retry_after_s(),
            )
        r.queued_at_s = self.clock()
        self.waiting.append(r)
        self._update_gauges()
        return Handle(self, r)

    def retry_after_s(self) -> float:
        per_slot = self._ewma_e2e_s / max(1, len(self.running))
        return min(60.0, max(1.0, per_slot * (len(self.waiting) + 1)))

    def _try_start(self, r: Request) -> bool:
        if len(self.running) >= self.limits.max_running:
            return False
        chain = self.fleet.choose(r.route_request())
        if chain is None:
            self.metrics.fail_kv.inc()
            return False
        hops = []
        for hop in chain:
            address = self.fleet.registry.address(hop.node)
            if address is None:  # cannot happen: the fleet is rebuilt from the registry before choosing
                self.fleet.release(r.id)
                return False
            hops.append(HopAddress(address, hop.layers.start, hop.layers.end))
        key: ChainKey = tuple((h.node, a.address, a.start, a.end) for h, a in zip(chain, hops, strict=True))
        runner = self.runners.get(key)
        if runner is None:
            runner = self.runners[key] = ChainRunner(self, key, chain, self._chain_factory(hops))
        r.chain = chain
        r.routes.append([f"{h.node}[{h.layers.start},{h.layers.end})" for h in chain])
        self.running[r.id] = r
        runner.add(r)
        self.metrics.route(list(chain_nodes(chain)), len(r.pending))
        self.metrics.prompt_tokens.labels(self.metrics.model_name).inc(len(r.pending))
        self._update_gauges()
        return True

    def _admit(self) -> None:
        """Start waiting requests in order while chains with KV room exist."""
        while self.waiting and not self._closed:
            r = self.waiting[0]
            try:
                started = self._try_start(r)
            except NoRoute:
                break  # they wait (until their deadline) for workers to come back
            if not started:
                break
            self.waiting.popleft()
        self._update_gauges()

    def plan_swapped(self) -> None:
        """A new plan routes from now on: note it in the iteration log and admit waiting requests by it."""
        self.metrics.plan_swaps.inc()
        self.events.iteration(
            t=round(self.clock(), 6), wall=round(time.time(), 6), event="plan_swap", running=len(self.running)
        )
        self._admit()

    def _on_fleet_change(self) -> None:
        self._spawn(self._after_fleet_change())

    async def _after_fleet_change(self) -> None:
        self.fleet.rebuild()
        alive = set(self.fleet.registry.names())
        for runner in list(self.runners.values()):
            if not set(runner.nodes) <= alive:
                why = f"worker left: {sorted(set(runner.nodes) - alive)}"
                old = []
                for r in list(runner.requests.values()):
                    old.append(self._detach_for_retry(r))
                    self._enqueue_retry(r, why)
                self._spawn(self._cleanup(runner, old))
        self._admit()

    # -- step results --------------------------------------------------------------------------------
    def _runner_done(self, runner: ChainRunner) -> None:
        if self.runners.get(runner.key) is runner:
            del self.runners[runner.key]

    def _on_step(
        self,
        runner: ChainRunner,
        reqs: list[Request],
        items: list[StepInput],
        results: list[TokenResult],
        epochs: list[int],
        step_s: float,
    ) -> None:
        failed: list[tuple[Request, TokenResult, str]] = []
        finished: list[str] = []
        prompt_tokens = decode_tokens = 0
        for r, item, res, epoch in zip(reqs, items, results, epochs, strict=True):
            if r.epoch != epoch or r.done:
                continue  # re-routed or cancelled while this step was in flight
            r.in_flight = False
            if not res.ok:
                failed.append((r, res, self._detach_for_retry(r)))
                continue
            if len(item.token_ids) == 1 and item.position > 0 and item.position >= len(r.prompt):
                decode_tokens += 1
                self.fleet.on_decode(runner.chain)
            else:
                prompt_tokens += len(item.token_ids)
            if self._advance(r, item, res):
                self._finish(r, r.finish_reason or "stop")
                if not item.finish:
                    finished.append(item.request_id)
        self.metrics.steps.inc()
        self.metrics.step_latency.observe(step_s)
        if decode_tokens:
            self.metrics.decode_tokens(runner.nodes, decode_tokens)
        self.events.iteration(
            t=round(self.clock(), 6),
            wall=round(time.time(), 6),
            chain=runner.nodes,
            requests=len(items),
            prompt_tokens=prompt_tokens,
            decode_tokens=decode_tokens,
            step_s=round(step_s, 6),
            failed=len(failed),
        )
        if finished:
            self._spawn(self._abort_quietly(runner.client, finished))
        if failed:
            self._spawn(self._recover(runner, failed))
        if finished:
            self._admit()

    def _advance(self, r: Request, item: StepInput, res: TokenResult) -> bool:
        """Apply one good result; True when the request is now complete."""
        n = len(item.token_ids)
        r.cached += n
        del r.pending[:n]
        if item.skip_sample or res.token_id is None:
            return False
        tok = int(res.token_id)
        now = self.clock()
        name = self.metrics.model_name
        if r.first_token_s is None:
            r.first_token_s = now
            self.metrics.ttft.labels(name).observe(now - r.arrival_s)
        elif r.last_token_s is not None:
            self.metrics.itl.labels(name).observe(now - r.last_token_s)
        r.last_token_s = now
        r.generated.append(tok)
        r.pending = [tok]
        self.metrics.generation_tokens.labels(name).inc()
        r.out.put_nowait(tok)
        if tok in r.params.eos_ids and not r.params.ignore_eos:
            r.finish_reason = "stop"
            return True
        if len(r.generated) >= r.params.max_tokens:
            r.finish_reason = "length"
            return True
        return False

    async def _abort_quietly(self, client: ChainLike, request_ids: list[str]) -> None:
        with contextlib.suppress(grpc.RpcError, OSError, BrlError, RuntimeError):
            await asyncio.wait_for(client.abort(request_ids), timeout=5.0)

    # -- endings -------------------------------------------------------------------------------------
    def _detach(self, r: Request) -> None:
        if r.runner is not None:
            r.runner.remove(r)
        if self.running.pop(r.id, None) is not None:
            self.fleet.release(r.id)
        with contextlib.suppress(ValueError):
            self.waiting.remove(r)

    def _finish(self, r: Request, reason: str) -> None:
        r.done = True
        r.finish_reason = reason
        self._detach(r)
        now = self.clock()
        e2e = now - r.arrival_s
        self._ewma_e2e_s = 0.9 * self._ewma_e2e_s + 0.1 * e2e
        self.metrics.e2e.labels(self.metrics.model_name).observe(e2e)
        self.metrics.request_success.labels(self.metrics.model_name, reason).inc()
        self._log_request(r, now)
        r.out.put_nowait(Finished(reason))
        self._update_gauges()

    def _fail(self, r: Request, exc: BaseException) -> None:
        if r.done:
            return
        r.done = True
        r.finish_reason = "error"
        self._detach(r)
        self._log_request(r, self.clock(), error=str(exc))
        r.out.put_nowait(exc)
        self._update_gauges()

    def cancel(self, r: Request, reason: str = "cancelled") -> None:
        """The client went away or a stop string matched: stop generating and free the KV on every hop."""
        if r.done:
            return
        runner = r.runner
        self._finish(r, reason)
        if runner is not None:
            self._spawn(self._abort_quietly(runner.client, [r.wire_id]))
        self._admit()

    def _log_request(self, r: Request, now: float, error: str | None = None) -> None:
        out = len(r.generated)
        decode_s = (
            (r.last_token_s - r.first_token_s) / (out - 1)
            if (out > 1 and r.first_token_s is not None and r.last_token_s is not None)
            else None
        )
        self.events.request(
            id=r.id,
            arrival=round(r.arrival_s, 6),
            wall=round(time.time(), 6),
            input_len=len(r.prompt),
            output_len=out,
            route=r.routes[-1] if r.routes else None,
            routes=len(r.routes),
            retries=r.retries,
            finish_reason=r.finish_reason,
            error=error,
            ttft_s=None if r.first_token_s is None else round(r.first_token_s - r.arrival_s, 6),
            decode_latency_s=None if decode_s is None else round(decode_s, 6),
            e2e_s=round(now - r.arrival_s, 6),
        )

    # -- failures ------------------------------------------------------------------------------------
    def _detach_for_retry(self, r: Request) -> str:
        """Take `r` off its chain at once (so no runner steps it again); returns its old wire id."""
        old = r.wire_id
        r.epoch += 1
        r.in_flight = False
        if r.runner is not None:
            r.runner.remove(r)
        if self.running.pop(r.id, None) is not None:
            self.fleet.release(r.id)
        return old

    def _enqueue_retry(self, r: Request, why: str) -> None:
        """Put `r` first in line, to re-run on a new chain from its prompt plus the tokens so far."""
        if r.done:
            return
        r.retries += 1
        if r.retries > self.limits.max_retries:
            self._fail(r, Unavailable(f"request {r.id} failed on {r.retries} chains; last error: {why}"))
            return
        log.warning("re-routing %s after %s (attempt %d)", r.id, why, r.retries)
        self.metrics.reroutes.inc()
        r.cached = 0
        r.pending = [*r.prompt, *r.generated]
        r.chain = None
        r.queued_at_s = self.clock()
        self.waiting.appendleft(r)

    async def _cleanup(self, runner: ChainRunner, wire_ids: list[str]) -> None:
        """Best effort: free what surviving hops of an abandoned chain still hold for these attempts."""
        alive = {w.info.address for w in self.fleet.registry.alive().values()}
        await self._abort_quietly(runner.client, wire_ids)
        await asyncio.gather(*(self._release_fn(a, wire_ids) for a in runner.addresses if a in alive))

    async def _recover(self, runner: ChainRunner, failed: list[tuple[Request, TokenResult, str]]) -> None:
        suspects = sorted({res.failed_hop for _, res, _ in failed if res.failed_hop} or set(runner.addresses))
        try:
            # A probe can die in ways other than an RpcError (its channel closed under it by a concurrent
            # forget()); any such outcome counts as "not ok" rather than ending this task.
            checks = await asyncio.gather(*(self._probe_fn(a) for a in suspects), return_exceptions=True)
            for address, ok in zip(suspects, checks, strict=True):
                if ok is not True:
                    self._declare_lost_address(address)
        finally:
            # These requests were already detached from their runner: whatever happened above, each must be
            # re-queued or failed here, or it would sit in neither `running` nor `waiting` and be lost.
            for r, res, _ in failed:
                if res.code == INVALID_ARGUMENT:
                    self._fail(
                        r, InvalidInput(f"a worker rejected the request: {res.error}", source="worker")
                    )
                else:
                    self._enqueue_retry(r, f"{res.code}: {res.error}")
            self._admit()
        await self._cleanup(runner, [old for _, _, old in failed])

    def _declare_lost_address(self, address: str) -> None:
        for name, w in self.fleet.registry.alive().items():
            if w.info.address == address:
                self._declare_lost(name)

    def _declare_lost(self, name: str) -> None:
        w = self.fleet.registry.get(name)
        if w is None:
            return
        log.warning("worker %s (%s) lost", name, w.info.address)
        self.metrics.worker_lost.inc()
        self.events.iteration(
            t=round(self.clock(), 6), wall=round(time.time(), 6), event="worker_lost", worker=name
        )
        self._spawn(self.connections.forget(w.info.address))
        self.fleet.registry.remove(name)

    # -- periodic ------------------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.limits.tick_s)
            self.tick()

    def tick(self) -> None:
        for name in self.fleet.registry.expire():
            log.warning("worker %s missed its heartbeats", name)
            self.metrics.worker_lost.inc()
        now = self.clock()
        for r in list(self.waiting):
            if now - r.queued_at_s > self.limits.queue_timeout_s:
                if not self.fleet.routable:
                    self._fail(r, NoRoute(self.fleet.no_route_reason, uncovered=self.fleet.uncovered()))
                else:
                    self._fail(
                        r,
                        CapacityExceeded(
                            f"waited {now - r.queued_at_s:.0f} s for KV room in the admission queue; retry later",
                            retry_after_s=self.retry_after_s(),
                        ),
                    )
        self._admit()
        self.events.flush()

    def _update_gauges(self) -> None:
        name = self.metrics.model_name
        self.metrics.running.labels(name).set(len(self.running))
        self.metrics.waiting.labels(name).set(len(self.waiting))
        self.metrics.kv_usage.labels(name).set(self.fleet.registry.kv_usage_max())
        self.metrics.workers_alive.set(len(self.fleet.registry.names()))
